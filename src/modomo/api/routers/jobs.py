"""Jobs: list, read, follow (with Celery's view), cancel, retry the failed scenes.

A user sees and acts on its own jobs only; an admin on every job; another user's job is 404
(see :mod:`modomo.api.ownership`)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Annotated, Any, Literal

from celery.result import AsyncResult
from fastapi import APIRouter, Depends, HTTPException, Query, status

from modomo.api.auth import CurrentUser
from modomo.api.jobrequest import JobRequest
from modomo.api.keys import Principal
from modomo.api.ownership import check_job, owner_filter
from modomo.api.ratelimit import enqueue_limit
from modomo.api.schemas import PLAIN_TEXT, Accepted, Page, RetryRequest
from modomo.celery_app import app as celery_app
from modomo.db.models import JobStatus
from modomo.jobs import (
    JobConflict,
    JobNotFound,
    cancel_job,
    count_jobs,
    describe_job,
    list_jobs,
)

router = APIRouter(prefix="/jobs", tags=["jobs"])

Status = Literal["scheduled", "pending", "running", "completed", "failed", "cancelled", "expired"]
MAX_TASK_STATES = 50
RETRY = JobRequest(RetryRequest)


def _job(job_id: uuid.UUID, principal: Principal) -> dict[str, Any]:
    check_job(job_id, principal)
    try:
        return describe_job(job_id)
    except JobNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


@router.get("")
def get_jobs(
    principal: CurrentUser,
    job_status: Annotated[Status | None, Query(alias="status")] = None,
    job_type: Annotated[str | None, Query(alias="type", max_length=32, pattern=PLAIN_TEXT)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page:
    """Jobs, newest first, filtered by ``status`` and ``type``: the caller's own jobs (an
    admin's: every job)."""
    owners = owner_filter(principal)
    items = list_jobs(
        status=job_status, job_type=job_type, limit=limit, offset=offset, created_by=owners
    )
    total = count_jobs(status=job_status, job_type=job_type, created_by=owners)
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/{job_id}")
def get_job(job_id: uuid.UUID, principal: CurrentUser) -> dict[str, Any]:
    """A job's record, its pending count and its scene failures with reasons."""
    return _job(job_id, principal)


def _task_state(task_id: str) -> dict[str, Any]:
    result = AsyncResult(task_id, app=celery_app)
    info = result.info
    if isinstance(info, BaseException):
        info = {"error": f"{type(info).__name__}: {info}"}
    return {"task_id": task_id, "state": result.state, "meta": info}


MAX_REASONS = 3
MAX_REASON_CHARS = 300


def _failure_summary(job: dict[str, Any]) -> str | None:
    """Why a job failed because of its scenes: how many failed and their commonest reasons
    (counted over the failures :func:`describe_job` lists)."""
    if not job.get("failed"):
        return None
    reasons = Counter(
        (f"{failure['stage']}: " if failure.get("stage") else "")
        + (failure.get("error") or "no reason recorded")
        for failure in job.get("failures") or []
    )
    listed = [
        f"{reason[:MAX_REASON_CHARS]} ({count} scene{'' if count == 1 else 's'})"
        for reason, count in reasons.most_common(MAX_REASONS)
    ]
    if len(reasons) > MAX_REASONS:
        listed.append("...")
    summary = f"{job['failed']} of {job['total']} scenes failed"
    return f"{summary}: {'; '.join(listed)}" if listed else summary


def guide_job_data(job: dict[str, Any]) -> dict[str, Any]:
    """The job under the original Modomo guide's field names (see :func:`job_celery_status`)."""
    error = job.get("error")
    if not error and job["status"] == JobStatus.FAILED:
        error = _failure_summary(job)
    return {
        "job_id": job["id"],
        "job_type": job["type"],
        "status": job["status"],
        "error_message": error or None,
        "progress": job["progress"],
        "total_items": job["total"],
        "processed_items": job["processed"],
        "failed_items": job["failed"],
        "created_at": job["created_at"],
        "updated_at": job["updated_at"],
        "completed_at": job["finished_at"],
    }


@router.get("/{job_id}/celery-status")
def job_celery_status(job_id: uuid.UUID, principal: CurrentUser) -> dict[str, Any]:
    """The job record plus Celery's view: its start task's state, and each batch task's
    state with its PROGRESS meta (``current``, ``total``, ``progress``, ``message``) for the
    latest batches.

    ``job_data`` is the same job under the field names of the original Modomo scraper's
    guide, whose front end polls ``job_data.status`` and ``job_data.error_message``:

    - ``job_id``: the job's ``id``; ``job_type``: its ``type``;
    - ``status``: its ``status`` (``scheduled``, ``pending``, ``running``, ``completed``,
      ``failed``, ``cancelled``, ``expired``);
    - ``error_message``: its ``error`` (why the job itself failed: a source that failed, a
      broker that refused the task, a purged queue ...); for a job that failed because
      every scene failed, a summary of those scenes' failures
      (``"3 of 3 scenes failed: colors: image missing ... (3 scenes)"``, the commonest
      reasons first); null otherwise, a completed job with some failed scenes included
      (see ``job.failures``);
    - ``progress``: ``progress``, 0-100;
    - ``total_items``, ``processed_items``, ``failed_items``: ``total``, ``processed`` (scenes
      done), ``failed`` (scenes failed);
    - ``created_at``, ``updated_at``: the same; ``completed_at``: ``finished_at`` (when the
      job ended, whether completed, failed or cancelled; null while it has not).
    """
    job = _job(job_id, principal)
    task_ids = list(job.get("celery_task_ids") or [])
    start, batches = (task_ids[0], task_ids[1:]) if task_ids else (None, [])
    shown = [_task_state(t) for t in batches[-MAX_TASK_STATES:]]
    states: dict[str, int] = {}
    for task in shown:
        states[task["state"]] = states.get(task["state"], 0) + 1
    return {
        "job": job,
        "job_data": guide_job_data(job),
        "celery": {
            "task": _task_state(start) if start else None,
            "batches": {"total": len(batches), "shown": len(shown), "states": states},
            "batch_tasks": shown,
        },
    }


@router.post("/{job_id}/cancel")
def cancel(job_id: uuid.UUID, principal: CurrentUser) -> dict[str, Any]:
    """Cancel a job: it is marked cancelled, its queued tasks are revoked, and running
    batches stop before their next scene. A finished job is left as it is (see ``status``)."""
    check_job(job_id, principal)
    try:
        cancel_job(job_id)
    except JobNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    return _job(job_id, principal)


@router.post(
    "/{job_id}/retry", status_code=status.HTTP_202_ACCEPTED, openapi_extra=RETRY.openapi_extra()
)
def retry(
    job_id: uuid.UUID,
    principal: Annotated[Principal, Depends(enqueue_limit)],
    body: Annotated[RetryRequest, Depends(RETRY.dependency)],
) -> Accepted:
    """Send the failed scenes of a finished job again, as a new job (``parent_id`` = this
    job, and the same owner), with the original's priority unless ``priority`` is given.
    409 when the job is still active, cannot be retried, or has no failed scene."""
    from modomo.tasks.retry import retry_failed_scenes

    check_job(job_id, principal)
    try:
        child, task_ids = retry_failed_scenes(job_id, body.priority)
    except JobNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except JobConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return Accepted(
        job_id=child,
        task_id=task_ids[0],
        status=JobStatus.PENDING,
        status_url=f"/jobs/{child}",
    )
