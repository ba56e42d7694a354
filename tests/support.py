"""Shared test helpers: images made in the test, and real Celery worker processes."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` imported as the module ``NAME`` (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    spec.loader.exec_module(module)
    return module


def encode(array: np.ndarray, fmt: str = "PNG", **save: object) -> bytes:
    """Encode an (H, W, 3|4) uint8 array (or (H, W) gray) with Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def noise_image(seed: int | str, size_hw: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A unique (H, W, 3) uint8 RGB image of coloured blocks, determined by ``seed``."""
    if isinstance(seed, str):
        seed = int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    blocks = rng.integers(
        0, 256, size=(size_hw[0] // 8 + 1, size_hw[1] // 8 + 1, 3), dtype=np.uint8
    )
    image = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)
    return np.ascontiguousarray(image[: size_hw[0], : size_hw[1]])


def write_unique_images(folder: Path, count: int, tag: str | None = None) -> list[Path]:
    """Write ``count`` distinct PNG/JPEG images into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = tag or uuid.uuid4().hex
    paths = []
    for index in range(count):
        fmt, suffix = ("JPEG", ".jpg") if index % 2 else ("PNG", ".png")
        path = folder / f"{tag}-{index:04d}{suffix}"
        path.write_bytes(
            encode(noise_image(f"{tag}-{index}"), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        )
        paths.append(path)
    return paths


def ai_worker_settings(models: dict[str, Path]) -> dict[str, str]:
    """The settings of a CPU AI worker with the repo's fixture detector and the tiny
    random-weight SAM 2.1 / depth models (``tiny_models``)."""
    from tests.fixture_scenes import FIXTURE_WEIGHTS

    return {
        "MODOMO_DEVICE": "cpu",
        "MODOMO_DETECTOR_WEIGHTS": str(FIXTURE_WEIGHTS),
        "MODOMO_SEGMENTER_WEIGHTS": str(models["sam2"]),
        "MODOMO_DEPTH_WEIGHTS": str(models["depth_anything"]),
        "MODOMO_DEPTH_FALLBACK_WEIGHTS": str(models["zoedepth"]),
        "MODOMO_DETECTOR_IMAGE_SIZE": "256",
    }


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """``modomo ARGS`` in a subprocess with this session's settings, 200 columns wide."""
    return subprocess.run(
        [sys.executable, "-m", "modomo.cli", *args],
        cwd=REPO,
        env=worker_env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker subprocess: this session's settings plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def celery_worker(
    queues: str = "celery,color_processing,classification,maintenance,ai_processing,detection",
    concurrency: int = 1,
    pool: str = "prefork",
    log_path: Path | None = None,
    command: list[str] | None = None,
    include: str | None = None,
    **env: str,
) -> Iterator[str]:
    """Run a real ``celery worker`` subprocess until the block ends; yields its hostname.

    ``command`` replaces the ``celery worker`` command line (``-n HOSTNAME`` is appended),
    e.g. ``modomo worker --ai`` (a prefork worker of one child); ``include`` adds a task
    module (``-I``). Waits until the worker answers a broadcast ping and, for a prefork pool,
    until every child has logged that it is ready (its queues' libraries imported): on a
    loaded machine that can take a minute, and a test's clock must not run meanwhile. Stops
    it with SIGTERM (SIGKILL after 20 s).
    """
    import tempfile

    from modomo.celery_app import app

    hostname = f"test-{uuid.uuid4().hex[:8]}@localhost"
    scratch = None
    if log_path is None:
        scratch = tempfile.TemporaryDirectory(prefix="modomo-worker-")
        log_path = Path(scratch.name) / "worker.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    if command:
        argv = [*command, "-n", hostname]
        children = 0 if "--pool" in command else 1
    else:
        argv = [
            *(sys.executable, "-m", "celery", "-A", "modomo.celery_app", "worker"),
            *("-Q", queues, "-c", str(concurrency), "--pool", pool, "-n", hostname),
            *("--without-mingle", "--without-gossip", "-l", "INFO"),
            *(("-I", include) if include else ()),
        ]
        children = concurrency if pool == "prefork" else 0
    process = subprocess.Popen(
        argv,
        cwd=REPO,
        env=worker_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not app.control.ping(destination=[hostname], timeout=0.5):
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}; log: {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {hostname} did not answer a ping in 120 s")
        wait_for_children(process, log_path, children)
        yield hostname
    finally:
        stop(process)
        log.close()
        if scratch is not None:
            scratch.cleanup()


def wait_for_children(
    process: subprocess.Popen[bytes], log_path: Path, count: int, timeout_s: float = 300
) -> None:
    """Wait until ``count`` pool children of the worker ``process`` have logged that they are
    ready (``worker child PID ready: preloaded …``, after their queues' imports: seconds to a
    minute for torch and transformers on a loaded machine).

    Raises:
        RuntimeError: the worker exited, or its children were not ready in ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while log_path.read_text(errors="replace").count(" ready: preloaded ") < count:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}; log: {log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker children not ready in {timeout_s} s; log: {log_path}")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started here: SIGTERM, then SIGKILL after 20 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_job(job_id: uuid.UUID | str, timeout_s: float = 120) -> dict:
    """Poll the job record until it is final; returns ``describe_job``'s view.

    ``timeout_s`` bounds the time without progress, not the whole wait: every change of the
    job's status or counts restarts it, so a slow but moving job on a loaded machine is
    waited for, and a stuck one fails after ``timeout_s``.

    Raises:
        TimeoutError: the job did not move for ``timeout_s`` seconds.
    """
    from modomo.db.models import JobStatus
    from modomo.jobs import describe_job

    seen: tuple[object, ...] = ()
    moved_at = time.monotonic()
    while True:
        job = describe_job(job_id)
        if job["status"] in JobStatus.FINAL:
            return job
        progress = tuple(
            str(job.get(key)) for key in ("status", "total", "processed", "failed", "stages")
        )
        if progress != seen:
            seen, moved_at = progress, time.monotonic()
        elif time.monotonic() - moved_at > timeout_s:
            raise TimeoutError(f"job {job_id} no progress in {timeout_s} s: {job}")
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def api_server(log_path: Path | None = None, **env: str) -> Iterator[str]:
    """Run ``modomo api`` (uvicorn) on a free loopback port until the block ends; yields its
    base URL once ``/health`` answers. ``env`` adds settings for the server only."""
    import httpx

    port = free_port()
    log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "modomo.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=worker_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"API exited with {process.returncode}; log: {log_path}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"API on {base} did not answer /health in 60 s")
            time.sleep(0.2)
        yield base
    finally:
        stop(process)
        log.close()
