"""Maintenance tasks (queue ``maintenance``), scheduled by Celery beat (``modomo beat``; the
schedule is :data:`modomo.celery_app.BEAT_SCHEDULE`). Thin wrappers of
:mod:`modomo.maintenance`."""

from __future__ import annotations

from typing import Any

from modomo import maintenance
from modomo.celery_app import app
from modomo.tasks.base import RETRY

__all__ = ["cleanup_artifacts", "health_check", "reap_stale_jobs", "scheduler_tick"]


@app.task(**RETRY)
def reap_stale_jobs() -> list[dict[str, Any]]:
    """Re-send or fail the unfinished scenes of jobs that stopped making progress."""
    return maintenance.reap_stale_jobs()


@app.task(**RETRY)
def cleanup_artifacts() -> dict[str, int]:
    """Delete artifacts no scene refers to (after a grace period) and old export archives."""
    return maintenance.cleanup_artifacts()


@app.task
def health_check() -> dict[str, Any]:
    """Check the database, the broker and the artifact store (logged when one fails)."""
    return maintenance.health_check()


@app.task
def scheduler_tick() -> dict[str, Any]:
    """Expire jobs past their ``expires_at``, send scheduled jobs that are due, and fire due
    recurring schedules (:func:`modomo.jobs.scheduling.tick`). Not retried: the next tick,
    a few seconds later, does the same work."""
    from modomo.jobs.scheduling import tick

    return tick(celery=app).as_dict()
