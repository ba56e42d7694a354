"""Engines and sessions: one engine per database URL per process.

SQLite gets WAL, a busy timeout and foreign keys on every connection, so the embedded
default tolerates a worker thread and the CLI writing at once. Engines are disposed in a
forked Celery child (``dispose_engines``) so no connection crosses a fork.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from modomo.config import get_settings

log = logging.getLogger(__name__)

__all__ = ["dispose_engines", "get_engine", "session_scope", "session_factory"]

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default: the configured database URL).

    For SQLite files the parent folder is created.
    """
    url = url or get_settings().database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite":
                if parsed.database and parsed.database != ":memory:":
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                settings = get_settings()
                engine = create_engine(
                    url,
                    pool_pre_ping=True,
                    pool_size=settings.db_pool_size,
                    max_overflow=settings.db_max_overflow,
                    # On a SQL_ASCII database (what a bare `initdb` makes without a UTF-8
                    # locale) psycopg would return text as bytes; Modomo writes UTF-8 only.
                    connect_args={"client_encoding": "utf8"},
                )
            _engines[url] = engine
        return engine


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    """A ``sessionmaker`` bound to :func:`get_engine` (objects stay usable after commit)."""
    engine = get_engine(url)
    key = str(engine.url)
    with _lock:
        factory = _factories.get(key)
        if factory is None:
            factory = sessionmaker(engine, expire_on_commit=False)
            _factories[key] = factory
        return factory


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    The error that ended the block is the one raised. When the rollback itself fails (a
    signal such as Celery's soft time limit interrupted a query mid-protocol, and psycopg
    answers "another command is already in progress"), the connection is invalidated so the
    pool never hands it out again, and the original error still propagates: a soft time limit
    must reach the task's handler, not turn into a retryable database error.
    """
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException as error:
        try:
            session.rollback()
        except Exception as rollback_error:
            log.warning(
                "rollback after %s failed (%s); discarding the connection",
                type(error).__name__,
                rollback_error,
            )
            session.invalidate()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Forget pooled connections inherited across a fork (call in the child)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
