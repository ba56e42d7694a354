"""Submitting jobs with a priority, a start time and an expiry; the scheduler tick.

Every job-creating path (API, CLI, a recurring schedule) goes through :func:`submit_job`:
the job row is created with its priority, ``run_at`` and ``expires_at``, and its start task
is either sent now (message priority from :class:`~modomo.db.models.Priority`, Celery
``expires`` from ``expires_at``) or, for a job due later, stored on the row and the job left
``scheduled``.

A scheduled job is sent by :func:`tick` (a beat task every ``MODOMO_SCHEDULER_TICK``
seconds), not by a Celery ETA: an ETA message sits unacknowledged in a worker's memory until
due and Redis redelivers it after the visibility timeout, so long ETAs run twice or never.
The database holds the schedule instead, and the tick claims each due job with a guarded
``UPDATE … WHERE status = 'scheduled'``, so two ticks (two beat processes started by
mistake) never send one job twice. Recurring schedules are claimed the same way (see
:mod:`modomo.jobs.schedules`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from sqlalchemy import select, update

from modomo.db.models import Job, JobStatus, Priority, utcnow
from modomo.db.session import session_scope
from modomo.jobs.accounting import set_status
from modomo.jobs.lifecycle import create_job, expire_jobs

__all__ = [
    "JOB_TASKS",
    "BrokerUnavailable",
    "Submitted",
    "TaskMissing",
    "TickReport",
    "Timing",
    "send_start_task",
    "submit_job",
    "tick",
]

log = logging.getLogger(__name__)

JOB_TASKS: dict[str, str] = {
    "colors": "modomo.tasks.color_tasks.run_color_processing_job",
    "detection": "modomo.tasks.detection_tasks.run_detection_pipeline",
    "scrape": "modomo.tasks.scraping_tasks.run_scraping_job",
    "import": "modomo.tasks.import_tasks.import_huggingface_dataset",
    "classify": "modomo.tasks.classification_tasks.run_scene_reclassification_job",
    "dedup": "modomo.tasks.classification_tasks.run_dedup_job",
    "export": "modomo.tasks.export_tasks.run_export_job",
}
"""The start task of each job type that can be submitted by name (schedules use these)."""

MAX_DELAY = timedelta(days=366)
"""How far ahead a job may be scheduled or set to expire."""


class TaskMissing(LookupError):
    """The start task is not registered in this version (or this image)."""


class BrokerUnavailable(RuntimeError):
    """The broker refused the start task; the job was marked failed with the reason."""


@dataclass(frozen=True)
class Timing:
    """How urgent a job is and when it may run.

    Attributes:
        priority: one of :attr:`Priority.NAMES`.
        run_at: when the job is due (UTC); None runs it now.
        expires_at: when a job not started yet expires (UTC); None never.
    """

    priority: str = Priority.NORMAL
    run_at: datetime | None = None
    expires_at: datetime | None = None

    @classmethod
    def resolve(
        cls,
        priority: str = Priority.NORMAL,
        run_at: datetime | None = None,
        countdown: float | None = None,
        expires_at: datetime | None = None,
        expires: float | None = None,
        now: datetime | None = None,
    ) -> Timing:
        """Absolute times from either form: ``run_at`` (timezone-aware) or ``countdown``
        (seconds from now); ``expires_at`` or ``expires`` (seconds).

        A ``run_at`` not in the future runs the job now. ``expires`` counts from the time the
        job is due to run: from ``run_at`` / ``countdown`` when the job is scheduled, else from
        now (``"run_at": tomorrow 02:00, "expires": 3600`` expires it at 03:00 if it has not
        started). ``expires_at`` is absolute and must be later than the run time.

        Raises:
            ValueError: both forms of one time, a naive datetime, a negative or too distant
                delay (over a year), an expiry not after the run time, or an unknown priority.
        """
        now = now or utcnow()
        if priority not in Priority.NAMES:
            raise ValueError(f"priority must be one of {', '.join(Priority.NAMES)}")
        when = _absolute("run_at", run_at, "countdown", countdown, now)
        runs = when if when is not None and when > now else now
        until = _absolute("expires_at", expires_at, "expires", expires, runs)
        if until is not None and until <= (when or now):
            raise ValueError("expires_at must be later than the time the job runs")
        return cls(priority, when if when is not None and when > now else None, until)


def _absolute(
    name: str, at: datetime | None, delay_name: str, delay: float | None, now: datetime
) -> datetime | None:
    if at is not None and delay is not None:
        raise ValueError(f"give {name} or {delay_name}, not both")
    if delay is not None:
        if not 0 <= delay <= MAX_DELAY.total_seconds():
            raise ValueError(f"{delay_name} must be between 0 and {MAX_DELAY.days} days (seconds)")
        return now + timedelta(seconds=delay)
    if at is None:
        return None
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} needs a time zone (e.g. 2026-11-21T02:00:00Z)")
    if at - now > MAX_DELAY:
        raise ValueError(f"{name} must be within {MAX_DELAY.days} days")
    return at.astimezone(UTC)


@dataclass(frozen=True)
class Submitted:
    """A created job: its id, its start task's id and its status (pending or scheduled)."""

    job_id: uuid.UUID
    task_id: str
    status: str


def _celery(celery: Celery | None) -> Celery:
    if celery is not None:
        return celery
    from modomo.celery_app import app

    return app


def _start_task(celery: Celery, name: str) -> Any:
    task = celery.tasks.get(name)
    if task is None:
        celery.loader.import_default_modules()
        task = celery.tasks.get(name)
    if task is None:
        raise TaskMissing(f"no task {name} in this version")
    return task


