"""Packaging: the exported requirement files match uv.lock; the schema files match."""

from __future__ import annotations

import re
import subprocess

from tests.support import REPO


def test_requirement_files_match_the_lock() -> None:
    done = subprocess.run(
        ["bash", "scripts/export-requirements.sh", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


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
