"""People's reviewed labels brought back: Label Studio's JSON export, or COCO.

``modomo annotations import FILE`` reads

* a Label Studio project exported as JSON (https://labelstud.io/guide/export#JSON): a list of
  tasks, each with its ``data`` (``scene_id``, as ``modomo export --format label-studio``
  wrote it; else the image's file name ``<scene id>.<ext>``) and its ``annotations``. A
  task's latest annotation that was not cancelled is its review; ``rectanglelabels`` regions
  become boxes, ``polygonlabels`` regions masks (filled with OpenCV, ``cv2.fillPoly``, at
  the pixel-index convention the export traced them with) with their tight box. Coordinates
  are percentages of ``original_width`` / ``original_height``, which must be the scene's
  (upright) size. A task nobody annotated is not a review and is left alone.
* a COCO instances file (https://cocodataset.org/#format-data): ``images`` by
  ``modomo_scene_id`` (as Modomo's COCO export writes it) or by file name, ``annotations``
  with boxes and polygon or RLE segmentations (pycocotools), ``categories`` by name. Every
  listed image is a review (one without annotations: no object).

A reviewed scene's objects are replaced, in one transaction per scene, by the reviewed ones
(``source = human``, confidence 1, ``models = {"review": ...}``), and the scene is marked
reviewed (``scenes.reviewed_at``): a later detection run no longer replaces its objects, and
exports carry the people's labels (``labelled_by: human``) and count them in the card.

Nothing is half-imported: a task whose scene is unknown, whose size differs, or whose labels
are not taxonomy categories is refused with the reason, and the other tasks go on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select

from modomo.analysis.masks import decode_rle, encode_rle, mask_bbox_xyxy, xyxy_to_xywh
from modomo.analysis.taxonomy import CATEGORIES
from modomo.db.models import DetectedObject, Scene, utcnow
from modomo.db.session import session_scope
from modomo.export.coco import normalise_rle

__all__ = [
    "ImportReport",
    "Review",
    "ReviewedObject",
    "import_reviews",
    "read_coco",
    "read_label_studio",
    "read_reviews",
]


@dataclass(frozen=True)
class ReviewedObject:
    """One object as people labelled it.

    Attributes:
        category: a taxonomy category.
        bbox: ``[x, y, w, h]`` pixels of the upright image.
        mask: (H, W) bool mask, or None for a box-only label.
    """

    category: str
    bbox: list[float]
    mask: np.ndarray | None = None


@dataclass
class Review:
    """One scene's reviewed labels.

    Attributes:
        ref: how the file names the scene (a task id, an image file name), for messages.
        scene: the scene's id as the file gives it (a uuid string, or a file name).
        width, height: the image size the labels are in, or None when the file does not say.
        objects: the reviewed objects (empty: the reviewer found none).
        reviewer: who reviewed it (``label-studio:<user id>``, ``coco``).
        error: why this review cannot be imported, or None.
    """

    ref: str
    scene: str
    width: int | None
    height: int | None
    objects: list[ReviewedObject] = field(default_factory=list)
    reviewer: str = "human"
    error: str | None = None


@dataclass
class ImportReport:
    """What an import did.

    Attributes:
        scenes: scenes whose objects were replaced by the review.
        objects: reviewed objects stored.
        unreviewed: tasks without an annotation (left alone).
        refused: ``(ref, reason)`` of the reviews not imported.
    """

    scenes: int = 0
    objects: int = 0
    unreviewed: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)


def read_reviews(path: Path) -> tuple[list[Review], int]:
    """Read a Label Studio JSON export or a COCO file (told apart by its shape).

    Returns:
        The reviews, and the number of Label Studio tasks nobody annotated.

    Raises:
        ValueError: the file is not JSON, or neither format.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if isinstance(data, list):
        return read_label_studio(data)
    if isinstance(data, dict) and {"images", "annotations", "categories"} <= set(data):
        return read_coco(data), 0
    raise ValueError(
        f"{path} is neither a Label Studio JSON export (a list of tasks) nor a COCO file "
        "(images, annotations, categories)"
    )


