"""Job lifecycle: create a job, fan its scenes out in batches, cancel it, describe it.

Batches are sent only after the job row and its ``job_scenes`` are committed, and the task
ids are stored on the job before sending, so a cancel can revoke every one of them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Task
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from modomo.db.models import (
    ItemStatus,
    Job,
    JobScene,
    JobStatus,
    Priority,
    Scene,
    SceneFailure,
    utcnow,
)
from modomo.db.session import session_scope
from modomo.jobs.accounting import (
    JobCounts,
    add_scenes,
    apply_outcomes,
    fail_pending,
    set_status,
    stage_counts,
    stage_counts_of,
)

__all__ = [
    "EXTERNAL_IDS",
    "AdoptedJob",
    "JobConflict",
    "JobNotFound",
    "SOURCE_OPEN",
    "cancel_job",
    "close_source",
    "count_jobs",
    "create_job",
    "describe_job",
    "adopt_job",
    "dispatch_batches",
    "expire_jobs",
    "fail_lost_work",
    "failed_scenes",
    "finish_if_done",
    "job_is_active",
    "job_owner",
    "job_record",
    "job_summary",
    "list_jobs",
    "open_source",
    "update_params",
]

log = logging.getLogger(__name__)

EXTERNAL_IDS = uuid.UUID("6d6f646f-6d6f-5e78-8000-6a6f62696473")
"""Namespace of the job ids made from caller-chosen ids (``uuid5(EXTERNAL_IDS, "color_001")``,
RFC 4122 name-based): the same chosen id always names the same job."""


class JobNotFound(LookupError):
    """No job has the given id."""


class JobConflict(RuntimeError):
    """The job is not in a state that allows the action (e.g. retrying a running job)."""


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    """A job id, or the id of the job a caller named with its own id (see :func:`adopt_job`).

    Raises:
        JobNotFound: an empty id.
    """
    try:
        return uuid.UUID(str(value))
    except ValueError:
        if not str(value).strip():
            raise JobNotFound(f"not a job id: {value!r}") from None
        return uuid.uuid5(EXTERNAL_IDS, str(value))


def _locked(session: Session, job_id: uuid.UUID) -> Job:
    """The job row, locked until the transaction ends (``SELECT … FOR UPDATE``)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


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
    celery_task_ids: Sequence[str] = (),
    created_by: str | None = None,
    priority: str = Priority.NORMAL,
    run_at: datetime | None = None,
    expires_at: datetime | None = None,
    start_task: dict[str, Any] | None = None,
    schedule_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Create a job with no scenes yet; returns its id.

    The job is ``pending``, or ``scheduled`` when ``run_at`` is given (the scheduler tick
    sends its ``start_task`` then; see :mod:`modomo.jobs.scheduling`).

    Args:
        job_type: the job's type (``colors``, ``detection``, ``scrape`` …).
        params: what the job records as its parameters.
        parent_id: the job this one follows on from.
        celery_task_ids: ids of tasks the caller is about to send for the job (its start
            task), recorded first so a cancel can revoke them.
        created_by: who asked (see :attr:`modomo.db.models.Job.created_by`); a job with a
            parent and no creator of its own belongs to its parent's (a retry, an import's
            detection job), so whoever may see the parent sees the child.
        priority: one of :attr:`modomo.db.models.Priority.NAMES`; the job's batches inherit it.
        run_at: when a scheduled job is due (timezone-aware).
        expires_at: when a job not started yet expires (timezone-aware).
        start_task: ``{"name", "kwargs", "task_id"}`` of the task that starts the job.
        schedule_id: the recurring schedule that created the job.

    Raises:
        ValueError: an unknown priority.
    """
    if priority not in Priority.NAMES:
        raise ValueError(f"priority must be one of {', '.join(Priority.NAMES)}, not {priority!r}")
    with session_scope() as session:
        if created_by is None and parent_id is not None:
            created_by = session.scalar(select(Job.created_by).where(Job.id == parent_id))
        job = Job(
            type=job_type,
            params=params or {},
            parent_id=parent_id,
            status=JobStatus.SCHEDULED if run_at is not None else JobStatus.PENDING,
            celery_task_ids=list(celery_task_ids),
            created_by=created_by,
            priority=priority,
            run_at=run_at,
            expires_at=expires_at,
            start_task=start_task,
            schedule_id=schedule_id,
        )
        session.add(job)
        session.flush()
        return job.id


@dataclass(frozen=True)
class AdoptedJob:
    """The job a start task was called for (see :func:`adopt_job`).

    Attributes:
        id: the job's id.
        external_id: the caller's own id when it was not a job id, else None.
        created: True when this call created the job record.
    """

    id: uuid.UUID
    external_id: str | None
    created: bool

    @property
    def already_started(self) -> bool:
        """A caller-chosen id whose job an earlier call created: its work is not done twice."""
        return self.external_id is not None and not self.created


def adopt_job(job_id: uuid.UUID | str, job_type: str, params: dict[str, Any]) -> AdoptedJob:
    """The job a start task was called for, created when the caller chose its id.

    The original Modomo scraper's guide calls start tasks directly with an id of its own
    (``run_color_processing_job.delay(job_id="color_001", limit=100)``). A job id of an
    existing job is that job; any other string is a caller-chosen id: the job
    ``uuid5(EXTERNAL_IDS, id)`` with ``params["external_id"]`` = id, created now (pending)
    unless an earlier call created it (then :attr:`AdoptedJob.already_started`).

    Args:
        job_id: a job id, or the caller's own id.
        job_type: the type of a job created here (``colors``, ``detection`` …).
        params: the parameters recorded on a job created here.
    """
    try:
        given = uuid.UUID(str(job_id))
    except ValueError:
        given = None
    if given is not None:
        with session_scope() as session:
            if session.get(Job, given) is not None:
                return AdoptedJob(given, None, False)
    external = str(job_id)
    jid = given or uuid.uuid5(EXTERNAL_IDS, external)
    try:
        with session_scope() as session:
            if session.get(Job, jid) is not None:
                return AdoptedJob(jid, external, False)
            session.add(
                Job(
                    id=jid,
                    type=job_type,
                    params={**params, "external_id": external},
                    status=JobStatus.PENDING,
                )
            )
    except IntegrityError:  # the same call, at the same time, elsewhere
        return AdoptedJob(jid, external, False)
    log.info("created job %s for the caller's id %r", jid, external)
    return AdoptedJob(jid, external, True)


def job_summary(job_id: uuid.UUID | str, **extra: Any) -> dict[str, Any]:
    """What a start task returns to ``.get()``: the job's record (``id``, ``status``,
    counts, ``params`` with any ``external_id``, timestamps) and ``extra``.

    Raises:
        JobNotFound: no such job.
    """
    with session_scope() as session:
        return {**job_record(_get(session, _uuid(job_id))), **extra}


def dispatch_batches(
    job_id: uuid.UUID | str,
    task: Task,
    scene_ids: Sequence[uuid.UUID],
    batch_size: int,
    **task_kwargs: Any,
) -> list[str]:
    """Put ``scene_ids`` in the job and send them to ``task`` in batches.

    Each batch is sent as ``task(job_id, [scene ids as str], **task_kwargs)`` on the task's
    routed queue, with the job's priority. A scene given twice is sent once; a scene already
    in the job is sent again but counted once (the ledger counts each scene's first outcome
    only).

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
        known_ids, priority = session.execute(
            select(Job.celery_task_ids, Job.priority).where(Job.id == jid)
        ).one()
        known = known_ids or []
        session.execute(
            update(Job)
            .where(Job.id == jid)
            .values(celery_task_ids=[*known, *task_ids], updated_at=utcnow())
        )
    for task_id, batch in zip(task_ids, batches, strict=True):
        task.apply_async(
            args=(str(jid), [str(sid) for sid in batch]),
            kwargs=task_kwargs,
            task_id=task_id,
            priority=Priority.MESSAGE.get(priority, Priority.MESSAGE[Priority.NORMAL]),
        )
    return task_ids


