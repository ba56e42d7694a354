"""Synthetic rooms and a mAP@0.5 scorer, for tests that run the committed fixture detector.

`FIXTURE_WEIGHTS` is a tiny YOLO checkpoint that `scripts/train_fixture_detector.py` trains on
synthetic scenes drawn by that script (real detector weights cannot be downloaded on CI). Tests
draw fresh scenes with `synthetic_scenes`, detect on them, and score the detections against the
exact ground truth with `map50`.

Colour order matters: scenes are RGB and the detector knows its classes partly by colour (red
sofa, green plant, yellow lamp), while ultralytics reads a numpy image as BGR (OpenCV's order).
Give it ``PIL.Image.fromarray(image)`` or ``image[..., ::-1]``; a raw RGB array scores far lower.

Importing this module sets ``YOLO_OFFLINE=1`` (unless already set) through the script, so that an
ultralytics imported afterwards makes no network calls.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_fixture_detector.py"
FIXTURE_WEIGHTS = REPO / "tests" / "fixtures" / "fixture_detector.pt"


def _load_script():
    name = "train_fixture_detector"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_script = _load_script()
CLASS_NAMES: tuple[str, ...] = _script.CLASS_NAMES
make_scene = _script.make_scene

Scene = tuple[np.ndarray, np.ndarray, np.ndarray]


def synthetic_scenes(n: int, seed: int, size: int = 256) -> list[Scene]:
    """Draw `n` held-out synthetic rooms (never the training scenes, whatever `seed`).

    Each scene is (image (size, size, 3) uint8 RGB, boxes (N, 4) float32 xyxy pixels,
    class ids (N,) int64 indexing `CLASS_NAMES`). Same `n`, `seed`, `size`: same scenes.
    """
    # The training script seeds with (TRAIN_STREAM, seed, split) tuples; an int seed gives a
    # different stream.
    rng = np.random.default_rng(seed)
    return [make_scene(rng, size) for _ in range(n)]


def map50(
    ground_truth: Sequence[tuple[np.ndarray, Sequence[str]]],
    predictions: Sequence[tuple[np.ndarray, Sequence[str], np.ndarray]],
) -> float:
    """COCO mAP at IoU 0.5 (pycocotools `COCOeval`, ``stats[1]``) of detections on images.

    Args:
        ground_truth: per image, (boxes (N, 4) xyxy pixels, N class names).
        predictions: per image, in the same order, (boxes (M, 4) xyxy pixels, M class names,
            scores (M,)).

    Classes are matched by name; a class with no ground-truth object anywhere does not count
    (COCO's rule). Returns 0.0 when there are no predictions at all, -1.0 when there is no
    ground truth at all.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(ground_truth) != len(predictions):
        raise ValueError(f"{len(ground_truth)} ground-truth images, {len(predictions)} predicted")
    names = sorted(
        {str(n) for _, labels in ground_truth for n in labels}
        | {str(n) for _, labels, _ in predictions for n in labels}
    )
    category = {name: index + 1 for index, name in enumerate(names)}

    def xywh(box: Sequence[float]) -> list[float]:
        x0, y0, x1, y1 = (float(v) for v in box)
        return [x0, y0, x1 - x0, y1 - y0]

    images, annotations, results = [], [], []
    for image_id, ((gt_boxes, gt_names), (boxes, labels, scores)) in enumerate(
        zip(ground_truth, predictions, strict=True), start=1
    ):
        images.append({"id": image_id})
        for box, name in zip(np.asarray(gt_boxes).reshape(-1, 4), gt_names, strict=True):
            x, y, w, h = xywh(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCOeval treats id 0 as "unmatched"
                    "image_id": image_id,
                    "category_id": category[str(name)],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for box, name, score in zip(
            np.asarray(boxes).reshape(-1, 4), labels, np.asarray(scores).reshape(-1), strict=True
        ):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category[str(name)],
                    "bbox": xywh(box),
                    "score": float(score),
                }
            )
    if not annotations:
        return -1.0
    if not results:
        return 0.0

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in category.items()],
        }
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])
