"""Flower as the original guide starts it (``celery -A celery_app flower --port=...`` from the
repository root, reading ``flowerconfig.py``) and as ``modomo flower`` starts it: real Flower
processes on the real Redis, with basic auth, on loopback only, and never without a password."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import REPO, free_port, stop, worker_env

USER = "probe"
PASSWORD = "pa:ss,word"  # a colon and a comma: Flower splits FLOWER_BASIC_AUTH at commas

pytestmark = pytest.mark.services


def flower_env(**extra: str) -> dict[str, str]:
    env = worker_env(COLUMNS="200", **extra)
    for name in [name for name in env if name.startswith("FLOWER_")]:
        del env[name]
    return env


@contextmanager
def flower(command: list[str], cwd: Path, log: Path, port: int) -> Iterator[int]:
    """Run Flower until the block ends; yields its pid once ``/healthcheck`` answers."""
    env = flower_env(MODOMO_FLOWER_USER=USER, MODOMO_FLOWER_PASSWORD=PASSWORD)
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"Flower exited: {log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"Flower did not answer: {log.read_text()}"
            time.sleep(0.5)
        yield process.pid
    finally:
        stop(process)


def assert_authenticated_on_loopback_only(pid: int, port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/", timeout=10).status_code == 401
    assert httpx.get(f"{base}/api/workers", timeout=10).status_code == 401
    assert httpx.get(f"{base}/", auth=(USER, "pa:ss"), timeout=10).status_code == 401
    assert httpx.get(f"{base}/", auth=(USER, PASSWORD), timeout=10).status_code == 200

    listening = {
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }
    assert listening == {("127.0.0.1", port)}
    others = [
        address.address
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family == socket.AF_INET and not address.address.startswith("127.")
    ]
    for other in others:
        with pytest.raises(OSError), socket.create_connection((other, port), timeout=5):
            pass


def test_celery_flower_from_the_repository_root_requires_auth_on_loopback(
    tmp_path: Path,
) -> None:
    from modomo.celery_app import app
    from modomo.queues import purge_queue

    port = free_port()
    command = [sys.executable, "-m", "celery", "-A", "celery_app", "flower", f"--port={port}"]
    purge_queue(app, "import")
    # two start tasks at priorities 0 and 9, by the real routing, on a queue no worker reads
    for priority in (0, 9):
        app.send_task(
            "modomo.tasks.import_tasks.import_huggingface_dataset",
            kwargs={"dataset": "probe/flower"},
            priority=priority,
        )
    try:
        with flower(command, REPO, tmp_path / "flower.log", port) as pid:
            assert_authenticated_on_loopback_only(pid, port)
            # the workers' transport options: Flower counts both priority lists
            lengths = httpx.get(
                f"http://127.0.0.1:{port}/api/queues/length", auth=(USER, PASSWORD), timeout=30
            ).json()["active_queues"]
            assert {"name": "import", "messages": 2} in lengths
    finally:
        purge_queue(app, "import")


def test_modomo_flower_requires_auth_on_loopback(tmp_path: Path) -> None:
    """Run elsewhere than the repository root, so that no flowerconfig.py is read."""
    port = free_port()
    command = [sys.executable, "-m", "modomo.cli", "flower", f"--port={port}"]
    with flower(command, tmp_path, tmp_path / "flower.log", port) as pid:
        assert_authenticated_on_loopback_only(pid, port)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (
            ["-m", "celery", "-A", "celery_app", "flower"],
            "flowerconfig.py: Flower needs a password: set MODOMO_FLOWER_PASSWORD",
        ),
        (["-m", "modomo.cli", "flower"], "Flower needs a password: set MODOMO_FLOWER_PASSWORD"),
    ],
    ids=["celery-flower", "modomo-flower"],
)
def test_no_flower_without_a_password(command: list[str], message: str) -> None:
    port = free_port()
    env = flower_env()
    env.pop("MODOMO_FLOWER_PASSWORD", None)
    done = subprocess.run(
        [sys.executable, *command, f"--port={port}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    output = (done.stdout + done.stderr).strip()
    assert message in output and "Traceback" not in output, output
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