def update_params(job_id: uuid.UUID | str, **values: Any) -> dict[str, Any]:
    """Merge ``values`` into the job's ``params`` (e.g. a crawl cursor); returns the params.

    The row is locked for the update (``SELECT … FOR UPDATE`` on PostgreSQL), so concurrent
    writers of one job's params do not lose each other's keys.

    Raises:
        JobNotFound: no such job.
    """
    jid = _uuid(job_id)
    with session_scope() as session:
        job = _locked(session, jid)
        job.params = {**(job.params or {}), **values}
        job.updated_at = utcnow()
        return dict(job.params)


def set_result(job_id: uuid.UUID | str, result: dict[str, Any]) -> None:
    """Store a job's ``result`` JSON (what a whole-catalogue job such as de-duplication found).

    Raises:
        JobNotFound: no such job.
    """
    jid = _uuid(job_id)
    with session_scope() as session:
        job = _locked(session, jid)
        job.result = result
        job.updated_at = utcnow()


SOURCE_OPEN = "source_open"
"""Job param set while a source (a crawl, an import) is still adding scenes to the job."""


def open_source(job_id: uuid.UUID | str) -> bool:
    """Hold a source job open while it adds scenes in chunks, and mark it running.

    A job completes when ``processed + failed == total``; a crawl that counts each chunk as
    it goes would complete after its first chunk. So the open source counts as one more unit
    of ``total`` until :func:`close_source`. Recorded in ``params`` (``source_open``), so a
    redelivered or restarted task does not hold it twice.

    Returns:
        True when this call opened it, False when it was already open (a resumed task).

    Raises:
        JobNotFound: no such job.
    """
    jid = _uuid(job_id)
    with session_scope() as session:
        job = _locked(session, jid)
        if (job.params or {}).get(SOURCE_OPEN):
            return False
        job.params = {**(job.params or {}), SOURCE_OPEN: True}
        job.total = (job.total or 0) + 1
        session.flush()
        set_status(session, jid, JobStatus.RUNNING)
        return True


