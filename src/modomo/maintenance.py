"""Maintenance run by Celery beat (``modomo.tasks.maintenance_tasks``): the stale-job reaper,
the daily artifact cleanup and the health check. No Celery in here: the tasks are thin.

The reaper is part of the job accounting this product is about: a job whose worker vanished
(killed, its machine gone) or whose messages were lost (``celery purge``, a broker that lost
its data) would otherwise stay ``pending`` or ``running`` forever. A job with no progress for
``MODOMO_STALE_JOB_TIMEOUT`` seconds gets its unfinished scenes sent again (the ledger counts
each scene once, so a batch that was only slow is not counted twice) or, when it never
started (no scenes yet), its start task sent again (a start task finding its job no longer
active does nothing), up to ``MODOMO_STALE_JOB_MAX_REAPS`` times; after that, or for a job
whose work cannot be re-sent, its unfinished scenes fail with the reason and the job ends.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text

from modomo.artifacts import artifact_store
from modomo.config import get_settings
from modomo.db.models import Job, JobScene, JobStatus, Scene, utcnow
from modomo.db.session import session_scope
from modomo.jobs import abandon_job, dispatch_batches, pending_scenes, update_params

__all__ = ["cleanup_artifacts", "health_check", "reap_stale_jobs"]

log = logging.getLogger(__name__)

REAPED = "reaped"
"""Job param: how many times the reaper re-sent the job's unfinished scenes."""


def _stale_jobs(cutoff: datetime) -> list[Job]:
    with session_scope() as session:
        last_outcome = (
            select(func.max(JobScene.updated_at)).where(JobScene.job_id == Job.id).scalar_subquery()
        )
        jobs = session.scalars(
            select(Job).where(
                Job.status.in_(JobStatus.QUEUED),  # a scheduled job waits on purpose
                Job.updated_at < cutoff,
                func.coalesce(last_outcome, Job.created_at) < cutoff,
            )
        ).all()
        for job in jobs:
            session.expunge(job)
        return list(jobs)


def reap_stale_jobs(
    stale_after_s: float | None = None, max_reaps: int | None = None
) -> list[dict[str, Any]]:
    """Recover the active jobs that made no progress for ``stale_after_s`` seconds.

    Args:
        stale_after_s: default ``MODOMO_STALE_JOB_TIMEOUT``.
        max_reaps: default ``MODOMO_STALE_JOB_MAX_REAPS``.

    Returns:
        One ``{"job_id", "action", "scenes"}`` per job handled; ``action`` is ``resent``
        (its unfinished scenes were sent again) or ``failed`` (they were failed, with the
        reason, and the job ended).
    """
    from modomo.celery_app import app
    from modomo.tasks.retry import RETRYABLE

    settings = get_settings()
    stale = settings.stale_job_timeout if stale_after_s is None else stale_after_s
    limit = settings.stale_job_max_reaps if max_reaps is None else max_reaps
    handled = []
    for job in _stale_jobs(utcnow() - timedelta(seconds=stale)):
        pending = pending_scenes(job.id)
        params = dict(job.params or {})
        reaped = int(params.get(REAPED, 0))
        never_started = job.total == 0 and job.status == JobStatus.PENDING
        resend_start = never_started and bool(job.start_task)
        if reaped < limit and (resend_start or (pending and job.type in RETRYABLE)):
            update_params(job.id, **{REAPED: reaped + 1})
            if resend_start:
                from modomo.jobs.scheduling import send_start_task

                send_start_task(app, job.id, job.start_task or {}, job.priority, job.expires_at)
                what = "its start task (lost before any worker took it)"
            else:
                task_name, options = RETRYABLE[job.type]
                dispatch_batches(
                    job.id, app.tasks[task_name], pending, settings.batch_size, **options(params)
                )
                what = f"its {len(pending)} unfinished scenes"
            log.warning(
                "job %s made no progress for %.0f s: re-sent %s (%d/%d)",
                *(job.id, stale, what, reaped + 1, limit),
            )
            handled.append({"job_id": str(job.id), "action": "resent", "scenes": len(pending)})
            continue
        cause = (
            "it never started: its start task was lost" if never_started else "its worker is gone"
        )
        why = (
            f"no progress for {stale:.0f} s ({cause})"
            + (f"; re-sent {reaped} times already" if reaped else "")
            + (
                ""
                if job.type in RETRYABLE or resend_start
                else f"; {job.type} jobs are not re-sent scene by scene"
            )
        )
        abandon_job(job.id, stage="reaper", reason=why)
        log.warning("job %s failed by the reaper: %s", job.id, why)
        handled.append({"job_id": str(job.id), "action": "failed", "scenes": len(pending)})
    return handled


def cleanup_artifacts(
    grace_s: float | None = None, export_retention_s: float | None = None
) -> dict[str, int]:
    """Delete artifacts no scene refers to any more, and old export archives.

    Images (``images/``) and depth maps (``depth/``) are deleted when no scene names them and
    they are older than ``grace_s`` (an ingest stores the image before its scene row commits,
    so a young file may be about to be referenced). Export archives (``exports/``) go after
    ``export_retention_s``.

    Returns:
        ``{"checked", "deleted", "exports_deleted"}``.
    """
    settings = get_settings()
    grace = settings.artifact_grace if grace_s is None else grace_s
    retention = settings.export_retention if export_retention_s is None else export_retention_s
    store = artifact_store()
    with session_scope() as session:
        referenced = set(
            session.scalars(select(Scene.image_key).where(Scene.image_key.is_not(None)))
        )
        referenced.update(
            session.scalars(select(Scene.depth_key).where(Scene.depth_key.is_not(None)))
        )
    now = time.time()
    checked = deleted = exports_deleted = 0
    for prefix in ("images", "depth"):
        for key, modified in store.iter_keys(prefix):
            checked += 1
            if key not in referenced and now - modified > grace:
                store.delete(key)
                deleted += 1
    for key, modified in store.iter_keys("exports"):
        if now - modified > retention:
            store.delete(key)
            exports_deleted += 1
    log.info(
        "cleanup: %d artifacts checked, %d unreferenced deleted, %d old exports deleted",
        checked,
        deleted,
        exports_deleted,
    )
    return {"checked": checked, "deleted": deleted, "exports_deleted": exports_deleted}


def health_check() -> dict[str, Any]:
    """Check that the database answers, the broker answers and the artifact store takes a
    write; returns ``{"ok", "checks": {name: "ok" | error}, "seconds"}`` (never raises)."""
    from modomo.celery_app import app

    started = time.perf_counter()
    checks: dict[str, str] = {}

    def run(name: str, check: Any) -> None:
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"{type(exc).__name__}: {exc}"

    def database() -> None:
        with session_scope() as session:
            session.execute(text("SELECT 1"))

    def broker() -> None:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)

    def artifacts() -> None:
        store = artifact_store()
        key = f"health/{uuid.uuid4().hex}"
        store.put_bytes(key, b"ok")
        store.delete(key)

    run("database", database)
    run("broker", broker)
    run("artifacts", artifacts)
    ok = all(value == "ok" for value in checks.values())
    if not ok:
        log.error("health check failed: %s", checks)
    return {"ok": ok, "checks": checks, "seconds": round(time.perf_counter() - started, 3)}
