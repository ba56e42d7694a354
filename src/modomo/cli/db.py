"""``modomo db``: migrations and SQL, and the embedded database created on first use."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url

from modomo.cli.app import _redacted, db_app
from modomo.config import Settings, get_settings


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the schema migrations."""
    from modomo.console import console
    from modomo.db.migrate import current_revision, upgrade

    upgrade(revision=revision)
    console.print(f"{_redacted(get_settings().database_url)} at revision {current_revision()}")


@db_app.command("sql")
def db_sql(
    revision: Annotated[
        str, typer.Argument(help="A revision or a FROM:TO range (one supabase migration).")
    ] = "head",
) -> None:
    """Print migrations as PostgreSQL DDL (what supabase/migrations/ holds)."""
    from modomo.db.migrate import offline_sql

    sys.stdout.write(offline_sql(revision=revision))


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision."""
    from modomo.console import console
    from modomo.db.migrate import current_revision

    console.print(current_revision() or "no schema (run `modomo db upgrade`)")


def _create_embedded_database(settings: Settings) -> None:
    """Create and migrate the embedded SQLite database the first time a command runs on a
    fresh data directory (``modomo jobs list`` then shows an empty list, not a missing
    table). A cheap look with ``sqlite3`` first: Alembic takes seconds to start."""
    import sqlite3
    from contextlib import closing

    url = make_url(settings.database_url)
    words = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    if (
        url.get_backend_name() != "sqlite"
        or not url.database
        or url.database == ":memory:"
        or not words
        or words[0] in ("db", "models")
        or {"--help", "-h"} & set(sys.argv[1:])
    ):
        return
    path = Path(url.database)
    if path.exists():
        try:
            with closing(sqlite3.connect(path)) as connection:
                found = connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
                ).fetchone()
        except sqlite3.Error:  # unreadable (a full disk…): the command itself says so, in one line
            return
        if found:
            return
    from modomo.db.migrate import upgrade

    path.parent.mkdir(parents=True, exist_ok=True)
    upgrade()