def close_source(
    job_id: uuid.UUID | str, *, error: str | None = None, message: str | None = None
) -> JobCounts | None:
    """Release a source job held by :func:`open_source`; it completes once its scenes are
    counted. With ``error`` (the source itself failed) the job is marked failed with it.

    Raises:
        JobNotFound: no such job.
    """
    jid = _uuid(job_id)
    with session_scope() as session:
        job = _locked(session, jid)
        if (job.params or {}).get(SOURCE_OPEN):
            job.params = {k: v for k, v in job.params.items() if k != SOURCE_OPEN}
            job.total = max(0, (job.total or 0) - 1)
            session.flush()
        if error is not None:
            set_status(session, jid, JobStatus.FAILED, message=message or error, error=error)
        elif message is not None:
            session.execute(update(Job).where(Job.id == jid).values(message=message))
        return apply_outcomes(session, jid)


def job_is_active(job_id: uuid.UUID | str) -> bool:
    """True while the job is pending or running: a start task checks before fanning out, so
    a job cancelled while its start task waited in the queue never starts.

    A pending job past its ``expires_at`` is marked ``expired`` here and reported inactive,
    so its start task never runs its work even if the scheduler tick has not expired it yet.
    """
    jid = _uuid(job_id)
    with session_scope() as session:
        row = session.execute(select(Job.status, Job.expires_at).where(Job.id == jid)).first()
        if row is None:
            return False
        status, expires_at = row
        if status == JobStatus.PENDING and expires_at is not None and expires_at <= utcnow():
            expire_jobs(session, Job.id == jid)
            return False
    return status in JobStatus.QUEUED


