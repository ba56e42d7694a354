"""`modomo eval` (modomo.evaluation) on PostgreSQL: the category mapping, the image matching,
hand-checked mAP figures, and the errors a user meets (bad file, unknown job), in the module
and through the CLI. The end-to-end check against pycocotools on a real detection job is in
tests/test_detection_tasks.py."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modomo.analysis.masks import encode_rle
from modomo.db.models import DetectedObject
from modomo.db.session import session_scope
from modomo.evaluation import (
    EvaluationError,
    GroundTruthError,
    UnknownJob,
    evaluate_job,
    load_ground_truth,
    map_categories,
    scene_file_names,
)
from modomo.jobs import create_job
from modomo.sources import ingest
from modomo.sources.inputs import Input
from tests.support import encode, noise_image, run_cli

H, W = 64, 96


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["sofa", "lamp"], ["sofa", "lamp"]),  # taxonomy names as they are
        (["Sofa", "POTTED PLANT"], ["sofa", "potted_plant"]),  # case, spaces
        (["potted_plant", "floor-lamp"], ["potted_plant", "floor_lamp"]),  # _ and - alike
        (["couch", "tv stand"], [None, None]),  # no detector vocabulary, no guessing
        (["shelf", "book shelf", "lamps"], ["shelf", None, None]),  # never a substring match
        ([], []),
    ],
)
def test_map_categories(names: list[str], expected: list[str | None]) -> None:
    assert map_categories(names) == dict(zip(names, expected, strict=True))


def test_two_categories_mapping_to_one_is_an_error() -> None:
    with pytest.raises(GroundTruthError, match="'Sofa' and 'sofa' both map"):
        map_categories(["Sofa", "lamp", "sofa"])


@pytest.mark.parametrize(
    ("source_key", "image_key", "meta", "expected"),
    [
        ("file:/photos/kitchen.jpg", "images/ab/x.jpg", {}, {"kitchen.jpg", "S.jpg"}),
        ("https://e.com/a/room%201.png?w=2", "k.PNG", None, {"room 1.png", "S.png"}),
        ("houzz:123", "k", {}, {"S.img"}),  # the export name only
        ("hf:d:train:4", None, {"image_path": "C:\\data\\r4.jpg"}, {"r4.jpg"}),
    ],
)
def test_scene_file_names(
    source_key: str, image_key: str | None, meta: dict | None, expected: set[str]
) -> None:
    assert scene_file_names("S", source_key, image_key, meta) == expected


def _write(path: Path, value: Any) -> Path:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


GOOD_IMAGE = {"id": 1, "file_name": "a.png"}
GOOD_CATEGORY = {"id": 1, "name": "sofa"}
GOOD_ANNOTATION = {"id": 0, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ([1, 2], "not a COCO dataset"),
        ({"images": [], "categories": []}, "no 'annotations' list"),
        (
            {"images": [GOOD_IMAGE], "categories": [GOOD_CATEGORY], "annotations": []},
            "no annotations",
        ),
        (
            {
                "images": [{"id": 1}],
                "categories": [GOOD_CATEGORY],
                "annotations": [GOOD_ANNOTATION],
            },
            "has no file_name",
        ),
        (
            {
                "images": [GOOD_IMAGE],
                "categories": [GOOD_CATEGORY],
                "annotations": [{**GOOD_ANNOTATION, "image_id": 7}],
            },
            "image_id 7 is not in images",
        ),
        (
            {
                "images": [GOOD_IMAGE],
                "categories": [GOOD_CATEGORY],
                "annotations": [{**GOOD_ANNOTATION, "bbox": [1, 2, 3]}],
            },
            r"annotations\[0\]: bbox must be",
        ),
        (
            {
                "images": [GOOD_IMAGE, GOOD_IMAGE],
                "categories": [GOOD_CATEGORY],
                "annotations": [GOOD_ANNOTATION],
            },
            "appears twice",
        ),
    ],
)
def test_bad_ground_truth_files(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "gt.json"
    if content is not None:
        _write(path, content)
    with pytest.raises(GroundTruthError, match=message):
        load_ground_truth(path)


def test_ground_truth_defaults_and_ids(tmp_path: Path) -> None:
    """Missing iscrowd and area get COCO's defaults; ids are renumbered from 1 (COCOeval
    takes id 0 for 'unmatched')."""
    path = _write(
        tmp_path / "gt.json",
        {"images": [GOOD_IMAGE], "categories": [GOOD_CATEGORY], "annotations": [GOOD_ANNOTATION]},
    )
    (ann,) = load_ground_truth(path)["annotations"]
    assert (ann["id"], ann["iscrowd"], ann["area"]) == (1, 0, 12.0)
    with pytest.raises(GroundTruthError, match="no segmentation"):
        load_ground_truth(path, "segm")


# --- on the database -------------------------------------------------------------------------


def _box_polygon(box: list[float]) -> list[list[float]]:
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture(scope="module")
def known_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A detection job of three scenes with hand-placed detections, and its ground truth.

    Scene a: a sofa found exactly (0.9) and a bed (not in the ground truth); scene b: a sofa
    found exactly, with a mask; scene c: a lamp nobody found. The ground truth also has an
    image of no scene and a category of no taxonomy ("widget"). So: sofa AP 1, lamp AP 0,
    mAP 0.5 at every IoU threshold.
    """
    folder = tmp_path_factory.mktemp("eval-scenes")
    tag = uuid.uuid4().hex[:8]
    names = [f"{tag}-{letter}.png" for letter in "abc"]
    for name in names:
        (folder / name).write_bytes(encode(noise_image(name, (H, W))))
    job_id = create_job("detection", {"test": "eval"})
    scene_ids = ingest(job_id, [Input("folder", str(folder / n)) for n in names]).scene_ids
    sofa_a, bed_a, sofa_b = (
        [10.0, 10.0, 30.0, 20.0],
        [50.0, 30.0, 20.0, 20.0],
        [5.0, 5.0, 20.0, 20.0],
    )
    mask_b = np.zeros((H, W), bool)
    mask_b[5:25, 5:25] = True
    with session_scope() as session:
        for scene_id, box, category, group, confidence, mask in (
            (scene_ids[0], sofa_a, "sofa", "seating", 0.9, None),
            (scene_ids[0], bed_a, "bed", "bedroom", 0.8, None),
            (scene_ids[1], sofa_b, "sofa", "seating", 0.7, mask_b),
        ):
            session.add(
                DetectedObject(
                    scene_id=scene_id,
                    job_id=job_id,
                    bbox=box,
                    category=category,
                    taxonomy_group=group,
                    confidence=confidence,
                    mask_rle=None if mask is None else encode_rle(mask),
                    mask_area=None if mask is None else int(mask.sum()),
                )
            )
    annotations = [
        (1, 1, sofa_a),
        (1, 3, [0.0, 0.0, 5.0, 5.0]),  # the widget
        (2, 1, sofa_b),
        (3, 2, [20.0, 20.0, 10.0, 10.0]),  # the lamp
    ]
    gt = {
        "images": [
            {"id": i + 1, "file_name": f"photos/{name}", "width": W, "height": H}
            for i, name in enumerate(names)
        ]
        + [{"id": 4, "file_name": "elsewhere.png"}],
        "categories": [
            {"id": 1, "name": "Sofa"},
            {"id": 2, "name": "lamp"},
            {"id": 3, "name": "widget"},
        ],
        "annotations": [
            {
                "id": n,
                "image_id": image,
                "category_id": category,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
                "segmentation": _box_polygon(box),
            }
            for n, (image, category, box) in enumerate(annotations)
        ],
    }
    path = _write(tmp_path_factory.mktemp("eval-gt") / "gt.json", gt)
    return {"job_id": job_id, "gt": path, "gt_data": gt, "scene_ids": scene_ids}