def read_label_studio(tasks: Sequence[Any]) -> tuple[list[Review], int]:
    """Reviews from a Label Studio JSON export (see the module docstring).

    Returns:
        The reviews (one per annotated task), and the number of tasks with no annotation.
    """
    reviews: list[Review] = []
    unreviewed = 0
    for position, task in enumerate(tasks):
        if not isinstance(task, dict):
            reviews.append(Review(f"task #{position}", "", None, None, error="not an object"))
            continue
        ref = f"task {task.get('id', f'#{position}')}"
        done = [
            a
            for a in task.get("annotations") or []
            if isinstance(a, dict) and not a.get("was_cancelled")
        ]
        if not done:
            unreviewed += 1
            continue
        latest = max(done, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0))
        data = task.get("data") or {}
        scene = str(data.get("scene_id") or Path(str(data.get("image", ""))).name)
        review = Review(
            ref, scene, None, None, reviewer=f"label-studio:{latest.get('completed_by')}"
        )
        try:
            for region in latest.get("result") or []:
                found = _region(region, review)
                if found is not None:
                    review.objects.append(found)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            review.error = f"unreadable region: {exc}"
        reviews.append(review)
    return reviews, unreviewed


def _region(region: dict[str, Any], review: Review) -> ReviewedObject | None:
    """One Label Studio result as an object (None for results that are not regions)."""
    kind = region.get("type")
    if kind not in ("rectanglelabels", "polygonlabels"):
        if kind in ("brushlabels", "keypointlabels", "ellipselabels"):
            raise ValueError(f"{kind} regions are not supported (use boxes or polygons)")
        return None  # choices, text areas, relations: not objects
    width, height = int(region["original_width"]), int(region["original_height"])
    if review.width is None:
        review.width, review.height = width, height
    elif (review.width, review.height) != (width, height):
        raise ValueError("regions disagree on the image size")
    value = region["value"]
    labels = value[kind]
    if len(labels) != 1:
        raise ValueError(f"a region needs exactly one label, has {labels!r}")
    category = str(labels[0])
    if kind == "rectanglelabels":
        corners = _rectangle_corners(value, width, height)
        x1, y1 = np.clip(corners.min(axis=0), 0, [width, height])
        x2, y2 = np.clip(corners.max(axis=0), 0, [width, height])
        return ReviewedObject(category, [float(x1), float(y1), float(x2 - x1), float(y2 - y1)])
    points = np.asarray(value["points"], dtype=np.float64) / 100 * [width, height]
    mask = polygon_mask(points, height, width)
    box = mask_bbox_xyxy(mask)
    if box is None:  # a polygon too thin to cover a pixel: keep its extent as a box
        box = np.concatenate([points.min(axis=0), points.max(axis=0)])
        return ReviewedObject(category, xyxy_to_xywh(box))
    return ReviewedObject(category, xyxy_to_xywh(box), mask)


def _rectangle_corners(value: dict[str, Any], width: int, height: int) -> np.ndarray:
    """(4, 2) pixel corners of a (possibly rotated, about its top-left corner) rectangle."""
    x, y = value["x"] / 100 * width, value["y"] / 100 * height
    w, h = value["width"] / 100 * width, value["height"] / 100 * height
    angle = np.radians(float(value.get("rotation") or 0))
    along = np.array([np.cos(angle), np.sin(angle)])
    across = np.array([-np.sin(angle), np.cos(angle)])
    origin = np.array([x, y])
    return np.array(
        [origin, origin + w * along, origin + w * along + h * across, origin + h * across]
    )


