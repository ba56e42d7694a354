"""What every batch task shares: the base class (a batch that fails for good fails its
scenes, visibly), the database-retry policy, and reading a scene's stored image."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from modomo.artifacts import artifact_store
from modomo.batching import never_isolate
from modomo.config import get_settings
from modomo.db.models import ItemStatus, JobScene, SceneStatus
from modomo.db.session import session_scope
from modomo.images import LoadedImage, load_image
from modomo.jobs.accounting import fail_pending
from modomo.jobs.lifecycle import adopt_job, close_source, job_summary
from modomo.jobs.reporter import ProgressReporter

__all__ = [
    "RETRY",
    "UNUSABLE",
    "BatchTask",
    "SourceTask",
    "job_arguments",
    "load_scene_image",
    "load_scene_images",
    "pending_scenes",
    "same_priority",
    "start_job",
    "stop_at_soft_limit",
]


def start_job(
    job_id: str, job_type: str, params: dict[str, Any]
) -> tuple[str, dict[str, Any] | None]:
    """The job a start task was called for, as ``(job id, None)``; or, for a caller-chosen
    id an earlier call already started, ``(job id, the job's summary)`` to return instead of
    doing the work again (see :func:`modomo.jobs.lifecycle.adopt_job`).

    Args:
        job_id: a job id, or the caller's own id (``"color_001"``).
        job_type: the type of a job created for a caller's own id.
        params: the parameters recorded on such a job.
    """
    adopted = adopt_job(job_id, job_type, params)
    if adopted.already_started:
        return str(adopted.id), job_summary(
            adopted.id, skipped="this job id was started before; its work is not done twice"
        )
    return str(adopted.id), None


# A soft time limit that strikes inside a batched model call stops the batch (each task's
# handler re-sends what is left) instead of failing the images it happened to interrupt.
never_isolate(SoftTimeLimitExceeded)

# Database outages are retried with backoff; the ledger makes a re-run of the batch exact.
RETRY: dict[str, Any] = {
    "autoretry_for": (DBAPIError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 8,
}

UNUSABLE = {"status": SceneStatus.FAILED}
"""Scene values for an image that cannot be decoded."""


def load_scene_image(image_key: str, device: str | None = None) -> LoadedImage:
    """Read a stored image and decode it (RGB plus the alpha mask of transparent images);
    a CUDA ``device`` decodes JPEGs there (see :func:`modomo.images.load_image`).

    Raises:
        ImageError: the image is not usable (corrupt, truncated, too large …).
        FileNotFoundError: the image is missing from the artifact store.
    """
    data = artifact_store().get_bytes(image_key)
    return load_image(data, max_pixels=get_settings().max_image_pixels, device=device)


def load_scene_images(
    keys: Mapping[uuid.UUID, str | None], scene_ids: Sequence[uuid.UUID]
) -> list[LoadedImage | BaseException]:
    """Decode the stored images of ``scene_ids`` (``keys``: scene id -> image key); per
    scene its image, or the exception that stopped it (``ImageError`` for an unusable image,
    ``LookupError`` / ``FileNotFoundError`` for a missing one), so one bad scene fails alone."""
    images: list[LoadedImage | BaseException] = []
    for sid in scene_ids:
        try:
            key = keys.get(sid)
            if not key:
                raise LookupError(f"scene {sid} has no stored image")
            images.append(load_scene_image(key))
        except Exception as exc:
            images.append(exc)
    return images


log = logging.getLogger(__name__)


def pending_scenes(job_id: str, scene_ids: list[str], exclude: set[str]) -> list[str]:
    """Those of ``scene_ids`` (in order, less ``exclude``) still pending in the job.

    After a soft time limit a batch re-sends what it did not count: not only the scenes it
    had not reached, but also those whose buffered outcomes were lost when the limit
    interrupted the progress reporter's write (that write's transaction rolled back).
    """
    with session_scope() as session:
        pending = {
            str(sid)
            for sid in session.scalars(
                select(JobScene.scene_id).where(
                    JobScene.job_id == uuid.UUID(str(job_id)),
                    JobScene.status == ItemStatus.PENDING,
                    JobScene.scene_id.in_([uuid.UUID(str(s)) for s in scene_ids]),
                )
            )
        }
    return [s for s in scene_ids if s in pending and s not in exclude]


def stop_at_soft_limit(
    task: Task,
    reporter: ProgressReporter,
    job_id: str,
    scene_ids: Sequence[str],
    uncounted: Sequence[uuid.UUID],
    earlier: set[str],
    reason: str,
    **task_kwargs: Any,
) -> int:
    """End a batch at its soft time limit without losing work.

    ``uncounted`` (the scenes in hand) fail with ``reason`` and that is written now; every
    other scene of the batch still pending in the job is sent again as a new task (the limit
    may have interrupted the reporter's write of earlier outcomes, which rolled back, and only
    the database knows which landed). A write that blocks past the hard limit leaves the batch
    to :meth:`BatchTask.on_failure` (``TimeLimitExceeded``) instead.

    Args:
        earlier: the scenes this task counted before the limit.

    Returns:
        How many of ``earlier`` were lost and re-sent (to take off the task's ``done``).
    """
    for sid in uncounted:
        reporter.failed(sid, reason)
    reporter.flush(force=True)
    rest = pending_scenes(job_id, list(scene_ids), exclude={str(s) for s in uncounted})
    if rest:
        task.apply_async(args=(job_id, rest), kwargs=task_kwargs, **same_priority(task))
    return len(set(rest) & earlier)


def same_priority(task: Task) -> dict[str, int]:
    """``{"priority": p}`` of the message this task is running (its job's priority), for a
    task it sends to go on with the same work; empty when unknown (the default, normal)."""
    priority = (getattr(task.request, "delivery_info", None) or {}).get("priority")
    return {"priority": int(priority)} if priority is not None else {}


def job_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """The ``job_id`` and ``scene_ids`` of a call ``task(job_id, scene_ids, ...)``, given
    by position or by keyword (None where absent)."""
    job_id = kwargs.get("job_id", args[0] if args else None)
    scene_ids = kwargs.get("scene_ids", args[1] if len(args) > 1 else None)
    return job_id, scene_ids


class BatchTask(Task):
    """A task called as ``task(job_id, scene_ids, ...)`` that counts into the job.

    When such a task fails for good (an unexpected error, or retries exhausted), its scenes
    still pending in the job are counted as failed with the error as the reason, so the job
    ends with an explanation instead of waiting forever. Subclasses set ``stage``.
    """

    stage = "batch"

    def failure_stage(self, kwargs: dict[str, Any]) -> str:
        """The stage a failed batch's scenes are counted at (the job's first stage)."""
        return self.stage

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        job_id, scene_ids = job_arguments(args, kwargs)
        if not job_id or not scene_ids:
            return
        reason = f"batch task {task_id} failed: {type(exc).__name__}: {exc}"
        try:
            with session_scope() as session:
                fail_pending(
                    session,
                    uuid.UUID(str(job_id)),
                    [uuid.UUID(str(s)) for s in scene_ids],
                    self.failure_stage(kwargs or {}),
                    reason,
                )
        except Exception:  # the database itself may be what failed; the reaper recovers then
            log.exception("could not record the failure of batch %s of job %s", task_id, job_id)


class SourceTask(Task):
    """A task called as ``task(job_id, ...)`` that adds scenes to its job from a source (a
    crawl, an import), holding the job open (:func:`modomo.jobs.open_source`) as it goes.

    When it fails for good, the job is released and marked failed with the reason; the
    scenes it already stored stay counted.
    """

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        job_id, _ = job_arguments(args, kwargs)
        if not job_id:
            return
        reason = f"{self.name.rsplit('.', 1)[-1]} failed: {type(exc).__name__}: {exc}"
        try:
            close_source(str(job_id), error=reason)
        except Exception:
            log.exception(
                "could not record the failure of source task %s of job %s", task_id, job_id
            )
