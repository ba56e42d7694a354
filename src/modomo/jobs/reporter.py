"""The one progress reporter every task uses.

A batch task records each scene's outcome here. The reporter buffers outcomes (and the
scene-result writes that go with them) and writes them in one transaction together with the
job's counters, at most once per ``progress_interval`` seconds per job in this process
(default 0.5 s: at most 2 writes a second, whatever the batch size). The batch's last write is
always made when the reporter closes. Each write also publishes Celery's ``PROGRESS`` state
with the same numbers, so the job record and Celery's view never disagree.

Results and counts land in the same transaction: a scene is counted exactly when its result is
stored, and a worker that dies between writes loses only uncommitted work, which the
redelivered task (``acks_late``) redoes. The same holds for the job's per-stage counts
(``job_stages``): a batch running a pipeline (detect → segment → depth → colors) counts each
scene it passed at every stage, and a failed one at the stage it failed at.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from modomo.config import get_settings
from modomo.db.models import DetectedObject, Job, JobStatus, Scene, utcnow
from modomo.db.session import session_scope
from modomo.jobs.accounting import JobCounts, apply_outcomes, record_failures

__all__ = ["ProgressReporter"]

log = logging.getLogger(__name__)


SCENES = cast(Table, Scene.__table__)
OBJECTS = cast(Table, DetectedObject.__table__)
_throttle_lock = threading.Lock()
_last_write: dict[uuid.UUID, float] = {}


class _Task(Protocol):
    request: Any

    def update_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None: ...


@dataclass
class _Pending:
    done: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    # (scene, stage it failed at, reason)
    failures: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)
    # scene column updates, grouped by the columns they set, for one executemany per group
    scene_values: dict[tuple[str, ...], list[dict[str, Any]]] = field(default_factory=dict)
    # each scene's complete new set of detected objects (replacing what it had)
    objects: dict[uuid.UUID, list[dict[str, Any]]] = field(default_factory=dict)
    # column updates of existing detected objects, grouped like scene_values
    object_values: dict[tuple[str, ...], list[dict[str, Any]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.done or self.failed or self.scene_values or self.objects or self.object_values
        )

    def add_values(self, scene_id: uuid.UUID, values: dict[str, Any]) -> None:
        self.scene_values.setdefault(tuple(sorted(values)), []).append(
            {"_scene_id": scene_id, **values}
        )

    def write(self, session: Session, job_id: uuid.UUID) -> None:
        now = utcnow()
        if self.objects:
            scene_ids = sorted(self.objects)
            # Lock the scenes (PostgreSQL) so two deliveries of one batch replace objects one
            # after the other and never interleave into duplicates; SQLite serialises writers.
            locked = session.execute(
                select(SCENES.c.id, SCENES.c.reviewed_at)
                .where(SCENES.c.id.in_(scene_ids))
                .with_for_update()
            ).all()
            # people's reviewed labels are never replaced by a later run of the models
            reviewed = {row.id for row in locked if row.reviewed_at is not None}
            scene_ids = [sid for sid in scene_ids if sid not in reviewed]
            session.execute(delete(OBJECTS).where(OBJECTS.c.scene_id.in_(scene_ids)))
            rows = [
                {**row, "id": uuid.uuid4(), "scene_id": sid, "job_id": job_id, "created_at": now}
                for sid in scene_ids
                for row in self.objects[sid]
            ]
            if rows:
                session.execute(insert(OBJECTS), rows)
        for columns, rows in self.scene_values.items():
            statement = (
                update(SCENES)
                .where(SCENES.c.id == bindparam("_scene_id"))
                .values({**{c: bindparam(c) for c in columns}, "updated_at": now})
            )
            session.connection().execute(statement, rows)
        for columns, rows in self.object_values.items():
            statement = (
                update(OBJECTS)
                .where(OBJECTS.c.id == bindparam("_object_id"))
                .values({c: bindparam(c) for c in columns})
            )
            session.connection().execute(statement, rows)


class ProgressReporter:
    """Counts one batch's scene outcomes into its job, throttled.

    Use as a context manager; leaving it makes the final write.

    Args:
        job_id: the job the batch belongs to.
        stage: the batch's stage (``colors``, ``detect``, …), named in the job's message.
        stages: the pipeline each scene goes through, in order (default ``(stage,)``): a
            scene that succeeds counts as processed at every one of them in the job's stage
            counts; one that fails, at those before the stage it failed at.
        task: the bound Celery task, for ``update_state('PROGRESS')``; None outside Celery.
        interval: minimum seconds between writes of this job from this process
            (default: ``MODOMO_PROGRESS_INTERVAL``).
        clock: monotonic clock in seconds (tests pass a fake one).

    Attributes:
        writes: how many transactions this reporter committed.
        counts: the job's counters after the last write, or None before it.
    """

    def __init__(
        self,
        job_id: uuid.UUID | str,
        stage: str,
        *,
        stages: Sequence[str] | None = None,
        task: _Task | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_id = uuid.UUID(str(job_id))
        self.stage = stage
        self.stages: tuple[str, ...] = tuple(stages) if stages else (stage,)
        self.task = task
        self.interval = get_settings().progress_interval if interval is None else interval
        self.clock = clock
        self.writes = 0
        self.counts: JobCounts | None = None
        self._pending = _Pending()
        self._status: str | None = None

    # --- state of the job ---------------------------------------------------------------
    def job_status(self) -> str | None:
        """The job's status: read once, then as the last write left it (None: no such job)."""
        if self._status is None:
            with session_scope() as session:
                self._status = session.scalar(select(Job.status).where(Job.id == self.job_id))
        return self._status

    @property
    def active(self) -> bool:
        """False once the job is cancelled, finished or gone: the batch should stop."""
        return self.job_status() in JobStatus.ACTIVE

    # --- outcomes -----------------------------------------------------------------------
    def succeeded(
        self,
        scene_id: uuid.UUID | str,
        values: dict[str, Any] | None = None,
        objects: list[dict[str, Any]] | None = None,
        object_values: dict[uuid.UUID, dict[str, Any]] | None = None,
    ) -> None:
        """Record that a scene passed every stage of the pipeline, with its results.

        Args:
            scene_id: the scene.
            values: ``scenes`` columns to set (e.g. ``{"colors": {...}}``); batched into one
                executemany per write, in the transaction that counts the outcome.
            objects: when given, the scene's complete set of ``detected_objects`` rows
                (columns without id, scene_id, job_id): its old objects are deleted and these
                inserted in the same transaction, so a re-run never duplicates them.
            object_values: per id of an existing object of the scene, ``detected_objects``
                columns to set (e.g. its crop's ``embedding``).
        """
        sid = uuid.UUID(str(scene_id))
        self._pending.done.append(sid)
        if values:
            self._pending.add_values(sid, values)
        if objects is not None:
            self._pending.objects[sid] = objects
        for object_id, columns in (object_values or {}).items():
            self._pending.object_values.setdefault(tuple(sorted(columns)), []).append(
                {"_object_id": object_id, **columns}
            )
        self.flush()

    def failed(
        self,
        scene_id: uuid.UUID | str,
        error: str,
        values: dict[str, Any] | None = None,
        stage: str | None = None,
    ) -> None:
        """Record that a scene failed with a user-facing ``error``.

        Args:
            scene_id: the scene.
            error: why, as recorded in ``scene_failures``.
            values: as for :meth:`succeeded` (e.g. marking the scene unusable).
            stage: the stage it failed at (default: the pipeline's first, e.g. for an image
                that cannot be decoded); it counts as processed at the stages before it, and
                its ``scene_failures`` row names this stage.
        """
        sid = uuid.UUID(str(scene_id))
        self._pending.failed.append(sid)
        self._pending.failures.append((sid, stage or self.stages[0], error))
        if values:
            self._pending.add_values(sid, values)
        self.flush()

    # --- writing ------------------------------------------------------------------------
    def _due(self, now: float) -> bool:
        with _throttle_lock:
            last = _last_write.get(self.job_id)
            if last is not None and now - last < self.interval:
                return False
            _last_write[self.job_id] = now
            return True

    def flush(self, force: bool = False) -> JobCounts | None:
        """Write the buffered outcomes if the throttle allows (always with ``force``)."""
        if not self._pending:
            return self.counts
        now = self.clock()
        if not self._due(now):
            if not force:
                return self.counts
            with _throttle_lock:
                _last_write[self.job_id] = now
        pending, self._pending = self._pending, _Pending()
        with session_scope() as session:
            pending.write(session, self.job_id)
            record_failures(session, self.job_id, pending.failures)
            counts = apply_outcomes(
                session,
                self.job_id,
                pending.done,
                pending.failed,
                stage=self.stage,
                stages=self.stages,
                # a scene failed twice in one buffer keeps its first stage, as the ledger
                # keeps its first outcome
                failed_at={sid: at for sid, at, _ in reversed(pending.failures)},
            )
        self.writes += 1
        self.counts = counts
        self._status = counts.status if counts else None
        self._publish(counts)
        return counts

    def _publish(self, counts: JobCounts | None) -> None:
        task = self.task
        if counts is None or task is None or not getattr(task.request, "id", None):
            return
        try:
            task.update_state(
                state="PROGRESS",
                meta={
                    "job_id": str(self.job_id),
                    "current": counts.done,
                    "total": counts.total,
                    "progress": round(counts.progress, 2),
                    "message": f"{self.stage}: {counts.done}/{counts.total} scenes",
                },
            )
        except Exception:  # the result backend is advisory; the job record is the truth
            log.warning("could not publish PROGRESS for job %s", self.job_id, exc_info=True)

    def close(self) -> JobCounts | None:
        """Make the final write of this batch (never skipped by the throttle)."""
        return self.flush(force=True)

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
