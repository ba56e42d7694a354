"""``run_scraping_job`` through real Celery workers (queue ``scraping``), Redis and PostgreSQL,
against a fake Houzz on loopback: the per-host rate limit as the server saw it, and a worker
killed mid-crawl whose job a fresh worker finishes from the saved cursor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from modomo.db.models import Scene
from modomo.db.session import session_scope
from modomo.jobs import create_job, describe_job
from modomo.sources.houzz import CURSOR
from tests.sources.site import (
    FakeHouzz,
    FakePhoto,
    GalleryPageSpec,
    SiteServer,
    image_bytes,
    new_ids,
)
from tests.support import REPO, celery_worker, wait_for_job, worker_env

pytestmark = pytest.mark.services

RATE = 4.0
"""Requests per second of the module's worker (the rate-limit test checks it)."""


@pytest.fixture(scope="module")
def server() -> Iterator[SiteServer]:
    with SiteServer() as running:
        yield running


def crawl_env(server: SiteServer, rate: float) -> dict[str, str]:
    return {
        "MODOMO_HOUZZ_BASE_URL": server.base,
        "MODOMO_ALLOW_PRIVATE_URLS": "1",
        "MODOMO_CRAWL_RATE_PER_HOST": str(rate),
    }


@pytest.fixture(scope="module")
def scraping_worker(server: SiteServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("scraping-worker") / "worker.log"
    with celery_worker(queues="scraping", log_path=log, **crawl_env(server, RATE)) as hostname:
        yield hostname


def gallery(pages: int, per_page: int) -> tuple[FakeHouzz, list[FakePhoto]]:
    ids = new_ids(pages * per_page)
    photos = [FakePhoto(i, f"Room {i}", image=image_bytes(i)) for i in ids]
    specs = [
        GalleryPageSpec(photos[n * per_page : (n + 1) * per_page], ("json-ld", "state")[n % 2])
        for n in range(pages)
    ]
    return FakeHouzz(galleries={"living-room": specs}), photos


def scene_count(photos: list[FakePhoto]) -> int:
    keys = [f"houzz:{p.photo_id}" for p in photos]
    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Scene).where(Scene.source_key.in_(keys))
            )
            or 0
        )


def send(job_id: uuid.UUID, limit: int, rooms: list[str], queue: str = "scraping") -> str:
    from modomo.tasks.scraping_tasks import run_scraping_job

    result = run_scraping_job.apply_async(
        kwargs={"job_id": str(job_id), "limit": limit, "room_types": rooms}, queue=queue
    )
    return str(result.id)


def test_scrape_job_through_a_worker_keeps_the_rate_limit(
    scraping_worker: str, server: SiteServer
) -> None:
    from celery.result import AsyncResult

    site, photos = gallery(pages=2, per_page=2)
    server.use(site)
    job_id = create_job("scrape", {"limit": 10, "room_types": ["living-room"]})
    task_id = send(job_id, 10, ["living-room"])
    job = wait_for_job(job_id, timeout_s=60)

    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        4,
        4,
        0,
    ), job
    assert job["message"].startswith("crawl finished: 2 gallery pages read")
    result = AsyncResult(task_id).get(timeout=10)
    assert (result["stored"], result["pages"], result["continued"]) == (4, 2, False)
    # robots.txt, 2 pages and 4 images, each start at least 1/RATE after the one before
    times = [h.at for h in site.hits]
    assert len(times) == 7
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[-1] - times[0] >= 6 / RATE - 0.03, gaps
    # arrival times jitter a little (a delayed request shortens its gap to the next one)
    assert min(gaps) >= 0.75 / RATE, gaps
    assert scene_count(photos) == 4


KILL_QUEUE = "scraping-killable"
"""The killable worker's own queue, so the module's worker cannot take its task."""


