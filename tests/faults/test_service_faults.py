"""Service faults on servers the test owns: Redis stopped for 10 s mid-job (workers reconnect,
the client keeps following, the API answers), PostgreSQL stopped for 10 s mid-job (tasks retry
with backoff, the client keeps following). Counts are checked in SQL afterwards.

After the Redis restart the workers' consumers reconnect (logged) and go on consuming (the job
completes, a second job completes), but their remote control does not answer ``ping`` again,
even from a side app created after the restart and even for an idle worker: a Celery/kombu
pidbox limitation after a broker reconnect, so the test records it instead of asserting it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from modomo.config import load_settings
from tests.faults.servers import OwnPostgres, own_postgres
from tests.faults.test_worker_faults import (
    KILL_LIMITS,
    Stack,
    noise_folder,
    record,
    stack_on,
    wait_until,
)
from tests.support import free_port

pytestmark = pytest.mark.faults

OUTAGE_S = 10
BROKER_LOST = "Connection to broker lost"
CONNECTED = "Connected to redis://"


@pytest.fixture(scope="module")
def pg() -> Iterator[OwnPostgres]:
    with own_postgres() as server:
        yield server


@pytest.fixture
def stack(pg: OwnPostgres) -> Iterator[Stack]:
    with stack_on(pg) as value:
        yield value


def _check_exact(stack: Stack, job_id: str, total: int) -> dict[str, int]:
    job = stack.job(job_id)
    counts = stack.integrity(job_id)
    reasons = [
        tuple(row)
        for row in stack.query(
            "SELECT stage, error, attempts FROM scene_failures WHERE job_id = :j", j=job_id
        )
    ]
    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        total,
        total,
        0,
    ), (job, reasons)
    assert counts["job_scene_rows"] == counts["distinct_scenes"] == total
    assert counts["duplicate_scene_rows"] == 0 and counts["pending"] == 0
    assert counts["failure_rows"] == 0
    assert counts["with_palette"] == total
    return counts


def _fresh_ping(stack: Stack, hostnames: list[str], timeout_s: float) -> float | None:
    """Seconds until every worker answers a ping on a side app created now (after the outage,
    so no pooled connection predates the restart); None if they do not within ``timeout_s``."""
    from modomo.celery_app import make_celery

    settings = load_settings(
        redis_url=stack.redis.url,
        broker_url=stack.redis.url,
        result_backend=stack.redis.url,
        database_url=stack.pg.url,
        data_dir=stack.data_dir,
    )
    app = make_celery(settings, set_as_current=False)
    started = time.monotonic()
    waiting = set(hostnames)
    try:
        while time.monotonic() - started < timeout_s:
            try:
                replies = app.control.ping(destination=sorted(waiting), timeout=1.0) or []
            except Exception:  # a connection error: try again on a new connection
                app.pool.force_close_all()
                replies = []
            for reply in replies:
                waiting -= set(reply)
            if not waiting:
                return time.monotonic() - started
            time.sleep(0.2)
        return None
    finally:
        app.close()


def _answers(get: Callable[[str], httpx.Response]) -> bool:
    try:
        return bool(get("/health").status_code == 200)
    except httpx.HTTPError:
        return False


def test_redis_outage_mid_job(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    api = stack.spawn(
        [sys.executable, "-m", "modomo.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        stack.data_dir / "api.log",
        MODOMO_AUTH_DISABLED="true",
    )
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> httpx.Response:
        return httpx.get(base + path, timeout=15)

    total = 40
    folder = noise_folder(tmp_path, "redis", total)
    # both workers are up before the job, so neither runs it alone while the other starts
    # Short limits (visibility 32 s): a batch delivered at the instant Redis stopped is held
    # in Redis's unacked set until the visibility timeout, then restored by the workers'
    # sweep (every 10 s); with the production default (2 x the hard limit) the same takes
    # hours, or the stale-job reaper gets there first. The soft limit (28 s) outlasts the
    # outage: a batch whose result write waits on Redis for the whole outage (celery's
    # backend retries) must not be cut off by it, as an 8 s one was (scenes failed "soft
    # time limit exceeded", or a hard kill lost the batch) in about 1 run in 3 on a loaded
    # machine.
    workers = [stack.worker("r1", **KILL_LIMITS), stack.worker("r2", **KILL_LIMITS)]
    wait_until(lambda: api.poll() is None and _answers(get), 60, "the API")
    client = stack.process(folder, "--batch-size", "2")
    job_id = stack.job_id(client, folder)
    stack.wait_scenes(job_id, total)
    wait_until(lambda: stack.job(job_id)["processed"] >= 2, 60, "the job to start")

    stack.redis.stop()
    down_at = time.monotonic()
    processed_at_stop = stack.job(job_id)["processed"]
    health_during = get("/health")
    ready_during = get("/ready")
    time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
    processed_at_restart = stack.job(job_id)["processed"]
    client_alive_during = client.poll() is None
    stack.redis.start()
    up_at = time.monotonic()
    ready_after_s = None
    while time.monotonic() - up_at < 30:
        if get("/ready").status_code == 200:
            ready_after_s = round(time.monotonic() - up_at, 1)
            break
        time.sleep(0.2)
    rc = client.wait(120)
    completed_after_s = time.monotonic() - up_at
    restored = sum(
        w.log.read_text().count("Restoring") for w in workers
    )  # batches in flight at the stop, put back by the worker (or swept back later)
    assert rc == 0 and client_alive_during, stack.client_log(folder)
    counts = _check_exact(stack, job_id, total)
    # the outage hit the middle of the job: batches were left in Redis when it went down
    assert processed_at_stop < total and processed_at_restart < total, processed_at_restart

    logs = {w.hostname: w.log.read_text() for w in workers}
    received_after = {}
    for worker in workers:
        log = logs[worker.hostname]
        assert worker.process.poll() is None, log[-3000:]
        # Celery 5.7's Gossip step failed its restart here (NoGossipConsumer leaves it out)
        assert "Error on restarting" not in log, log[-3000:]
        lost = log.find(BROKER_LOST)
        assert lost >= 0, log[-3000:]
        reconnected = log.find(CONNECTED, lost)
        assert reconnected > lost, log[-3000:]  # the consumer reconnected after the outage
        received_after[worker.hostname] = log.count("] received", reconnected)
        assert received_after[worker.hostname] >= 1, log[-3000:]  # ... and consumed again
    # remote control (ping) on a side app created now, after the restart: recorded, not
    # asserted (see the module docstring)
    ping_after_s = _fresh_ping(stack, [w.hostname for w in workers], 10)

    # the reconnected workers take new work: a second job completes exactly
    second = noise_folder(tmp_path, "after", 8, size_hw=(120, 160))
    second_started = time.monotonic()
    second_client = stack.process(second, "--batch-size", "2")
    second_id = stack.job_id(second_client, second)
    assert second_client.wait(60) == 0, stack.client_log(second)
    second_s = time.monotonic() - second_started
    second_counts = _check_exact(stack, second_id, 8)

    assert api.poll() is None
    assert health_during.status_code == 200
    assert ready_during.status_code == 503 and ready_during.json()["down"] == ["broker"]
    assert ready_after_s is not None, get("/ready").text
    record(
        "redis_outage",
        scenes=total,
        batch_size=2,
        workers=2,
        outage_s=round(up_at - down_at, 1),
        processed_at_stop=processed_at_stop,
        processed_at_restart=processed_at_restart,
        restart_to_completed_s=round(completed_after_s, 1),
        in_flight_batches_restored_at_stop=restored,
        client_exit=rc,
        health_during=health_during.status_code,
        ready_during=[ready_during.status_code, ready_during.json()["down"]],
        restart_to_ready_s=ready_after_s,
        broker_lost_logged={h.split("@")[0]: t.count(BROKER_LOST) for h, t in logs.items()},
        batches_received_after_reconnect={h.split("@")[0]: n for h, n in received_after.items()},
        workers_answer_fresh_ping_within_10s=ping_after_s is not None,
        second_job_s=round(second_s, 1),
        integrity=counts,
        second_job_integrity=second_counts,
    )


def test_postgres_outage_mid_job(stack: Stack, tmp_path: Path) -> None:
    total = 60
    folder = noise_folder(tmp_path, "postgres", total)
    # The worker is ready before the job exists, so the outage is timed from the job's own
    # progress (a worker still starting up could run the whole job before the first poll).
    worker = stack.worker("p1")
    client = stack.process(folder, "--batch-size", "2")
    job_id = stack.job_id(client, folder)
    stack.wait_scenes(job_id, total)
    wait_until(lambda: stack.job(job_id)["processed"] >= total // 4, 90, "a quarter of the job")

    processed_at_stop = stack.job(job_id)["processed"]
    stack.pg.stop()
    down_at = time.monotonic()
    stack.engine.dispose()
    time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
    client_alive_during = client.poll() is None
    stack.pg.start()
    up_at = time.monotonic()
    rc = client.wait(120)
    completed_after_s = time.monotonic() - up_at
    stack.engine.dispose()
    log = worker.log.read_text()
    assert rc == 0 and client_alive_during, stack.client_log(folder)[-3000:]
    assert processed_at_stop < total
    counts = _check_exact(stack, job_id, total)
    assert worker.process.poll() is None, log[-3000:]
    retries = log.count(" retry: Retry in ")
    assert retries >= 1, log[-3000:]  # the outage hit a batch, which retried
    record(
        "postgres_outage",
        scenes=total,
        batch_size=2,
        workers=1,
        outage_s=round(up_at - down_at, 1),
        processed_at_stop=processed_at_stop,
        restart_to_completed_s=round(completed_after_s, 1),
        client_exit=rc,
        task_retries_logged=retries,
        integrity=counts,
    )
