"""Import tasks (queue ``import``): Hugging Face datasets.

Thin: open the dataset slice (:mod:`modomo.sources.huggingface`), ingest it chunk by chunk
(``MODOMO_CRAWL_CHUNK_SIZE`` rows per transaction), move the job's cursor after each chunk,
and, when asked, send the imported scenes on to a child detection job as they come.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import exists, or_, select

from modomo.celery_app import app
from modomo.config import get_settings
from modomo.db.models import DetectedObject, Scene, SceneStatus
from modomo.db.session import session_scope
from modomo.jobs import (
    close_source,
    create_job,
    describe_job,
    dispatch_batches,
    job_is_active,
    open_source,
    update_params,
)
from modomo.sources.huggingface import DatasetError, DatasetSlice, chunks, import_rows, open_dataset
from modomo.tasks.base import RETRY, SourceTask, job_arguments, same_priority

__all__ = ["DETECTION_TASK", "import_huggingface_dataset"]

log = logging.getLogger(__name__)

DETECTION_TASK = "modomo.tasks.detection_tasks.process_scenes_batch"
TIME_SHARE = 0.75
"""Share of the soft time limit one task spends importing before it hands the rest of the
slice to a new task (a long import is never killed by the time limit)."""
DISPATCH_GROUP = 8
"""Detection batches sent at a time: scenes wait for a group (``batch_size`` x this) so that
a large import sends few, full batches and memory stays bounded."""


class ImportTask(SourceTask):
    """A source task whose failure also releases its child detection job (so that job still
    completes with the scenes it was sent)."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        super().on_failure(exc, task_id, args, kwargs, einfo)
        job_id, _ = job_arguments(args, kwargs)
        if not job_id:
            return
        try:
            child = (describe_job(str(job_id), max_failures=0)["params"] or {}).get(
                "detection_job_id"
            )
            if child:
                close_source(child)
        except Exception:
            log.exception("could not release the detection job of import %s", job_id)


class _Detection:
    """The child detection job of an import, held open while the import sends it scenes.

    It gets the slice's usable scenes that have not been through detection yet: those
    this import stored, and rows imported before whose scenes have no objects and no depth
    map (a user asking for detection on a slice wants all of it detected; a scene already
    detected is not run again). Scenes are sent in groups as the import goes, so detection
    starts early and no list of the whole slice is kept.
    """

    job_id: str

    def __init__(self, parent_id: str, params: dict[str, Any], **describe: Any) -> None:
        settings = get_settings()
        self.batch_size = settings.batch_size
        known = params.get("detection_job_id")
        if known:
            self.job_id = str(known)
        else:
            child = create_job(
                "detection",
                {"stages": None, "parent": parent_id, "source": "import", **describe},
                parent_id=uuid.UUID(parent_id),
                priority=describe_job(parent_id, max_failures=0)["priority"],
            )
            self.job_id = str(child)
            update_params(parent_id, detection_job_id=self.job_id)
        open_source(self.job_id)
        self.pending: list[uuid.UUID] = []
        self.sent = 0

    def add(self, scene_ids: Sequence[uuid.UUID], skipped_keys: Sequence[str]) -> None:
        self.pending += _undetected(scene_ids, skipped_keys)
        if len(self.pending) >= self.batch_size * DISPATCH_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            dispatch_batches(
                self.job_id, app.tasks[DETECTION_TASK], self.pending, self.batch_size, stages=None
            )
            self.sent += len(self.pending)
            self.pending = []

    def close(self) -> None:
        self.flush()
        close_source(self.job_id)


def _undetected(scene_ids: Sequence[uuid.UUID], keys: Sequence[str]) -> list[uuid.UUID]:
    """Among the scenes ``scene_ids`` and those under ``keys``: the usable ones with no
    detected objects and no depth map, in a stable order."""
    if not scene_ids and not keys:
        return []
    with session_scope() as session:
        found = set(
            session.scalars(
                select(Scene.id).where(
                    or_(Scene.id.in_(list(scene_ids)), Scene.source_key.in_(list(keys))),
                    Scene.status != SceneStatus.FAILED,
                    Scene.image_key.is_not(None),
                    Scene.depth_key.is_(None),
                    ~exists().where(DetectedObject.scene_id == Scene.id),
                )
            )
        )
    ordered = [sid for sid in scene_ids if sid in found]
    return ordered + sorted(found.difference(ordered))


