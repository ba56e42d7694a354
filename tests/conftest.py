"""Test session set-up: the real Redis and PostgreSQL on loopback, real Celery workers.

At start-up the session checks Redis (127.0.0.1:6379, database 15 or MODOMO_TEST_REDIS_DB,
flushed before and after)
and PostgreSQL (127.0.0.1:5432; a fresh database ``modomo_test_<random>`` created here and
dropped at the end), and points Modomo's settings at them through the environment, before
any Modomo module reads its settings. Tests marked ``services`` need both: outside CI a
missing service skips them with the command that starts it; with ``CI=true`` they fail.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# MODOMO_TEST_REDIS_DB lets two pytest sessions share the Redis server without flushing each
# other's database (each session flushes its own at start and end).
REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('MODOMO_TEST_REDIS_DB', '15')}"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOW_TO_START = {
    "redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" '
    "--appendonly no   (or: make services)",
    "postgres": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    "   (or: make services)",
}

_state: dict[str, object] = {"missing": []}


def _redis_ok() -> bool:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.flushdb()
        client.close()
        return True
    except redis.RedisError:
        return False


def _create_pg_database() -> str | None:
    import psycopg

    name = f"modomo_test_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        return None
    return name


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_configure(config: pytest.Config) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="modomo-test-"))
    _state["data_dir"] = data_dir
    os.environ["MODOMO_DATA_DIR"] = str(data_dir)
    os.environ["YOLO_OFFLINE"] = "1"  # no DNS probes from ultralytics: tests have no network
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    missing: list[str] = []
    if _redis_ok():
        os.environ["REDIS_URL"] = REDIS_URL
    else:
        missing.append("redis")
    database = _create_pg_database()
    if database:
        _state["pg_database"] = database
        os.environ["MODOMO_DATABASE_URL"] = (
            f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        )
    else:
        missing.append("postgres")
    _state["missing"] = missing
    if not missing:
        from modomo.db.migrate import upgrade

        upgrade()


def pytest_unconfigure(config: pytest.Config) -> None:
    database = _state.get("pg_database")
    if database:
        from modomo.db.session import get_engine

        get_engine().dispose()
        _drop_pg_database(str(database))
    if "redis" not in _state["missing"]:
        _redis_ok()  # flushes the test database


def pytest_runtest_setup(item: pytest.Item) -> None:
    missing = _state["missing"]
    if not missing or item.get_closest_marker("services") is None:
        return
    assert isinstance(missing, list)
    how = "; ".join(f"{name}: {HOW_TO_START[name]}" for name in missing)
    message = f"needs {' and '.join(missing)} on loopback, which did not answer. Start: {how}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The session's MODOMO_DATA_DIR (artifacts live below it)."""
    path = _state["data_dir"]
    assert isinstance(path, Path)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small random-weight YOLO, SAM 2.1, Depth Anything, ZoeDepth and CLIP checkpoints, built from
    configs by ``scripts/build_random_models.py`` (test plumbing only: outputs are noise)."""
    import importlib.util

    from tests.support import REPO

    spec = importlib.util.spec_from_file_location(
        "build_random_models", REPO / "scripts" / "build_random_models.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(tmp_path_factory.mktemp("models"), "tiny")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ai_worker(
    tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real ``modomo worker --ai --warmup`` on the CPU with the repo's test detector and
    the tiny random-weight SAM 2.1 / depth models, for one test module; yields its hostname."""
    import sys

    from tests.support import ai_worker_settings, celery_worker

    log = tmp_path_factory.mktemp("ai-worker") / "worker.log"
    with celery_worker(
        log_path=log,
        command=[sys.executable, "-m", "modomo.cli", "worker", "--ai", "--warmup"],
        MODOMO_AI_BATCH_SIZE="4",
        **ai_worker_settings(tiny_models),
    ) as hostname:
        yield hostname
