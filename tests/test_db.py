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
