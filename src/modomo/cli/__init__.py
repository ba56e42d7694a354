"""The ``modomo`` command line (Typer + Rich), a module per command group.

``modomo process SOURCE...`` is the main job (:mod:`modomo.cli.process`); the services
(:mod:`~modomo.cli.services`), source jobs, labels and duplicates, datasets, keys, schedules,
jobs, scenes, models and the database each have their own module, registered on the root
app (:mod:`~modomo.cli.app`) when this package is imported.
"""

from __future__ import annotations

import importlib
import sys

from sqlalchemy.engine import make_url

from modomo.cli.app import AI_QUEUES, GENERAL_QUEUES, _one_line, _redacted, app
from modomo.cli.db import _create_embedded_database
from modomo.config import ConfigError, get_settings

__all__ = ["AI_QUEUES", "GENERAL_QUEUES", "app", "main"]

COMMAND_MODULES = (
    "process",
    "services",
    "sources",
    "catalog",
    "datasets",
    "keys",
    "schedules",
    "jobs",
    "scenes",
    "models",
    "db",
)
"""The command groups' modules, imported in this order: ``modomo --help`` lists the root
commands as they were registered."""

for _name in COMMAND_MODULES:
    importlib.import_module(f"modomo.cli.{_name}")


def main() -> None:
    """Console-script entry point: settings errors, a database that cannot be used and a
    filesystem that fails (a full disk) end with one line and exit status 2, not a
    traceback."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    try:
        settings = get_settings()
    except ConfigError as exc:
        sys.stderr.write(f"modomo: {exc}\n")
        raise SystemExit(2) from None
    for note in settings.warnings():
        sys.stderr.write(f"modomo: warning: {note}\n")
    try:
        _create_embedded_database(settings)
        app()
    except (DBAPIError, SQLAlchemyError) as exc:
        url = make_url(settings.database_url)
        where = url.database if url.get_backend_name() == "sqlite" else _redacted(str(url))
        sys.stderr.write(f"modomo: cannot use the database {where}: {_one_line(exc)}\n")
        raise SystemExit(2) from None
    except OSError as exc:
        target = f": {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"modomo: {exc.strerror or _one_line(exc)}{target}\n")
        raise SystemExit(2) from None
