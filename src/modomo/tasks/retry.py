"""Retrying a finished job's failed scenes as a new job.

A job in a final status never changes again (see :mod:`modomo.jobs.accounting`), so a retry
is a child job (``parent_id`` = the original) holding only the failed scenes, sent to the
same batch task with the same options. Each job type names its batch task here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from modomo.celery_app import app
from modomo.config import get_settings
from modomo.db.models import JobStatus
from modomo.jobs import JobConflict, create_job, describe_job, dispatch_batches, failed_scenes

__all__ = ["RETRYABLE", "retry_failed_scenes"]

RETRYABLE: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "colors": ("modomo.tasks.color_tasks.process_colors_batch", lambda params: {}),
    "detection": (
        "modomo.tasks.detection_tasks.process_scenes_batch",
        lambda params: {"stages": params.get("stages")},
    ),
    "classify": ("modomo.tasks.classification_tasks.classify_scenes_batch", lambda params: {}),
}
"""Job type -> (batch task name, its keyword arguments from the job's params)."""


def retry_failed_scenes(
    job_id: uuid.UUID | str, priority: str | None = None
) -> tuple[uuid.UUID, list[str]]:
    """Send a finished job's failed scenes again, as a new job, with ``priority`` (default:
    the original job's).

    Returns:
        The new job's id and the Celery task ids of its batches.

    Raises:
        JobNotFound: no such job.
        JobConflict: the job is still active, its type cannot be retried, or nothing failed.
    """
    job = describe_job(job_id, max_failures=0)
    if job["status"] not in JobStatus.FINAL:
        raise JobConflict(f"job {job['id']} is {job['status']}; retry it once it has ended")
    if job["type"] not in RETRYABLE:
        raise JobConflict(
            f"jobs of type {job['type']!r} cannot be retried scene by scene; "
            f"retryable types: {', '.join(RETRYABLE)}"
        )
    scenes = failed_scenes(job["id"])
    if not scenes:
        raise JobConflict(f"job {job['id']} has no failed scenes to retry")
    task_name, options = RETRYABLE[job["type"]]
    params = dict(job["params"] or {})
    child = create_job(
        job["type"],
        {**params, "retry_of": job["id"]},
        parent_id=uuid.UUID(job["id"]),
        priority=priority or job["priority"],
    )
    task_ids = dispatch_batches(
        child, app.tasks[task_name], scenes, get_settings().batch_size, **options(params)
    )
    return child, task_ids
