"""Recurring jobs: cron expressions in a time zone, fired by the scheduler tick.

Cron times come from croniter (standard five-field cron, evaluated in the schedule's IANA
time zone, so "0 2 * * *" in Europe/London is 02:00 local time across daylight-saving
changes). A due schedule is claimed with ``UPDATE schedules SET next_run_at = <next> …
WHERE id = … AND next_run_at = <due>``: the row's due time is the run key, so of two ticks
racing (two beat processes by mistake) exactly one creates the job; on PostgreSQL the
second UPDATE waits for the first and then matches no row. Runs missed while no tick ran
(beat down) are coalesced: one job, and the next run is the next cron time after now.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery import Celery
from croniter import croniter
from sqlalchemy import delete, select, update

from modomo.db.models import Priority, Schedule, utcnow
from modomo.db.session import session_scope

__all__ = [
    "ScheduleError",
    "ScheduleNotFound",
    "add_schedule",
    "fire_due",
    "list_schedules",
    "next_run",
    "remove_schedule",
    "set_enabled",
]

log = logging.getLogger(__name__)


class ScheduleError(ValueError):
    """A schedule's field is invalid (the message names it)."""


class ScheduleNotFound(LookupError):
    """No schedule has that id or name."""


def next_run(cron: str, timezone: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``cron`` matches in ``timezone``, in UTC.

    Raises:
        ScheduleError: an invalid cron expression or unknown time zone.
    """
    zone = _zone(timezone)
    if not croniter.is_valid(cron):
        raise ScheduleError(f"cron: not a valid cron expression: {cron!r}")
    local = croniter(cron, after.astimezone(zone)).get_next(datetime)
    return local.astimezone(UTC)  # type: ignore[no-any-return]


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"timezone: unknown time zone {name!r} (use an IANA name)") from None


def record(schedule: Schedule) -> dict[str, Any]:
    """A schedule as a JSON-able dict (times in ISO 8601 UTC)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": str(schedule.id),
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "job_type": schedule.job_type,
        "params": schedule.params,
        "priority": schedule.priority,
        "enabled": schedule.enabled,
        "last_run_at": iso(schedule.last_run_at),
        # a disabled schedule has no next run (enabling it computes one from then)
        "next_run_at": iso(schedule.next_run_at) if schedule.enabled else None,
        "last_job_id": str(schedule.last_job_id) if schedule.last_job_id else None,
        "created_by": schedule.created_by,
        "created_at": iso(schedule.created_at),
    }


