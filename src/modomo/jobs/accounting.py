"""Job accounting in SQL: counted outcomes, guarded transitions, completion from counters.

This is our own code because it is the core of the product's promise (no job silently loses
work) and no library does it: Celery's chords decide completion inside the result backend,
which is exactly what the architecture avoids (see ARCHITECTURE.md, "Job lifecycle").

Every statement here is a single atomic UPDATE, never a read-modify-write:

- An outcome flips a ``job_scenes`` row from ``pending``; only flipped rows are counted, so a
  redelivered task cannot count a scene twice and ``processed + failed`` never exceeds
  ``total``.
- The same UPDATE on ``jobs`` adds the counts, moves ``pending`` to ``running``, and moves the
  job to ``completed`` (or ``failed`` when nothing succeeded) once ``processed + failed ==
  total``. A job in a final status (completed, failed, cancelled) never changes status again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import String, and_, case, cast, func, insert, literal, select, update
from sqlalchemy.orm import Session

from modomo.db.models import ItemStatus, Job, JobScene, JobStatus, SceneFailure, utcnow

__all__ = [
    "JobCounts",
    "add_scenes",
    "apply_outcomes",
    "fail_pending",
    "record_failures",
    "set_status",
]


@dataclass(frozen=True)
class JobCounts:
    """A job's counters as one UPDATE left them."""

    status: str
    total: int
    processed: int
    failed: int
    progress: float

    @property
    def done(self) -> int:
        """Scenes with an outcome (processed + failed)."""
        return self.processed + self.failed

    @property
    def finished(self) -> bool:
        """True once the job is in a final status."""
        return self.status in JobStatus.FINAL


def _flip(session: Session, job_id: uuid.UUID, scene_ids: Sequence[uuid.UUID], to: str) -> int:
    """Flip the job's still-pending rows for ``scene_ids`` to ``to``; returns how many flipped."""
    if not scene_ids:
        return 0
    result = session.execute(
        update(JobScene)
        .where(
            JobScene.job_id == job_id,
            JobScene.status == ItemStatus.PENDING,
            JobScene.scene_id.in_(list(scene_ids)),
        )
        .values(status=to, updated_at=utcnow())
        .returning(JobScene.scene_id)
    )
    return len(result.all())


def apply_outcomes(
    session: Session,
    job_id: uuid.UUID,
    done: Sequence[uuid.UUID] = (),
    failed: Sequence[uuid.UUID] = (),
    stage: str | None = None,
) -> JobCounts | None:
    """Count scene outcomes for a job and advance its status, in the caller's transaction.

    Args:
        session: an open session; the caller commits.
        job_id: the job.
        done: scenes that succeeded.
        failed: scenes that failed (their reasons go through :func:`record_failures`).
        stage: when given, the job's message becomes "<stage>: <done>/<total> scenes".

    Returns:
        The job's counters after the update, or None when the job does not exist.
    """
    n_done = _flip(session, job_id, done, ItemStatus.DONE)
    n_failed = _flip(session, job_id, failed, ItemStatus.FAILED)
    now = utcnow()
    new_done = Job.processed + Job.failed + (n_done + n_failed)
    active = Job.status.in_(JobStatus.ACTIVE)
    finishing = and_(active, new_done >= Job.total)
    values: dict[str, object] = {
        "processed": Job.processed + n_done,
        "failed": Job.failed + n_failed,
        # Flipping pending rows keeps new_done <= total, so this stays within 0-100.
        "progress": case((Job.total > 0, 100.0 * new_done / Job.total), else_=100.0),
        "status": case(
            (
                finishing,
                case(
                    (and_(Job.processed + n_done == 0, Job.total > 0), literal(JobStatus.FAILED)),
                    else_=literal(JobStatus.COMPLETED),
                ),
            ),
            (active, literal(JobStatus.RUNNING)),
            else_=Job.status,
        ),
        "started_at": func.coalesce(Job.started_at, now),
        "finished_at": case((finishing, now), else_=Job.finished_at),
        "updated_at": now,
    }
    if stage is not None:
        values["message"] = (
            literal(f"{stage}: ")
            + cast(new_done, String)
            + literal("/")
            + cast(Job.total, String)
            + literal(" scenes")
        )
    row = session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(**values)
        .returning(Job.status, Job.total, Job.processed, Job.failed, Job.progress)
    ).first()
    return JobCounts(*row) if row else None


def record_failures(
    session: Session, job_id: uuid.UUID | None, failures: Iterable[tuple[uuid.UUID, str, str]]
) -> None:
    """Write the dead-letter rows for ``(scene_id, stage, error)`` failures of a job.

    A failure already recorded for the same scene, job and stage gets the new reason and one
    more attempt (a retry that failed again), instead of a second row.
    """
    for scene_id, stage, error in failures:
        updated = session.execute(
            update(SceneFailure)
            .where(
                SceneFailure.scene_id == scene_id,
                SceneFailure.job_id == job_id,
                SceneFailure.stage == stage,
            )
            .values(error=error, attempts=SceneFailure.attempts + 1)
            .returning(SceneFailure.id)
        ).first()
        if updated is None:
            session.execute(
                insert(SceneFailure).values(
                    scene_id=scene_id, job_id=job_id, stage=stage, error=error, attempts=1
                )
            )


def add_scenes(session: Session, job_id: uuid.UUID, scene_ids: Sequence[uuid.UUID]) -> int:
    """Put scenes in a job (pending) and add them to its total; returns how many were new."""
    existing = set(
        session.scalars(
            select(JobScene.scene_id).where(
                JobScene.job_id == job_id, JobScene.scene_id.in_(list(scene_ids))
            )
        )
    )
    new = [sid for sid in dict.fromkeys(scene_ids) if sid not in existing]
    if new:
        session.execute(insert(JobScene), [{"job_id": job_id, "scene_id": sid} for sid in new])
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(total=Job.total + len(new), updated_at=utcnow())
        )
    return len(new)


def set_status(
    session: Session,
    job_id: uuid.UUID,
    status: str,
    *,
    message: str | None = None,
    error: str | None = None,
) -> bool:
    """Move an active job to ``status`` (guarded: final jobs stay as they are).

    Returns:
        True when the job changed status.
    """
    now = utcnow()
    values: dict[str, object] = {"status": status, "updated_at": now}
    if status in JobStatus.FINAL:
        values["finished_at"] = now
    if status == JobStatus.RUNNING:
        values["started_at"] = func.coalesce(Job.started_at, now)
    if message is not None:
        values["message"] = message
    if error is not None:
        values["error"] = error
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(JobStatus.ACTIVE))
        .values(**values)
        .returning(Job.id)
    )
    return result.first() is not None


def fail_pending(
    session: Session, job_id: uuid.UUID, scene_ids: Sequence[uuid.UUID], stage: str, error: str
) -> JobCounts | None:
    """Fail those of ``scene_ids`` still pending in the job, with ``error`` as the reason.

    For a batch that died for good: its unfinished scenes are counted as failed, so the job
    still ends instead of waiting forever.
    """
    pending = list(
        session.scalars(
            select(JobScene.scene_id).where(
                JobScene.job_id == job_id,
                JobScene.status == ItemStatus.PENDING,
                JobScene.scene_id.in_(list(scene_ids)),
            )
        )
    )
    record_failures(session, job_id, [(sid, stage, error) for sid in pending])
    return apply_outcomes(session, job_id, failed=pending, stage=stage)