def expire_jobs(session: Session, *conditions: Any) -> list[tuple[uuid.UUID, list[str]]]:
    """Mark the jobs matching ``conditions`` that have not started (scheduled or pending,
    never running) ``expired``, in the caller's transaction.

    Returns:
        ``(job id, its Celery task ids)`` of each job expired now (started and final jobs are
        left alone), so the caller can revoke the tasks.
    """
    now = utcnow()
    rows = session.execute(
        update(Job)
        .where(
            *conditions,
            Job.status.in_((JobStatus.SCHEDULED, JobStatus.PENDING)),
            Job.started_at.is_(None),
        )
        .values(
            status=JobStatus.EXPIRED,
            message="expired: not started by its expires_at",
            finished_at=now,
            updated_at=now,
        )
        .returning(Job.id, Job.celery_task_ids)
    ).all()
    return [(job_id, list(task_ids or [])) for job_id, task_ids in rows]


def finish_if_done(job_id: uuid.UUID | str) -> JobCounts | None:
    """Complete a job whose counters already add up (e.g. every input failed at ingest)."""
    with session_scope() as session:
        return apply_outcomes(session, _uuid(job_id))


def fail_lost_work(
    job_id: uuid.UUID | str, scene_ids: Sequence[uuid.UUID | str] | None, *, stage: str, reason: str
) -> JobCounts | None:
    """Account for work that will never run (a purged or lost task) so its job still ends.

    The job's ``scene_ids`` still pending are counted as failed with ``reason``; a job that
    has no scenes yet (its start task was lost before it fanned out) is marked failed.

    Raises:
        JobNotFound: ``job_id`` is not a uuid.
    """
    jid = _uuid(job_id)
    with session_scope() as session:
        counts = None
        if scene_ids:
            counts = fail_pending(session, jid, [_uuid(s) for s in scene_ids], stage, reason)
        total = session.scalar(select(Job.total).where(Job.id == jid))
        if total == 0:
            set_status(session, jid, JobStatus.FAILED, message=reason, error=reason)
        return counts


def pending_scenes(job_id: uuid.UUID | str) -> list[uuid.UUID]:
    """The scenes of a job not counted yet (its ledger's ``pending`` rows).

    Raises:
        JobNotFound: ``job_id`` is not a uuid.
    """
    with session_scope() as session:
        return list(
            session.scalars(
                select(JobScene.scene_id).where(
                    JobScene.job_id == _uuid(job_id), JobScene.status == ItemStatus.PENDING
                )
            )
        )


def abandon_job(job_id: uuid.UUID | str, *, stage: str, reason: str) -> None:
    """End an active job whose remaining work will never run: its pending scenes fail with
    ``reason`` (attributed to ``stage``) and the job ends ``failed`` with it. A final job is
    left as it is.

    Raises:
        JobNotFound: ``job_id`` is not a uuid.
    """
    jid = _uuid(job_id)
    fail_lost_work(jid, pending_scenes(jid), stage=stage, reason=reason)
    with session_scope() as session:  # a job whose scenes all counted may have ended already
        set_status(session, jid, JobStatus.FAILED, message=reason, error=reason)


def failed_scenes(job_id: uuid.UUID | str) -> list[uuid.UUID]:
    """The scenes that failed in a job (its ledger's ``failed`` rows).

    Raises:
        JobNotFound: no such job.
    """
    jid = _uuid(job_id)
    with session_scope() as session:
        _get(session, jid)
        return list(
            session.scalars(
                select(JobScene.scene_id).where(
                    JobScene.job_id == jid, JobScene.status == ItemStatus.FAILED
                )
            )
        )


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


