"""Servers a fault test owns: its own ``redis-server`` and its own PostgreSQL cluster, on free
ports in temporary folders, started and stopped by pid (never the shared loopback services);
and the environment, side Celery app and subprocesses that use only those servers.

``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the ``postgres`` user
(``runuser``) on a folder that user owns.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import pytest

from tests.support import REPO, free_port

__all__ = ["OwnPostgres", "OwnRedis", "own_env", "own_postgres", "own_redis", "process", "side_app"]


@dataclass
class OwnRedis:
    """A redis-server this test started: ``url`` (database 0), ``port``, ``process``."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server on the same port and folder; waits until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "",
                "--appendonly",
                "yes",  # a restart keeps the queued messages, like production
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 20) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"own redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGTERM: it rewrites nothing, the AOF is already synced)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)
        self.process = None


@contextmanager
def own_redis() -> Iterator[OwnRedis]:
    """A fresh redis-server for this test (append-only, so a restart loses nothing)."""
    folder = Path(tempfile.mkdtemp(prefix="modomo-fault-redis-"))
    server = OwnRedis(free_port(), folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip(f"PostgreSQL's {name} is not installed")
    return found[-1]


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster this test created: ``url`` (database ``modomo``), ``port``."""

    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/modomo"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.folder / "data"), *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def start(self) -> None:
        """Start (or restart) the cluster on the same port; waits until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self) -> None:
        """Stop the cluster now (fast shutdown: open connections are cut)."""
        self._ctl("-m", "fast", "-w", "stop")


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A fresh PostgreSQL cluster (``initdb``) with a migrated ``modomo`` database."""
    folder = Path(tempfile.mkdtemp(prefix="modomo-fault-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    subprocess.run(
        _as_postgres(
            [_pg_bin("initdb"), "-D", str(folder / "data"), "-U", "postgres", "-A", "trust"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    server = OwnPostgres(free_port(), folder)
    server.start()
    try:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True
        ) as connection:
            connection.execute("CREATE DATABASE modomo")
        from modomo.db.migrate import upgrade

        upgrade(server.url)
        yield server
    finally:
        with suppress(subprocess.CalledProcessError):  # already stopped by the test
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


_SERVICE_VARIABLES = re.compile(
    r"^(PYTEST_|CELERY_|REDIS_URL$|DATABASE_URL$|MODOMO_(REDIS_URL|DATABASE_URL|BROKER_URL|"
    r"RESULT_BACKEND|DATA_DIR|JWT_|FLOWER_|CORS_|AUTH_DISABLED|HF_TOKEN|SUPABASE_)|"
    r"SUPABASE_|HF_TOKEN$)"
)


def own_env(redis_url: str, database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment on this test's own servers (nothing of the session's)."""
    env = {k: v for k, v in os.environ.items() if not _SERVICE_VARIABLES.match(k)}
    env.update(
        REDIS_URL=redis_url,
        MODOMO_DATABASE_URL=database_url,
        MODOMO_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def side_app(redis_url: str, database_url: str, data_dir: Path):  # type: ignore[no-untyped-def]
    """A Celery app on the own servers, for pings, beside the session's app."""
    from modomo.celery_app import make_celery
    from modomo.config import load_settings

    settings = load_settings(
        redis_url=redis_url,
        broker_url=redis_url,
        result_backend=redis_url,
        database_url=database_url,
        data_dir=data_dir,
    )
    return make_celery(settings, set_as_current=False)


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process started here until the block ends (SIGTERM, SIGKILL after 20 s)."""
    with open(log, "ab") as out:
        child = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield child
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(20)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
