"""Detection tasks (queues ``detection`` and ``ai_processing``): detect → segment → depth →
colours, on batches of scenes, with the models loaded once per worker process.

Thin: read the batch's scenes and run them through :func:`modomo.inference.pipelined`:
images decoded in the host processes (``MODOMO_AI_HOST_THREADS`` of them) ahead of the
device, the models of :class:`modomo.inference.DetectionPipeline` on this thread, and each
scene finished (rows, palettes) in its host process, its depth PNG stored, while the next
chunk is on the device. Outcomes are counted here, on this thread, once each, objects and
all, through the progress reporter in one transaction. The job's stage counts follow each
scene: passed at every stage of the pipeline, or failed at the stage its
exception names (:func:`modomo.inference.failed_stage`; an image that cannot be decoded fails
at the first).
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Sequence
from contextlib import closing
from typing import Any

import numpy as np
import supervision as sv
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from sqlalchemy import select

from modomo.analysis.masks import xywh_to_xyxy
from modomo.artifacts import artifact_store
from modomo.celery_app import app
from modomo.config import get_settings
from modomo.db.models import DetectedObject, Scene, SceneStatus
from modomo.db.session import session_scope
from modomo.images import ImageError
from modomo.inference import (
    INPUT_SIDE,
    STAGES,
    DetectionPipeline,
    HostProcessError,
    HostProcesses,
    SceneResult,
    default_host_threads,
    failed_stage,
    host_pool,
    host_processes,
    parse_stages,
    pipelined,
)
from modomo.jobs import (
    ProgressReporter,
    dispatch_batches,
    finish_if_done,
    job_is_active,
    job_summary,
)
from modomo.models.device import reserve_host_cores, set_torch_threads
from modomo.tasks.base import (
    RETRY,
    UNUSABLE,
    BatchTask,
    start_job,
    stop_at_soft_limit,
)

__all__ = ["process_scenes_batch", "reprocess_scene_objects", "run_detection_pipeline"]

log = logging.getLogger(__name__)

STAGE = "detect"
AI_QUEUES = ("ai_processing", "detection")


def _host_count() -> int:
    return get_settings().ai_host_threads or default_host_threads()


def _hosts() -> HostProcesses | None:
    """This worker child's host processes, or None when the host work runs on threads; either
    way their cores are left out of torch's automatic thread count."""
    count = _host_count()
    reserve_host_cores(count)
    return host_processes(count) if get_settings().ai_host_processes else None


def _pipeline(stages: Sequence[str]) -> DetectionPipeline:
    from modomo.models.registry import registry

    settings = get_settings()
    hosts = _hosts()
    set_torch_threads(settings.torch_threads)
    return DetectionPipeline(
        registry(),
        parse_stages(list(stages)),
        batch_size=settings.ai_batch_size,
        palette_size=settings.palette_size,
        input_side=max(INPUT_SIDE, settings.detector_image_size),
        hosts=hosts,
    )


def depth_key(scene_id: uuid.UUID) -> str:
    """The artifact key of a scene's depth PNG."""
    return f"depth/{scene_id}.png"


def _scene_values(scene_id: uuid.UUID, result: SceneResult) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if result.depth_png is not None:
        key = artifact_store().put_bytes(depth_key(scene_id), result.depth_png)
        values.update(depth_key=key, depth_model=result.depth_model, depth_info=result.depth_info)
    if result.colors is not None:
        values["colors"] = result.colors
    return values


def _stored_detections(scene_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, sv.Detections]:
    """Each scene's stored objects as detections (boxes, categories), for re-running masks,
    depth and colours without re-detecting."""
    rows: dict[uuid.UUID, list[Any]] = {}
    with session_scope() as session:
        for row in session.execute(
            select(
                DetectedObject.scene_id,
                DetectedObject.bbox,
                DetectedObject.confidence,
                DetectedObject.category,
                DetectedObject.taxonomy_group,
            ).where(DetectedObject.scene_id.in_(list(scene_ids)))
        ):
            rows.setdefault(row.scene_id, []).append(row)
    found = {}
    for scene_id, objects in rows.items():
        detections = sv.Detections(
            xyxy=np.array([xywh_to_xyxy(o.bbox) for o in objects], dtype=np.float32),
            confidence=np.array([o.confidence for o in objects], dtype=np.float32),
        )
        detections.data["category"] = np.array([o.category for o in objects], dtype=object)
        detections.data["taxonomy_group"] = np.array(
            [o.taxonomy_group for o in objects], dtype=object
        )
        found[scene_id] = detections
    return found


class DetectionBatchTask(BatchTask):
    stage = STAGE

    def failure_stage(self, kwargs: dict[str, Any]) -> str:
        # the batch's own pipeline may start after detect (e.g. depth only)
        try:
            return parse_stages(kwargs.get("stages") or list(STAGES))[0]
        except ValueError:
            return self.stage