@pytest.mark.services
@pytest.mark.parametrize(
    ("iou", "iou_type"),
    [
        (0.5, "bbox"),
        (0.75, "bbox"),  # on COCOeval's grid
        (0.62, "bbox"),  # off the grid: COCOeval run again with iouThrs = [0.62]
        (0.5, "segm"),  # stored mask for b, a box-shaped mask for a
    ],
)
def test_evaluate_a_known_job(known_job: dict[str, Any], iou: float, iou_type: Any) -> None:
    result = evaluate_job(known_job["gt"], known_job["job_id"], iou=iou, iou_type=iou_type)
    assert result.map_at_iou == pytest.approx(0.5)
    assert result.stats["ap50"] == pytest.approx(0.5)
    ap = {row["gt_name"]: row["ap"] for row in result.per_category}
    assert ap == {"Sofa": pytest.approx(1.0), "lamp": 0.0, "widget": None}
    assert result.category_mapping == {"Sofa": "sofa", "lamp": "lamp", "widget": None}
    assert result.unmapped_categories == ["widget"]
    assert result.never_predicted == ["lamp"]
    assert result.unscored_detections == {"bed": 1}
    assert result.detections == 3
    assert result.images == {
        "gt": 4,
        "matched": 3,
        "unmatched": 1,
        "ambiguous": 0,
        "size_mismatch": 0,
        "superseded": 0,
        "job_scenes": 3,
    }
    assert result.unmatched_examples == ["elsewhere.png"]
    assert json.loads(json.dumps(result.to_json(), allow_nan=False))["iou"] == iou


