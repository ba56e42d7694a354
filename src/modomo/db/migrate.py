"""Schema migrations with Alembic, run programmatically (``modomo db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from modomo.db.session import get_engine

__all__ = ["alembic_config", "current_revision", "offline_sql", "upgrade"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` for the package's migrations on ``url`` (default: settings)."""
    engine = get_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database at ``url`` (default: settings) up to ``revision``."""
    engine = get_engine(url)
    config = alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(url: str | None = None) -> str | None:
    """The revision the database at ``url`` is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def offline_sql(url: str = "postgresql+psycopg://offline/modomo", revision: str = "head") -> str:
    """The SQL that the migrations up to ``revision`` run on ``url``'s dialect, without a
    database (Alembic's offline mode). ``supabase/migrations/`` holds this for PostgreSQL.
    """
    import io
    from contextlib import redirect_stdout

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    out = io.StringIO()
    config.stdout = out
    with redirect_stdout(out):
        command.upgrade(config, revision, sql=True)
    return out.getvalue()
