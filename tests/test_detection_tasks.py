"""The detection pipeline through a real AI worker (`modomo worker --ai`, prefork,
concurrency 1), Redis and PostgreSQL, with the fixture detector and random-weight SAM 2.1 and
Depth Anything checkpoints built from configs."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from modomo.analysis.depth import decode_depth_png, upsample_depth
from modomo.analysis.masks import decode_rle, mask_bbox_xyxy, xywh_to_xyxy
from modomo.artifacts import artifact_store
from modomo.db.models import DetectedObject, Scene
from modomo.db.session import session_scope
from modomo.evaluation import evaluate_job
from modomo.jobs import create_job, dispatch_batches
from modomo.sources import expand_sources, ingest
from tests.fixture_scenes import CLASS_NAMES, FIXTURE_WEIGHTS, map50, synthetic_scenes
from tests.support import REPO, encode, wait_for_job, worker_env

pytestmark = pytest.mark.services

SEED = 4242


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Synthetic scenes on disk: file name -> (ground-truth boxes xyxy, class names)."""
    folder = tmp_path_factory.mktemp("scenes")
    truth = {}
    for index, (rgb, boxes, class_ids) in enumerate(synthetic_scenes(24, seed=SEED)):
        name = f"scene{index:02d}.png"
        (folder / name).write_bytes(encode(rgb))
        truth[str(folder / name)] = (boxes, [CLASS_NAMES[c] for c in class_ids])
    (folder / "broken.jpg").write_bytes(encode(np.zeros((64, 64, 3), np.uint8), "JPEG")[:200])
    return truth


def submit(paths: list[str], **kwargs: object) -> tuple[uuid.UUID, list[uuid.UUID], dict]:
    from modomo.tasks.detection_tasks import process_scenes_batch

    job_id = create_job("detection", {"sources": paths})
    report = ingest(job_id, expand_sources(paths))
    dispatch_batches(job_id, process_scenes_batch, report.scene_ids, 8, **kwargs)
    return job_id, report.scene_ids, wait_for_job(job_id, timeout_s=240)


def objects_by_scene(scene_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[DetectedObject]]:
    found: dict[uuid.UUID, list[DetectedObject]] = {sid: [] for sid in scene_ids}
    with session_scope() as session:
        for obj in session.scalars(
            select(DetectedObject).where(DetectedObject.scene_id.in_(scene_ids))
        ):
            session.expunge(obj)
            found[obj.scene_id].append(obj)
    return found