@app.task(bind=True, base=DetectionBatchTask, **RETRY)
def process_scenes_batch(
    self: Task,
    job_id: str,
    scene_ids: list[str],
    stages: list[str] | None = None,
    redetect: bool = True,
) -> dict[str, Any]:
    """Run the detection pipeline on a batch of a job's scenes and store the results.

    A scene's objects are replaced (never added to), its depth PNG overwritten, so running a
    batch twice gives the same rows. The job's status is checked between chunks: a
    cancelled job stops here. An image that cannot be decoded, or a scene that fails even at
    batch size 1, is counted as failed with the reason; the rest of the batch goes on. The
    job's stage counts say where: a decoding failure at the pipeline's first stage, a model
    failure at the stage that raised (and processed at the stages before it).

    Args:
        job_id: the job (uuid string).
        scene_ids: the batch's scene ids (uuid strings).
        stages: a subset of ``detect, segment, depth, colors`` (default: all).
        redetect: False re-uses each scene's stored boxes where it has any (masks, depth
            and colours are recomputed); True runs the detector.

    Returns:
        ``{"done", "failed", "skipped", "objects", "writes"}`` for this batch.
    """
    ids = [uuid.UUID(s) for s in scene_ids]
    done = failed = objects = 0
    pipeline_stages = parse_stages(list(stages or STAGES))
    with ProgressReporter(job_id, STAGE, stages=pipeline_stages, task=self) as reporter:
        if not reporter.active:
            return {"done": 0, "failed": 0, "skipped": len(ids), "objects": 0, "writes": 0}
        pipeline = _pipeline(pipeline_stages)
        try:
            pipeline.load()
        except Exception as exc:  # missing weights, bad device: every scene says why
            log.error("cannot load the models of job %s: %s", job_id, exc)
            for scene_id in ids:
                reporter.failed(scene_id, f"models unavailable: {exc}")
            return {"done": 0, "failed": len(ids), "skipped": 0, "objects": 0, "writes": 0}
        with session_scope() as session:
            rows = session.execute(select(Scene.id, Scene.image_key).where(Scene.id.in_(ids)))
            keys = {row.id: row.image_key for row in rows}
        given = {} if redetect else _stored_detections(ids)

        settings = get_settings()

        def load(sid: uuid.UUID) -> Any:
            key = keys.get(sid)
            if not key:
                raise LookupError(f"scene {sid} has no stored image")
            data = artifact_store().get_bytes(key)
            return pipeline.decode(data, max_pixels=settings.max_image_pixels)

        def infer(scenes: list[Any], chunk: list[uuid.UUID]) -> list[Any]:
            return pipeline.infer(scenes, [given.get(sid) for sid in chunk])

        def finish(sid: uuid.UUID, scene: Any, inferred: Any) -> Any:
            result = pipeline.finish(scene, inferred)
            return result, _scene_values(sid, result)

        if pipeline.hosts is not None:
            pipeline.hosts.new_session()
        # with host processes, the threads only read, write and wait on them: two per process
        threads = _host_count() * (2 if pipeline.hosts is not None else 1)
        size = pipeline.batch_size
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
        counted: set[uuid.UUID] = set()
        entered: list[uuid.UUID] = []  # scenes waited for, inferred or finishing
        outcomes = pipelined(
            # a cancelled job stops taking chunks; those in flight are counted
            (chunk for chunk in chunks if reporter.active),
            load,
            infer,
            finish,
            host_pool(threads),
            lookahead=settings.ai_batches_in_flight,
            finishing=settings.ai_batches_in_flight,
            started=entered.extend,
        )
        try:
            with closing(outcomes):
                for outcome in outcomes:
                    sid = outcome.item
                    counted.add(sid)
                    error = outcome.error
                    if error is None:
                        assert outcome.result is not None
                        result, values = outcome.result
                        reporter.succeeded(sid, values, result.objects)
                        done += 1
                        objects += len(result.objects)
                        continue
                    failed += 1
                    if outcome.at_load:
                        if isinstance(error, ImageError):
                            reporter.failed(sid, str(error), UNUSABLE)
                        elif isinstance(error, HostProcessError):
                            reporter.failed(sid, str(error))
                        else:
                            reporter.failed(sid, f"missing input: {error}")
                        continue
                    at = failed_stage(error)
                    log.warning("scene %s failed at %s: %r", sid, at, error)
                    reporter.failed(
                        sid,
                        f"{type(error).__name__}: {error}",
                        stage=at if at in pipeline.stages else None,
                    )
        except SoftTimeLimitExceeded:
            # the scenes in hand (being read, on the device or finishing) fail with the
            # reason, so a scene that cannot finish in time is not sent round again; those
            # only read ahead, and the rest, go again in a new task
            in_hand = [sid for sid in entered if sid not in counted]
            failed += len(in_hand)
            done -= stop_at_soft_limit(
                self,
                reporter,
                job_id,
                scene_ids,
                in_hand,
                {str(s) for s in counted},
                "soft time limit exceeded in the detection batch",
                stages=stages,
                redetect=redetect,
            )
    return {
        "done": done,
        "failed": failed,
        "skipped": len(ids) - done - failed,
        "objects": objects,
        "writes": reporter.writes,
    }


