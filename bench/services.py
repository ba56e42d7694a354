"""What the benchmarks share: fresh services (a PostgreSQL database of their own, a flushed
Redis database, a temporary folder) and a real Celery worker subprocess."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import psycopg
import redis
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def fresh_services(redis_url: str) -> tuple[str, Path]:
    """Create a PostgreSQL database and a temporary folder, flush ``redis_url``'s database,
    and point this process's settings (and its workers', through the environment) at them.

    Returns:
        The database name and the folder (``MODOMO_DATA_DIR`` is its ``data``), for
        :func:`drop_services`.
    """
    database = f"modomo_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    redis.Redis.from_url(redis_url).flushdb()
    work = Path(tempfile.mkdtemp(prefix="modomo-bench-"))
    os.environ.update(
        {
            "MODOMO_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            "REDIS_URL": redis_url,
            "MODOMO_DATA_DIR": str(work / "data"),
        }
    )
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DATABASE_URL"):
        os.environ.pop(name, None)
    return database, work


def drop_services(database: str, redis_url: str, work: Path) -> None:
    """Drop what :func:`fresh_services` made (the database, Redis's keys, the folder)."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    redis.Redis.from_url(redis_url).flushdb()
    shutil.rmtree(work, ignore_errors=True)


def spawn_ai_worker() -> tuple[subprocess.Popen[bytes], str]:
    """Start ``modomo worker --ai --warmup`` (one AI worker, concurrency 1, models loaded
    when its child starts) from the repository root with this process's environment; the
    caller waits for it (a ping needs the Redis broker).

    Returns:
        The worker process and its hostname.
    """
    hostname = f"bench-ai-{secrets.token_hex(3)}@localhost"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modomo.cli",
            "worker",
            "--ai",
            "--warmup",
            "-n",
            hostname,
            "-l",
            os.environ.get("BENCH_LOGLEVEL", "WARNING"),
        ],
        cwd=REPO,
        env=os.environ.copy(),
    )
    return worker, hostname


def start_worker(queues: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``celery worker -Q queues -c 1`` (prefork) from the repository root with this
    process's environment and wait until it answers a ping (needs the Redis broker).

    Returns:
        The worker process and its hostname.

    Raises:
        SystemExit: the worker exited before answering.
    """
    from modomo.celery_app import app

    hostname = f"bench-{secrets.token_hex(3)}@localhost"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "modomo.celery_app",
            "worker",
            "-Q",
            queues,
            "-c",
            "1",
            "--pool",
            "prefork",
            "-n",
            hostname,
            "--without-mingle",
            "--without-gossip",
            "-l",
            os.environ.get("BENCH_LOGLEVEL", "WARNING"),
        ],
        cwd=REPO,
        env=os.environ.copy(),
    )
    while not app.control.ping(destination=[hostname], timeout=0.5):
        if worker.poll() is not None:
            raise SystemExit("the worker did not start")
    return worker, hostname


def sample_photos() -> list[np.ndarray]:
    """The colour photographs shipped with scikit-image and scikit-learn, (H, W, 3) uint8."""
    import skimage.data
    import sklearn.datasets

    folders = [
        Path(skimage.data.__file__).parent,
        Path(sklearn.datasets.__file__).parent / "images",
    ]
    photos = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in {".png", ".jpg"}:
                continue
            with Image.open(path) as image:
                if image.mode not in {"RGB", "RGBA"} or min(image.size) < 256:
                    continue
                photos.append(np.asarray(image.convert("RGB")))
    return photos
