"""API under load: enqueue and dashboard latency at a constant arrival rate (open loop).

Two request streams run together against the API on loopback, for ``--duration`` seconds
(default 30) after a 3 s warm-up that is not counted:

- enqueue: ``POST /process/colors`` with ``{"limit": 1}`` at ``--enqueue-rate`` (default
  100/s); every accepted job's ``job_id`` is recorded;
- dashboard: ``GET /jobs/celery/dashboard`` at ``--dashboard-rate`` (default 20/s).

Open loop, as wrk2 does it: request i of a stream is *scheduled* at ``t0 + i / rate`` and is
started at that time whether or not earlier requests have finished (one asyncio task per
request, on uvloop when installed; httpx, HTTP/1.1 keep-alive, up to ``--connections``
connections, 200 by default, split over small clients: see ``ClientPool``), and its latency is
measured from its scheduled time, not from when it was sent. A closed-loop client
(send, wait, send again) stops sending while the server stalls, so the requests that a stall
would have delayed are never made and the percentiles hide it ("coordinated omission"); here
they are made, on time, and their wait counts. Every request counts, failed ones too: its
latency runs to its response or its failure. Also reported is how late the generator itself
started requests (``late``) and the CPU it used: when ``late`` grows, the client was short of
CPU and the figures include its own delay.

Errors are any non-2xx status and any exception (a request not answered in ``--timeout``
seconds, 10 by default, is one); 429 responses are also counted on their own. The achieved
rate is the 2xx responses divided by the window (or by the time until the window's last
response, when that is longer).

Targets: enqueue p99 < 50 ms and dashboard p95 < 100 ms at 100/s + 20/s, zero errors, and
every accepted job (the warm-up's included) present in the database afterwards (``SELECT
count(*) FROM jobs WHERE id = ANY(...)``). Then, unless ``--no-search``, the highest enqueue
rate sustained with p99 < 200 ms: the enqueue stream alone at rising rates (``--steps``),
``--step-duration`` seconds each (default 10, after a 3 s warm-up, ``--step-warmup``),
stopping at the first step with p99 >= 200 ms, any error, or an achieved rate under 95 % of
the target.

No Celery worker runs: this measures the API's enqueue path (authentication, rate limiting,
the job record in PostgreSQL, the message to Redis), not processing; the jobs stay pending.

By default the bench starts the API itself: it creates a PostgreSQL database (dropped at the
end), runs ``modomo db upgrade``, creates an API key (``modomo keys create bench --role user
--quiet``), and starts ``modomo api --workers N`` (``--api-workers``, default 2) with Redis
database 14 (``--redis-db``, flushed at the start and the end), the per-key rate limit
raised out of the way (``MODOMO_API_RATE_LIMIT=100000/second``) and ``MODOMO_LOG_LEVEL=WARNING``.
With ``--url`` and ``--api-key`` it loads a server that is already running instead (and checks
the jobs only when ``--database-url`` is given). The load generator shares the machine with the
API, PostgreSQL and Redis.

Run: ``uv run python bench/api_load.py [--duration 30] [--enqueue-rate 100] [--dashboard-rate
20] [--api-workers 2] [--no-search] [--json results.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import redis

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_BASE = "redis://127.0.0.1:6379"
CLI = [sys.executable, "-m", "modomo.cli"]
ENQUEUE_PATH = "/process/colors"
ENQUEUE_BODY = {"limit": 1}
DASHBOARD_PATH = "/jobs/celery/dashboard"
DEFAULT_STEPS = "100,150,200,300,400,600,800,1000,1200,1600,2000"
ENQUEUE_P99_TARGET_MS = 50.0
DASHBOARD_P95_TARGET_MS = 100.0
MIN_ACHIEVED = 0.95
LATE_WARNING_MS = 10.0
# Variables that would take precedence over the ones the bench sets for its own server.
OVERRIDING_ENV = (
    "MODOMO_REDIS_URL",
    "MODOMO_BROKER_URL",
    "MODOMO_RESULT_BACKEND",
    "MODOMO_ARTIFACT_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "DATABASE_URL",
)

T = TypeVar("T")


# --- the load generator ------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """One constant-rate request stream."""

    name: str
    method: str
    path: str
    rate: float
    body: dict[str, Any] | None = None
    collects_jobs: bool = False

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


class ClientPool:
    """Up to ``connections`` keep-alive connections, as small httpx clients used as one.

    httpcore's connection pool rescans all its connections on every request, polling each
    socket, at a cost that grows faster than linearly with their number; one client holding
    200 connections (as it does after the server stalls and the backlog opens them) costs
    the generator milliseconds per request, a delay that would be counted as the server's.
    Clients of at most ``PER_CLIENT`` connections keep that cost flat. A request goes to the
    first client with a free connection, else to the least busy one (it waits there).
    """

    PER_CLIENT = 8

    def __init__(self, url: str, api_key: str, connections: int, timeout_s: float) -> None:
        count = max(1, math.ceil(connections / self.PER_CLIENT))
        size = math.ceil(connections / count)
        self.limit = size
        self.clients = [
            httpx.AsyncClient(
                base_url=url,
                headers={"X-API-Key": api_key},
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                timeout=httpx.Timeout(timeout_s),
            )
            for _ in range(count)
        ]
        self.busy = [0] * count

    def _pick(self) -> int:
        for index, busy in enumerate(self.busy):
            if busy < self.limit:
                return index
        return min(range(len(self.busy)), key=self.busy.__getitem__)

    async def request(
        self, method: str, path: str, json: dict[str, Any] | None = None
    ) -> httpx.Response:
        index = self._pick()
        self.busy[index] += 1
        try:
            return await self.clients[index].request(method, path, json=json)
        finally:
            self.busy[index] -= 1

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients))


@dataclass(frozen=True)
class Sample:
    """One request: times in seconds, ``status`` None when it failed without a response."""

    scheduled: float
    latency: float
    late: float
    status: int | None
    error: str | None
    job_id: uuid.UUID | None

    @property
    def ok(self) -> bool:
        return self.error is None


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile of sorted ``values``, interpolated linearly; None if empty."""
    if not values:
        return None
    rank = (len(values) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return values[low] + (values[high] - values[low]) * (rank - low)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


@dataclass
class StreamResult:
    """A stream's counted samples (the window after the warm-up) and its warm-up samples."""

    stream: Stream
    window_s: float
    samples: list[Sample]
    warmup: list[Sample] = field(default_factory=list)
    finished_s: float = 0.0  # from the window's start to the last counted response

    @property
    def errors(self) -> int:
        return sum(not s.ok for s in self.samples)

    @property
    def rejected(self) -> int:
        return sum(s.status == 429 for s in self.samples)

    @property
    def achieved(self) -> float:
        successes = sum(s.ok for s in self.samples)
        span = max(self.window_s, self.finished_s)
        return successes / span if span > 0 else 0.0

    def latency(self, q: float) -> float | None:
        return percentile(sorted(s.latency for s in self.samples), q)

    def late(self, q: float) -> float | None:
        return percentile(sorted(s.late for s in self.samples), q)

    def error_kinds(self) -> dict[str, int]:
        return dict(Counter(s.error for s in self.samples if s.error).most_common())

    def job_ids(self) -> list[uuid.UUID]:
        """Every accepted job, the warm-up's included."""
        return [s.job_id for s in (*self.warmup, *self.samples) if s.job_id is not None]

    def summary(self) -> dict[str, Any]:
        return {
            "endpoint": self.stream.label,
            "rate": self.stream.rate,
            "requests": len(self.samples),
            "errors": self.errors,
            "rejected_429": self.rejected,
            "error_kinds": self.error_kinds(),
            "warmup_errors": sum(not s.ok for s in self.warmup),
            "achieved_rate": round(self.achieved, 2),
            "p50_ms": _ms(self.latency(50)),
            "p95_ms": _ms(self.latency(95)),
            "p99_ms": _ms(self.latency(99)),
            "max_ms": _ms(self.latency(100)),
            "late_p99_ms": _ms(self.late(99)),
        }


async def _request(
    client: ClientPool, stream: Stream, scheduled: float, timeout_s: float
) -> Sample:
    """Send one request now; its latency runs from ``scheduled`` (perf_counter seconds)."""
    late = time.perf_counter() - scheduled
    status: int | None = None
    error: str | None = None
    job_id: uuid.UUID | None = None
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.request(stream.method, stream.path, json=stream.body)
        status = response.status_code
        if not response.is_success:
            error = str(status)
        elif stream.collects_jobs:
            try:
                job_id = uuid.UUID(str(response.json()["job_id"]))
            except (ValueError, KeyError, TypeError):
                error = "no job_id in the response"
    except TimeoutError:
        error = "timeout"
    except Exception as exc:  # every failure is a data point, not a crash
        error = type(exc).__name__
    latency = time.perf_counter() - scheduled
    return Sample(scheduled, latency, late, status, error, job_id)


async def _run_stream(
    client: ClientPool,
    stream: Stream,
    t0: float,
    warmup_s: float,
    duration_s: float,
    timeout_s: float,
) -> StreamResult:
    """Start request i at ``t0 + i / rate`` without waiting for the others; gather them all."""
    n_warmup = round(warmup_s * stream.rate)
    n_total = n_warmup + round(duration_s * stream.rate)
    tasks: list[asyncio.Task[Sample]] = []
    for i in range(n_total):
        scheduled = t0 + i / stream.rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_request(client, stream, scheduled, timeout_s)))
    samples = await asyncio.gather(*tasks)
    window_start = t0 + n_warmup / stream.rate
    counted = list(samples[n_warmup:])
    finished = max((s.scheduled + s.latency for s in counted), default=window_start)
    return StreamResult(
        stream=stream,
        window_s=(n_total - n_warmup) / stream.rate,
        samples=counted,
        warmup=list(samples[:n_warmup]),
        finished_s=finished - window_start,
    )


