"""``/health`` (the process answers) and ``/ready`` (broker and database reachable).

Both are open to everyone, so ``/ready`` names only the component that is down; why (the
host, port and driver error) goes to the log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Response, status
from sqlalchemy import text

from modomo.celery_app import app as celery_app
from modomo.db.session import session_scope

router = APIRouter(tags=["health"])

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0


@router.get("/health")
def health() -> dict[str, str]:
    """The process is up (no dependency is checked; open to everyone)."""
    return {"status": "ok"}


def _check_broker() -> str | None:
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=READY_TIMEOUT_S)
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _check_database() -> str | None:
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


@router.get("/ready")
def ready(response: Response) -> dict[str, Any]:
    """200 when the broker and the database answer; 503 naming the one that does not
    (``{"ready": false, "down": ["broker"], ...}``). The reason is logged, never answered:
    this endpoint needs no credential."""
    checks = {"broker": _check_broker(), "database": _check_database()}
    down = [name for name, error in checks.items() if error]
    for name in down:
        log.warning("ready check: the %s is down: %s", name, checks[name])
    if down:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {
        "ready": not down,
        "status": "ready" if not down else "unavailable",
        "down": down,
        "checks": {name: "down" if error else "ok" for name, error in checks.items()},
    }
