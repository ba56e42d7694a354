"""Settings: prefixes, the original scraper's variable names, defaults, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modomo.config import ConfigError, load_settings

ALL_VARS = (
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "DATABASE_URL",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "MODOMO_DATABASE_URL",
    "MODOMO_REDIS_URL",
    "MODOMO_BROKER_URL",
    "MODOMO_RESULT_BACKEND",
    "MODOMO_ARTIFACT_URL",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODOMO_DATA_DIR", str(tmp_path))
    return monkeypatch


def test_embedded_default_lives_in_the_data_dir(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = load_settings()
    assert settings.embedded
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    assert settings.result_backend == f"db+sqlite:///{tmp_path}/results.sqlite"
    assert settings.database_url == f"sqlite:///{tmp_path}/modomo.sqlite"
    assert settings.artifact_url == str(tmp_path / "artifacts")


def test_data_dir_defaults_to_local_share(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.delenv("MODOMO_DATA_DIR")
    assert load_settings().data_dir == (Path.home() / ".local/share/modomo").resolve()


@pytest.mark.parametrize(
    ("env", "broker", "backend"),
    [
        # REDIS_URL alone: broker and results both on it
        ({"REDIS_URL": "redis://r:6379/0"}, "redis://r:6379/0", "redis://r:6379/0"),
        # the original's CELERY_* names win over REDIS_URL
        (
            {
                "REDIS_URL": "redis://r/0",
                "CELERY_BROKER_URL": "redis://b/1",
                "CELERY_RESULT_BACKEND": "redis://c/2",
            },
            "redis://b/1",
            "redis://c/2",
        ),
        # MODOMO_ prefixed names are accepted too
        ({"MODOMO_REDIS_URL": "redis://m/3"}, "redis://m/3", "redis://m/3"),
    ],
)
def test_broker_variables(
    clean_env: pytest.MonkeyPatch, env: dict, broker: str, backend: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = load_settings()
    assert (settings.broker_url, settings.result_backend, settings.embedded) == (
        broker,
        backend,
        False,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Supabase hands out postgres:// URLs
        (
            "postgres://u:p@db.supabase.co:5432/postgres",
            "postgresql+psycopg://u:p@db.supabase.co:5432/postgres",
        ),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        # an explicit driver is kept
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.sqlite", "sqlite:////tmp/x.sqlite"),
    ],
)
def test_database_url_normalised(clean_env: pytest.MonkeyPatch, value: str, expected: str) -> None:
    clean_env.setenv("DATABASE_URL", value)
    assert load_settings().database_url == expected


def test_supabase_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SUPABASE_URL", "https://abc.supabase.co")
    clean_env.setenv("SUPABASE_SERVICE_ROLE_KEY", "not-a-real-key")
    settings = load_settings()
    assert settings.supabase_url == "https://abc.supabase.co"
    assert settings.supabase_service_role_key is not None
    assert "not-a-real-key" not in repr(settings)  # secrets are not printed


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MODOMO_BATCH_SIZE", "zero", "MODOMO_BATCH_SIZE"),  # not an integer
        ("MODOMO_BATCH_SIZE", "0", "greater than 0"),  # out of range
        ("CELERY_BROKER_URL", "nope", "CELERY_BROKER_URL"),  # not a URL
        ("MODOMO_ALLOW_PRIVATE_URLS", "maybe", "MODOMO_ALLOW_PRIVATE_URLS"),  # not a boolean
        ("MODOMO_TASK_SOFT_TIME_LIMIT", "2000", "MODOMO_TASK_SOFT_TIME_LIMIT"),  # soft >= hard
        ("MODOMO_VISIBILITY_TIMEOUT", "100", "MODOMO_VISIBILITY_TIMEOUT"),  # shorter than hard
    ],
)
def test_bad_values_name_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_cli_fails_at_start_up_naming_the_variable(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MODOMO_DATA_DIR": str(tmp_path), "MODOMO_PALETTE_SIZE": "99"}
    done = subprocess.run(
        [sys.executable, "-m", "modomo.cli", "jobs", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "MODOMO_PALETTE_SIZE" in done.stderr and "Traceback" not in done.stderr