def job_owner(job_id: uuid.UUID | str) -> str | None:
    """Who created the job (its ``created_by``; None for the CLI's and beat's jobs).

    Raises:
        JobNotFound: no such job.
    """
    jid = _uuid(job_id)
    with session_scope() as session:
        row = session.execute(select(Job.created_by).where(Job.id == jid)).first()
    if row is None:
        raise JobNotFound(f"no job {jid}")
    return row[0]


def describe_job(job_id: uuid.UUID | str, max_failures: int = 100) -> dict[str, Any]:
    """A JSON-able view of a job: its record (stage counts included) plus its scene failures
    with their reasons.

    Raises:
        JobNotFound: no such job.
    """

    jid = _uuid(job_id)
    with session_scope() as session:
        job = _get(session, jid)
        stages = stage_counts(session, jid)
        rows = session.execute(
            select(
                SceneFailure.scene_id,
                Scene.source_key,
                SceneFailure.stage,
                SceneFailure.error,
                SceneFailure.attempts,
                JobScene.input,
            )
            .join(Scene, Scene.id == SceneFailure.scene_id)
            .outerjoin(
                JobScene,
                (JobScene.job_id == SceneFailure.job_id)
                & (JobScene.scene_id == SceneFailure.scene_id),
            )
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
            **job_record(job, stages),
            "pending": pending,
            "failures": [
                {
                    "scene_id": str(r[0]),
                    "source_key": r[1],
                    "stage": r[2],
                    "error": r[3],
                    "attempts": r[4],
                    # the input as this job was given it (source_key: where first stored)
                    "input": r[5] or r[1],
                }
                for r in rows
            ],
        }


def job_record(job: Job, stages: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """The job row as a JSON-able dict (timestamps in ISO 8601).

    Args:
        job: the job row.
        stages: its per-stage counts, ``{stage: {"processed": n, "failed": m}}`` from
            :func:`modomo.jobs.accounting.stage_counts` (callers listing many jobs fetch them
            in one query). None reads them through the session the row belongs to (one small
            query), or gives ``{}`` for a row outside any session.
    """

    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    if stages is None:
        session = object_session(job)
        stages = stage_counts(session, job.id) if session is not None else {}

    return {
        "id": str(job.id),
        "type": job.type,
        "status": job.status,
        "total": job.total,
        "processed": job.processed,
        "failed": job.failed,
        "progress": round(job.progress or 0.0, 2),
        "stages": stages,
        "message": job.message,
        "params": job.params,
        "result": job.result,
        "error": job.error,
        "celery_task_ids": job.celery_task_ids,
        "parent_id": str(job.parent_id) if job.parent_id else None,
        "created_by": job.created_by,
        "priority": job.priority,
        "run_at": iso(job.run_at),
        "expires_at": iso(job.expires_at),
        "schedule_id": str(job.schedule_id) if job.schedule_id else None,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "updated_at": iso(job.updated_at),
    }


def _filtered(
    query: Any, status: str | None, job_type: str | None, created_by: Sequence[str] | None
) -> Any:
    if status:
        query = query.where(Job.status == status)
    if job_type:
        query = query.where(Job.type == job_type)
    if created_by is not None:
        query = query.where(Job.created_by.in_(list(created_by)))
    return query


def list_jobs(
    status: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
    offset: int = 0,
    *,
    created_by: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Jobs, newest first, optionally filtered by status and type, each with its stage counts.

    ``created_by``: only the jobs created by one of these principals (None: everyone's).
    """

    with session_scope() as session:
        query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
        jobs = list(session.scalars(_filtered(query, status, job_type, created_by)))
        stages = stage_counts_of(session, [job.id for job in jobs])
        return [job_record(job, stages[job.id]) for job in jobs]


def count_jobs(
    status: str | None = None,
    job_type: str | None = None,
    *,
    created_by: Sequence[str] | None = None,
) -> int:
    """How many jobs :func:`list_jobs` would page through with the same filters."""
    with session_scope() as session:
        query = _filtered(select(func.count()).select_from(Job), status, job_type, created_by)
        return int(session.scalar(query) or 0)
