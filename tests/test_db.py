"""The schema: the Alembic migration creates exactly the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from modomo.db.migrate import alembic_config, current_revision, upgrade
from modomo.db.models import Base
from modomo.db.session import get_engine
from tests.conftest import PG_ADMIN_URL

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def _diff(url: str) -> list:
    with get_engine(url).connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def test_sqlite_migration_matches_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'schema.sqlite'}"
    upgrade(url)
    assert current_revision(url) == HEAD == "0007"
    assert _diff(url) == []


@pytest.mark.services
def test_postgres_migration_matches_models() -> None:
    # conftest migrated the session's fresh PostgreSQL database
    assert current_revision() == HEAD
    assert _diff(str(get_engine().url.render_as_string(hide_password=False))) == []


@pytest.mark.services
def test_a_sql_ascii_database_works() -> None:
    """A database that `initdb` made without a UTF-8 locale (SQL_ASCII, as in a bare Debian
    container) is migrated and keeps non-ASCII text; psycopg would otherwise return bytes and
    `modomo db upgrade` end in a TypeError."""
    import secrets

    import psycopg
    from sqlalchemy import text

    name = f"modomo_ascii_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0"
        )
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        assert current_revision(url) == HEAD
        with get_engine(url).begin() as connection:
            connection.execute(text("CREATE TEMP TABLE t (v text)"))
            connection.execute(text("INSERT INTO t VALUES (:v)"), {"v": "Küche ΔE 3 🛋"})
            assert connection.scalar(text("SELECT v FROM t")) == "Küche ΔE 3 🛋"
    finally:
        get_engine(url).dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
