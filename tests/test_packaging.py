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


def test_supabase_migration_is_the_alembic_schema() -> None:
    """supabase/migrations holds what the Alembic migrations emit for PostgreSQL."""
    from modomo.db.migrate import offline_sql

    files = sorted((REPO / "supabase" / "migrations").glob("*.sql"))
    assert files, "no supabase/migrations/*.sql"
    assert "".join(f.read_text() for f in files).strip() == offline_sql().strip()
