"""Job lifecycle: create a job, fan its scenes out in batches, cancel it, describe it.

Batches are sent only after the job row and its ``job_scenes`` are committed, and the task
ids are stored on the job before sending, so a cancel can revoke every one of them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Task
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from modomo.db.models import Job, JobScene, JobStatus, Scene, SceneFailure, utcnow
from modomo.db.session import session_scope
from modomo.jobs.accounting import JobCounts, add_scenes, apply_outcomes, set_status

__all__ = [
    "JobNotFound",
    "cancel_job",
    "create_job",
    "describe_job",
    "dispatch_batches",
    "finish_if_done",
    "list_jobs",
]

log = logging.getLogger(__name__)


class JobNotFound(LookupError):
    """No job has the given id."""


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise JobNotFound(f"not a job id: {value!r}") from None


def _get(session: Session, job_id: uuid.UUID) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


def create_job(
    job_type: str,
    params: dict[str, Any] | None = None,
    *,
    parent_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Create a pending job with no scenes yet; returns its id."""
    with session_scope() as session:
        job = Job(type=job_type, params=params or {}, parent_id=parent_id, status=JobStatus.PENDING)
        session.add(job)
        session.flush()
        return job.id


def dispatch_batches(
    job_id: uuid.UUID | str,
    task: Task,
    scene_ids: Sequence[uuid.UUID],
    batch_size: int,
    **task_kwargs: Any,
) -> list[str]:
    """Put ``scene_ids`` in the job and send them to ``task`` in batches.

    Each batch is sent as ``task(job_id, [scene ids as str], **task_kwargs)`` on the task's
    routed queue. Scenes already in the job are not sent again.

    Returns:
        The Celery task ids of the batches sent.
    """
    jid = _uuid(job_id)
    ordered = list(dict.fromkeys(scene_ids))
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    task_ids = [str(uuid.uuid4()) for _ in batches]
    with session_scope() as session:
        add_scenes(session, jid, ordered)
        # One dispatcher per job, so appending to the JSON list here races with nobody.
        known = session.scalar(select(Job.celery_task_ids).where(Job.id == jid)) or []
        session.execute(
            update(Job)
            .where(Job.id == jid)
            .values(celery_task_ids=[*known, *task_ids], updated_at=utcnow())
        )
    for task_id, batch in zip(task_ids, batches, strict=True):
        task.apply_async(
            args=(str(jid), [str(sid) for sid in batch]), kwargs=task_kwargs, task_id=task_id
        )
    return task_ids


def finish_if_done(job_id: uuid.UUID | str) -> JobCounts | None:
    """Complete a job whose counters already add up (e.g. every input failed at ingest)."""
    with session_scope() as session:
        return apply_outcomes(session, _uuid(job_id))


def cancel_job(job_id: uuid.UUID | str) -> str:
    """Cancel a job: mark it cancelled and revoke its batches still queued.

    Running batches stop at their next check between scenes. A finished job is left as it is.

    Returns:
        The job's status afterwards.

    Raises:
        JobNotFound: no such job.
    """
    jid = _uuid(job_id)
    with session_scope() as session:
        job = _get(session, jid)
        changed = set_status(session, jid, JobStatus.CANCELLED, message="cancelled by user")
        task_ids = list(job.celery_task_ids or [])
    if changed and task_ids:
        from modomo.celery_app import app

        try:
            app.control.revoke(task_ids)
        except Exception:  # revoking is an optimisation: batches check the status anyway
            log.warning("could not revoke the tasks of job %s", jid, exc_info=True)
    with session_scope() as session:
        return session.scalar(select(Job.status).where(Job.id == jid)) or JobStatus.CANCELLED


def describe_job(job_id: uuid.UUID | str, max_failures: int = 100) -> dict[str, Any]:
    """A JSON-able view of a job: its record plus its scene failures with their reasons.

    Raises:
        JobNotFound: no such job.
    """
    jid = _uuid(job_id)
    with session_scope() as session:
        job = _get(session, jid)
        rows = session.execute(
            select(
                SceneFailure.scene_id,
                Scene.source_key,
                SceneFailure.stage,
                SceneFailure.error,
                SceneFailure.attempts,
            )
            .join(Scene, Scene.id == SceneFailure.scene_id)
            .where(SceneFailure.job_id == jid)
            .order_by(SceneFailure.id)
            .limit(max_failures)
        ).all()
        pending = session.scalar(
            select(func.count())
            .select_from(JobScene)
            .where(JobScene.job_id == jid, JobScene.status == "pending")
        )
        return {
            **job_record(job),
            "pending": pending,
            "failures": [
                {
                    "scene_id": str(r[0]),
                    "source_key": r[1],
                    "stage": r[2],
                    "error": r[3],
                    "attempts": r[4],
                }
                for r in rows
            ],
        }


def job_record(job: Job) -> dict[str, Any]:
    """The job row as a JSON-able dict (timestamps in ISO 8601)."""

    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": str(job.id),
        "type": job.type,
        "status": job.status,
        "total": job.total,
        "processed": job.processed,
        "failed": job.failed,
        "progress": round(job.progress or 0.0, 2),
        "message": job.message,
        "params": job.params,
        "result": job.result,
        "error": job.error,
        "celery_task_ids": job.celery_task_ids,
        "parent_id": str(job.parent_id) if job.parent_id else None,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "updated_at": iso(job.updated_at),
    }


def list_jobs(
    status: str | None = None, job_type: str | None = None, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    """Jobs, newest first, optionally filtered by status and type."""
    with session_scope() as session:
        query = select(Job).order_by(Job.created_at.desc()).limit(limit).offset(offset)
        if status:
            query = query.where(Job.status == status)
        if job_type:
            query = query.where(Job.type == job_type)
        return [job_record(job) for job in session.scalars(query)]