@dataclass
class Run:
    """Streams run together, and the CPU the generator itself used meanwhile."""

    streams: list[StreamResult]
    client_cpu_s: float
    wall_s: float

    @property
    def client_cpu(self) -> dict[str, float]:
        """The generator's CPU: share of one core, and microseconds per request."""
        requests = sum(len(r.samples) + len(r.warmup) for r in self.streams)
        return {
            "core_share": round(self.client_cpu_s / self.wall_s, 3),
            "us_per_request": round(self.client_cpu_s / max(requests, 1) * 1e6),
        }


async def run_streams(
    client: ClientPool,
    streams: list[Stream],
    warmup_s: float,
    duration_s: float,
    timeout_s: float,
) -> Run:
    """Run ``streams`` together from a common start: ``warmup_s`` uncounted, then the window."""
    # No garbage collection while it runs: a full pass over the requests' objects pauses the
    # generator for tens of milliseconds, which would count as latency. Collected after.
    gc.collect()
    gc.disable()
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        t0 = wall + 0.05
        results = await asyncio.gather(
            *(_run_stream(client, s, t0, warmup_s, duration_s, timeout_s) for s in streams)
        )
        return Run(list(results), time.process_time() - cpu, time.perf_counter() - wall)
    finally:
        gc.enable()
        gc.collect()


