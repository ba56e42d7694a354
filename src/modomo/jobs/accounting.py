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
- The scenes flipped in that transaction, and only those, are added to the job's per-stage
  counts (``job_stages``) by one atomic upsert: a scene that passed the pipeline counts as
  processed at every stage; one that failed counts as processed at the stages before the one
  it failed at, and failed there. So the first pipeline stage's ``processed + failed`` is the
  job's (less scenes failed outside the pipeline, e.g. at ``ingest``), each later stage's is
  the previous stage's ``processed``, and the last stage's ``processed`` is the job's.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import String, and_, case, cast, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from modomo.db.models import ItemStatus, Job, JobScene, JobStage, JobStatus, SceneFailure, utcnow

__all__ = [
    "STAGE_ORDER",
    "JobCounts",
    "add_scenes",
    "apply_outcomes",
    "fail_pending",
    "record_failures",
    "set_status",
    "stage_counts",
    "stage_counts_of",
]

STAGE_ORDER: tuple[str, ...] = ("detect", "segment", "depth", "colors", "classify")
"""The analysis pipeline's stages in order; :func:`stage_counts` lists these first, then any
other stage a job counted (``dedup``, ``ingest``, ``reaper`` …) by name."""


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


def _flip(
    session: Session, job_id: uuid.UUID, scene_ids: Sequence[uuid.UUID], to: str
) -> list[uuid.UUID]:
    """Flip the job's still-pending rows for ``scene_ids`` to ``to``; returns those flipped."""
    if not scene_ids:
        return []
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
    return list(result.scalars())


def _stage_deltas(
    stages: Sequence[str],
    done: Sequence[uuid.UUID],
    failed: Sequence[uuid.UUID],
    failed_at: Mapping[uuid.UUID, str],
) -> dict[str, tuple[int, int]]:
    """``{stage: (processed, failed)}`` to add for the flipped ``done`` and ``failed`` scenes.

    A done scene passed every stage of ``stages``. A failed scene failed at
    ``failed_at[scene]`` (default: the first of ``stages``) and passed the stages before it;
    a stage outside ``stages`` (a failure before the pipeline, such as ``ingest``) counts
    only the failure.
    """
    processed: Counter[str] = Counter(dict.fromkeys(stages, len(done)))
    failures: Counter[str] = Counter()
    for scene_id in failed:
        stage = failed_at.get(scene_id) or (stages[0] if stages else None)
        if stage is None:
            continue
        failures[stage] += 1
        if stage in stages:
            processed.update(stages[: stages.index(stage)])
    return {
        stage: (processed[stage], failures[stage])
        for stage in {*processed, *failures}
        if processed[stage] or failures[stage]
    }


def _add_stage_counts(
    session: Session, job_id: uuid.UUID, deltas: Mapping[str, tuple[int, int]]
) -> None:
    """Add ``{stage: (processed, failed)}`` to the job's ``job_stages`` rows in one upsert.

    ``INSERT … ON CONFLICT (job_id, stage) DO UPDATE SET processed = job_stages.processed +
    excluded.processed, …``: atomic, so concurrent batches of one job never lose each other's
    counts. Rows go in stage order, so two writers lock them in the same order.

    Raises:
        RuntimeError: a database other than PostgreSQL or SQLite.
    """
    if not deltas:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement: postgresql.Insert | sqlite.Insert = postgresql.insert(JobStage)
    elif dialect == "sqlite":
        statement = sqlite.insert(JobStage)
    else:
        raise RuntimeError(f"stage counts need PostgreSQL or SQLite, not {dialect}")
    rows = [
        {"job_id": job_id, "stage": stage, "processed": n_done, "failed": n_failed}
        for stage, (n_done, n_failed) in sorted(deltas.items())
    ]
    statement = statement.values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[JobStage.job_id, JobStage.stage],
            set_={
                "processed": JobStage.processed + statement.excluded.processed,
                "failed": JobStage.failed + statement.excluded.failed,
            },
        )
    )