def start_killable_worker(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A worker of :data:`KILL_QUEUE` in its own session, so its whole process group can be
    killed."""
    from modomo.celery_app import app

    hostname = f"killable-{uuid.uuid4().hex[:8]}@localhost"
    with log.open("wb") as out:  # the worker writes to its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "modomo.celery_app", "worker", "-Q", KILL_QUEUE]
            + ["-c", "1", "-n", hostname, "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=REPO,
            env=worker_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[hostname], timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise RuntimeError(f"worker did not start; log: {log}")
    return process, hostname


def test_a_killed_worker_s_crawl_resumes_from_its_cursor(
    scraping_worker: str, server: SiteServer, tmp_path: Path
) -> None:
    site, photos = gallery(pages=6, per_page=2)
    server.use(site)
    rooms = ["living-room"]
    job_id = create_job("scrape", {"limit": 100, "room_types": rooms})

    process, _ = start_killable_worker(crawl_env(server, 10.0), tmp_path / "killed.log")
    try:
        send(job_id, 100, rooms, queue=KILL_QUEUE)
        deadline = time.monotonic() + 60
        while (describe_job(job_id)["params"].get(CURSOR) or {}).get("page", 0) < 3:
            assert time.monotonic() < deadline, "the crawl never reached page 3"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the worker and its pool child, mid-crawl
        process.wait()
    time.sleep(0.3)
    killed = describe_job(job_id)
    cursor = killed["params"][CURSOR]
    assert killed["status"] == "running" and cursor["room_type"] == "living-room"
    resume_page = cursor["page"]
    assert 3 <= resume_page <= 6 and not cursor.get("done")
    crashed_at = len(site.hits)
    before = site.page_hits("living-room")

    # what a retry or the stale-job reaper does: send the job's task again
    send(job_id, 100, rooms)
    job = wait_for_job(job_id, timeout_s=60)

    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        12,
        12,
        0,
    ), job
    again = [
        int(h.query.removeprefix("pg=") or 1)
        for h in site.hits[crashed_at:]
        if h.path == "/photos/living-room"
    ]
    assert again and min(again) == resume_page  # nothing before the cursor is read again
    assert sorted(set(before) | set(again)) == [1, 2, 3, 4, 5, 6]
    assert scene_count(photos) == 12  # each photo once
    for index, photo in enumerate(photos):
        on_resumed_page = index // 2 + 1 == resume_page
        assert site.image_hits(photo) <= (2 if on_resumed_page else 1), photo


def test_a_crawl_longer_than_its_budget_hands_over_to_a_next_run(
    server: SiteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: a run stops at its share of the soft time limit and sends itself again;
    the next run carries on from the cursor and closes the job."""
    from modomo.config import get_settings
    from modomo.tasks import scraping_tasks

    site, photos = gallery(pages=3, per_page=2)
    server.use(site)
    settings = get_settings().model_copy(
        update={
            "houzz_base_url": server.base,
            "allow_private_urls": True,
            "crawl_rate_per_host": 5.0,  # 10 requests: about 2 s
            "task_soft_time_limit": 1,  # a run's budget: 0.8 s
        }
    )
    monkeypatch.setattr(scraping_tasks, "get_settings", lambda: settings)
    sent: list[dict] = []
    monkeypatch.setattr(
        scraping_tasks.run_scraping_job, "apply_async", lambda kwargs: sent.append(kwargs)
    )
    job_id = create_job("scrape", {})
    first = scraping_tasks.run_scraping_job(str(job_id), 50, ["living-room"])
    assert first["continued"] and not first["finished"] and first["pages"] >= 1
    assert sent == [{"job_id": str(job_id), "limit": 50, "room_types": ["living-room"]}]
    assert describe_job(job_id)["status"] == "running"

    runs = 1
    while sent and runs < 10:
        last = scraping_tasks.run_scraping_job(**sent.pop())
        runs += 1
    job = describe_job(job_id)
    assert not last["continued"] and last["finished"] and runs >= 2
    assert (job["status"], job["total"], job["processed"]) == ("completed", 6, 6)
    assert site.page_hits("living-room") == [1, 2, 3]  # no page read twice across the runs
    assert scene_count(photos) == 6