def _event_loop() -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop when it is installed (it costs the client less CPU), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return "asyncio event loop", asyncio.new_event_loop
    return "uvloop", uvloop.new_event_loop


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` to completion on a fresh event loop (uvloop when installed)."""
    with asyncio.Runner(loop_factory=_event_loop()[1]) as runner:
        return runner.run(main())


# --- the server under test ---------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The API to load, its key, and the database to check the jobs in (psycopg URL)."""

    url: str
    api_key: str
    database_url: str | None
    description: str


def _psycopg_url(url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy) -> ``postgresql://...`` (libpq)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(args: list[str], env: dict[str, str]) -> str:
    """Run ``modomo ARGS`` with ``env``; its stdout, or exit with its stderr."""
    result = subprocess.run(
        [*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise SystemExit(
            f"`modomo {' '.join(args)}` failed ({result.returncode}):\n"
            f"{(result.stderr or result.stdout)[-3000:]}"
        )
    return result.stdout


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the API exited ({server.returncode}):\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"GET /health did not answer 200 in {timeout_s:.0f} s:\n{_tail(log)}")


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s; then whatever is left of its process group."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.pid, signal.SIGKILL)  # its own group (start_new_session)


@contextlib.contextmanager
def managed_api(args: argparse.Namespace) -> Iterator[Target]:
    """A fresh database, schema, API key and ``modomo api`` process; all removed afterwards."""
    database = f"modomo_bench_{secrets.token_hex(4)}"
    redis_url = f"{REDIS_BASE}/{args.redis_db}"
    database_url = f"postgresql://postgres@127.0.0.1:5432/{database}"
    work = Path(tempfile.mkdtemp(prefix="modomo-api-bench-"))
    log = work / "api.log"
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDING_ENV}
    env.update(
        {
            "REDIS_URL": redis_url,
            "MODOMO_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            "MODOMO_DATA_DIR": str(work / "data"),
            "MODOMO_API_RATE_LIMIT": "100000/second",
            "MODOMO_LOG_LEVEL": "WARNING",
        }
    )
    with psycopg.connect(args.pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    redis.Redis.from_url(redis_url).flushdb()
    server: subprocess.Popen[bytes] | None = None
    try:
        _cli(["db", "upgrade"], env)
        key_lines = _cli(["keys", "create", "bench", "--role", "user", "--quiet"], env).split()
        if not key_lines:
            raise SystemExit("`modomo keys create --quiet` printed no key")
        port = args.port or _free_port()
        url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [*CLI, "api", "--host", "127.0.0.1", "--port", str(port)]
                + ["--workers", str(args.api_workers)],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_healthy(url, server, log, args.start_timeout)
        yield Target(
            url=url,
            api_key=key_lines[-1],
            database_url=database_url,
            description=(
                f"modomo api --workers {args.api_workers} (started by the bench), "
                f"PostgreSQL + Redis db {args.redis_db} on loopback, no Celery worker"
            ),
        )
    except Exception:
        if server is not None and log.exists():
            print(f"--- last lines of the API's log ---\n{_tail(log)}", file=sys.stderr)
        raise
    finally:
        if server is not None:
            _stop(server)
        with psycopg.connect(args.pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        redis.Redis.from_url(redis_url).flushdb()
        shutil.rmtree(work, ignore_errors=True)


def jobs_in_database(database_url: str, job_ids: list[uuid.UUID]) -> int:
    """How many of ``job_ids`` have a row in ``jobs``."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s)", (job_ids,)).fetchone()
    return int(row[0]) if row else 0


# --- the two phases ----------------------------------------------------------------------


def _client(target: Target, args: argparse.Namespace) -> ClientPool:
    return ClientPool(target.url, target.api_key, args.connections, args.timeout)


def steady_phase(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 1: both streams at their rates, the targets, then the jobs in the database."""
    streams = [
        Stream("enqueue", "POST", ENQUEUE_PATH, args.enqueue_rate, ENQUEUE_BODY, True),
        Stream("dashboard", "GET", DASHBOARD_PATH, args.dashboard_rate),
    ]
    streams = [s for s in streams if s.rate > 0]

    async def go() -> Run:
        async with _client(target, args) as client:
            return await run_streams(client, streams, args.warmup, args.duration, args.timeout)

    run = run_async(go)
    results = {r.stream.name: r for r in run.streams}
    summaries = {name: r.summary() for name, r in results.items()}
    targets: dict[str, Any] = {}
    if "enqueue" in summaries:
        p99 = summaries["enqueue"]["p99_ms"]
        targets["enqueue_p99_ms"] = {
            "value": p99,
            "target": f"< {ENQUEUE_P99_TARGET_MS:g}",
            "met": p99 is not None and p99 < ENQUEUE_P99_TARGET_MS,
        }
    if "dashboard" in summaries:
        p95 = summaries["dashboard"]["p95_ms"]
        targets["dashboard_p95_ms"] = {
            "value": p95,
            "target": f"< {DASHBOARD_P95_TARGET_MS:g}",
            "met": p95 is not None and p95 < DASHBOARD_P95_TARGET_MS,
        }
    errors = sum(r.errors for r in results.values())
    targets["errors"] = {"value": errors, "target": "0", "met": errors == 0}
    database: dict[str, Any] | None = None
    if "enqueue" in results and target.database_url:
        accepted = results["enqueue"].job_ids()
        found = jobs_in_database(target.database_url, accepted)
        database = {"accepted": len(accepted), "in_database": found}
        targets["jobs_in_database"] = {
            "value": f"{found}/{len(accepted)}",
            "target": "all",
            "met": found == len(accepted),
        }
    return {
        "streams": summaries,
        "targets": targets,
        "database": database,
        "client_cpu": run.client_cpu,
    }


def search_phase(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 2: the enqueue stream alone at rising rates until a step fails."""
    limit_s = args.p99_limit_ms / 1000
    rates = [float(r) for r in args.steps.split(",") if r.strip()]

    async def go() -> list[tuple[Run, str | None]]:
        steps: list[tuple[Run, str | None]] = []
        async with _client(target, args) as client:
            for rate in rates:
                stream = Stream("enqueue", "POST", ENQUEUE_PATH, rate, ENQUEUE_BODY, True)
                run = await run_streams(
                    client, [stream], args.step_warmup, args.step_duration, args.timeout
                )
                result = run.streams[0]
                p99 = result.latency(99) or 0.0
                failure = None
                if result.errors:
                    failure = f"{result.errors} errors ({', '.join(result.error_kinds())})"
                elif p99 >= limit_s:
                    failure = f"p99 {p99 * 1000:.0f} ms"
                elif result.achieved < MIN_ACHIEVED * rate:
                    failure = f"achieved {result.achieved:.0f}/s"
                steps.append((run, failure))
                if failure:
                    break
        return steps

    steps = run_async(go)
    passed = [run.streams[0].stream.rate for run, failure in steps if failure is None]
    accepted = [job for run, _ in steps for job in run.streams[0].job_ids()]
    database = None
    if target.database_url:
        database = {
            "accepted": len(accepted),
            "in_database": jobs_in_database(target.database_url, accepted),
        }
    return {
        "p99_limit_ms": args.p99_limit_ms,
        "steps": [
            {
                **run.streams[0].summary(),
                "client_cpu": run.client_cpu,
                "passed": failure is None,
                "failure": failure,
            }
            for run, failure in steps
        ],
        "highest_rate": max(passed, default=None),
        "all_passed": len(passed) == len(rates),
        "database": database,
    }


# --- output ------------------------------------------------------------------------------


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def print_steady(phase: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\n### Steady load: {args.duration:g} s after a {args.warmup:g} s warm-up\n\n"
        "| endpoint | rate/s | requests | errors | 429 | achieved/s "
        "| p50 ms | p95 ms | p99 ms | max ms | late p99 ms |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    )
    for s in phase["streams"].values():
        print(
            f"| `{s['endpoint']}` | {s['rate']:g} | {s['requests']} | {s['errors']} "
            f"| {s['rejected_429']} | {s['achieved_rate']:.1f} | {_cell(s['p50_ms'])} "
            f"| {_cell(s['p95_ms'])} | {_cell(s['p99_ms'])} | {_cell(s['max_ms'])} "
            f"| {_cell(s['late_p99_ms'])} |"
        )
    print()
    for s in phase["streams"].values():
        if s["error_kinds"]:
            kinds = ", ".join(f"{k} x{n}" for k, n in s["error_kinds"].items())
            print(f"errors on `{s['endpoint']}`: {kinds}")
        if s["warmup_errors"]:
            print(f"(`{s['endpoint']}` also failed {s['warmup_errors']} times in the warm-up)")
    db = phase["database"]
    if db is not None:
        print(
            f"jobs: accepted {db['accepted']} (warm-up included), in database {db['in_database']}"
        )
    else:
        print("jobs: not checked (no database; give --database-url with --url)")
    labels = {
        "enqueue_p99_ms": "enqueue p99 (ms)",
        "dashboard_p95_ms": "dashboard p95 (ms)",
        "errors": "errors",
        "jobs_in_database": "accepted jobs in the database",
    }
    for name, t in phase["targets"].items():
        value = _cell(t["value"]) if isinstance(t["value"], float) else t["value"]
        print(f"{labels[name]}: {value} (target {t['target']}) -> {_verdict(t['met'])}")
    cpu = phase["client_cpu"]
    print(
        f"load generator CPU: {cpu['core_share']:.0%} of one core "
        f"({cpu['us_per_request']} us per request)"
    )
    _warn_late(list(phase["streams"].values()))


def print_search(phase: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\n### Highest enqueue rate with p99 < {args.p99_limit_ms:g} ms "
        f"({args.step_duration:g} s steps, dashboard off)\n\n"
        "| enqueue rate/s | achieved/s | requests | errors | 429 | p50 ms | p99 ms "
        "| late p99 ms | client CPU | step |\n"
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
    )
    for s in phase["steps"]:
        verdict = "pass" if s["passed"] else f"fail: {s['failure']}"
        print(
            f"| {s['rate']:g} | {s['achieved_rate']:.1f} | {s['requests']} | {s['errors']} "
            f"| {s['rejected_429']} | {_cell(s['p50_ms'])} | {_cell(s['p99_ms'])} "
            f"| {_cell(s['late_p99_ms'])} | {s['client_cpu']['core_share']:.0%} | {verdict} |"
        )
    print()
    best = phase["highest_rate"]
    if best is None:
        first = phase["steps"][0]["rate"]
        print(f"highest sustained enqueue rate: none (the first step, {first:g}/s, failed)")
    elif phase["all_passed"]:
        print(f"highest sustained enqueue rate: >= {best:g}/s (every step passed; add --steps)")
    else:
        print(f"highest sustained enqueue rate with p99 < {args.p99_limit_ms:g} ms: {best:g}/s")
    db = phase["database"]
    if db is not None:
        print(f"jobs: accepted {db['accepted']} in the steps, in database {db['in_database']}")
    _warn_late(phase["steps"])


def _warn_late(summaries: list[dict[str, Any]]) -> None:
    late = [s for s in summaries if (s["late_p99_ms"] or 0) > LATE_WARNING_MS]
    for s in late:
        print(
            f"note: at {s['rate']:g}/s the generator started `{s['endpoint']}` requests "
            f"{s['late_p99_ms']:.0f} ms late (p99): it was short of CPU, and that delay is "
            "in the latencies"
        )


# --- main --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    server = parser.add_argument_group("server (default: started by the bench)")
    server.add_argument("--url", help="load an already-running API at this base URL instead")
    server.add_argument("--api-key", help="its API key (with --url)")
    server.add_argument(
        "--database-url", help="with --url: its PostgreSQL database, to check the jobs in"
    )
    server.add_argument("--api-workers", type=int, default=2, help="modomo api --workers")
    server.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    server.add_argument("--redis-db", type=int, default=14, help="Redis database (flushed)")
    server.add_argument("--pg-admin-url", default=PG_ADMIN, help="to create/drop the database")
    server.add_argument("--start-timeout", type=float, default=30.0, help="seconds for /health")
    load = parser.add_argument_group("load")
    load.add_argument("--duration", type=float, default=30.0, help="counted seconds")
    load.add_argument("--warmup", type=float, default=3.0, help="uncounted seconds first")
    load.add_argument("--enqueue-rate", type=float, default=100.0, help="POST /process/colors/s")
    load.add_argument("--dashboard-rate", type=float, default=20.0, help="dashboard GETs/s")
    load.add_argument("--connections", type=int, default=200, help="client connection pool")
    load.add_argument("--timeout", type=float, default=10.0, help="seconds before a request fails")
    search = parser.add_argument_group("rate search")
    search.add_argument("--no-search", action="store_true", help="skip the rate search")
    search.add_argument("--steps", default=DEFAULT_STEPS, help="enqueue rates to try, in order")
    search.add_argument("--step-duration", type=float, default=10.0, help="counted s per step")
    search.add_argument("--step-warmup", type=float, default=3.0, help="uncounted s per step")
    search.add_argument("--p99-limit-ms", type=float, default=200.0, help="a step's p99 limit")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    if args.url and not args.api_key:
        parser.error("--url needs --api-key")
    if args.database_url and not args.url:
        parser.error("--database-url goes with --url (the bench checks its own database)")
    if min(args.enqueue_rate, args.dashboard_rate) < 0 or not (
        args.enqueue_rate or args.dashboard_rate
    ):
        parser.error("rates must be >= 0, and one of them > 0")
    try:
        steps = [float(r) for r in args.steps.split(",") if r.strip()]
    except ValueError:
        parser.error("--steps: comma-separated rates, e.g. 100,200,400")
    if not steps or min(steps) <= 0:
        parser.error("--steps: at least one rate, all > 0")
    return args


def run(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Both phases against ``target``."""
    results: dict[str, Any] = {
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "server": target.description,
        "generator": (
            f"open loop, httpx {httpx.__version__}, HTTP/1.1 keep-alive, "
            f"up to {args.connections} connections, {_event_loop()[0]}"
        ),
        "steady": steady_phase(target, args),
    }
    if not args.no_search:
        results["search"] = search_phase(target, args)
    return results


def main() -> None:
    args = parse_args()
    if args.url:
        target = Target(
            url=args.url.rstrip("/"),
            api_key=args.api_key,
            database_url=_psycopg_url(args.database_url) if args.database_url else None,
            description=f"{args.url} (already running)",
        )
        results = run(target, args)
    else:
        with managed_api(args) as target:
            results = run(target, args)
    m = results["machine"]
    print(f"machine: {m['arch']}, {m['cpus']} CPUs, Python {m['python']}")
    print(f"server: {results['server']}")
    print(f"load generator: {results['generator']}, on the same machine")
    print_steady(results["steady"], args)
    if "search" in results:
        print_search(results["search"], args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