def test_detection_job_end_to_end(
    ai_worker: str, scenes: dict[str, tuple[np.ndarray, list[str]]], tmp_path: Path
) -> None:
    paths = sorted(scenes) + [str(Path(next(iter(scenes))).with_name("broken.jpg"))]
    job_id, scene_ids, job = submit(paths)
    assert job["status"] == "completed", job
    assert (job["total"], job["processed"], job["failed"]) == (25, 24, 1)
    assert job["failures"][0]["source_key"].endswith("broken.jpg")

    with session_scope() as session:
        rows = session.execute(
            select(
                Scene.id,
                Scene.source_key,
                Scene.width,
                Scene.height,
                Scene.depth_key,
                Scene.depth_info,
                Scene.depth_model,
                Scene.colors,
            ).where(Scene.id.in_(scene_ids))
        ).all()
    objects = objects_by_scene(scene_ids)
    ground_truth, predictions = [], []
    for row in rows:
        boxes, names = scenes[row.source_key.removeprefix("file:")]
        found = objects[row.id]
        ground_truth.append((boxes, names))
        predictions.append(
            (
                np.array([xywh_to_xyxy(o.bbox) for o in found]).reshape(-1, 4),
                [o.category for o in found],
                np.array([o.confidence for o in found]),
            )
        )
        # the depth map is a 16-bit PNG at the model's resolution, the image's size and the
        # map's recorded beside it; its model recorded
        assert row.depth_model and row.depth_model.endswith("@local")
        depth = decode_depth_png(artifact_store().get_bytes(row.depth_key), row.depth_info)
        info = row.depth_info
        assert depth.shape == (info["height"], info["width"])
        assert (info["image_height"], info["image_width"]) == (row.height, row.width)
        full = upsample_depth(depth, info["image_height"], info["image_width"])
        assert full.shape == (row.height, row.width)
        assert row.colors is not None
        for obj in found:
            # bbox is [x, y, w, h] in pixels of the stored image
            x, y, w, h = obj.bbox
            assert x >= 0 and y >= 0 and w > 0 and h > 0
            assert x + w <= row.width + 1e-3 and y + h <= row.height + 1e-3
            mask = decode_rle(obj.mask_rle)
            assert mask.shape == (row.height, row.width)
            assert obj.mask_area == int(mask.sum())
            if obj.mask_area:
                x1, y1, x2, y2 = xywh_to_xyxy(obj.bbox)
                inside = mask[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))].sum()
                assert inside / obj.mask_area >= 0.7  # mostly inside its box
                assert mask_bbox_xyxy(mask) is not None
            assert obj.taxonomy_group and obj.models["detector"].startswith(str(FIXTURE_WEIGHTS))
            assert obj.models["depth"] == row.depth_model
            assert obj.depth_min <= obj.depth_median <= obj.depth_max
            assert obj.colors is not None and obj.job_id == job_id
    score = map50(ground_truth, predictions)
    assert score >= 0.5, f"mAP@0.5 {score:.3f} against the synthetic ground truth"

    # `modomo eval` on this job against the same ground truth, written as a user's COCO file
    # (images named as the files were, in the scorer's order), gives pycocotools' figure
    gt_file = write_ground_truth(
        tmp_path / "gt.json",
        [(Path(row.source_key).name, row.width, row.height) for row in rows],
        ground_truth,
    )
    result = evaluate_job(gt_file, job_id)
    assert (result.images["matched"], result.images["unmatched"]) == (24, 0)
    assert result.category_mapping == {name: name for name in CLASS_NAMES}
    assert result.map_at_iou is not None and abs(result.map_at_iou - score) <= 1e-9
    assert result.stats["ap50"] is not None and abs(result.stats["ap50"] - score) <= 1e-9
    done = subprocess.run(
        [sys.executable, "-m", "modomo.cli", "eval", "--gt", str(gt_file)]
        + ["--job", str(job_id), "--json"],
        cwd=REPO,
        env=worker_env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    printed = json.loads(done.stdout)
    assert abs(printed["map_at_iou"] - score) <= 1e-9
    assert abs(printed["stats"]["ap50"] - score) <= 1e-9
    assert printed["images"]["matched"] == 24 and printed["job_id"] == str(job_id)


def write_ground_truth(
    path: Path,
    images: list[tuple[str, int, int]],
    ground_truth: list[tuple[np.ndarray, list[str]]],
) -> Path:
    """A COCO ground-truth file: per image (file name, width, height) and its (boxes xyxy
    pixels, class names); ids from 1 in order, boxes as `map50` turns them into xywh."""
    annotations = []
    for image_id, (boxes, names) in enumerate(ground_truth, start=1):
        for box, name in zip(np.asarray(boxes).reshape(-1, 4), names, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CLASS_NAMES.index(name) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    dataset = {
        "images": [
            {"id": i, "file_name": name, "width": width, "height": height}
            for i, (name, width, height) in enumerate(images, start=1)
        ],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(CLASS_NAMES)],
    }
    path.write_text(json.dumps(dataset))
    return path


def test_re_running_scenes_replaces_their_objects(
    ai_worker: str, scenes: dict[str, tuple[np.ndarray, list[str]]]
) -> None:
    from modomo.tasks.detection_tasks import process_scenes_batch

    paths = sorted(scenes)[:6]
    _, scene_ids, first = submit(paths)
    assert first["status"] == "completed"
    before = {sid: len(objs) for sid, objs in objects_by_scene(scene_ids).items()}
    assert sum(before.values()) > 0

    # a second job on the same scenes, and one batch delivered twice within a job
    job_id = create_job("detection", {})
    ids = dispatch_batches(job_id, process_scenes_batch, scene_ids, 3)
    process_scenes_batch.apply_async(args=(str(job_id), [str(s) for s in scene_ids[:3]]))
    job = wait_for_job(job_id, timeout_s=240)
    assert job["status"] == "completed" and job["processed"] == 6 and len(ids) == 2
    after = {sid: len(objs) for sid, objs in objects_by_scene(scene_ids).items()}
    assert after == before
    with session_scope() as session:
        total = session.scalar(
            select(func.count())
            .select_from(DetectedObject)
            .where(DetectedObject.scene_id.in_(scene_ids))
        )
    assert total == sum(before.values())


def test_reprocess_keeps_boxes_unless_forced(
    ai_worker: str, scenes: dict[str, tuple[np.ndarray, list[str]]]
) -> None:
    from modomo.tasks.detection_tasks import reprocess_scene_objects

    _, scene_ids, _ = submit(sorted(scenes)[6:8])
    scene_id = scene_ids[0]
    boxes = sorted(tuple(o.bbox) for o in objects_by_scene([scene_id])[scene_id])
    for force in (False, True):
        job_id = create_job("detection", {"scene_id": str(scene_id)})
        dispatch_batches(job_id, reprocess_scene_objects, [], 1)  # puts nothing: a no-op
        from modomo.jobs.accounting import add_scenes

        with session_scope() as session:
            add_scenes(session, job_id, [scene_id])
        reprocess_scene_objects.apply_async(args=(str(job_id), str(scene_id), force))
        job = wait_for_job(job_id, timeout_s=120)
        assert job["status"] == "completed", job
        again = sorted(tuple(o.bbox) for o in objects_by_scene([scene_id])[scene_id])
        assert len(again) == len(boxes)
        if not force:
            assert again == boxes


def test_run_detection_pipeline_on_a_scene(
    ai_worker: str, scenes: dict[str, tuple[np.ndarray, list[str]]]
) -> None:
    """The coordinator task (queue ``detection``) fans a scene out to ``ai_processing``."""
    from modomo.tasks.detection_tasks import run_detection_pipeline

    path = sorted(scenes)[10]
    job_id = create_job("ingest-only", {})
    scene_id = ingest(job_id, expand_sources([path])).scene_ids[0]
    detection_job = create_job("detection", {"scene_id": str(scene_id)})
    result = run_detection_pipeline.apply_async(
        args=(str(detection_job),), kwargs={"scene_id": str(scene_id), "stages": ["detect"]}
    ).get(timeout=60)
    assert (result["id"], result["scenes"], result["batches"]) == (str(detection_job), 1, 1)
    job = wait_for_job(detection_job, timeout_s=120)
    assert (job["status"], job["processed"], job["failed"]) == ("completed", 1, 0)
    found = objects_by_scene([scene_id])[scene_id]
    assert len(found) >= 1
    # detect only: boxes and categories, no masks or depth
    assert all(o.mask_rle is None and o.depth_median is None for o in found)
    assert {o.models.get("detector", "") for o in found} != {""}


def test_run_detection_pipeline_with_the_callers_own_job_id(
    ai_worker: str, scenes: dict[str, tuple[np.ndarray, list[str]]]
) -> None:
    """The original guide's call: ``run_detection_pipeline.delay(job_id="detect_001",
    scene_id=…)`` creates the job ``detect_001`` names, once, and ``.get()`` gives its
    summary."""
    from modomo.jobs import EXTERNAL_IDS
    from modomo.tasks.detection_tasks import run_detection_pipeline

    path = sorted(scenes)[11]
    scene_id = ingest(create_job("ingest-only", {}), expand_sources([path])).scene_ids[0]
    chosen = f"detect_{uuid.uuid4().hex[:8]}"
    result = run_detection_pipeline.delay(job_id=chosen, scene_id=str(scene_id)).get(timeout=60)
    job_id = uuid.uuid5(EXTERNAL_IDS, chosen)
    assert (result["id"], result["type"], result["scenes"]) == (str(job_id), "detection", 1)
    assert result["params"]["external_id"] == chosen
    job = wait_for_job(job_id, timeout_s=120)
    assert (job["status"], job["processed"], job["failed"]) == ("completed", 1, 0)
    again = run_detection_pipeline.delay(job_id=chosen, scene_id=str(scene_id)).get(timeout=60)
    assert "not done twice" in again["skipped"] and again["processed"] == 1
    # scene_id and scene_ids together: every known one is processed, an unknown one noted
    both = run_detection_pipeline.delay(
        job_id=f"{chosen}-b", scene_id=str(scene_id), scene_ids=[str(uuid.uuid4())]
    ).get(timeout=60)
    assert both["scenes"] == 1
    job = wait_for_job(both["id"], timeout_s=120)
    assert (job["status"], job["processed"], job["failed"]) == ("completed", 1, 0)
