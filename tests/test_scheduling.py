"""Priorities, scheduled and expiring jobs, recurring schedules: with the real Redis,
PostgreSQL, Celery workers and ``modomo beat``.

Start order is read from the job ledger (``job_scenes.updated_at``, the time each scene's
outcome was counted) and from ``jobs.started_at``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest
from sqlalchemy import select, update

from modomo.db.models import Job, JobScene, JobStatus, Priority, Schedule, utcnow
from modomo.db.session import session_scope
from modomo.jobs.schedules import ScheduleError, add_schedule, fire_due, next_run, remove_schedule
from modomo.jobs.scheduling import JOB_TASKS, Timing, submit_job, tick
from tests.support import REPO, api_server, celery_worker, encode, stop, wait_for_job, worker_env

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


# --- pure -----------------------------------------------------------------------------------
def test_timing_resolves_relative_and_absolute_times() -> None:
    timing = Timing.resolve("urgent", countdown=30, expires=90, now=NOW)  # 90 s after it runs
    assert timing == Timing("urgent", NOW + timedelta(seconds=30), NOW + timedelta(seconds=120))
    at = Timing.resolve(run_at=NOW + timedelta(hours=14), expires=3600, now=NOW)
    assert at.expires_at == NOW + timedelta(hours=15)
    assert Timing.resolve(expires=60, now=NOW).expires_at == NOW + timedelta(seconds=60)
    local = datetime(2026, 11, 21, 13, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert Timing.resolve(run_at=local, now=NOW).run_at is None  # 12:00 UTC: due now
    assert Timing.resolve(now=NOW) == Timing()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"run_at": NOW, "countdown": 1}, "run_at or countdown"),
        ({"expires_at": NOW + timedelta(1), "expires": 5}, "expires_at or expires"),
        ({"run_at": datetime(2026, 11, 22)}, "time zone"),
        ({"countdown": 60, "expires_at": NOW + timedelta(seconds=30)}, "later than"),
        ({"countdown": -1}, "between 0"),
        ({"priority": "asap"}, "priority"),
        ({"run_at": NOW + timedelta(days=400)}, "within 366 days"),
    ],
)
def test_timing_refuses_inconsistent_times(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Timing.resolve(**kwargs, now=NOW)


def test_priorities_are_distinct_redis_priority_steps() -> None:
    from modomo.celery_app import celery_config
    from modomo.config import load_settings

    assert Priority.MESSAGE == {"urgent": 0, "high": 3, "normal": 6, "low": 9}
    from typing import get_args

    from modomo.api.schemas import PriorityName

    assert get_args(PriorityName) == Priority.NAMES  # the API accepts exactly these
    config = celery_config(load_settings(redis_url="redis://127.0.0.1:6379/15"))
    assert config["broker_transport_options"]["priority_steps"] == [0, 3, 6, 9]
    assert config["task_default_priority"] == 6


def test_next_run_follows_the_time_zone_across_daylight_saving() -> None:
    # 02:30 in New York: EDT (UTC-4) until 1 November 2026, EST (UTC-5) after
    before = next_run("30 2 * * *", "America/New_York", datetime(2026, 10, 30, 12, tzinfo=UTC))
    after = next_run("30 2 * * *", "America/New_York", datetime(2026, 11, 5, 12, tzinfo=UTC))
    assert before == datetime(2026, 10, 31, 6, 30, tzinfo=UTC)
    assert after == datetime(2026, 11, 6, 7, 30, tzinfo=UTC)
    with pytest.raises(ScheduleError, match="cron"):
        next_run("61 * * * *", "UTC", NOW)
    with pytest.raises(ScheduleError, match="timezone"):
        next_run("0 * * * *", "Mars/Olympus", NOW)


# --- the database and Redis ----------------------------------------------------------------
def _jobs_of(schedule_id: uuid.UUID) -> list[Job]:
    with session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.schedule_id == schedule_id)))
        for job in jobs:
            session.expunge(job)
        return jobs


@pytest.mark.services
def test_a_schedule_fires_once_per_due_time_with_two_ticks_racing() -> None:
    name = f"race-{uuid.uuid4().hex[:6]}"
    record = add_schedule(name, "*/5 * * * *", "dedup", {}, priority="low", now=NOW)
    schedule_id = uuid.UUID(record["id"])
    assert record["next_run_at"] == (NOW + timedelta(minutes=5)).isoformat()
    fired_by: list[dict[str, str]] = []
    try:
        for step in range(1, 6):  # five due times, two ticks racing at each
            at = NOW + timedelta(minutes=5 * step, seconds=1)
            barrier = threading.Barrier(2)

            def race(at: datetime = at, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                fired_by.append(fire_due(at))

            threads = [threading.Thread(target=race) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        jobs = _jobs_of(schedule_id)
        assert len(jobs) == 5, [j.params for j in jobs]
        assert sorted(j.params["due_at"] for j in jobs) == [
            (NOW + timedelta(minutes=5 * step)).isoformat() for step in range(1, 6)
        ]
        assert {(j.type, j.priority, j.created_by) for j in jobs} == {
            ("dedup", "low", f"schedule:{name}")
        }
        assert sum(len(f) for f in fired_by) == 5  # each due time fired by one tick only
        # the next tick before the next due time fires nothing
        assert fire_due(NOW + timedelta(minutes=25, seconds=30)) == {}
    finally:
        remove_schedule(name)
    # the jobs outlive their schedule
    with session_scope() as session:
        kept = session.scalars(select(Job.schedule_id).where(Job.id.in_([j.id for j in jobs])))
        assert list(kept) == [None] * 5


@pytest.mark.services
def test_missed_runs_are_coalesced_and_disabled_schedules_do_not_fire() -> None:
    from modomo.jobs.schedules import list_schedules, set_enabled

    name = f"nightly-{uuid.uuid4().hex[:6]}"
    add_schedule(name, "0 2 * * *", "colors", {"limit": 1}, timezone="Europe/London", now=NOW)
    try:
        # beat was down for three nights: one job, next run tomorrow 02:00 London
        fired = fire_due(NOW + timedelta(days=3))
        assert list(fired) == [name]
        (record,) = [r for r in list_schedules() if r["name"] == name]
        assert record["next_run_at"] == datetime(2026, 11, 25, 2, tzinfo=UTC).isoformat()
        assert record["last_job_id"] == fired[name]
        set_enabled(name, False)
        assert fire_due(NOW + timedelta(days=10)) == {}
        with pytest.raises(ScheduleError, match="name"):
            add_schedule(name, "0 3 * * *", "colors", {}, now=NOW)
        with pytest.raises(ScheduleError, match="job_type"):
            add_schedule(f"{name}-x", "0 3 * * *", "bake", {}, now=NOW)
    finally:
        remove_schedule(name)


def _ingest(
    folder: Path, count: int, size_hw: tuple[int, int], priority: str
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A colour job of ``count`` fresh noise images in one-scene batches, sent as
    ``modomo process`` sends them (in-process: ingest, then dispatch)."""
    from modomo.jobs import create_job, dispatch_batches
    from modomo.sources import expand_sources, ingest
    from modomo.tasks.color_tasks import process_colors_batch

    folder.mkdir(parents=True)
    rng = np.random.default_rng()
    for index in range(count):
        image = rng.integers(0, 256, (*size_hw, 3), dtype=np.uint8)
        (folder / f"{index:02d}.png").write_bytes(encode(image, compress_level=1))
    job_id = create_job("colors", {"stages": ["colors"]}, priority=priority)
    scene_ids = ingest(job_id, expand_sources([str(folder)])).scene_ids
    dispatch_batches(job_id, process_colors_batch, scene_ids, 1)
    return job_id, scene_ids


