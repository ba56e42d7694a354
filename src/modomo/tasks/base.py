"""The base class of batch tasks: a batch that fails for good fails its scenes, visibly."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task

from modomo.db.session import session_scope
from modomo.jobs.accounting import fail_pending

__all__ = ["BatchTask"]

log = logging.getLogger(__name__)


class BatchTask(Task):
    """A task called as ``task(job_id, scene_ids, ...)`` that counts into the job.

    When such a task fails for good (an unexpected error, or retries exhausted), its scenes
    still pending in the job are counted as failed with the error as the reason, so the job
    ends with an explanation instead of waiting forever. Subclasses set ``stage``.
    """

    stage = "batch"

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        job_id = kwargs.get("job_id", args[0] if args else None)
        scene_ids = kwargs.get("scene_ids", args[1] if len(args) > 1 else None)
        if not job_id or not scene_ids:
            return
        reason = f"batch task {task_id} failed: {type(exc).__name__}: {exc}"
        try:
            with session_scope() as session:
                fail_pending(
                    session,
                    uuid.UUID(str(job_id)),
                    [uuid.UUID(str(s)) for s in scene_ids],
                    self.stage,
                    reason,
                )
        except Exception:  # the database itself may be what failed; the reaper recovers then
            log.exception("could not record the failure of batch %s of job %s", task_id, job_id)