@app.task(bind=True, **RETRY)
def run_detection_pipeline(
    self: Task,
    job_id: str,
    image_url: str | None = None,
    scene_id: str | None = None,
    stages: list[str] | None = None,
    limit: int | None = None,
    scene_ids: list[str] | None = None,
) -> dict[str, Any]:
    """Start a detection job: ingest ``image_url``, or take ``scene_id`` / ``scene_ids``, or
    (none given) the scenes that have no objects yet, and fan them out in batches to
    ``ai_processing``.

    Args:
        job_id: a pending job created by the caller, or the caller's own id
            (``"detect_001"``): the job is created for it, once (:func:`start_job`).
        image_url: an http(s) image to fetch (safe fetch, size limits) and process.
        scene_id: an existing scene to process (with ``image_url``, both are processed).
        scene_ids: existing scenes to process (ids that name no scene are logged; a job
            given nothing else fails naming them).
        stages: pipeline stages (default: all).
        limit: with neither, at most this many scenes (oldest first).

    Returns:
        The job's summary (:func:`modomo.jobs.job_summary`) with ``scenes`` and ``batches``
        sent (``{"skipped": status}`` for a job no longer active).
    """
    from modomo.sources import ingest
    from modomo.sources.inputs import Input

    parse_stages(stages or list(STAGES))  # refuse a bad pipeline before any work
    job_id, started = start_job(
        job_id,
        "detection",
        {"image_url": image_url, "scene_id": scene_id, "stages": stages, "limit": limit},
    )
    if started is not None:
        return started
    if not job_is_active(job_id):
        return {"skipped": "the job is no longer active"}
    named = [*([scene_id] if scene_id else []), *(scene_ids or [])]
    if image_url or named:  # every one given is processed
        ids = ingest(uuid.UUID(job_id), [Input("url", image_url)]).scene_ids if image_url else []
        if named:
            ids += _known_scenes(job_id, named, alone=not ids)
    else:
        with session_scope() as session:
            has_objects = select(DetectedObject.scene_id).distinct()
            query = (
                select(Scene.id)
                .where(
                    Scene.status != SceneStatus.FAILED,
                    Scene.image_key.is_not(None),
                    Scene.depth_key.is_(None),
                    Scene.id.not_in(has_objects),
                )
                .order_by(Scene.created_at)
            )
            if limit is not None:
                query = query.limit(limit)
            ids = list(session.scalars(query))
    task_ids = dispatch_batches(
        job_id, process_scenes_batch, ids, get_settings().batch_size, stages=stages
    )
    finish_if_done(job_id)
    return job_summary(job_id, scenes=len(ids), batches=len(task_ids))


def _known_scenes(job_id: str, scene_ids: Sequence[str], *, alone: bool) -> list[uuid.UUID]:
    """The ids among ``scene_ids`` that name stored scenes; the rest are logged, and when
    none is known and the job has nothing else to do (``alone``), it fails naming them."""
    wanted = list(dict.fromkeys(uuid.UUID(s) for s in scene_ids))
    with session_scope() as session:
        known = set(session.scalars(select(Scene.id).where(Scene.id.in_(wanted))))
    missing = [str(s) for s in wanted if s not in known]
    if missing:
        from modomo.jobs import fail_lost_work

        note = f"no such scene(s): {', '.join(missing[:10])}" + (" …" if len(missing) > 10 else "")
        log.warning("job %s: %s", job_id, note)
        if not known and alone:
            fail_lost_work(job_id, None, stage=STAGE, reason=note)
    return [s for s in wanted if s in known]


@app.task(bind=True, **RETRY)
def reprocess_scene_objects(
    self: Task, job_id: str, scene_id: str, force_redetection: bool = False
) -> dict[str, Any]:
    """Re-run one scene through the pipeline, replacing its objects.

    Without ``force_redetection`` the scene's stored boxes are kept and its masks, depth
    and colours recomputed (the detector runs only when it has no objects); with it, the
    detector runs again. Counted into ``job_id`` like any batch.
    """
    return process_scenes_batch.run(  # type: ignore[no-any-return]
        job_id, [scene_id], stages=None, redetect=force_redetection
    )


@worker_process_init.connect
def _warm_up(**_: Any) -> None:
    # In the worker child, after the fork: load the models before the first task when asked.
    from modomo.tasks.child import consumes

    if not consumes(AI_QUEUES):
        return
    _hosts()  # started now: their imports overlap the models' loading
    if get_settings().ai_warmup:
        from modomo.models.registry import registry

        try:
            registry().warm_up(STAGES)
        except Exception as exc:
            # a worker that cannot run its models must not take their tasks: stop it (a warm
            # shutdown: messages it prefetched go back to the queue for another worker)
            log.error("the models cannot load: %s; stopping this AI worker", exc)
            os.kill(os.getppid(), signal.SIGTERM)
