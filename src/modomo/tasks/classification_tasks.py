"""Classification and de-duplication tasks (queue ``classification``).

Thin: read a batch's scenes (and their objects' boxes), decode the images on a background
thread while CLIP runs on the previous chunk, hand them to
:class:`modomo.classification.SceneClassifier`, and store labels and embeddings through the
progress reporter. De-duplication hashes the scenes that have no pHash yet, then lets
:func:`modomo.duplicates.regroup` rebuild the duplicate groups.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import closing
from functools import partial
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select, update

from modomo.artifacts import artifact_store
from modomo.batching import prefetch
from modomo.celery_app import app
from modomo.classification import ClassifiedScene, SceneClassifier
from modomo.config import get_settings
from modomo.db.models import DetectedObject, ItemStatus, JobScene, Scene, SceneStatus, utcnow
from modomo.db.session import session_scope
from modomo.images import ImageError, LoadedImage
from modomo.images.phash import phash_hex
from modomo.jobs import (
    ProgressReporter,
    close_source,
    dispatch_batches,
    finish_if_done,
    job_is_active,
    job_summary,
    open_source,
    set_result,
)
from modomo.jobs.accounting import add_scenes
from modomo.tasks.base import (
    RETRY,
    UNUSABLE,
    BatchTask,
    SourceTask,
    load_scene_image,
    load_scene_images,
    start_job,
    stop_at_soft_limit,
)

__all__ = [
    "classify_scenes_batch",
    "classify_single_scene",
    "run_dedup_job",
    "run_scene_reclassification_job",
]

log = logging.getLogger(__name__)

STAGE = "classify"
DEDUP_STAGE = "dedup"
HASH_CHUNK = 500  # scenes per database round trip while hashing (well under bind limits)


def _classifier() -> SceneClassifier:
    from modomo.models.registry import registry

    return SceneClassifier(registry(), get_settings())


def scene_values(
    result: ClassifiedScene, stated: dict[str, str | None], model: str
) -> dict[str, Any]:
    """The ``scenes`` columns a classification sets.

    A room type or style the source stated (a Houzz gallery's room, a dataset's label) is
    kept as the scene's label: it outranks a zero-shot guess. CLIP's answer is always in
    ``classification`` with its top k.
    """
    predictions = result.predictions
    return {
        "room_type": stated.get("room_type") or predictions["room_type"]["label"],
        "style": stated.get("style") or predictions["style"]["label"],
        "scene_type": predictions["scene_type"]["label"],
        "classification": {**predictions, "model": model, "stated": stated},
        "clip_embedding": result.embedding,
        "embedding_model": model,
    }


def _stated(scene: Any) -> dict[str, str | None]:
    """What the scene's source said, as first recorded (before CLIP ever wrote a label)."""
    if scene.classification and "stated" in scene.classification:
        return dict(scene.classification["stated"])
    return {"room_type": scene.room_type, "style": scene.style}


class ClassifyBatchTask(BatchTask):
    stage = STAGE