@app.task(bind=True, base=ImportTask, **RETRY)
def import_huggingface_dataset(
    self: Task,
    job_id: str,
    dataset: str,
    split: str = "train",
    offset: int = 0,
    limit: int = 100,
    include_detection: bool = False,
) -> dict[str, Any]:
    """Import rows ``offset`` to ``offset + limit`` of a Hugging Face dataset as scenes.

    Rows already imported (their key ``hf:{dataset}:{split}:{index}`` has a usable scene)
    are skipped; a row whose image cannot be read fails with the reason and the import goes
    on. The job's ``params`` keep the cursor (``next_index``) and the count of skipped rows,
    so a redelivered task resumes where the last one stopped; after 3/4 of the soft time
    limit the task hands the rest to a new task. A dataset that cannot be loaded or has no
    image column fails the job up front with the reason.

    Args:
        job_id: a job created by the caller (``create_job("import", params)``).
        dataset: a hub id (``owner/name``) or a path on the worker (see
            :func:`modomo.sources.huggingface.open_dataset`).
        split: the split.
        offset: index of the first row.
        limit: rows at most.
        include_detection: also create a child detection job (``parent_id`` = this job,
            its id in ``params.detection_job_id``) that gets the slice's scenes still
            undetected, as they are imported.

    Returns:
        ``{"rows", "imported", "failed", "skipped", "next_index", "detection_job_id",
        "detection_scenes"}`` for this task's part of the slice (``imported``: usable scenes,
        ``failed``: rows with no usable image, ``skipped``: rows already imported), plus
        ``"continued": True`` when a new task goes on, ``"cancelled": True`` when the job was
        cancelled, or ``{"error": reason}`` when the dataset was refused.
    """
    started = time.monotonic()
    if not job_is_active(job_id):
        return {"skipped": "the job is no longer active"}
    open_source(job_id)
    params = describe_job(job_id, max_failures=0)["params"] or {}
    start = min(max(int(params.get("next_index", offset)), offset), offset + limit)
    run = _Run(job_id, offset, limit, skipped_before=int(params.get("skipped", 0)), cursor=start)
    detection = None
    try:
        try:
            source = open_dataset(dataset, split, start, offset + limit - start)
        except DatasetError as exc:
            if isinstance(exc.__cause__, SoftTimeLimitExceeded):
                raise exc.__cause__ from None
            log.warning("import %s refused: %s", job_id, exc)
            close_source(job_id, error=str(exc))
            return {"error": str(exc)}
        if include_detection:
            detection = _Detection(
                job_id, params, dataset=source.name, split=split, offset=offset, limit=limit
            )
        deadline = started + TIME_SHARE * get_settings().task_soft_time_limit
        # A resumed task re-ingests its first chunk, which the task before may have stored
        # without counting: ingest finds the same bytes and the ledger counts them once.
        run.go(self, source, detection, deadline, skip_existing="next_index" not in params)
        if run.outcome == "continued":
            _continue(self, detection)
        else:
            _finish(run, source.name, split, detection)
    except SoftTimeLimitExceeded:  # wherever it struck, the cursor is the last chunk counted
        run.outcome = "continued"
        _continue(self, detection)
    return run.result(detection)


@dataclass
class _Run:
    """One task's part of an import: its counts, the cursor, how it ended."""

    job_id: str
    offset: int
    limit: int
    skipped_before: int = 0
    rows: int = 0
    imported: int = 0
    failed: int = 0
    skipped: int = 0
    cursor: int = 0
    outcome: str = "done"

    def go(
        self,
        task: Task,
        source: DatasetSlice,
        detection: _Detection | None,
        deadline: float,
        *,
        skip_existing: bool,
    ) -> None:
        """Ingest the slice chunk by chunk until it ends, the job is cancelled, or the
        deadline passes (then ``outcome`` is ``continued``)."""
        end = self.offset + self.limit
        for chunk in chunks(source, get_settings().crawl_chunk_size):
            if not job_is_active(self.job_id):
                self.outcome = "cancelled"
                return
            report = import_rows(uuid.UUID(self.job_id), chunk, skip_existing=skip_existing)
            skip_existing = True
            if detection is not None:
                detection.add(report.scene_ids, report.skipped)
            self.rows += len(chunk)
            self.imported += len(report.scene_ids)
            self.failed += len(report.failed)
            self.skipped += len(report.skipped)
            self.cursor = chunk[-1].index + 1
            update_params(
                self.job_id, next_index=self.cursor, skipped=self.skipped_before + self.skipped
            )
            _progress(task, self.cursor - self.offset, self.limit, f"rows up to {self.cursor}")
            if time.monotonic() > deadline and self.cursor < end:
                self.outcome = "continued"
                return

    def result(self, detection: _Detection | None) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "failed": self.failed,
            "skipped": self.skipped,
            "next_index": self.cursor,
            "detection_job_id": detection.job_id if detection is not None else None,
            "detection_scenes": detection.sent if detection is not None else 0,
            **({self.outcome: True} if self.outcome != "done" else {}),
        }


def _continue(task: Task, detection: _Detection | None) -> None:
    """Hand the rest of the slice to a new task with the same arguments (the job stays
    open; the new task starts at the cursor saved in the job's params)."""
    if detection is not None:
        detection.flush()
    task.apply_async(
        kwargs=dict(task.request.kwargs or {}),
        args=task.request.args or (),
        **same_priority(task),
    )


def _finish(run: _Run, name: str, split: str, detection: _Detection | None) -> None:
    """Release the job (and its detection job): it completes once its counts add up."""
    if detection is not None:
        detection.close()
    if run.outcome == "cancelled":
        close_source(run.job_id)  # a cancelled job stays cancelled, with its message
        return
    job = describe_job(run.job_id, max_failures=0)
    close_source(
        run.job_id,
        message=(
            f"imported rows {run.offset}-{run.cursor} of {name} [{split}]: "
            f"{job['processed']} scenes, {job['failed']} failed, "
            f"{run.skipped_before + run.skipped} already imported"
        ),
    )


def _progress(task: Task, current: int, total: int, message: str) -> None:
    """Publish Celery's ``PROGRESS`` state (rows of the slice done), as batch tasks do."""
    if task.request.id is None:  # called directly, not as a task
        return
    task.update_state(
        state="PROGRESS",
        meta={
            "current": current,
            "total": total,
            "progress": round(100.0 * current / total, 2) if total else 100.0,
            "message": message,
        },
    )