def polygon_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """An (height, width) bool mask filled inside a polygon of (N, 2) pixel points (x, y),
    with OpenCV's ``fillPoly`` (as Ultralytics rasterises YOLO polygons)."""
    import cv2

    mask = np.zeros((height, width), np.uint8)
    if len(points) >= 3:
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def read_coco(data: dict[str, Any]) -> list[Review]:
    """Reviews from a COCO instances file (see the module docstring)."""
    from pycocotools import mask as mask_utils

    names = {c["id"]: str(c["name"]) for c in data["categories"]}
    reviews: dict[Any, Review] = {}
    for image in data["images"]:
        scene = str(image.get("modomo_scene_id") or Path(str(image["file_name"])).name)
        reviews[image["id"]] = Review(
            f"image {image['id']}",
            scene,
            int(image["width"]),
            int(image["height"]),
            reviewer="coco",
        )
    for annotation in data["annotations"]:
        review = reviews.get(annotation.get("image_id"))
        if review is None or review.error:
            continue
        try:
            height, width = review.height or 0, review.width or 0
            category = names[annotation["category_id"]]
            segmentation = annotation.get("segmentation")
            mask = None
            if isinstance(segmentation, dict):  # RLE, compressed or not
                mask = decode_rle(normalise_rle(segmentation, height, width))
            elif segmentation:  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
                mask = mask_utils.decode(rle).astype(bool)
            box = [float(v) for v in annotation["bbox"]]
            if len(box) != 4:
                raise ValueError(f"bbox must be [x, y, w, h], got {box!r}")
            review.objects.append(ReviewedObject(category, box, mask))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            review.error = f"annotation {annotation.get('id')}: {exc!r}"
    return list(reviews.values())


def _scene_id(review: Review) -> uuid.UUID:
    """The scene a review names: its id, or an exported file name ``<scene id>.<ext>``."""
    for text in (review.scene, Path(review.scene).stem):
        try:
            return uuid.UUID(text)
        except ValueError:
            continue
    raise ValueError(f"names no scene ({review.scene!r})")


def import_reviews(reviews: Iterable[Review]) -> ImportReport:
    """Store reviews: each scene's objects replaced by the reviewed ones, the scene marked
    reviewed (see the module docstring). Each scene in its own transaction.

    Returns:
        What was imported and what was refused, with reasons.
    """
    report = ImportReport()
    for review in reviews:
        if review.error:
            report.refused.append((review.ref, review.error))
            continue
        try:
            scene_id = _scene_id(review)
            stored = _store(scene_id, review)
        except ValueError as exc:
            report.refused.append((review.ref, str(exc)))
            continue
        report.scenes += 1
        report.objects += stored
    return report


def _store(scene_id: uuid.UUID, review: Review) -> int:
    unknown = sorted({o.category for o in review.objects} - set(CATEGORIES))
    if unknown:
        raise ValueError(f"labels outside the taxonomy: {', '.join(unknown)}")
    with session_scope() as session:
        scene = session.scalar(select(Scene).where(Scene.id == scene_id).with_for_update())
        if scene is None:
            raise ValueError(f"scene {scene_id} does not exist")
        size = (scene.width, scene.height)
        if review.width is not None and (review.width, review.height) != size:
            raise ValueError(
                f"labels are for a {review.width}x{review.height} image; scene {scene_id} "
                f"is {size[0]}x{size[1]}"
            )
        session.execute(delete(DetectedObject).where(DetectedObject.scene_id == scene_id))
        for obj in review.objects:
            mask_rle = encode_rle(obj.mask) if obj.mask is not None else None
            session.add(
                DetectedObject(
                    scene_id=scene_id,
                    bbox=[round(float(v), 2) for v in obj.bbox],
                    category=obj.category,
                    taxonomy_group=CATEGORIES[obj.category].group,
                    confidence=1.0,
                    mask_rle=mask_rle,
                    mask_area=int(obj.mask.sum()) if obj.mask is not None else None,
                    models={"review": review.reviewer},
                    source="human",
                )
            )
        scene.reviewed_at = utcnow()
    return len(review.objects)