def add_schedule(
    name: str,
    cron: str,
    job_type: str,
    params: dict[str, Any] | None = None,
    *,
    timezone: str = "UTC",
    priority: str = Priority.NORMAL,
    enabled: bool = True,
    created_by: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Create a recurring schedule; returns its record (with the first ``next_run_at``).

    Args:
        name: a unique name.
        cron: a five-field cron expression (minute hour day month weekday).
        job_type: one of :data:`modomo.jobs.scheduling.JOB_TASKS`.
        params: the start task's keyword arguments (already validated by the caller, e.g.
            with the API's request model of that job type).
        timezone: the IANA time zone the cron expression is read in.
        priority: the priority of the jobs it creates.
        enabled: whether the tick fires it.
        created_by: who created it.

    Raises:
        ScheduleError: a bad cron, time zone, job type, priority, or a name already used.
    """
    from modomo.jobs.scheduling import JOB_TASKS

    if job_type not in JOB_TASKS:
        raise ScheduleError(f"job_type: must be one of {', '.join(sorted(JOB_TASKS))}")
    if priority not in Priority.NAMES:
        raise ScheduleError(f"priority: must be one of {', '.join(Priority.NAMES)}")
    first = next_run(cron, timezone, now or utcnow())
    with session_scope() as session:
        if session.scalar(select(Schedule.id).where(Schedule.name == name)) is not None:
            raise ScheduleError(f"name: a schedule named {name!r} exists")
        schedule = Schedule(
            name=name,
            cron=cron,
            timezone=timezone,
            job_type=job_type,
            params=params or {},
            priority=priority,
            enabled=enabled,
            next_run_at=first,
            created_by=created_by,
        )
        session.add(schedule)
        session.flush()
        return record(schedule)


def _find(session: Any, key: str) -> Schedule:
    try:
        query = select(Schedule).where(Schedule.id == uuid.UUID(key))
    except ValueError:
        query = select(Schedule).where(Schedule.name == key)
    schedule = session.scalar(query)
    if schedule is None:
        raise ScheduleNotFound(f"no schedule {key!r}")
    return schedule  # type: ignore[no-any-return]


def list_schedules() -> list[dict[str, Any]]:
    """Every schedule, by name."""
    with session_scope() as session:
        return [record(s) for s in session.scalars(select(Schedule).order_by(Schedule.name))]


def get_schedule(key: str) -> dict[str, Any]:
    """One schedule by id or name.

    Raises:
        ScheduleNotFound: no such schedule.
    """
    with session_scope() as session:
        return record(_find(session, key))


def set_enabled(key: str, enabled: bool, now: datetime | None = None) -> dict[str, Any]:
    """Enable or disable a schedule (by id or name). Enabling computes the next run from now,
    so a schedule disabled for a week does not fire for the runs it missed.

    Raises:
        ScheduleNotFound: no such schedule.
    """
    with session_scope() as session:
        schedule = _find(session, key)
        if enabled and not schedule.enabled:
            schedule.next_run_at = next_run(schedule.cron, schedule.timezone, now or utcnow())
        schedule.enabled = enabled
        schedule.updated_at = utcnow()
        session.flush()
        return record(schedule)


def remove_schedule(key: str) -> None:
    """Delete a schedule (by id or name); its jobs stay, their ``schedule_id`` cleared.

    Raises:
        ScheduleNotFound: no such schedule.
    """
    with session_scope() as session:
        schedule = _find(session, key)
        session.execute(delete(Schedule).where(Schedule.id == schedule.id))


def fire_due(now: datetime | None = None, celery: Celery | None = None) -> dict[str, str]:
    """Create one job for each enabled schedule whose ``next_run_at`` has come.

    Returns:
        ``{schedule name: job id}`` of the jobs created by this call.
    """
    from modomo.jobs.scheduling import JOB_TASKS, Timing, submit_job

    now = now or utcnow()
    with session_scope() as session:
        due = session.execute(
            select(
                Schedule.id,
                Schedule.name,
                Schedule.cron,
                Schedule.timezone,
                Schedule.next_run_at,
            ).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
        ).all()
    fired: dict[str, str] = {}
    for schedule_id, name, cron, timezone, due_at in due:
        assert due_at is not None  # selected by next_run_at <= now
        try:
            following = next_run(cron, timezone, now)
        except ScheduleError as exc:  # edited by hand into something invalid
            log.error("schedule %s cannot run: %s", name, exc)
            continue
        with session_scope() as session:
            claimed = session.execute(
                update(Schedule)
                .where(Schedule.id == schedule_id, Schedule.next_run_at == due_at)
                .values(next_run_at=following, last_run_at=now, updated_at=now)
                .returning(Schedule.job_type, Schedule.params, Schedule.priority)
            ).first()
        if claimed is None:
            continue  # another tick fired this due time
        job_type, params, priority = claimed
        try:
            submitted = submit_job(
                job_type,
                JOB_TASKS[job_type],
                dict(params or {}),
                params={**(params or {}), "schedule": name, "due_at": due_at.isoformat()},
                timing=Timing(priority=priority),
                created_by=f"schedule:{name}",
                schedule_id=schedule_id,
                celery=celery,
            )
        except Exception as exc:  # the job (if created) says why; the schedule goes on
            log.error("schedule %s: the job for %s was not started: %s", name, due_at, exc)
            continue
        with session_scope() as session:
            session.execute(
                update(Schedule)
                .where(Schedule.id == schedule_id)
                .values(last_job_id=submitted.job_id)
            )
        fired[name] = str(submitted.job_id)
    return fired
