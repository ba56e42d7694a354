"""Colour tasks (queue ``color_processing``): scene palettes.

Thin: read the scene, decode its image, call :func:`modomo.analysis.colors.extract_palette`,
store the palette on ``scenes.colors`` and count the outcome through the progress reporter.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import closing
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from modomo.analysis.colors import extract_palette
from modomo.batching import prefetch
from modomo.celery_app import app
from modomo.config import get_settings
from modomo.db.models import Scene, SceneStatus, utcnow
from modomo.db.session import session_scope
from modomo.images import ImageError, LoadedImage
from modomo.jobs import (
    ProgressReporter,
    dispatch_batches,
    finish_if_done,
    job_is_active,
    job_summary,
)
from modomo.tasks.base import (
    RETRY,
    UNUSABLE,
    BatchTask,
    load_scene_image,
    start_job,
    stop_at_soft_limit,
)

__all__ = ["process_colors_batch", "process_scene_colors", "run_color_processing_job"]

log = logging.getLogger(__name__)

STAGE = "colors"


def palette_json(image: LoadedImage) -> dict[str, Any]:
    """The palette of a decoded image, as stored in ``scenes.colors``.

    Raises:
        ImageError: every pixel is transparent, so there is nothing to analyse.
    """
    if image.alpha is not None and not image.alpha.any():
        raise ImageError("fully transparent image: no visible pixels to analyse")
    palette = extract_palette(image.rgb, image.alpha, k=get_settings().palette_size)
    return palette.to_dict()


def scene_palette(image_key: str) -> dict[str, Any]:
    """Decode a stored image and return its palette JSON (see :func:`load_scene_image`)."""
    return palette_json(load_scene_image(image_key))


class ColorBatchTask(BatchTask):
    stage = STAGE


@app.task(bind=True, base=ColorBatchTask, **RETRY)
def process_colors_batch(self: Task, job_id: str, scene_ids: list[str]) -> dict[str, Any]:
    """Compute and store the palettes of a batch of a job's scenes.

    Args:
        job_id: the job (uuid string).
        scene_ids: the batch's scene ids (uuid strings).

    Returns:
        ``{"done": n, "failed": m, "skipped": s, "writes": w}`` for this batch (``writes``:
        the progress reporter's database transactions).
    """
    ids = [uuid.UUID(s) for s in scene_ids]
    done = failed = 0
    with ProgressReporter(job_id, STAGE, task=self) as reporter:
        if not reporter.active:
            return {"done": 0, "failed": 0, "skipped": len(ids), "writes": 0}
        with session_scope() as session:
            rows = session.execute(select(Scene.id, Scene.image_key).where(Scene.id.in_(ids)))
            keys = {row.id: row.image_key for row in rows}

        def load(sid: uuid.UUID) -> LoadedImage | None:
            return load_scene_image(keys[sid]) if keys.get(sid) else None

        with closing(prefetch(ids, load)) as loads:
            for position, (scene_id, loaded) in enumerate(loads):
                if not reporter.active:
                    break
                try:
                    image = loaded.result()
                    if image is None:
                        raise LookupError(f"scene {scene_id} has no stored image")
                    reporter.succeeded(scene_id, {"colors": palette_json(image)})
                    done += 1
                except SoftTimeLimitExceeded:
                    failed += 1
                    done -= stop_at_soft_limit(
                        self,
                        reporter,
                        job_id,
                        scene_ids,
                        [scene_id],
                        set(scene_ids[:position]),
                        "soft time limit exceeded while computing the palette",
                    )
                    break
                except ImageError as exc:
                    reporter.failed(scene_id, str(exc), UNUSABLE)
                    failed += 1
                except (LookupError, FileNotFoundError) as exc:
                    reporter.failed(scene_id, f"missing input: {exc}")
                    failed += 1
                except DBAPIError:
                    raise
                except Exception as exc:  # one bad scene must not take the batch or worker down
                    log.exception("colours failed for scene %s", scene_id)
                    reporter.failed(scene_id, f"{type(exc).__name__}: {exc}")
                    failed += 1
    return {
        "done": done,
        "failed": failed,
        "skipped": len(ids) - done - failed,
        "writes": reporter.writes,
    }


@app.task(bind=True, **RETRY)
def run_color_processing_job(self: Task, job_id: str, limit: int | None = None) -> dict[str, Any]:
    """Fan a colours job out over the scenes that have no palette yet.

    Args:
        job_id: a pending job created by the caller, or the caller's own id
            (``"color_001"``): the job is created for it, once (:func:`start_job`).
        limit: at most this many scenes (oldest first); None for all.

    Returns:
        The job's summary (:func:`modomo.jobs.job_summary`) with ``scenes`` and ``batches``
        sent (``{"skipped": status}`` for a job no longer active).
    """
    job_id, started = start_job(job_id, "colors", {"limit": limit})
    if started is not None:
        return started
    if not job_is_active(job_id):
        return {"skipped": "the job is no longer active"}
    with session_scope() as session:
        query = (
            select(Scene.id)
            .where(
                Scene.colors.is_(None),
                Scene.status != SceneStatus.FAILED,
                Scene.image_key.is_not(None),
            )
            .order_by(Scene.created_at)
        )
        if limit is not None:
            query = query.limit(limit)
        scene_ids = list(session.scalars(query))
    task_ids = dispatch_batches(job_id, process_colors_batch, scene_ids, get_settings().batch_size)
    if not scene_ids:
        finish_if_done(job_id)
    return job_summary(job_id, scenes=len(scene_ids), batches=len(task_ids))


@app.task(bind=True, **RETRY)
def process_scene_colors(self: Task, scene_id: str) -> dict[str, Any]:
    """Compute and store one scene's palette, outside any job; returns the palette JSON.

    Raises:
        ImageError: the scene's image is unusable (the scene is marked failed).
        LookupError: no such scene, or it has no stored image.
    """
    sid = uuid.UUID(scene_id)
    with session_scope() as session:
        key = session.scalar(select(Scene.image_key).where(Scene.id == sid))
    if key is None:
        raise LookupError(f"scene {scene_id} has no stored image")
    try:
        colors = scene_palette(key)
    except ImageError:
        _set_scene(sid, UNUSABLE)
        raise
    _set_scene(sid, {"colors": colors})
    return colors


def _set_scene(scene_id: uuid.UUID, values: dict[str, Any]) -> None:
    with session_scope() as session:
        session.execute(
            update(Scene).where(Scene.id == scene_id).values(**values, updated_at=utcnow())
        )
