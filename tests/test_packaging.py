"""Packaging: the exported requirement files match uv.lock; the schema files match."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support import REPO

# the same marker as uv 0.13.8 and uv 0.13.9 print it
LONG = (
    "(platform_machine == 'aarch64' and sys_platform == 'linux')"
    " or (platform_machine == 'x86_64' and sys_platform == 'linux')"
)
SHORT = (
    "(platform_machine == 'aarch64' or platform_machine == 'x86_64') and sys_platform == 'linux'"
)


def _differences(tmp_path: Path, committed: str) -> list[str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "compare_requirements", REPO / "scripts" / "compare_requirements.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "committed.txt").write_text(committed)
    return module.differences(REPO / "requirements-celery.txt", tmp_path / "committed.txt")


def test_requirement_files_match_the_lock() -> None:
    done = subprocess.run(
        ["bash", "scripts/export-requirements.sh", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_markers_written_another_way_are_no_drift(tmp_path: Path) -> None:
    """uv 0.13.9 prints the same markers as uv 0.13.8 in another form: the same pins."""
    ours = (REPO / "requirements-celery.txt").read_text()
    assert LONG in ours
    assert _differences(tmp_path, ours.replace(LONG, SHORT)) == []


def test_a_changed_pin_or_marker_is_drift(tmp_path: Path) -> None:
    ours = (REPO / "requirements-celery.txt").read_text()
    bumped = re.sub(r"^celery==\S+", "celery==5.0.0", ours, flags=re.M)
    assert "linux x86_64 python 3.11.0: not in the lock celery==5.0.0" in _differences(
        tmp_path, bumped
    )
    x86_only = ours.replace(LONG, "platform_machine == 'x86_64' and sys_platform == 'linux'")
    missing = _differences(tmp_path, x86_only)
    assert missing and all("aarch64" in line and "missing" in line for line in missing)


def test_uv_is_pinned_once_and_the_dockerfile_copies_the_same() -> None:
    makefile = (REPO / "Makefile").read_text()
    pins = re.findall(r"^UV_VERSION := (\S+)$", makefile, re.M)
    assert len(pins) == 1, "one UV_VERSION in the Makefile"
    assert "install --user" in makefile and '"uv==$(UV_VERSION)"' in makefile
    docker = re.findall(r"ghcr\.io/astral-sh/uv:(\S+)", (REPO / "Dockerfile").read_text())
    assert docker == pins


def test_minimal_requirements_leave_the_ai_extra_out() -> None:
    minimal = (REPO / "requirements-minimal-celery.txt").read_text()
    everything = (REPO / "requirements-celery.txt").read_text()
    for package in ("torch", "ultralytics", "transformers"):
        assert not re.search(rf"^{package}==", minimal, re.M)
        assert re.search(rf"^{package}==", everything, re.M)
    assert re.search(r"^celery==", minimal, re.M)


def test_supabase_migrations_are_the_alembic_schema() -> None:
    """supabase/migrations holds, one file per revision, what Alembic emits for PostgreSQL."""
    from alembic.script import ScriptDirectory

    from modomo.db.migrate import alembic_config, offline_sql

    files = sorted((REPO / "supabase" / "migrations").glob("*.sql"))
    revisions = [
        script.revision
        for script in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))
    ]
    assert len(files) == len(revisions), f"one supabase migration per revision: {revisions}"
    previous = None
    for file, revision in zip(files, revisions, strict=True):
        span = f"{previous}:{revision}" if previous else revision
        assert file.read_text().strip() == offline_sql(revision=span).strip(), file.name
        previous = revision