def submit_job(
    job_type: str,
    task_name: str,
    kwargs: dict[str, Any],
    *,
    params: dict[str, Any] | None = None,
    timing: Timing | None = None,
    created_by: str | None = None,
    parent_id: uuid.UUID | None = None,
    schedule_id: uuid.UUID | None = None,
    celery: Celery | None = None,
) -> Submitted:
    """Create a ``job_type`` job whose start task is ``task_name(job_id=..., **kwargs)``, and
    send it now or leave it scheduled.

    Args:
        job_type: the job's type.
        task_name: the registered Celery task that starts the job.
        kwargs: the task's keyword arguments besides ``job_id`` (JSON-able).
        params: what the job records as its parameters (default: ``kwargs``).
        timing: priority, run time and expiry (default: normal, now, never).
        created_by: who asked (recorded on the job).
        parent_id: the job this one follows on from.
        schedule_id: the recurring schedule that fired it.
        celery: the Celery app to send with (default: Modomo's).

    Returns:
        The job's id, its start task's id and its status.

    Raises:
        TaskMissing: the task is not registered (no job is created).
        BrokerUnavailable: the broker refused the task (the job is marked failed with why).
    """
    timing = timing or Timing()
    app = _celery(celery)
    _start_task(app, task_name)
    task_id = str(uuid.uuid4())
    start = {"name": task_name, "kwargs": kwargs, "task_id": task_id}
    job_id = create_job(
        job_type,
        params if params is not None else kwargs,
        celery_task_ids=[task_id],
        created_by=created_by,
        parent_id=parent_id,
        priority=timing.priority,
        run_at=timing.run_at,
        expires_at=timing.expires_at,
        start_task=start,
        schedule_id=schedule_id,
    )
    if timing.run_at is not None:
        return Submitted(job_id, task_id, JobStatus.SCHEDULED)
    try:
        send_start_task(app, job_id, start, timing.priority, timing.expires_at)
    except Exception as exc:
        reason = f"could not enqueue the job: broker unavailable ({type(exc).__name__}: {exc})"
        log.error("job %s: %s", job_id, reason)
        with session_scope() as session:
            set_status(session, job_id, JobStatus.FAILED, message=reason, error=reason)
        raise BrokerUnavailable(reason) from None
    return Submitted(job_id, task_id, JobStatus.PENDING)


def send_start_task(
    celery: Celery,
    job_id: uuid.UUID,
    start: dict[str, Any],
    priority: str,
    expires_at: datetime | None,
) -> None:
    """Send a job's start task with the job's message priority and expiry."""
    task = _start_task(celery, start["name"])
    task.apply_async(
        kwargs={"job_id": str(job_id), **(start.get("kwargs") or {})},
        task_id=start["task_id"],
        priority=Priority.MESSAGE.get(priority, Priority.MESSAGE[Priority.NORMAL]),
        expires=expires_at,
    )


# --- the tick --------------------------------------------------------------------------------
@dataclass
class TickReport:
    """What one tick did: job ids expired and sent, schedules fired (name -> job id)."""

    expired: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    fired: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (the beat task's result)."""
        return {"expired": self.expired, "sent": self.sent, "fired": self.fired}


def expire_due(now: datetime | None = None, celery: Celery | None = None) -> list[str]:
    """Mark every job not started by its ``expires_at`` ``expired`` and revoke its start task.

    Returns:
        The ids of the jobs expired now.
    """
    now = now or utcnow()
    with session_scope() as session:
        rows = expire_jobs(session, Job.expires_at <= now)
    task_ids = [task_id for _, ids in rows for task_id in ids]
    if task_ids:
        try:  # the message also carries Celery's expires; revoking is belt and braces
            _celery(celery).control.revoke(task_ids)
        except Exception:
            log.warning("could not revoke the start tasks of expired jobs", exc_info=True)
    return [str(job_id) for job_id, _ in rows]


def send_due(
    now: datetime | None = None, celery: Celery | None = None, limit: int = 500
) -> list[str]:
    """Send the start task of every scheduled job whose ``run_at`` has come.

    Each job is claimed with ``UPDATE … WHERE status = 'scheduled'`` and committed before its
    task is sent: of two ticks racing, only the one whose UPDATE changed the row sends. When
    the broker refuses, the job goes back to ``scheduled`` for the next tick.

    Returns:
        The ids of the jobs sent.
    """
    now = now or utcnow()
    app = _celery(celery)
    with session_scope() as session:
        due = list(
            session.scalars(
                select(Job.id)
                .where(Job.status == JobStatus.SCHEDULED, Job.run_at <= now)
                .order_by(Job.run_at)
                .limit(limit)
            )
        )
    sent: list[str] = []
    for job_id in due:
        with session_scope() as session:
            claimed = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.SCHEDULED)
                .values(status=JobStatus.PENDING, message="due: start task sent", updated_at=now)
                .returning(Job.start_task, Job.priority, Job.expires_at)
            ).first()
        if claimed is None:
            continue  # another tick took it, or it was cancelled
        start, priority, expires_at = claimed
        try:
            send_start_task(app, job_id, start or {}, priority, expires_at)
        except Exception as exc:
            log.warning("job %s: start task not sent (%s); retried next tick", job_id, exc)
            with session_scope() as session:
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.PENDING)
                    .values(status=JobStatus.SCHEDULED, message=f"not sent yet: {exc}")
                )
            continue
        sent.append(str(job_id))
    return sent


def tick(now: datetime | None = None, celery: Celery | None = None) -> TickReport:
    """One scheduler tick: expire jobs past ``expires_at``, send the scheduled jobs that are
    due, and fire the recurring schedules that are due (one job per due time)."""
    from modomo.jobs.schedules import fire_due

    now = now or utcnow()
    report = TickReport()
    report.expired = expire_due(now, celery)
    report.sent = send_due(now, celery)
    report.fired = fire_due(now, celery)
    return report