def _outcomes(*job_ids: uuid.UUID) -> list[tuple[uuid.UUID, datetime]]:
    with session_scope() as session:
        rows = session.execute(
            select(JobScene.job_id, JobScene.updated_at)
            .where(JobScene.job_id.in_(job_ids), JobScene.status != "pending")
            .order_by(JobScene.updated_at)
        ).all()
    return [(job_id, at) for job_id, at in rows]


@pytest.mark.services
def test_an_urgent_job_submitted_last_runs_before_the_queued_normal_batches(
    tmp_path: Path,
) -> None:
    with celery_worker("color_processing", concurrency=1, log_path=tmp_path / "worker.log"):
        normal, _ = _ingest(tmp_path / "normal", 24, (600, 800), "normal")
        # the worker is busy with the backlog's first batches when the urgent job comes
        deadline = time.monotonic() + 60
        while not _outcomes(normal):
            assert time.monotonic() < deadline, "the worker took no batch"
            time.sleep(0.02)
        submitted = datetime.now(UTC)
        urgent, _ = _ingest(tmp_path / "urgent", 2, (120, 160), "urgent")
        wait_for_job(urgent, 120)
        wait_for_job(normal, 180)
    order = _outcomes(normal, urgent)
    urgent_done = max(at for job, at in order if job == urgent)
    normal_before = [at for job, at in order if job == normal and at < urgent_done]
    normal_during = [at for at in normal_before if at >= submitted]
    print(
        f"normal outcomes before the urgent job was sent: {len(normal_before) - len(normal_during)}"
        f"; between its sending and its last outcome: {len(normal_during)}; after: "
        f"{24 - len(normal_before)} of 24"
    )
    # at most the batch running when it was sent (and one the worker may have held) precede it
    assert len(normal_during) <= 2, order
    assert 24 - len(normal_before) >= 18, order
    with session_scope() as session:
        assert session.get(Job, urgent).priority == "urgent"  # type: ignore[union-attr]