@app.task(bind=True, base=ClassifyBatchTask, **RETRY)
def classify_scenes_batch(self: Task, job_id: str, scene_ids: list[str]) -> dict[str, Any]:
    """Classify a batch of a job's scenes and store their labels and embeddings.

    Each scene gets room type, style and scene type (top k with probabilities, ``unknown``
    below the threshold) and its embedding; each of its detected objects gets its crop's
    embedding. Running a batch twice gives the same rows.

    Returns:
        ``{"done", "failed", "skipped", "objects", "writes"}`` for this batch.
    """
    ids = [uuid.UUID(s) for s in scene_ids]
    done = failed = embedded_objects = 0
    with ProgressReporter(job_id, STAGE, task=self) as reporter:
        if not reporter.active:
            return {"done": 0, "failed": 0, "skipped": len(ids), "objects": 0, "writes": 0}
        classifier = _classifier()
        try:
            classifier.load()
            model = classifier.model_label
        except Exception as exc:  # missing weights, wrong dimension: every scene says why
            log.error("cannot load CLIP for job %s: %s", job_id, exc)
            for scene_id in ids:
                reporter.failed(scene_id, f"model unavailable: {exc}")
            return {"done": 0, "failed": len(ids), "skipped": 0, "objects": 0, "writes": 0}
        with session_scope() as session:
            scenes = {
                s.id: (s.image_key, _stated(s))
                for s in session.scalars(select(Scene).where(Scene.id.in_(ids)))
            }
            boxes: dict[uuid.UUID, list[tuple[uuid.UUID, list[float]]]] = {}
            for row in session.execute(
                select(DetectedObject.id, DetectedObject.scene_id, DetectedObject.bbox).where(
                    DetectedObject.scene_id.in_(ids)
                )
            ):
                boxes.setdefault(row.scene_id, []).append((row.id, row.bbox))

        keys = {sid: key for sid, (key, _) in scenes.items()}
        size = classifier.batch_size
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
        with closing(prefetch(chunks, partial(load_scene_images, keys))) as loads:
            for position, (chunk, loaded) in enumerate(loads):
                if not reporter.active:
                    break
                counted: set[uuid.UUID] = set()
                try:
                    usable: list[tuple[uuid.UUID, LoadedImage]] = []
                    for sid, image in zip(chunk, loaded.result(), strict=True):
                        if isinstance(image, LoadedImage):
                            usable.append((sid, image))
                            continue
                        if isinstance(image, ImageError):
                            reporter.failed(sid, str(image), UNUSABLE)
                        else:
                            reporter.failed(sid, f"missing input: {image}")
                        counted.add(sid)
                        failed += 1
                    results = classifier.run(
                        [image for _, image in usable], [boxes.get(sid, []) for sid, _ in usable]
                    )
                    for (sid, _), result in zip(usable, results, strict=True):
                        counted.add(sid)
                        if isinstance(result, BaseException):
                            log.warning("scene %s failed classification: %r", sid, result)
                            reporter.failed(sid, f"{type(result).__name__}: {result}")
                            failed += 1
                            continue
                        reporter.succeeded(
                            sid,
                            scene_values(result, scenes[sid][1], model),
                            object_values={
                                oid: {"embedding": vector}
                                for oid, vector in result.object_embeddings.items()
                            },
                        )
                        done += 1
                        embedded_objects += len(result.object_embeddings)
                except SoftTimeLimitExceeded:
                    uncounted = [sid for sid in chunk if sid not in counted]
                    failed += len(uncounted)
                    done -= stop_at_soft_limit(
                        self,
                        reporter,
                        job_id,
                        scene_ids,
                        uncounted,
                        {str(s) for c in chunks[:position] for s in c},
                        "soft time limit exceeded while classifying",
                    )
                    break
    return {
        "done": done,
        "failed": failed,
        "skipped": len(ids) - done - failed,
        "objects": embedded_objects,
        "writes": reporter.writes,
    }


@app.task(bind=True, **RETRY)
def run_scene_reclassification_job(
    self: Task, job_id: str, limit: int | None = None, force_reclassify: bool = False
) -> dict[str, Any]:
    """Fan a classification job out over the scenes not classified yet (all with
    ``force_reclassify``), oldest first.

    Args:
        job_id: a pending job created by the caller.
        limit: at most this many scenes; None for all.
        force_reclassify: also the scenes already classified (e.g. after changing the
            labels, the threshold or the CLIP weights).

    Returns:
        ``{"scenes": n, "batches": b}`` (``{"skipped": status}`` for a job no longer active).
    """
    job_id, started = start_job(
        job_id, "classify", {"limit": limit, "force_reclassify": force_reclassify}
    )
    if started is not None:
        return started
    if not job_is_active(job_id):
        return {"skipped": "the job is no longer active"}
    with session_scope() as session:
        query = select(Scene.id).where(
            Scene.status != SceneStatus.FAILED, Scene.image_key.is_not(None)
        )
        if not force_reclassify:
            query = query.where(Scene.classification.is_(None))
        query = query.order_by(Scene.created_at, Scene.id)
        if limit is not None:
            query = query.limit(limit)
        scene_ids = list(session.scalars(query))
    task_ids = dispatch_batches(job_id, classify_scenes_batch, scene_ids, get_settings().batch_size)
    finish_if_done(job_id)
    return job_summary(job_id, scenes=len(scene_ids), batches=len(task_ids))