@pytest.mark.services
def test_images_of_another_size_are_left_out(known_job: dict[str, Any], tmp_path: Path) -> None:
    gt = json.loads(json.dumps(known_job["gt_data"]))
    gt["images"][2]["width"] = W * 2  # the lamp's image, labelled at another resolution
    result = evaluate_job(_write(tmp_path / "gt.json", gt), known_job["job_id"])
    assert result.images["size_mismatch"] == 1 and result.images["matched"] == 2
    assert result.map_at_iou == pytest.approx(1.0)  # the lamp is not on a matched image


@pytest.mark.services
def test_evaluation_errors(known_job: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(UnknownJob, match="no job"):
        evaluate_job(known_job["gt"], uuid.uuid4())
    with pytest.raises(UnknownJob, match="not a job id"):
        evaluate_job(known_job["gt"], "nope")
    empty = create_job("detection", {"test": "eval, nothing detected"})
    with pytest.raises(EvaluationError, match=f"job {empty} has no stored detections"):
        evaluate_job(known_job["gt"], empty)
    # the default job is the newest detection job: this one
    with pytest.raises(EvaluationError, match=f"job {empty} has no stored detections"):
        evaluate_job(known_job["gt"])
    gt = json.loads(json.dumps(known_job["gt_data"]))
    for image in gt["images"]:
        image["file_name"] = "x" + image["file_name"].rsplit("/", 1)[-1]
    with pytest.raises(EvaluationError, match="none of the 4 ground-truth images matches"):
        evaluate_job(_write(tmp_path / "other.json", gt), known_job["job_id"])
    with pytest.raises(EvaluationError, match="not in"):
        evaluate_job(known_job["gt"], known_job["job_id"], iou=0)


@pytest.mark.services
def test_cli_eval(known_job: dict[str, Any], tmp_path: Path) -> None:
    job = str(known_job["job_id"])
    done = run_cli("eval", "--gt", str(known_job["gt"]), "--job", job)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mAP@0.5 0.500" in done.stdout and "3 of 4 ground-truth images matched" in done.stdout
    assert "unmapped gt categories (not scored): widget" in done.stdout
    assert "never predicted: lamp" in done.stdout

    for args, code, message in (
        (["--gt", str(tmp_path / "missing.json"), "--job", job], 2, "missing.json: no such file"),
        (["--gt", str(known_job["gt"]), "--job", str(uuid.uuid4())], 1, "no job"),
        (["--gt", str(known_job["gt"]), "--job", job, "--iou-type", "keypoints"], 2, "iou-type"),
        (["--gt", str(known_job["gt"]), "--job", job, "--iou", "0"], 2, "--iou 0.0"),
        (["--gt", str(tmp_path), "--job", job], 2, "is a folder"),
    ):
        bad = run_cli("eval", *args)
        out = bad.stdout + bad.stderr
        assert bad.returncode == code, out
        assert message in out and "Traceback" not in out
        assert len(out.strip().splitlines()) == 1, out
