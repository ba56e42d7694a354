"""Submitting a job from a request: create the job row, send its start task (or leave it
scheduled), answer 202.

Nothing heavier happens inside a request. The task id is recorded on the job before the
task is sent, so a cancel can revoke it; when the broker cannot take the task, the job is
marked failed with the reason and the caller gets 503 — no job is left pending forever.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status

from modomo.api.keys import Principal
from modomo.api.schemas import Accepted, JobOptions
from modomo.jobs.scheduling import BrokerUnavailable, TaskMissing, submit_job

__all__ = ["enqueue_job"]


def enqueue_job(
    principal: Principal,
    job_type: str,
    task_name: str,
    kwargs: dict[str, Any],
    *,
    options: JobOptions | None = None,
    params: dict[str, Any] | None = None,
    missing: str,
) -> Accepted:
    """Create a ``job_type`` job and send ``task_name(job_id=..., **kwargs)``, or schedule it.

    Args:
        principal: who asked; recorded as the job's ``created_by`` (a JWT's ``sub`` or
            ``key:<api key id>``), so Supabase's row-level security shows users their jobs.
        job_type: the job's type (``detection``, ``colors`` …).
        task_name: the registered Celery task that starts the job.
        kwargs: the task's keyword arguments besides ``job_id`` (JSON-able).
        options: the request's priority, run time and expiry (default: normal, now, never).
        params: what the job records as its parameters (default: ``kwargs``).
        missing: what the caller is told when the task does not exist in this version.

    Raises:
        HTTPException: 501 when the task is not registered; 503 when the broker refused it.
    """
    try:
        submitted = submit_job(
            job_type,
            task_name,
            kwargs,
            params=params,
            timing=(options or JobOptions()).timing(),
            created_by=principal.owner,
        )
    except TaskMissing:
        raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, detail=missing) from None
    except BrokerUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    return Accepted(
        job_id=submitted.job_id,
        task_id=submitted.task_id,
        status=submitted.status,
        status_url=f"/jobs/{submitted.job_id}",
    )