@app.task(bind=True, **RETRY)
def classify_single_scene(self: Task, scene_id: str) -> dict[str, Any]:
    """Classify one scene now, outside any job, and store the result.

    Returns:
        The scene's ``classification`` JSON (per attribute ``{"label", "probability",
        "top_k"}``, plus ``model`` and ``stated``).

    Raises:
        LookupError: no such scene, or it has no stored image.
        ImageError: its image is unusable (the scene is marked failed).
        MissingWeightsError: the CLIP weights are not available.
    """
    sid = uuid.UUID(scene_id)
    with session_scope() as session:
        scene = session.get(Scene, sid)
        if scene is None or not scene.image_key:
            raise LookupError(f"scene {scene_id} does not exist or has no stored image")
        key, stated = scene.image_key, _stated(scene)
        boxes = [
            (row.id, row.bbox)
            for row in session.execute(
                select(DetectedObject.id, DetectedObject.bbox).where(DetectedObject.scene_id == sid)
            )
        ]
    classifier = _classifier()
    classifier.load()
    try:
        image = load_scene_image(key)
    except ImageError:
        with session_scope() as session:
            session.execute(update(Scene).where(Scene.id == sid).values(**UNUSABLE))
        raise
    (result,) = classifier.run([image], [boxes])
    if isinstance(result, BaseException):
        raise result
    values = scene_values(result, stated, classifier.model_label)
    with session_scope() as session:
        session.execute(update(Scene).where(Scene.id == sid).values(**values, updated_at=utcnow()))
        for oid, vector in result.object_embeddings.items():
            session.execute(
                update(DetectedObject).where(DetectedObject.id == oid).values(embedding=vector)
            )
    return dict(values["classification"])


@app.task(bind=True, base=SourceTask, **RETRY)
def run_dedup_job(self: Task, job_id: str) -> dict[str, Any]:
    """De-duplicate the catalogue: hash the scenes without a pHash (and the job's own
    scenes, e.g. those ``modomo process`` ingested into it), then rebuild the duplicate
    groups from pHashes and embeddings.

    Each scene hashed is counted in the job (an unreadable image fails with the reason);
    the groups found are the job's ``result``.

    Returns:
        The :func:`modomo.duplicates.regroup` summary (``{"skipped": status}`` for a job
        no longer active).
    """
    from modomo.duplicates import regroup

    job_id, started = start_job(job_id, "dedup", {})
    if started is not None:
        return started
    if not job_is_active(job_id):
        return {"skipped": "the job is no longer active"}
    jid = uuid.UUID(job_id)
    open_source(job_id)
    settings = get_settings()
    with session_scope() as session:
        own = session.scalars(
            select(JobScene.scene_id).where(
                JobScene.job_id == jid, JobScene.status == ItemStatus.PENDING
            )
        )
        unhashed = session.scalars(
            select(Scene.id).where(
                Scene.phash.is_(None),
                Scene.status != SceneStatus.FAILED,
                Scene.image_key.is_not(None),
            )
        )
        todo = list(dict.fromkeys([*own, *unhashed]))
    store = artifact_store()
    with ProgressReporter(job_id, DEDUP_STAGE, task=self) as reporter:
        for start in range(0, len(todo), HASH_CHUNK):
            chunk = todo[start : start + HASH_CHUNK]
            with session_scope() as session:
                add_scenes(session, jid, chunk)
                rows = session.execute(
                    select(Scene.id, Scene.image_key, Scene.phash).where(Scene.id.in_(chunk))
                ).all()
            for row in rows:
                if not reporter.active:
                    return {"skipped": "the job is no longer active"}
                if row.phash:
                    reporter.succeeded(row.id)
                    continue
                try:
                    if not row.image_key:
                        raise LookupError(f"scene {row.id} has no stored image")
                    data = store.get_bytes(row.image_key)
                    phash = phash_hex(data, max_pixels=settings.max_image_pixels)
                    reporter.succeeded(row.id, {"phash": phash})
                except ImageError as exc:
                    reporter.failed(row.id, str(exc), UNUSABLE)
                except (LookupError, FileNotFoundError) as exc:
                    reporter.failed(row.id, f"missing input: {exc}")
    summary = regroup(
        max_distance=settings.phash_max_distance,
        min_similarity=settings.semantic_min_similarity,
        job_id=jid,
    )
    set_result(job_id, summary)
    close_source(
        job_id,
        message=f"{summary['groups']} duplicate groups, {summary['duplicates']} non-canonical "
        f"scenes among {summary['scenes']}",
    )
    return summary
