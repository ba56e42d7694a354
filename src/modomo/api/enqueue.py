"""Submitting a job from a request: create the job row, send its start task, answer 202.

Nothing heavier happens inside a request. The task id is recorded on the job before the
task is sent, so a cancel can revoke it; when the broker cannot take the task, the job is
marked failed with the reason and the caller gets 503 — no job is left pending forever.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import HTTPException, status

from modomo.api.keys import Principal
from modomo.api.schemas import Accepted
from modomo.celery_app import app as celery_app
from modomo.db.models import JobStatus
from modomo.db.session import session_scope
from modomo.jobs import create_job
from modomo.jobs.accounting import set_status

__all__ = ["enqueue_job"]

log = logging.getLogger(__name__)


def enqueue_job(
    principal: Principal,
    job_type: str,
    task_name: str,
    kwargs: dict[str, Any],
    *,
    params: dict[str, Any] | None = None,
    missing: str,
) -> Accepted:
    """Create a ``job_type`` job and send ``task_name(job_id=..., **kwargs)``.

    Args:
        principal: who asked; recorded as the job's ``created_by`` (a JWT's ``sub`` or
            ``key:<api key id>``), so Supabase's row-level security shows users their jobs.
        job_type: the job's type (``detection``, ``colors`` …).
        task_name: the registered Celery task that starts the job.
        kwargs: the task's keyword arguments besides ``job_id`` (JSON-able).
        params: what the job records as its parameters (default: ``kwargs``).
        missing: what the caller is told when the task does not exist in this version.

    Raises:
        HTTPException: 501 when the task is not registered; 503 when the broker refused it.
    """
    task = celery_app.tasks.get(task_name)
    if task is None:
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, detail=missing)
    task_id = str(uuid.uuid4())
    job_id = create_job(
        job_type,
        params if params is not None else kwargs,
        celery_task_ids=[task_id],
        created_by=principal.owner,
    )
    try:
        task.apply_async(kwargs={"job_id": str(job_id), **kwargs}, task_id=task_id)
    except Exception as exc:
        reason = f"could not enqueue the job: broker unavailable ({type(exc).__name__}: {exc})"
        log.error("job %s: %s", job_id, reason)
        with session_scope() as session:
            set_status(session, job_id, JobStatus.FAILED, message=reason, error=reason)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=reason) from None
    return Accepted(
        job_id=job_id, task_id=task_id, status=JobStatus.PENDING, status_url=f"/jobs/{job_id}"
    )
