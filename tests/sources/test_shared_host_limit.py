"""Three real Celery workers crawling the same loopback site at once stay within the one
per-host limit they share through Redis (request arrival times at the server), and the
per-queue Celery rate limit (``MODOMO_QUEUE_RATE_LIMITS``) reaches a worker's tasks."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from modomo.jobs import create_job
from tests.sources.site import (
    FakeHouzz,
    FakePhoto,
    GalleryPageSpec,
    SiteServer,
    image_bytes,
    new_ids,
)
from tests.support import celery_worker, wait_for_job
from tests.test_hostlimit import SLACK_S, assert_within_rate

RATE = 6.0
"""Requests/second to the site, shared by the three workers (each would send this alone)."""
BURST = 3
ROOMS = ("living-room", "kitchen", "bedroom")
PAGES, PER_PAGE = 3, 4


@pytest.fixture(scope="module")
def server() -> Iterator[SiteServer]:
    with SiteServer() as running:
        yield running


@pytest.fixture(scope="module")
def three_workers(
    server: SiteServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    logs = tmp_path_factory.mktemp("shared-limit-workers")
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                celery_worker(
                    queues="scraping",
                    log_path=logs / f"worker{n}.log",
                    MODOMO_HOUZZ_BASE_URL=server.base,
                    MODOMO_ALLOW_PRIVATE_URLS="1",
                    MODOMO_CRAWL_RATE_PER_HOST=str(RATE),
                    MODOMO_CRAWL_BURST=str(BURST),
                )
            )
            for n in range(3)
        ]


def site_for_three_jobs() -> FakeHouzz:
    """One gallery per job: PAGES pages of PER_PAGE photos each."""
    galleries = {}
    for room in ROOMS:
        photos = [
            FakePhoto(i, f"{room} {i}", image=image_bytes(i)) for i in new_ids(PAGES * PER_PAGE)
        ]
        galleries[room] = [
            GalleryPageSpec(photos[n * PER_PAGE : (n + 1) * PER_PAGE], ("json-ld", "state")[n % 2])
            for n in range(PAGES)
        ]
    return FakeHouzz(galleries=galleries)


@pytest.mark.services
def test_three_workers_crawling_one_host_share_its_limit(
    three_workers: list[str], server: SiteServer
) -> None:
    from celery.result import AsyncResult

    from modomo.tasks.scraping_tasks import run_scraping_job

    site = server.use(site_for_three_jobs())
    jobs: dict[str, tuple[uuid.UUID, str]] = {}
    for room in ROOMS:
        job_id = create_job("scrape", {"limit": 100, "room_types": [room]})
        sent = run_scraping_job.apply_async(
            kwargs={"job_id": str(job_id), "limit": 100, "room_types": [room]}, queue="scraping"
        )
        jobs[room] = (job_id, str(sent.id))
    for room, (job_id, _) in jobs.items():
        job = wait_for_job(job_id, timeout_s=60)
        assert (job["status"], job["processed"], job["failed"]) == (
            "completed",
            PAGES * PER_PAGE,
            0,
        ), (room, job)

    # each job ran on its own worker, all three at once
    ran_on = {AsyncResult(task_id).worker for _, task_id in jobs.values()}
    assert ran_on == set(three_workers), ran_on
    spans = []
    for room in ROOMS:
        own = [h.at for h in site.hits if room in h.path or _image_of(site, room, h.path)]
        assert len(own) == PAGES + PAGES * PER_PAGE  # its pages and images, each once
        spans.append((min(own), max(own)))
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans  # the crawls overlap

    # together they kept the one limit: 3 robots.txt + 3 x (3 pages + 12 images) requests
    times = [h.at for h in site.hits]
    assert len(times) == len(ROOMS) * (1 + PAGES + PAGES * PER_PAGE)
    duration = times[-1] - times[0]
    assert duration >= (len(times) - BURST) / RATE - SLACK_S
    seen = assert_within_rate(times, RATE, BURST, windows=(0.5, 1.0, 2.0, 4.0))
    print(
        f"\nshared limit: {len(times)} requests in {duration:.2f} s from 3 workers "
        f"({len(times) / duration:.2f}/s, limit {RATE:g}/s burst {BURST}); most in a window: "
        + ", ".join(f"{w:g} s: {n} (<= {a:.2f})" for w, (n, a) in seen.items())
    )


def _image_of(site: FakeHouzz, room: str, path: str) -> bool:
    return any(path == p.image_path for page in site.galleries[room] for p in page.photos)


@pytest.mark.services
def test_queue_rate_limits_reach_the_worker_s_tasks(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from modomo.celery_app import app

    limits = '{"scraping": "12/m", "maintenance": "0.5/s"}'
    log = tmp_path_factory.mktemp("rate-limit-worker") / "worker.log"
    with celery_worker(queues="maintenance", log_path=log, MODOMO_QUEUE_RATE_LIMITS=limits) as name:
        replies = app.control.inspect(destination=[name], timeout=5).registered("rate_limit")
    assert replies and name in replies, replies
    # "name [rate_limit=12/m]", or the bare name for a task without a limit
    rates = {}
    for entry in replies[name]:
        task, _, rest = entry.partition(" [rate_limit=")
        rates[task] = rest.rstrip("]") or None
    assert rates["modomo.tasks.scraping_tasks.run_scraping_job"] == "12/m"
    assert rates["modomo.tasks.maintenance_tasks.health_check"] == "0.5/s"
    assert rates["modomo.tasks.color_tasks.process_colors_batch"] is None  # no limit set


def test_bad_queue_rate_limits_are_config_errors() -> None:
    from modomo.celery_app import app, celery_config
    from modomo.config import ConfigError, load_settings

    for value, phrase in [
        ('{"scraping": "10 per minute"}', "bad rate '10 per minute' for queue 'scraping'"),
        ('{"scraping": "10/d"}', "expected N/s, N/m or N/h"),
        ('{"scraping": 10}', "bad rate 10"),
        ("scraping=10/m", "MODOMO_QUEUE_RATE_LIMITS: Value error, not JSON"),
        ('["10/m"]', "expected a JSON object"),
    ]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MODOMO_QUEUE_RATE_LIMITS", value)
            with pytest.raises(ConfigError, match=re.escape(phrase)):
                load_settings()
    unknown = load_settings(queue_rate_limits={"scrapping": "10/m", "import": "1/s"})
    with pytest.raises(ConfigError, match="names unknown queue.s. scrapping; the queues are"):
        celery_config(unknown)
    # a good value: the annotation finds each task's queue from its route (TASK_ROUTES)
    import modomo.tasks.export_tasks
    import modomo.tasks.import_tasks
    import modomo.tasks.scraping_tasks  # noqa: F401 - registers the tasks

    good = load_settings(queue_rate_limits={"import": "2.5/s", "celery": "100/h"})
    (annotation,) = celery_config(good)["task_annotations"]
    tasks = app.tasks
    assert annotation.annotate(tasks["modomo.tasks.import_tasks.import_huggingface_dataset"]) == {
        "rate_limit": "2.5/s"
    }
    assert annotation.annotate(tasks["modomo.tasks.export_tasks.run_export_job"]) == {
        "rate_limit": "100/h"
    }
    assert annotation.annotate(tasks["modomo.tasks.scraping_tasks.run_scraping_job"]) is None
    assert annotation.annotate(tasks["celery.backend_cleanup"]) is None  # Celery's own
    assert load_settings().queue_rate_limits == {}  # the default: no limits
    assert celery_config(load_settings())["task_annotations"] is None