@contextmanager
def _beat(tmp_path: Path, tick_s: float = 1.0) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "beat.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "modomo.cli", "beat", "--schedule-file", str(tmp_path / "beat-db")],
        cwd=REPO,
        env=worker_env(MODOMO_SCHEDULER_TICK=str(tick_s)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while "Sending due task scheduler-tick" not in (tmp_path / "beat.log").read_text():
            assert process.poll() is None, (tmp_path / "beat.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "beat sent no tick in 90 s"
            time.sleep(0.1)
        yield process
    finally:
        stop(process)
        log.close()


@pytest.mark.services
def test_run_at_jobs_start_after_their_time_and_expired_jobs_never_run(tmp_path: Path) -> None:
    with (
        celery_worker("maintenance,color_processing", log_path=tmp_path / "worker.log"),
        _beat(tmp_path),
    ):
        run_at = datetime.now(UTC) + timedelta(seconds=5)
        later = submit_job(
            "colors", JOB_TASKS["colors"], {"limit": 1}, timing=Timing(run_at=run_at)
        )
        assert later.status == JobStatus.SCHEDULED
        time.sleep(3)
        with session_scope() as session:
            waiting = session.get(Job, later.job_id)
            assert waiting is not None
            assert (waiting.status, waiting.started_at) == (JobStatus.SCHEDULED, None)
        done = wait_for_job(later.job_id, 60)
    started = datetime.fromisoformat(done["started_at"])
    late_s = (started - run_at).total_seconds()
    print(f"run_at job started {late_s:.2f} s after its run_at (tick 1 s)")
    assert done["status"] == JobStatus.COMPLETED
    assert 0 <= late_s < 4, late_s

    # an expired job never runs: one sent (Celery expires) with no worker on its queue, and
    # one scheduled whose expiry passes before any tick sends it
    sent = submit_job("colors", JOB_TASKS["colors"], {"limit": 1}, timing=Timing.resolve(expires=1))
    scheduled = submit_job(
        "colors",
        JOB_TASKS["colors"],
        {"limit": 1},
        timing=Timing.resolve(countdown=1, expires_at=utcnow() + timedelta(seconds=2)),
    )
    time.sleep(2.5)
    report = tick()
    assert {str(sent.job_id), str(scheduled.job_id)} <= set(report.expired)
    assert str(scheduled.job_id) not in report.sent
    with celery_worker("color_processing", log_path=tmp_path / "worker2.log"):
        time.sleep(3)  # the expired message reaches the worker, which discards it
    for job_id in (sent.job_id, scheduled.job_id):
        with session_scope() as session:
            job = session.get(Job, job_id)
            assert job is not None
            assert (job.status, job.started_at, job.processed) == (JobStatus.EXPIRED, None, 0)


# --- API and CLI --------------------------------------------------------------------------
@pytest.mark.services
def test_api_job_options_and_admin_only_schedules(tmp_path: Path) -> None:
    from modomo.api.keys import create_key

    _, admin = create_key("sched-admin", "admin")
    _, user = create_key("sched-user", "user")
    with api_server(tmp_path / "api.log") as base:
        as_admin = {"Authorization": f"Bearer {admin}"}
        as_user = {"Authorization": f"Bearer {user}"}
        answer = httpx.post(
            f"{base}/process/colors",
            json={"limit": 1, "priority": "high", "countdown": 3600, "expires": 7200},
            headers=as_user,
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "scheduled"
        job = httpx.get(f"{base}/jobs/{answer.json()['job_id']}", headers=as_user).json()
        assert (job["status"], job["priority"]) == ("scheduled", "high")
        assert job["run_at"] and job["expires_at"] and job["params"] == {"limit": 1}
        assert httpx.post(f"{base}/jobs/{job['id']}/cancel", headers=as_user).status_code < 300
        bad = httpx.post(
            f"{base}/dedup",
            json={"run_at": "2026-11-22T02:00:00Z", "countdown": 5},
            headers=as_user,
        )
        assert bad.status_code == 422 and "countdown" in bad.text
        assert (
            httpx.post(f"{base}/dedup", json={"priority": "asap"}, headers=as_user).status_code
            == 422
        )

        body = {
            "name": f"nightly-houzz-{uuid.uuid4().hex[:6]}",
            "cron": "0 2 * * *",
            "timezone": "Europe/London",
            "job_type": "scrape",
            "params": {"room_types": ["bedroom"], "limit": 200},
            "priority": "low",
        }
        assert httpx.post(f"{base}/schedules", json=body, headers=as_user).status_code == 403
        assert httpx.get(f"{base}/schedules").status_code == 401
        created = httpx.post(f"{base}/schedules", json=body, headers=as_admin)
        assert created.status_code == 201, created.text
        assert created.json()["params"] == {"room_types": ["bedroom"], "limit": 200}
        listed = httpx.get(f"{base}/schedules", headers=as_admin).json()
        assert body["name"] in {s["name"] for s in listed}
        for field, value in (("cron", "99 * * * *"), ("timezone", "Nowhere/City")):
            refused = httpx.post(
                f"{base}/schedules", json={**body, "name": "x", field: value}, headers=as_admin
            )
            assert refused.status_code == 422 and field in refused.text, refused.text
        refused = httpx.post(
            f"{base}/schedules",
            json={**body, "name": "y", "params": {"limit": 0}},
            headers=as_admin,
        )
        assert refused.status_code == 422 and "params.limit" in refused.text
        off = httpx.patch(
            f"{base}/schedules/{body['name']}", json={"enabled": False}, headers=as_admin
        )
        assert off.status_code == 200 and off.json()["enabled"] is False
        assert httpx.delete(f"{base}/schedules/{body['name']}", headers=as_admin).status_code == 200
        assert httpx.get(f"{base}/schedules/{body['name']}", headers=as_admin).status_code == 404


@pytest.mark.services
def test_cli_schedules_and_job_options() -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"

    def modomo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modomo.cli", *args],
            cwd=REPO,
            env=worker_env(COLUMNS="200"),
            capture_output=True,
            text=True,
            timeout=120,
        )

    added = modomo(
        "schedules", "add", name, "--cron", "0 2 * * *", "--job", "scrape",
        "--params", '{"room_types": ["kitchen"], "limit": 50}', "--timezone", "Europe/London",
        "--priority", "low",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert name in modomo("schedules", "list").stdout
    assert modomo("schedules", "disable", name).returncode == 0
    with session_scope() as session:
        schedule = session.scalar(select(Schedule).where(Schedule.name == name))
        assert schedule is not None and not schedule.enabled and schedule.priority == "low"
    assert modomo("schedules", "enable", name).returncode == 0
    bad = modomo("schedules", "add", f"{name}-2", "--cron", "0 2 * *", "--job", "scrape")
    assert bad.returncode != 0 and "cron" in (bad.stdout + bad.stderr)
    assert modomo("schedules", "remove", name).returncode == 0
    assert modomo("schedules", "remove", name).returncode != 0

    scheduled = modomo("dedup", "--countdown", "3600", "--priority", "urgent")
    assert scheduled.returncode == 0, scheduled.stderr
    assert "scheduled for" in scheduled.stdout
    with session_scope() as session:
        job = session.scalar(select(Job).where(Job.type == "dedup").order_by(Job.created_at.desc()))
        assert job is not None and (job.status, job.priority) == ("scheduled", "urgent")
        session.execute(update(Job).where(Job.id == job.id).values(status="cancelled"))
    both = modomo("dedup", "--countdown", "5", "--run-at", "2026-11-22T02:00:00Z")
    assert both.returncode != 0 and "run_at or countdown" in (both.stdout + both.stderr)


@pytest.mark.services
def test_each_priority_is_its_own_redis_list_counted_by_depths_and_flower() -> None:
    """Four messages, one per priority, on a queue with no consumer: four Redis lists, and
    the API's queue depths and Flower's broker view both count all four."""
    import asyncio

    import redis
    from flower.utils.broker import Broker

    from modomo.celery_app import app
    from modomo.queues import queue_depths

    queue = "import"  # no worker of this test consumes it
    client = redis.Redis.from_url(app.conf.broker_url)
    for key in client.scan_iter(f"{queue}*"):
        client.delete(key)
    for name, level in Priority.MESSAGE.items():
        app.send_task(
            "modomo.tasks.import_tasks.import_huggingface_dataset",
            kwargs={"job_id": str(uuid.uuid4()), "dataset": f"probe/{name}"},
            queue=queue,
            priority=level,
        )
    try:
        lists = {key.decode(): client.llen(key) for key in client.scan_iter(f"{queue}*")}
        assert lists == {
            queue: 1,
            f"{queue}\x06\x163": 1,
            f"{queue}\x06\x166": 1,
            f"{queue}\x06\x169": 1,
        }
        assert queue_depths(app, [queue]) == {queue: 4}
        flower = Broker(app.conf.broker_url, broker_options=app.conf.broker_transport_options)
        assert asyncio.run(flower.queues([queue])) == [{"name": queue, "messages": 4}]
        # served most urgent first
        channel_order = []
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                channel_order.append(message.decode()[1]["dataset"])
        assert channel_order == [f"probe/{name}" for name in ("urgent", "high", "normal", "low")]
    finally:
        for key in client.scan_iter(f"{queue}*"):
            client.delete(key)
        client.close()