def _ordered(counts: Mapping[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    known = [stage for stage in STAGE_ORDER if stage in counts]
    others = sorted(stage for stage in counts if stage not in STAGE_ORDER)
    return {stage: counts[stage] for stage in (*known, *others)}


def stage_counts_of(
    session: Session, job_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, dict[str, int]]]:
    """Per-stage counts of several jobs in one query (see :func:`stage_counts`).

    Returns:
        ``{job_id: {stage: {"processed": n, "failed": m}}}``, every job of ``job_ids``
        present (``{}`` for one that has counted nothing yet).
    """
    found: dict[uuid.UUID, dict[str, dict[str, int]]] = {jid: {} for jid in job_ids}
    if not job_ids:
        return found
    rows = session.execute(
        select(JobStage.job_id, JobStage.stage, JobStage.processed, JobStage.failed).where(
            JobStage.job_id.in_(list(job_ids))
        )
    )
    for job_id, stage, processed, failed in rows:
        found[job_id][stage] = {"processed": processed, "failed": failed}
    return {jid: _ordered(counts) for jid, counts in found.items()}


def stage_counts(session: Session, job_id: uuid.UUID) -> dict[str, dict[str, int]]:
    """A job's per-stage counts: ``{stage: {"processed": n, "failed": m}}``.

    ``processed`` scenes passed the stage; ``failed`` ones failed at it. Stages come in
    pipeline order (:data:`STAGE_ORDER`), then the others by name; a stage that has counted
    nothing yet is absent.
    """
    return stage_counts_of(session, [job_id])[job_id]


def apply_outcomes(
    session: Session,
    job_id: uuid.UUID,
    done: Sequence[uuid.UUID] = (),
    failed: Sequence[uuid.UUID] = (),
    stage: str | None = None,
    *,
    stages: Sequence[str] | None = None,
    failed_at: Mapping[uuid.UUID, str] | None = None,
) -> JobCounts | None:
    """Count scene outcomes for a job and advance its status, in the caller's transaction.

    Only scenes still pending in the job are counted (a redelivered outcome adds nothing),
    in the job's counters and in its per-stage counts alike.

    Args:
        session: an open session; the caller commits.
        job_id: the job.
        done: scenes that succeeded.
        failed: scenes that failed (their reasons go through :func:`record_failures`).
        stage: when given, the job's message becomes "<stage>: <done>/<total> scenes".
        stages: the pipeline the scenes went through, in order: a done scene counts as
            processed at each (default ``(stage,)``; without either, no stage counts).
        failed_at: per failed scene, the stage it failed at (default: the first of
            ``stages``); it counts as processed at the stages before that one.

    Returns:
        The job's counters after the update, or None when the job does not exist.
    """
    flipped_done = _flip(session, job_id, done, ItemStatus.DONE)
    flipped_failed = _flip(session, job_id, failed, ItemStatus.FAILED)
    n_done, n_failed = len(flipped_done), len(flipped_failed)
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
    if row is None:
        return None
    # After the job's UPDATE, which locks its row: one job's stage upserts never interleave.
    pipeline = tuple(stages) if stages else ((stage,) if stage is not None else ())
    _add_stage_counts(
        session, job_id, _stage_deltas(pipeline, flipped_done, flipped_failed, failed_at or {})
    )
    return JobCounts(*row)


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


def add_scenes(
    session: Session,
    job_id: uuid.UUID,
    scene_ids: Sequence[uuid.UUID],
    inputs: dict[uuid.UUID, str] | None = None,
) -> int:
    """Put scenes in a job (pending) and add them to its total; returns how many were new.

    Args:
        inputs: per scene, the input as the job was given it (a path, a URL), when it says.
    """
    existing = set(
        session.scalars(
            select(JobScene.scene_id).where(
                JobScene.job_id == job_id, JobScene.scene_id.in_(list(scene_ids))
            )
        )
    )
    new = [sid for sid in dict.fromkeys(scene_ids) if sid not in existing]
    if new:
        given = inputs or {}
        session.execute(
            insert(JobScene),
            [{"job_id": job_id, "scene_id": sid, "input": given.get(sid)} for sid in new],
        )
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

    For a batch that died for good: its unfinished scenes are counted as failed (at
    ``stage`` in the job's stage counts too), so the job still ends instead of waiting forever.
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
