"""COCO mAP of a job's stored detections against a user's ground-truth COCO file.

``modomo eval --gt FILE [--job ID] [--iou 0.5]`` calls :func:`evaluate_job`. The metric is
pycocotools' ``COCOeval`` (https://github.com/cocodataset/cocoapi, ``PythonAPI/pycocotools/
cocoeval.py``), unchanged: boxes are ``[x, y, w, h]`` in pixels of the stored image, IoU
thresholds 0.50:0.05:0.95, 101 recall points, at most 100 detections per image and category
(``params.maxDets[-1]``), area ranges from ``params.areaRng`` (pixels², COCO's 32² and 96²).

How the two sides are put together:

* **Images**: a ground-truth image (``images[].file_name``, compared by its base name) is
  matched to a scene of the job, among the scenes that did not fail in it, whose name it is:
  the base name of the scene's source (``file:/photos/kitchen.jpg`` -> ``kitchen.jpg``, the
  path of an image URL, a dataset's ``image_path``) or its COCO export name
  (``<scene id><ext>``, :mod:`modomo.export.coco`'s ``file_name``). Names compare exactly. A
  name two scenes of the job share matches neither (ambiguous); a ground-truth image whose
  ``width`` / ``height`` differ from the scene's stored image is left out (its boxes are in
  other pixels); a scene whose objects a later job replaced (objects are stored per scene,
  the latest run's) is left out. Only matched images are evaluated (``params.imgIds``), and
  :attr:`Evaluation.images` counts each case.
* **Categories**: a ground-truth category name maps to the taxonomy category
  (:data:`modomo.analysis.taxonomy.CATEGORIES`) with the same name after
  :func:`~modomo.analysis.taxonomy.normalize_name` (case, spaces, hyphens and underscores),
  and to nothing otherwise: never a substring or a fuzzy match. Unmapped categories are
  reported and left out of the evaluation (``params.catIds``): the detector cannot name them.
  Mapped categories the detector never produced on the matched images stay in (AP 0) and are
  reported. Detections of taxonomy categories the ground truth lacks are not scored (counted).
* **Detections**: the job's stored objects (``detected_objects.job_id``), with their
  confidence as the score; ``iou_type="segm"`` uses each object's stored mask RLE, or its box
  as a box-shaped mask where it has none (as the COCO export does).

Nothing here imports Celery; the database is read through :mod:`modomo.db.session`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import numpy as np
from sqlalchemy import exists, select

from modomo.analysis.taxonomy import CATEGORIES, normalize_name
from modomo.db.models import DetectedObject, ItemStatus, Job, JobScene, Scene
from modomo.db.session import session_scope

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "STAT_NAMES",
    "EvaluationError",
    "Evaluation",
    "GroundTruthError",
    "UnknownJob",
    "evaluate_job",
    "latest_detection_job",
    "load_ground_truth",
    "map_categories",
    "scene_file_names",
]

CHUNK = 500
"""Scene ids per ``IN (...)`` query."""

COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(
    float(t) for t in np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
)
"""``COCOeval.params.iouThrs``: 0.50, 0.55, ... 0.95 (pycocotools ``Params.setDetParams``)."""

STAT_NAMES: tuple[str, ...] = (
    "ap",
    "ap50",
    "ap75",
    "ap_small",
    "ap_medium",
    "ap_large",
    "ar1",
    "ar10",
    "ar100",
    "ar_small",
    "ar_medium",
    "ar_large",
)
"""Names of ``COCOeval.stats[0..11]`` (``COCOeval.summarize``): AP over IoU 0.50:0.95, AP at
IoU 0.50 and 0.75, AP by object area (small < 32² px, medium < 96², large), then average
recall at 1, 10 and 100 detections per image and by area."""


class EvaluationError(ValueError):
    """The evaluation cannot be made: the message says why, in one line."""


class GroundTruthError(EvaluationError):
    """The ground-truth file is missing, unreadable or not a usable COCO file."""


class UnknownJob(EvaluationError, LookupError):
    """No job has the given id (or it is not a job id)."""


@dataclass(frozen=True)
class Evaluation:
    """The result of :func:`evaluate_job` (JSON-able with :meth:`to_json`).

    Attributes:
        job_id: the evaluated job.
        iou_type: ``bbox`` or ``segm``.
        iou: the IoU threshold of ``map_at_iou`` and ``per_category`` (0 < iou <= 1).
        map_at_iou: COCO mAP at ``iou`` (area ``all``, 100 detections): the mean of the
            precision curve over the categories with ground truth on the matched images, as
            ``COCOeval.summarize`` computes ``stats[1]`` at 0.5; None without any.
        stats: ``COCOeval.stats`` under :data:`STAT_NAMES` on the standard IoU grid (None
            where COCOeval gives -1: no ground truth in that slice).
        per_category: per ground-truth category, in the file's order: ``gt_id``, ``gt_name``,
            ``category`` (taxonomy name or None), ``gt_objects`` and ``detections`` on the
            matched images (crowd regions not counted), ``ap`` at ``iou`` (None when unmapped
            or without ground truth on the matched images).
        category_mapping: ground-truth category name -> taxonomy category name or None.
        unmapped_categories: ground-truth category names with no taxonomy category.
        never_predicted: mapped ground-truth categories with objects on the matched images
            that the job detected nowhere on them (their AP is 0).
        unscored_detections: taxonomy category -> detections on the matched images whose
            category the ground truth does not have (not scored).
        images: counts: ``gt`` images in the file, ``matched``, ``unmatched`` (no scene of
            the job has the name), ``ambiguous`` (several scenes have it, or another ground-
            truth image took the scene), ``size_mismatch``, ``superseded`` (the scene's
            objects are now another job's), ``job_scenes`` (usable scenes of the job).
        unmatched_examples: up to 10 unmatched ground-truth file names.
        detections: the job's detections on the matched images (all categories).
    """

    job_id: str
    iou_type: str
    iou: float
    map_at_iou: float | None
    stats: dict[str, float | None]
    per_category: list[dict[str, Any]]
    category_mapping: dict[str, str | None]
    unmapped_categories: list[str]
    never_predicted: list[str]
    unscored_detections: dict[str, int]
    images: dict[str, int]
    unmatched_examples: list[str] = field(default_factory=list)
    detections: int = 0

    def to_json(self) -> dict[str, Any]:
        """The result as plain JSON values (no NaN: missing figures are None)."""
        return asdict(self)


# --- ground truth -------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_ground_truth(path: Path | str, iou_type: str = "bbox") -> dict[str, Any]:
    """Read and check a COCO ground-truth file (https://cocodataset.org/#format-data).

    Needs ``images`` (each with ``id`` and ``file_name``), ``categories`` (``id``, ``name``)
    and ``annotations`` (``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]`` in pixels,
    and ``segmentation`` for ``segm``). Missing ``iscrowd`` becomes 0 and missing ``area`` the
    box's ``w * h`` (px²; it only sorts objects into COCO's small / medium / large
    ranges). Annotation ids are renumbered 1..N in file order (COCOeval takes
    id 0 for "unmatched").

    Returns:
        the dataset as a dict, checked.

    Raises:
        GroundTruthError: the file is missing, unreadable, not JSON or not such a dataset; the
            message names the file and the first bad entry.
    """
    where = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GroundTruthError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise GroundTruthError(f"{where}: is a folder, not a COCO JSON file") from None
    except OSError as exc:
        raise GroundTruthError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise GroundTruthError(f"{where}: not UTF-8 text (a COCO JSON file?)") from None
    except json.JSONDecodeError as exc:
        raise GroundTruthError(f"{where}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GroundTruthError(f"{where}: not a COCO dataset (a JSON object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise GroundTruthError(f"{where}: no {key!r} list: not a COCO ground-truth file")

    def bad(what: str) -> GroundTruthError:
        return GroundTruthError(f"{where}: {what}")

    image_ids: set[Any] = set()
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image:
            raise bad(f"images[{i}] has no id")
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise bad(f"images[{i}] (id {image['id']!r}) has no file_name")
        for side in ("width", "height"):
            if side in image and not (_finite(image[side]) and image[side] > 0):
                raise bad(f"images[{i}] {side} must be a positive number of pixels")
        if image["id"] in image_ids:
            raise bad(f"images[{i}]: image id {image['id']!r} appears twice")
        image_ids.add(image["id"])
    category_ids: set[Any] = set()
    for i, category in enumerate(data["categories"]):
        if not isinstance(category, dict) or "id" not in category:
            raise bad(f"categories[{i}] has no id")
        if not isinstance(category.get("name"), str):
            raise bad(f"categories[{i}] (id {category['id']!r}) has no name")
        if category["id"] in category_ids:
            raise bad(f"categories[{i}]: category id {category['id']!r} appears twice")
        category_ids.add(category["id"])
    if not data["annotations"]:
        raise bad("no annotations: nothing to evaluate against")
    annotations = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise bad(f"annotations[{i}] is not an object")
        if ann.get("image_id") not in image_ids:
            raise bad(f"annotations[{i}]: image_id {ann.get('image_id')!r} is not in images")
        if ann.get("category_id") not in category_ids:
            raise bad(
                f"annotations[{i}]: category_id {ann.get('category_id')!r} is not in categories"
            )
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)):
            raise bad(f"annotations[{i}]: bbox must be [x, y, w, h] (four numbers, pixels)")
        if box[2] < 0 or box[3] < 0:
            raise bad(f"annotations[{i}]: bbox width and height must not be negative")
        if iou_type == "segm" and not ann.get("segmentation"):
            raise bad(f"annotations[{i}] has no segmentation (needed for --iou-type segm)")
        fixed = {**ann, "id": i + 1, "iscrowd": int(bool(ann.get("iscrowd", 0)))}
        if not _finite(ann.get("area")):
            fixed["area"] = float(box[2]) * float(box[3])
        annotations.append(fixed)
    return {**data, "annotations": annotations}


def map_categories(names: Iterable[str]) -> dict[str, str | None]:
    """Map ground-truth category names onto taxonomy categories, exactly.

    A name maps to the taxonomy category equal to it after
    :func:`~modomo.analysis.taxonomy.normalize_name` (lower case; runs of spaces, hyphens and
    underscores as one ``_``), else to None. No substring, prefix or fuzzy matching (``"shelf"``
    never becomes ``bookshelf``), and no detector vocabulary (COCO's ``"couch"`` is not
    ``sofa`` here: rename it in the file).

    >>> map_categories(["Potted Plant", "sofa", "couch", "book shelf"])
    {'Potted Plant': 'potted_plant', 'sofa': 'sofa', 'couch': None, 'book shelf': None}

    Raises:
        GroundTruthError: two ground-truth categories map to one taxonomy category.
    """
    mapping: dict[str, str | None] = {}
    taken: dict[str, str] = {}
    for name in names:
        normal = normalize_name(name)
        target = normal if normal in CATEGORIES else None
        if target is not None and taken.setdefault(target, name) != name:
            raise GroundTruthError(
                f"ground-truth categories {taken[target]!r} and {name!r} both map to the "
                f"taxonomy category {target!r}: merge them in the file"
            )
        mapping[name] = target
    return mapping


# --- the job's side ------------------------------------------------------------------------


def latest_detection_job() -> uuid.UUID:
    """The newest job of type ``detection`` (by creation time).

    Raises:
        EvaluationError: there is no detection job.
    """
    with session_scope() as session:
        job_id = session.scalar(
            select(Job.id).where(Job.type == "detection").order_by(Job.created_at.desc()).limit(1)
        )
    if job_id is None:
        raise EvaluationError("no detection job yet: run one (modomo process --pipeline full)")
    return job_id


def scene_file_names(
    scene_id: uuid.UUID | str, source_key: str, image_key: str | None, meta: dict[str, Any] | None
) -> set[str]:
    """The file names a ground-truth image may give for a scene.

    The base name of the source (``file:`` path, image URL path, a dataset's ``image_path``)
    and the scene's COCO export name ``<scene id><ext of the stored image>``.

    >>> sorted(scene_file_names("ab", "file:/photos/a.jpg", "images/x.jpg", {}))
    ['a.jpg', 'ab.jpg']
    """
    names = set()
    if source_key.startswith("file:"):
        names.add(_base_name(source_key.removeprefix("file:")))
    elif source_key.startswith(("http://", "https://")):
        names.add(_base_name(unquote(urlsplit(source_key).path)))
    image_path = (meta or {}).get("image_path")
    if isinstance(image_path, str):
        names.add(_base_name(image_path))
    if image_key:
        suffix = PurePosixPath(image_key).suffix.lower()
        names.add(f"{scene_id}{suffix or '.img'}")
    names.discard("")
    return names


def _base_name(name: str) -> str:
    """The last part of a POSIX or Windows path."""
    return PureWindowsPath(PurePosixPath(name).name).name


@dataclass(frozen=True)
class _JobScene:
    id: uuid.UUID
    width: int
    height: int


def _job_scenes(job_id: uuid.UUID) -> dict[str, list[_JobScene]]:
    """File name -> the usable scenes of the job with that name (those not failed in it)."""
    by_name: dict[str, list[_JobScene]] = defaultdict(list)
    query = (
        select(Scene.id, Scene.source_key, Scene.image_key, Scene.meta, Scene.width, Scene.height)
        .join(JobScene, JobScene.scene_id == Scene.id)
        .where(
            JobScene.job_id == job_id,
            JobScene.status != ItemStatus.FAILED,
            Scene.image_key.is_not(None),
        )
    )
    with session_scope() as session:
        for sid, key, image_key, meta, width, height in session.execute(query):
            scene = _JobScene(sid, int(width or 0), int(height or 0))
            for name in scene_file_names(sid, key, image_key, meta):
                by_name[name].append(scene)
    return by_name


def _chunks(items: Sequence[uuid.UUID]) -> Iterator[list[uuid.UUID]]:
    for start in range(0, len(items), CHUNK):
        yield list(items[start : start + CHUNK])


def _superseded(job_id: uuid.UUID, scene_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """The scenes whose stored objects are now another job's (a later run replaced them)."""
    found: set[uuid.UUID] = set()
    with session_scope() as session:
        for chunk in _chunks(scene_ids):
            found.update(
                session.scalars(
                    select(DetectedObject.scene_id)
                    .where(DetectedObject.scene_id.in_(chunk))
                    .where((DetectedObject.job_id != job_id) | DetectedObject.job_id.is_(None))
                    .distinct()
                )
            )
    return found


def _detections(job_id: uuid.UUID, scene_ids: Sequence[uuid.UUID]) -> list[Any]:
    """The job's objects on these scenes, in (scene, id) order."""
    rows: list[Any] = []
    with session_scope() as session:
        for chunk in _chunks(scene_ids):
            rows.extend(
                session.execute(
                    select(
                        DetectedObject.scene_id,
                        DetectedObject.bbox,
                        DetectedObject.category,
                        DetectedObject.confidence,
                        DetectedObject.mask_rle,
                    )
                    .where(DetectedObject.scene_id.in_(chunk), DetectedObject.job_id == job_id)
                    .order_by(DetectedObject.scene_id, DetectedObject.id)
                ).all()
            )
    return rows


# --- evaluation ----------------------------------------------------------------------------


def _segmentation(obj: Any, height: int, width: int) -> dict[str, Any]:
    """A detection's mask as compressed RLE with str counts; its box where it has no mask."""
    from pycocotools import mask as mask_utils

    from modomo.export.coco import normalise_rle

    if obj.mask_rle is not None:
        return normalise_rle(obj.mask_rle, height, width)
    x, y, w, h = (float(v) for v in obj.bbox)
    rle = mask_utils.merge(
        mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], height, width)
    )
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def _run_cocoeval(
    gt: Any, results: list[dict[str, Any]], iou_type: str, img_ids: list[Any], cat_ids: list[Any]
) -> Any:
    """COCOeval evaluate + accumulate on these images and categories (standard parameters)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes cannot take an empty list
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"]}
            dt.dataset["annotations"] = []
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType=iou_type)
        evaluator.params.imgIds = img_ids
        evaluator.params.catIds = cat_ids
        return evaluator


def _precision_at(evaluator: Any, iou: float) -> tuple[np.ndarray, int]:
    """``eval['precision']`` at IoU ``iou``, area ``all``, most detections: (R, K) and t."""
    params = evaluator.params
    t = int(np.flatnonzero(np.isclose(params.iouThrs, iou))[0])
    a = params.areaRngLbl.index("all")
    return evaluator.eval["precision"][t, :, :, a, -1], t


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None


def evaluate_job(
    gt_path: Path | str,
    job_id: uuid.UUID | str | None = None,
    *,
    iou: float = 0.5,
    iou_type: Literal["bbox", "segm"] = "bbox",
) -> Evaluation:
    """COCO mAP (pycocotools ``COCOeval``) of a job's stored detections against a ground truth.

    Args:
        gt_path: a COCO ground-truth JSON file (:func:`load_ground_truth`).
        job_id: the job whose detections are scored; default :func:`latest_detection_job`.
        iou: the IoU threshold (0 < iou <= 1) of the headline figure and the per-category AP.
            A value of COCOeval's grid (0.50, 0.55, ... 0.95) is read from the standard run;
            any other runs COCOeval again with ``params.iouThrs = [iou]``.
        iou_type: ``bbox`` (boxes) or ``segm`` (stored masks; box-shaped masks where none).

    Returns:
        an :class:`Evaluation` (see the module docstring for how images and categories are
        matched).

    Raises:
        GroundTruthError: a bad ground-truth file (see :func:`load_ground_truth`).
        UnknownJob: no such job.
        EvaluationError: a bad ``iou`` / ``iou_type``, no detection job, a job without stored
            detections, no ground-truth image matching a scene of the job, or no ground-truth
            category in the taxonomy.
    """
    from pycocotools.coco import COCO

    if iou_type not in ("bbox", "segm"):
        raise EvaluationError(f"unknown IoU type {iou_type!r}: use bbox or segm")
    if not (0 < iou <= 1):
        raise EvaluationError(f"IoU threshold {iou} is not in (0, 1]")
    dataset = load_ground_truth(gt_path, iou_type)
    if job_id is None:
        jid = latest_detection_job()
    else:
        try:
            jid = uuid.UUID(str(job_id))
        except ValueError:
            raise UnknownJob(f"not a job id: {job_id!r}") from None
    with session_scope() as session:
        if session.get(Job, jid) is None:
            raise UnknownJob(f"no job {jid}")
        if not session.scalar(select(exists().where(DetectedObject.job_id == jid))):
            raise EvaluationError(f"job {jid} has no stored detections to evaluate")

    # images: ground truth -> scene
    by_name = _job_scenes(jid)
    counts = Counter({"gt": len(dataset["images"])})
    counts["job_scenes"] = len({s.id for scenes in by_name.values() for s in scenes})
    matched: dict[Any, _JobScene] = {}  # gt image id -> scene
    taken: set[uuid.UUID] = set()
    unmatched: list[str] = []
    for image in dataset["images"]:
        scenes = {s.id: s for s in by_name.get(_base_name(image["file_name"]), [])}
        if not scenes:
            counts["unmatched"] += 1
            unmatched.append(image["file_name"])
            continue
        if len(scenes) > 1 or next(iter(scenes)) in taken:
            counts["ambiguous"] += 1
            continue
        scene = next(iter(scenes.values()))
        if image.get("width", scene.width) != scene.width or (
            image.get("height", scene.height) != scene.height
        ):
            counts["size_mismatch"] += 1
            continue
        taken.add(scene.id)
        matched[image["id"]] = scene
    superseded = _superseded(jid, list(taken))
    for image_id, scene in list(matched.items()):
        if scene.id in superseded:
            counts["superseded"] += 1
            del matched[image_id]
    counts["matched"] = len(matched)
    if not matched:
        raise EvaluationError(
            f"none of the {counts['gt']} ground-truth images matches a scene of job {jid} by "
            f"file name ({counts['unmatched']} unmatched, {counts['ambiguous']} ambiguous, "
            f"{counts['size_mismatch']} of another size, {counts['superseded']} re-run later)"
        )
    for image in dataset["images"]:  # COCO's segm needs the size; the scene's is the truth
        if image["id"] in matched:
            image["width"], image["height"] = (
                matched[image["id"]].width,
                matched[image["id"]].height,
            )

    # categories: ground truth -> taxonomy
    mapping = map_categories(c["name"] for c in dataset["categories"])
    gt_id_of = {mapping[c["name"]]: c["id"] for c in dataset["categories"] if mapping[c["name"]]}
    cat_ids = sorted(gt_id_of.values())
    if not cat_ids:
        names = ", ".join(repr(c["name"]) for c in dataset["categories"][:5])
        raise EvaluationError(f"no ground-truth category ({names}…) is a taxonomy category")

    # detections on the matched scenes
    image_of = {scene.id: image_id for image_id, scene in matched.items()}
    rows = _detections(jid, list(image_of))
    results: list[dict[str, Any]] = []
    unscored: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    for obj in rows:
        predicted[obj.category] += 1
        if obj.category not in gt_id_of:
            unscored[obj.category] += 1
            continue
        image_id = image_of[obj.scene_id]
        result: dict[str, Any] = {
            "image_id": image_id,
            "category_id": gt_id_of[obj.category],
            "score": float(obj.confidence),
        }
        if iou_type == "bbox":
            result["bbox"] = [float(v) for v in obj.bbox]
        else:
            scene = matched[image_id]
            try:
                result["segmentation"] = _segmentation(obj, scene.height, scene.width)
            except ValueError as exc:
                raise EvaluationError(f"a stored mask of scene {scene.id}: {exc}") from None
        results.append(result)

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
    img_ids = sorted(matched, key=lambda i: (str(type(i)), i))
    evaluator = _run_cocoeval(gt, results, iou_type, img_ids, cat_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {
        name: (None if value < 0 else float(value))
        for name, value in zip(STAT_NAMES, evaluator.stats, strict=True)
    }
    if not np.isclose(evaluator.params.iouThrs, iou).any():
        evaluator = _run_cocoeval(gt, results, iou_type, img_ids, cat_ids)
        evaluator.params.iouThrs = np.array([iou])
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
    precision, _ = _precision_at(evaluator, iou)  # (R recall points, K categories)
    column = {cat_id: k for k, cat_id in enumerate(evaluator.params.catIds)}

    gt_objects: Counter[Any] = Counter(
        a["category_id"]
        for a in dataset["annotations"]
        if a["image_id"] in matched and not a["iscrowd"]
    )
    per_category = []
    for category in dataset["categories"]:
        name, target = category["name"], mapping[category["name"]]
        ap = _mean_valid(precision[:, column[category["id"]]]) if target is not None else None
        per_category.append(
            {
                "gt_id": category["id"],
                "gt_name": name,
                "category": target,
                "gt_objects": gt_objects[category["id"]],
                "detections": predicted[target] if target is not None else 0,
                "ap": ap,
            }
        )
    return Evaluation(
        job_id=str(jid),
        iou_type=iou_type,
        iou=float(iou),
        map_at_iou=_mean_valid(precision),
        stats=stats,
        per_category=per_category,
        category_mapping=mapping,
        unmapped_categories=[name for name, target in mapping.items() if target is None],
        never_predicted=[
            c["gt_name"]
            for c in per_category
            if c["category"] is not None and c["gt_objects"] and not c["detections"]
        ],
        unscored_detections=dict(unscored.most_common()),
        images={
            key: counts[key]
            for key in (
                "gt",
                "matched",
                "unmatched",
                "ambiguous",
                "size_mismatch",
                "superseded",
                "job_scenes",
            )
        },
        unmatched_examples=unmatched[:10],
        detections=len(rows),
    )
