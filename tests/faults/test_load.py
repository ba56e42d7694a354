"""A burst of 1,000 jobs through the API on this test's own Redis and PostgreSQL, with two
workers: every job ends, the database and Celery agree, and Redis gives its memory back once
the results expire. Prints throughput and POST latency.

The jobs are ``POST /process/colors {"limit": 1}``, sent by 32 threads at once, after
``modomo process`` has ingested 100 images and their palettes were cleared: the first jobs each
find a scene without a palette (concurrent jobs may pick the same one), the later ones find
none and complete with no scenes, which is still a full job lifecycle (job row, start task,
final state).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.faults.servers import own_env, own_postgres, own_redis, process, side_app
from tests.support import REPO, free_port, write_unique_images

pytestmark = pytest.mark.faults

JOBS = 1000
THREADS = 32
RESULT_EXPIRES_S = 20
FINAL = ("completed", "failed", "cancelled")
STALL_S = 90  # seconds without a job ending or a result appearing before the test fails


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def test_a_burst_of_1000_jobs(tmp_path: Path) -> None:
    import redis

    with ExitStack() as stack:
        redis_server = stack.enter_context(own_redis())
        pg = stack.enter_context(own_postgres())
        data_dir = tmp_path / "data"
        env = own_env(
            redis_server.url,
            pg.url,
            data_dir,
            MODOMO_API_RATE_LIMIT="1000000/minute",
            MODOMO_RESULT_EXPIRES=str(RESULT_EXPIRES_S),
            MODOMO_LOG_LEVEL="WARNING",
        )
        side = side_app(redis_server.url, pg.url, data_dir)
        client = redis.Redis(port=redis_server.port)

        key = subprocess.run(
            [sys.executable, "-m", "modomo.cli", "keys", "create", "load", "--quiet"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()

        hostnames = [f"load{n}-{uuid.uuid4().hex[:6]}@localhost" for n in (1, 2)]
        for hostname in hostnames:
            argv = [sys.executable, "-m", "celery", "-A", "modomo.celery_app", "worker"]
            argv += ["-Q", "celery,color_processing", "-c", "2", "-n", hostname, "-l", "WARNING"]
            argv += ["--without-mingle", "--without-gossip"]
            stack.enter_context(process(argv, env, tmp_path / f"{hostname}.log"))
        port = free_port()
        api_argv = [sys.executable, "-m", "modomo.cli", "api", "--port", str(port)]
        api_child = stack.enter_context(process(api_argv, env, tmp_path / "api.log"))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180  # start-up on a loaded machine
        while len(side.control.ping(destination=hostnames, timeout=0.5) or []) < 2:
            assert time.monotonic() < deadline, "the workers did not answer"
        while True:
            assert api_child.poll() is None, (tmp_path / "api.log").read_text()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            assert time.monotonic() < deadline, "the API did not answer"

        # a warm-up request (connection pools, the limiter), then the baseline
        http = httpx.Client(
            base_url=base,
            headers={"X-API-Key": key},
            timeout=60,
            limits=httpx.Limits(max_connections=THREADS),
        )
        stack.callback(http.close)
        assert http.get("/jobs").status_code == 200
        time.sleep(1)
        baseline_memory = int(client.info("memory")["used_memory"])
        baseline_keys = int(client.dbsize())

        write_unique_images(tmp_path / "photos", 100)
        ingest = subprocess.run(
            [sys.executable, "-m", "modomo.cli", "process", str(tmp_path / "photos"), "--no-wait"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr
        # once the ingest job has coloured them, forget the palettes: the burst's first jobs
        # then each find a scene to colour
        engine = create_engine(pg.url)
        stack.callback(engine.dispose)
        progress, moved_at = None, time.monotonic()
        while True:
            with engine.begin() as connection:
                row = connection.execute(text("SELECT status, processed, failed FROM jobs")).one()
                if row.status in FINAL:
                    connection.execute(text("UPDATE scenes SET colors = NULL"))
                    break
            if tuple(row) != progress:
                progress, moved_at = tuple(row), time.monotonic()
            assert time.monotonic() - moved_at < STALL_S, f"the ingest job stalled: {row}"
            time.sleep(0.2)

        def post(_: int) -> tuple[float, httpx.Response]:
            started = time.perf_counter()
            answer = http.post("/process/colors", json={"limit": 1})
            return time.perf_counter() - started, answer

        # Every result the backend holds is read as soon as it is stored, by a thread that
        # runs from before the burst: a result expires RESULT_EXPIRES_S after it is stored,
        # and on a loaded machine the burst itself, or a job, can take longer than that.
        results: dict[str, str] = {}  # task id -> state
        stop_reading = threading.Event()

        def read_results() -> None:
            reader = redis.Redis(port=redis_server.port)
            while not stop_reading.is_set():
                keys = reader.keys("celery-task-meta-*")
                for key, meta in zip(keys, reader.mget(keys) if keys else [], strict=True):
                    if meta is not None:
                        state = re.search(rb'"status": "(\w+)"', meta).group(1).decode()
                        results[key.decode().removeprefix("celery-task-meta-")] = state
                stop_reading.wait(0.25)

        reading = threading.Thread(target=read_results, daemon=True)
        reading.start()
        stack.callback(reading.join, 10)
        stack.callback(stop_reading.set)

        burst_started = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            posted = list(pool.map(post, range(JOBS)))
        burst_s = time.monotonic() - burst_started
        statuses = [answer.status_code for _, answer in posted]
        assert statuses == [202] * JOBS, {s: statuses.count(s) for s in set(statuses)}
        latencies = [seconds * 1000 for seconds, _ in posted]
        tasks = {answer.json()["job_id"]: answer.json()["task_id"] for _, answer in posted}
        assert len(tasks) == JOBS

        # follow the jobs' states in the database and the start tasks' in the results read.
        # No fixed deadline: the test fails when neither count has moved for STALL_S.
        task_states: dict[str, str] = {}
        peak_memory = baseline_memory
        final_at: float | None = None
        progress, moved_at = (0, 0), time.monotonic()
        while True:
            with engine.connect() as connection:
                rows = connection.execute(
                    text("SELECT id::text, status FROM jobs WHERE type = 'colors'")
                ).all()
            final = {row.id for row in rows if row.status in FINAL}
            task_states = {job: results[task] for job, task in tasks.items() if task in results}
            peak_memory = max(peak_memory, int(client.info("memory")["used_memory"]))
            if len(final) == JOBS + 1 and final_at is None:
                final_at = time.monotonic()
            succeeded = sum(state == "SUCCESS" for state in task_states.values())
            if final_at is not None and succeeded == JOBS:
                break
            if (len(final), succeeded) != progress:
                progress, moved_at = (len(final), succeeded), time.monotonic()
            assert time.monotonic() - moved_at < STALL_S, (
                f"no progress for {STALL_S} s: {len(final)} of {JOBS + 1} jobs final, "
                f"{succeeded} start tasks succeeded, {len(task_states)} results seen"
            )
            time.sleep(0.25)
        stop_reading.set()
        reading.join(10)
        assert final_at is not None
        completed_s = final_at - burst_started

        # the database agrees with itself and with Celery
        with engine.connect() as connection:
            by_status = dict(
                connection.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all()
            )
            inconsistent = connection.execute(
                text("SELECT count(*) FROM jobs WHERE processed + failed != total")
            ).scalar_one()
            pending_ledger = connection.execute(
                text("SELECT count(*) FROM job_scenes WHERE status = 'pending'")
            ).scalar_one()
            with_work = connection.execute(
                text("SELECT count(*) FROM jobs WHERE type = 'colors' AND total > 0")
            ).scalar_one()
            palettes = connection.execute(
                text("SELECT count(*) FROM scenes WHERE colors IS NOT NULL")
            ).scalar_one()
        assert by_status == {"completed": JOBS + 1}, by_status
        assert inconsistent == 0 and pending_ledger == 0
        # concurrent jobs pick the same oldest scene without a palette: few distinct scenes
        assert with_work >= 1 and 1 <= palettes <= 100, (with_work, palettes)
        assert {state for state in task_states.values()} == {"SUCCESS"}
        # every priority list of each queue ("queue", "queue\x06\x163", ...) is empty
        queues = {
            q: sum(int(client.llen(k)) for k in (q, *(f"{q}\x06\x16{p}" for p in (3, 6, 9))))
            for q in ("celery", "color_processing")
        }
        assert queues == {"celery": 0, "color_processing": 0}

        # Redis gives the memory back once the results expire
        result_keys = len(client.keys("celery-task-meta-*"))
        expire_deadline = time.monotonic() + RESULT_EXPIRES_S + 30
        while client.keys("celery-task-meta-*"):
            assert time.monotonic() < expire_deadline, "results did not expire"
            time.sleep(0.5)
        time.sleep(1)
        after_memory = int(client.info("memory")["used_memory"])
        after_keys = int(client.dbsize())
        leftover = sorted(k.decode() for k in client.keys("*"))

        print(
            f"\nload: {JOBS} jobs from {THREADS} threads, 2 workers x 2 processes (2 cores)\n"
            f"  submitted in {burst_s:.1f} s: {JOBS / burst_s:.0f} jobs/s\n"
            f"  all final after {completed_s:.1f} s: {JOBS / completed_s:.0f} jobs/s completed\n"
            f"  POST latency ms: p50 {percentile(latencies, 50):.0f}, "
            f"p95 {percentile(latencies, 95):.0f}, p99 {percentile(latencies, 99):.0f}, "
            f"max {max(latencies):.0f}\n"
            f"  jobs with a scene to colour: {with_work}, scenes coloured: {palettes}\n"
            f"  redis used_memory: baseline {baseline_memory / 1e6:.2f} MB, "
            f"peak {peak_memory / 1e6:.2f} MB, after expiry {after_memory / 1e6:.2f} MB\n"
            f"  redis keys: baseline {baseline_keys}, results before expiry {result_keys}, "
            f"after {after_keys}: {leftover}"
        )
        assert result_keys > 0  # (the earliest may have expired already)
        # what may remain: the limiter's counters (two per window), kombu's bindings
        assert after_keys <= baseline_keys + 4, leftover
        assert after_memory <= baseline_memory + max(2_000_000, baseline_memory // 2), (
            baseline_memory,
            after_memory,
        )
        assert statistics.median(latencies) < 5000
