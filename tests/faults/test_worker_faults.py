"""Worker faults on servers the test owns (its own redis-server and PostgreSQL cluster):
a worker SIGKILLed mid-batch, soft and hard time limits, the visibility timeout against
duplicate deliveries, and the stale-job reaper recovering a job whose only worker is gone.

Everything runs as real processes: ``modomo process`` (the client), ``modomo worker``s and the
reaper, with the environment pointing at this test's servers only. A batch is held "in the
middle" deterministically by replacing one scene's stored image with a named pipe (a stalled
storage read): the batch's earlier scenes are counted, and the batch waits on that read until
the test feeds the pipe (or kills the worker).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, text

from modomo.config import ConfigError, load_settings
from tests.faults.servers import OwnPostgres, OwnRedis, own_postgres, own_redis
from tests.support import REPO, ai_worker_settings, encode, worker_env

pytestmark = pytest.mark.faults

PY = sys.executable
QUEUE = "color_processing"
AI_QUEUE = "ai_processing"
KILL_VISIBILITY_S = 32
KILL_LIMITS = {
    "MODOMO_TASK_SOFT_TIME_LIMIT": "28",
    "MODOMO_TASK_TIME_LIMIT": "30",
    "MODOMO_VISIBILITY_TIMEOUT": str(KILL_VISIBILITY_S),
}
SHORT_LIMITS = {
    "MODOMO_TASK_SOFT_TIME_LIMIT": "8",
    "MODOMO_TASK_TIME_LIMIT": "10",
    "MODOMO_VISIBILITY_TIMEOUT": "12",
}
_DROP = (
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "DATABASE_URL",
    "MODOMO_BROKER_URL",
    "MODOMO_RESULT_BACKEND",
    "MODOMO_REDIS_URL",
    "MODOMO_ARTIFACT_URL",
)


# --- figures ------------------------------------------------------------------------------
def record(test: str, **figures: Any) -> None:
    """Print the measured figures and write them as one JSON line to MODOMO_FAULT_REPORT_DIR."""
    line = json.dumps({"test": test, **figures}, sort_keys=True, default=str)
    print(line)
    folder = os.environ.get("MODOMO_FAULT_REPORT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with (Path(folder) / f"{test}.jsonl").open("a") as out:
            out.write(line + "\n")


# --- the test's own stack -----------------------------------------------------------------
@dataclass
class Stack:
    """This test's servers, data folder and the processes it started."""

    redis: OwnRedis
    pg: OwnPostgres
    data_dir: Path
    engine: Engine
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _app: Any = None

    def env(self, **extra: str) -> dict[str, str]:
        env = worker_env()
        for name in _DROP:
            env.pop(name, None)
        env.update(
            REDIS_URL=self.redis.url,
            MODOMO_DATABASE_URL=self.pg.url,
            MODOMO_DATA_DIR=str(self.data_dir),
            MODOMO_BATCH_SIZE="4",
            MODOMO_PROGRESS_INTERVAL="0.2",
        )
        env.update(extra)
        return env

    @property
    def app(self) -> Any:
        """A side Celery app on this test's Redis (for ping, inspect and send_task)."""
        if self._app is None:
            from modomo.celery_app import make_celery

            settings = load_settings(
                redis_url=self.redis.url,
                broker_url=self.redis.url,
                result_backend=self.redis.url,
                database_url=self.pg.url,
                data_dir=self.data_dir,
            )
            self._app = make_celery(settings, set_as_current=False)
        return self._app

    def spawn(self, argv: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv, cwd=REPO, env=self.env(**env), stdout=out, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        return process

    # --- workers --------------------------------------------------------------------------
    def worker(self, name: str, concurrency: int = 1, queue: str = QUEUE, **env: str) -> Worker:
        """Start ``modomo worker`` on ``queue`` (the colour queue); returns once it answers a
        ping."""
        hostname = f"{name}-{uuid.uuid4().hex[:6]}@localhost"
        log = self.data_dir / f"worker-{name}.log"
        argv = [PY, "-m", "modomo.cli", "worker", "-Q", queue, "-c", str(concurrency)]
        process = self.spawn([*argv, "-n", hostname], log, **env)
        worker = Worker(hostname, process, log)
        deadline = time.monotonic() + 60
        while not self.ping(hostname):
            assert process.poll() is None, f"worker exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no ping from {hostname}: {log.read_text()}"
        return worker

    def ping(self, hostname: str, timeout: float = 1.0) -> bool:
        import redis

        for _ in range(3):  # the side app's pooled connection may predate a Redis restart
            try:
                return bool(self.app.control.ping(destination=[hostname], timeout=timeout))
            except redis.ConnectionError:
                time.sleep(0.5)
        return False

    def active_scenes(self, worker: Worker) -> set[str]:
        """Scene ids of the batches the worker is running now."""
        active = self.app.control.inspect([worker.hostname], timeout=2).active() or {}
        scenes: set[str] = set()
        for task in active.get(worker.hostname, []):
            args = task.get("args") or []
            if len(args) > 1:
                scenes.update(args[1])
        return scenes

    # --- the client -----------------------------------------------------------------------
    def process(self, folder: Path, *options: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``modomo process FOLDER`` (ingest, dispatch, follow)."""
        log = self.data_dir / f"client-{folder.name}.log"
        argv = [PY, "-m", "modomo.cli", "process", str(folder), "--show", "0", *options]
        return self.spawn(argv, log, **env)

    def job_id(self, client: subprocess.Popen[bytes], folder: Path, timeout: float = 60) -> str:
        """The job a client started (its first output line names it)."""
        log = self.data_dir / f"client-{folder.name}.log"
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(r"job ([0-9a-f-]{36})", log.read_text() if log.exists() else "")
            if found:
                return found.group(1)
            assert client.poll() is None or found, log.read_text()
            assert time.monotonic() < deadline, "the client named no job"
            time.sleep(0.05)

    def client_log(self, folder: Path) -> str:
        return (self.data_dir / f"client-{folder.name}.log").read_text()

    # --- the database ---------------------------------------------------------------------
    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(text(sql), params))

    def job(self, job_id: str) -> dict[str, Any]:
        (row,) = self.query(
            "SELECT status, total, processed, failed, message, params FROM jobs WHERE id = :j",
            j=job_id,
        )
        return dict(row._mapping)

    def wait_job(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            assert time.monotonic() < deadline, f"job {job_id} not final: {job}"
            time.sleep(0.1)

    def wait_scenes(self, job_id: str, total: int, timeout: float = 60) -> list[str]:
        """The job's scene ids once ingest put ``total`` of them in it."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.query("SELECT scene_id FROM job_scenes WHERE job_id = :j", j=job_id)
            if len(rows) >= total and self.job(job_id)["total"] >= total:
                return [str(r[0]) for r in rows]
            assert time.monotonic() < deadline, "ingest did not finish"
            time.sleep(0.05)

    def scene_done(self, job_id: str, scene_id: str) -> bool:
        rows = self.query(
            "SELECT status FROM job_scenes WHERE job_id = :j AND scene_id = :s",
            j=job_id,
            s=scene_id,
        )
        return bool(rows) and rows[0][0] != "pending"

    def queued_batches(self, queue: str = QUEUE) -> list[list[str]]:
        """The scene ids of the batches waiting in the queue, next to be consumed first."""
        import redis

        from modomo.db.models import Priority

        client = redis.Redis.from_url(self.redis.url)
        batches = []
        # kombu keeps one list per priority step ("queue", "queue\x06\x163", ...), serving
        # the lowest step first and, within a list, the oldest (rightmost) message first
        for step in Priority.STEPS:
            key = queue if step == 0 else f"{queue}\x06\x16{step}"
            for raw in reversed(client.lrange(key, 0, -1)):
                body = json.loads(base64.b64decode(json.loads(raw)["body"]))
                batches.append(list(body[0][1]))
        client.close()
        return batches

    def integrity(self, job_id: str) -> dict[str, int]:
        """Duplicates and ledger rows of a job, counted in SQL."""
        (row,) = self.query(
            """
            SELECT
              (SELECT count(*) FROM job_scenes WHERE job_id = :j) AS job_scene_rows,
              (SELECT count(DISTINCT scene_id) FROM job_scenes WHERE job_id = :j)
                AS distinct_scenes,
              (SELECT count(*) FROM job_scenes WHERE job_id = :j AND status = 'pending')
                AS pending,
              (SELECT count(*) FROM scenes s JOIN job_scenes js ON js.scene_id = s.id
                 WHERE js.job_id = :j AND s.colors IS NOT NULL) AS with_palette,
              (SELECT count(*) - count(DISTINCT sha256) FROM scenes) AS duplicate_scene_rows,
              (SELECT count(*) FROM scene_failures WHERE job_id = :j) AS failure_rows,
              (SELECT count(*) FROM detected_objects WHERE job_id = :j) AS object_rows,
              (SELECT count(*) FROM scenes s JOIN job_scenes js ON js.scene_id = s.id
                 WHERE js.job_id = :j AND s.updated_at > js.updated_at) AS redone
            """,
            j=job_id,
        )
        return dict(row._mapping)

    def reap(self, **env: str) -> list[dict[str, Any]]:
        """Run the stale-job reaper (stale after 1 s) in a process on this stack."""
        code = (
            "import json; import modomo.tasks.color_tasks; "
            "from modomo.maintenance import reap_stale_jobs; "
            "print(json.dumps(reap_stale_jobs(stale_after_s=1)))"
        )
        out = subprocess.run(
            [PY, "-c", code], cwd=REPO, env=self.env(**env), capture_output=True, timeout=120
        )
        assert out.returncode == 0, out.stderr.decode()[-3000:]
        return json.loads(out.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]

    def stall(self, scene_id: str) -> Stall:
        (key,) = self.query("SELECT image_key FROM scenes WHERE id = :s", s=scene_id)[0]
        return Stall(self.data_dir / "artifacts" / key)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                kill_tree(process.pid)
                process.wait()


@dataclass
class Worker:
    hostname: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the worker's pool children and then its parent, as a machine dying would."""
        kill_tree(self.process.pid)
        self.process.wait(20)

    def child_pids(self) -> set[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return {int(pid) for pid in out.stdout.split()}

    def host_pids(self) -> set[int]:
        """The pool children's own children: an AI worker's host processes."""
        found: set[int] = set()
        for child in self.child_pids():
            out = subprocess.run(["pgrep", "-P", str(child)], capture_output=True, text=True)
            found.update(int(pid) for pid in out.stdout.split())
        return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, or a pid gone, counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_tree(pid: int) -> None:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    for child in out.stdout.split():
        with suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Stall:
    """A scene's stored image replaced by a named pipe: reading it blocks (a stalled storage
    read) until :meth:`release` feeds the reader the real bytes and puts the file back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        path.unlink()
        os.mkfifo(path)
        self.fed = False

    def release(self) -> None:
        tmp = self.path.with_name(self.path.name + ".real")
        tmp.write_bytes(self.data)
        try:  # a reader blocked on the pipe? (ENXIO: none)
            fd: int | None = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            fd = None
        os.replace(tmp, self.path)  # new readers get the real file
        if fd is not None:
            self.fed = True
            os.set_blocking(fd, True)
            threading.Thread(target=self._feed, args=(fd,), daemon=True).start()

    def _feed(self, fd: int) -> None:
        try:
            view = memoryview(self.data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            pass  # the reader died
        finally:
            os.close(fd)


@contextmanager
def stack_on(pg: OwnPostgres) -> Iterator[Stack]:
    """A fresh redis-server and data folder on the module's PostgreSQL; stops what it started."""
    data_dir = Path(tempfile.mkdtemp(prefix="modomo-fault-data-"))
    engine = create_engine(pg.url, pool_pre_ping=True)
    with own_redis() as redis_server:
        stack = Stack(redis_server, pg, data_dir, engine)
        try:
            yield stack
        finally:
            stack.stop_all()
            engine.dispose()
            if stack._app is not None:
                stack._app.close()


@pytest.fixture(scope="module")
def pg() -> Iterator[OwnPostgres]:
    with own_postgres() as server:
        yield server


@pytest.fixture
def stack(pg: OwnPostgres) -> Iterator[Stack]:
    with stack_on(pg) as value:
        yield value


def noise_folder(root: Path, name: str, count: int, size_hw: tuple[int, int] = (600, 800)) -> Path:
    """``count`` distinct noise PNGs named in order (``00.png`` …)."""
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng()
    for index in range(count):
        image = rng.integers(0, 256, (*size_hw, 3), dtype=np.uint8)
        (folder / f"{index:02d}.png").write_bytes(encode(image, compress_level=1))
    return folder


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stall_first_batches(stack: Stack, job_id: str, total: int, n: int) -> list[Stall]:
    """Once the job's batches are queued, stall the 2nd scene of each of the first ``n``."""
    stack.wait_scenes(job_id, total)
    wait_until(lambda: len(stack.queued_batches()) * 4 >= total, 30, "the batches")
    return [stack.stall(batch[1]) for batch in stack.queued_batches()[:n]]


# --- 1. a worker killed mid-batch -----------------------------------------------------------
def test_killed_worker_batch_is_redelivered_to_another_worker(stack: Stack, tmp_path: Path) -> None:
    folder = noise_folder(tmp_path, "killed", 16)
    client = stack.process(folder, "--batch-size", "4", "--no-wait")
    job_id = stack.job_id(client, folder)
    assert client.wait(60) == 0, stack.client_log(folder)
    (stall,) = stall_first_batches(stack, job_id, 16, 1)
    doomed_batch = stack.queued_batches()[0]

    # the stalled batch must still be stalled when the second worker is up: its soft limit
    # outlasts a slow start (seconds on a loaded machine)
    one = stack.worker("one", **KILL_LIMITS)
    two = stack.worker("two", **KILL_LIMITS)
    workers = [one, two]
    # the worker that took the stalled batch counts its first scene, then waits on the read
    wait_until(lambda: stack.scene_done(job_id, doomed_batch[0]), 30, "the batch's 1st scene")
    # inspect replies can time out on a loaded machine: ask again until one worker answers
    holders: list[Worker] = []

    def one_holder() -> bool:
        holders[:] = [w for w in workers if set(doomed_batch) & stack.active_scenes(w)]
        return len(holders) == 1

    wait_until(one_holder, 60, "exactly one worker holding the stalled batch")
    (doomed,) = holders
    (survivor,) = [w for w in workers if w is not doomed]
    counted_before = sum(stack.scene_done(job_id, s) for s in doomed_batch)
    doomed.kill()
    killed_at = time.monotonic()
    stall.release()  # the storage works again; the killed reader is gone
    assert not stall.fed

    # the survivor finishes every other batch; the killed one waits for the visibility timeout
    wait_until(lambda: stack.job(job_id)["processed"] == 16 - 4 + counted_before, 120, "others")
    assert stack.job(job_id)["status"] == "running"
    # kombu's Redis transport scans for expired unacked messages when a worker starts and
    # then every 10 x 10 s; a replacement worker started after the timeout restores it now.
    time.sleep(max(0.0, killed_at + KILL_VISIBILITY_S + 0.5 - time.monotonic()))
    replacement = stack.worker("replacement", **KILL_LIMITS)
    job = stack.wait_job(job_id, timeout=90)
    recovered_s = time.monotonic() - killed_at
    counts = stack.integrity(job_id)

    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        16,
        16,
        0,
    ), job
    assert counts["job_scene_rows"] == counts["distinct_scenes"] == 16
    assert counts["duplicate_scene_rows"] == 0 and counts["failure_rows"] == 0
    assert counts["with_palette"] == 16 and counts["pending"] == 0
    redone = counts["redone"]
    assert redone >= counted_before >= 1  # scenes counted before the kill were recomputed
    logs = {w.hostname: w.log.read_text() for w in (survivor, replacement)}
    task_ids = re.findall(
        r"process_colors_batch\[([0-9a-f-]{36})\] received", doomed.log.read_text()
    )
    assert task_ids, doomed.log.read_text()
    redelivered_to = [h for h, text_ in logs.items() if task_ids[-1] + "] succeeded" in text_]
    assert redelivered_to, "the killed batch ran again on another worker"
    assert stack.ping(survivor.hostname)
    record(
        "worker_sigkill_mid_batch",
        scenes=16,
        batch_size=4,
        limits="soft 8 s / hard 10 s / visibility 12 s",
        counted_in_killed_batch_before_kill=counted_before,
        scenes_recomputed_after_counting=redone,
        kill_to_completed_s=round(recovered_s, 1),
        redelivered_to=redelivered_to[0].split("-")[0],
        job=[job["status"], job["processed"], job["failed"], job["total"]],
        integrity=counts,
    )


def ai_env(tiny_models: dict[str, Path], **extra: str) -> dict[str, str]:
    """An AI worker's settings (:func:`tests.support.ai_worker_settings`) plus ``extra``."""
    return {**ai_worker_settings(tiny_models), **extra}


def test_killed_ai_worker_counts_each_scene_once(
    stack: Stack, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    """The pipelined AI worker (host processes decoding and finishing beside the models) is
    SIGKILLed holding a batch: the batch comes back after the visibility timeout, and every
    scene is counted once, with one set of objects."""
    from tests.fixture_scenes import synthetic_scenes

    folder = tmp_path / "ai-killed"
    folder.mkdir()
    for index, (rgb, _, _) in enumerate(synthetic_scenes(8, seed=41)):
        (folder / f"{index:02d}.png").write_bytes(encode(rgb))
    # a chunk per scene: the batch's first is counted alone
    ai = ai_env(tiny_models, MODOMO_AI_BATCH_SIZE="1", **KILL_LIMITS)
    client = stack.process(folder, "--pipeline", "full", "--batch-size", "4", "--no-wait", **ai)
    job_id = stack.job_id(client, folder)
    assert client.wait(60) == 0, stack.client_log(folder)
    wait_until(lambda: len(stack.queued_batches(AI_QUEUE)) == 2, 30, "the batches")
    doomed_batch = stack.queued_batches(AI_QUEUE)[0]
    stall = stack.stall(doomed_batch[1])

    doomed = stack.worker("ai-one", queue=AI_QUEUE, **ai)
    # the worker counts the batch's first scene, then waits on the second's read
    wait_until(lambda: stack.scene_done(job_id, doomed_batch[0]), 120, "the batch's 1st scene")
    counted_before = sum(stack.scene_done(job_id, s) for s in doomed_batch)
    hosts = doomed.host_pids()
    assert hosts, "the AI worker child started no host process"
    doomed.kill()
    killed_at = time.monotonic()
    # its host processes see their pipe close and end with it
    wait_until(lambda: not any(alive(pid) for pid in hosts), 20, "the host processes to end")
    stall.release()
    time.sleep(max(0.0, killed_at + KILL_VISIBILITY_S + 0.5 - time.monotonic()))
    stack.worker("ai-replacement", queue=AI_QUEUE, **ai)
    job = stack.wait_job(job_id, timeout=240)
    counts = stack.integrity(job_id)
    (objects,) = stack.query(
        "SELECT count(*), count(DISTINCT (scene_id, bbox::text)) FROM detected_objects "
        "WHERE job_id = :j",
        j=job_id,
    )

    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        8,
        8,
        0,
    ), job
    assert counts["job_scene_rows"] == counts["distinct_scenes"] == 8
    assert counts["pending"] == 0 and counts["failure_rows"] == 0
    assert objects[0] > 0 and objects[0] == objects[1]  # recomputed scenes: objects replaced
    assert counts["redone"] >= counted_before >= 1
    record(
        "ai_worker_sigkill_mid_batch",
        scenes=8,
        batch_size=4,
        counted_in_killed_batch_before_kill=counted_before,
        scenes_recomputed_after_counting=counts["redone"],
        kill_to_completed_s=round(time.monotonic() - killed_at, 1),
        objects=objects[0],
        job=[job["status"], job["processed"], job["failed"], job["total"]],
    )


def test_killed_host_process_fails_only_the_scenes_it_held(
    stack: Stack, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    """A host process SIGKILLed (the OOM killer) while its worker waits on a read: the
    scenes it held fail with the reason, the others complete, nothing stays pending, the
    worker lives on and its next job completes whole on a fresh host process."""
    from tests.fixture_scenes import synthetic_scenes

    def folder_of(name: str, seed: int) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for index, (rgb, _, _) in enumerate(synthetic_scenes(8, seed=seed)):
            (folder / f"{index:02d}.png").write_bytes(encode(rgb))
        return folder

    ai = ai_env(tiny_models, MODOMO_AI_BATCH_SIZE="1", MODOMO_AI_HOST_THREADS="1", **KILL_LIMITS)
    first = folder_of("host-killed", 43)
    client = stack.process(first, "--pipeline", "full", "--batch-size", "8", "--no-wait", **ai)
    job_id = stack.job_id(client, first)
    assert client.wait(60) == 0, stack.client_log(first)
    wait_until(lambda: len(stack.queued_batches(AI_QUEUE)) == 1, 30, "the batch")
    (batch,) = stack.queued_batches(AI_QUEUE)
    stall = stack.stall(batch[1])
    worker = stack.worker("ai-hosts", queue=AI_QUEUE, **ai)
    wait_until(lambda: stack.scene_done(job_id, batch[0]), 120, "the batch's 1st scene")
    time.sleep(3)  # the scene after the stalled one is read ahead and held by the host process
    (host,) = worker.host_pids()
    os.kill(host, signal.SIGKILL)
    stall.release()
    job = stack.wait_job(job_id, timeout=240)
    counts = stack.integrity(job_id)
    failures = {
        str(r[0]): r[1]
        for r in stack.query(
            "SELECT scene_id, error FROM scene_failures WHERE job_id = :j", j=job_id
        )
    }
    # the stalled read itself may fail (fsspec seeks the named pipe once fed): not the host's
    failures.pop(batch[1], None)
    reasons = sorted(failures.values())
    assert job["status"] == "completed" and job["total"] == 8, job
    assert counts["pending"] == 0 and counts["job_scene_rows"] == 8
    assert job["processed"] + job["failed"] == 8, job
    # the one scene read ahead of the stalled one, if it was, failed with its host process
    assert len(reasons) <= 1 and all("host process" in r for r in reasons), reasons
    assert worker.process.poll() is None and stack.ping(worker.hostname)
    (replacement,) = worker.host_pids()
    assert replacement != host

    second = folder_of("host-replaced", 47)
    client = stack.process(second, "--pipeline", "full", "--batch-size", "8", "--no-wait", **ai)
    again = stack.wait_job(stack.job_id(client, second), timeout=240)
    assert (again["status"], again["processed"], again["failed"]) == ("completed", 8, 0), again
    record(
        "host_process_sigkill_mid_batch",
        scenes=8,
        failed_with_the_host=len(reasons),
        reasons=reasons,
        next_job=[again["status"], again["processed"], again["failed"]],
    )


# --- 2. soft and hard time limits ------------------------------------------------------------
def test_soft_and_hard_time_limits(stack: Stack, tmp_path: Path) -> None:
    """Soft 2 s / hard 6 s on one prefork worker (concurrency 1).

    Soft: the 2nd scene of a 4-scene batch waits on a stalled storage read (a named pipe);
    the soft limit interrupts the wait, that scene fails with the reason, the rest of the
    batch is re-sent, and the read is unblocked at 3.5 s so the batch ends well before 6 s.
    Hard: the test holds the second job's ``jobs`` row ``FOR UPDATE``, so every progress
    write of its first batch blocks in PostgreSQL: the soft limit interrupts the first write,
    the handler's own write of the failure blocks again, and the hard limit kills the child;
    Celery then calls ``BatchTask.on_failure`` (TimeLimitExceeded) in the parent. Once the test
    releases the lock, the batch's pending scene is failed with a time-limit reason by whichever
    of the two writes gets the row first, and the next batches run on a fresh child.
    """
    limits = {"MODOMO_TASK_SOFT_TIME_LIMIT": "2", "MODOMO_TASK_TIME_LIMIT": "6"}
    soft_folder = noise_folder(tmp_path, "soft", 4)
    hard_folder = noise_folder(tmp_path, "hard", 3)
    after_folder = noise_folder(tmp_path, "after", 2)
    soft_client = stack.process(soft_folder, "--batch-size", "4", "--no-wait")
    soft_job = stack.job_id(soft_client, soft_folder)
    assert soft_client.wait(60) == 0, stack.client_log(soft_folder)
    hard_client = stack.process(hard_folder, "--batch-size", "1", "--no-wait")
    hard_job = stack.job_id(hard_client, hard_folder)
    assert hard_client.wait(60) == 0, stack.client_log(hard_folder)
    stack.wait_scenes(soft_job, 4)
    stack.wait_scenes(hard_job, 3)
    wait_until(lambda: len(stack.queued_batches()) == 4, 30, "the queued batches")
    soft_batch, hard_first_batch = stack.queued_batches()[:2]
    (hard_first,) = hard_first_batch
    slow = stack.stall(soft_batch[1])

    locker = stack.engine.connect()
    lock = locker.begin()
    locker.execute(text("SELECT id FROM jobs WHERE id = :j FOR UPDATE"), {"j": hard_job})
    try:
        worker = stack.worker("limits", **limits)
        children_before = worker.child_pids()
        assert len(children_before) == 1, children_before
        stats = stack.app.control.inspect([worker.hostname], timeout=2).stats() or {}
        pool = stats[worker.hostname]["pool"]
        assert "prefork" in pool["implementation"] and pool["timeouts"] == [2, 6], pool
        started = time.monotonic()
        wait_until(lambda: stack.scene_done(soft_job, soft_batch[0]), 30, "the soft batch")
        wait_until(
            lambda: stack.scene_done(soft_job, soft_batch[1]),
            10,
            "the soft limit to fail the stalled scene",
        )
        soft_failed_s = time.monotonic() - started
        time.sleep(max(0.0, started + 3.5 - time.monotonic()))
        slow.release()  # the stalled read returns; the batch's prefetch thread can end
        wait_until(lambda: "Hard time limit" in worker.log.read_text(), 30, "the hard limit")
        hard_s = time.monotonic() - started
    finally:
        lock.rollback()
        locker.close()

    try:
        soft = stack.wait_job(soft_job, 60)
        hard = stack.wait_job(hard_job, 60)
    except AssertionError as exc:  # what was left, for the next reader of a failed run
        raise AssertionError(
            f"{exc}\nqueued batches: {stack.queued_batches()}\n"
            f"worker log (end):\n{worker.log.read_text()[-6000:]}"
        ) from None
    hard_final_s = time.monotonic() - started
    assert stack.ping(worker.hostname), "the worker lives on"
    children_after = worker.child_pids()
    assert children_after and not (children_after & children_before), "the child was replaced"
    after_client = stack.process(after_folder, "--batch-size", "2", "--no-wait")
    after_job = stack.job_id(after_client, after_folder)
    assert after_client.wait(60) == 0, stack.client_log(after_folder)
    after = stack.wait_job(after_job, 60)
    log_text = worker.log.read_text()
    reasons = dict(
        stack.query(
            "SELECT scene_id::text, error FROM scene_failures WHERE job_id IN (:a, :b)",
            a=soft_job,
            b=hard_job,
        )
    )

    assert re.search(r"Soft time limit \(2s\) exceeded", log_text), log_text[-3000:]
    assert re.search(r"Hard time limit \(6s\) exceeded", log_text), log_text[-3000:]
    assert (soft["status"], soft["processed"], soft["failed"], soft["total"]) == (
        "completed",
        3,
        1,
        4,
    ), soft
    assert set(reasons) == {soft_batch[1], hard_first}, reasons
    assert "soft time limit" in reasons[soft_batch[1]], reasons
    assert (hard["status"], hard["processed"], hard["failed"], hard["total"]) == (
        "completed",
        2,
        1,
        3,
    ), hard
    # whichever records it first: the child's soft-limit handler (its write was queued on the
    # lock) or the parent's on_failure after the kill (TimeLimitExceeded)
    assert "time limit" in reasons[hard_first].lower(), reasons
    assert (after["status"], after["processed"], after["failed"]) == ("completed", 2, 0), after
    counts = {}
    for job_id, total in ((soft_job, 4), (hard_job, 3), (after_job, 2)):
        counts[job_id] = stack.integrity(job_id)
        assert counts[job_id]["job_scene_rows"] == counts[job_id]["distinct_scenes"] == total
        assert counts[job_id]["pending"] == 0
        assert counts[job_id]["duplicate_scene_rows"] == 0
    assert counts[soft_job]["with_palette"] == 3 and counts[hard_job]["with_palette"] == 2
    record(
        "time_limits",
        limits="soft 2 s / hard 6 s, prefork, concurrency 1",
        soft_job=[soft["status"], soft["processed"], soft["failed"], soft["total"]],
        soft_reason=reasons[soft_batch[1]],
        start_to_soft_failure_counted_s=round(soft_failed_s, 1),
        hard_job=[hard["status"], hard["processed"], hard["failed"], hard["total"]],
        hard_reason=reasons[hard_first],
        start_to_hard_kill_logged_s=round(hard_s, 1),
        start_to_both_jobs_final_s=round(hard_final_s, 1),
        after_job=[after["status"], after["processed"], after["failed"], after["total"]],
        child_pids_before=sorted(children_before),
        child_pids_after=sorted(children_after),
        soft_limit_log_lines=len(re.findall(r"Soft time limit \(2s\) exceeded", log_text)),
        hard_limit_log_lines=len(re.findall(r"Hard time limit \(6s\) exceeded", log_text)),
    )


# --- 3. the visibility timeout ----------------------------------------------------------------
def test_visibility_timeout_and_duplicate_deliveries(stack: Stack, tmp_path: Path) -> None:
    # (a) a visibility timeout not above the hard limit is refused, in-process and by a worker
    with pytest.raises(ConfigError, match="MODOMO_VISIBILITY_TIMEOUT must be longer"):
        load_settings(task_soft_time_limit=8, task_time_limit=10, visibility_timeout=10)
    refused = subprocess.run(
        [PY, "-m", "modomo.cli", "worker", "-Q", QUEUE, "-n", "refused@localhost"],
        cwd=REPO,
        env=stack.env(**{**SHORT_LIMITS, "MODOMO_VISIBILITY_TIMEOUT": "10"}),
        capture_output=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert b"MODOMO_VISIBILITY_TIMEOUT" in refused.stdout + refused.stderr

    # (b) two workers, and every batch delivered twice (as a redelivery would): the ledger
    # counts each scene once
    folder = noise_folder(tmp_path, "visibility", 12)
    client = stack.process(folder, "--batch-size", "4")
    job_id = stack.job_id(client, folder)
    stack.wait_scenes(job_id, 12)
    wait_until(lambda: len(stack.queued_batches()) == 3, 30, "the batches")
    batches = stack.queued_batches()
    for batch in batches:  # the duplicates
        stack.app.send_task(
            "modomo.tasks.color_tasks.process_colors_batch", args=(job_id, batch), queue=QUEUE
        )
    started = time.monotonic()
    workers = [stack.worker("v1", **SHORT_LIMITS), stack.worker("v2", **SHORT_LIMITS)]
    assert client.wait(90) == 0, stack.client_log(folder)
    elapsed = time.monotonic() - started
    job = stack.job(job_id)
    counts = stack.integrity(job_id)
    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        12,
        12,
        0,
    )
    assert counts["job_scene_rows"] == counts["distinct_scenes"] == 12
    assert counts["duplicate_scene_rows"] == 0 and counts["failure_rows"] == 0
    assert counts["object_rows"] == 0 and counts["with_palette"] == 12
    # let every duplicate delivery finish, then count again: nothing moved
    wait_until(
        lambda: sum(w.log.read_text().count("succeeded in") for w in workers) >= 2 * len(batches),
        60,
        "the duplicate deliveries",
    )
    assert stack.job(job_id) == job and stack.integrity(job_id)["job_scene_rows"] == 12
    record(
        "visibility_timeout",
        config_check="visibility 10 s <= hard 10 s refused (ConfigError; worker exits non-zero)",
        limits="soft 8 s / hard 10 s / visibility 12 s",
        deliveries=2 * len(batches),
        batches=len(batches),
        job=[job["status"], job["processed"], job["failed"], job["total"]],
        integrity=counts,
        elapsed_s=round(elapsed, 1),
    )


# --- 4. the reaper recovers a job whose only worker is gone ---------------------------------
def test_reaper_recovers_job_whose_only_worker_was_killed(stack: Stack, tmp_path: Path) -> None:
    folder = noise_folder(tmp_path, "reaper", 12)
    client = stack.process(folder, "--batch-size", "4")
    job_id = stack.job_id(client, folder)
    (stall,) = stall_first_batches(stack, job_id, 12, 1)
    doomed_batch = stack.queued_batches()[0]
    only = stack.worker("only")  # default limits: visibility timeout 1800 s
    wait_until(lambda: stack.scene_done(job_id, doomed_batch[0]), 30, "the batch's 1st scene")
    time.sleep(0.3)
    only.kill()
    killed_at = time.monotonic()
    stall.release()
    stalled = stack.job(job_id)
    assert stalled["status"] == "running" and stalled["processed"] < 12

    time.sleep(1.2)
    handled = stack.reap()
    mine = [h for h in handled if h["job_id"] == job_id]
    assert mine and mine[0]["action"] == "resent", handled
    resent = mine[0]["scenes"]
    stack.worker("after")
    assert client.wait(90) == 0, stack.client_log(folder)
    recovered_s = time.monotonic() - killed_at
    job = stack.job(job_id)
    counts = stack.integrity(job_id)
    assert (job["status"], job["total"], job["processed"], job["failed"]) == (
        "completed",
        12,
        12,
        0,
    )
    assert job["params"]["reaped"] == 1
    assert counts["job_scene_rows"] == counts["distinct_scenes"] == 12
    assert counts["duplicate_scene_rows"] == 0 and counts["failure_rows"] == 0
    assert counts["with_palette"] == 12
    record(
        "reaper_after_sigkill",
        scenes=12,
        processed_when_killed=stalled["processed"],
        reaper_resent_scenes=resent,
        kill_to_completed_s=round(recovered_s, 1),
        job=[job["status"], job["processed"], job["failed"], job["total"]],
        integrity=counts,
    )
