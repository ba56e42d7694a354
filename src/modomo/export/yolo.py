"""YOLO detection and segmentation export (the Ultralytics dataset format), written as a stream.

Formats: Ultralytics' detection format (https://docs.ultralytics.com/datasets/detect/) and
segmentation format (https://docs.ultralytics.com/datasets/segment/). Layout written by
:class:`YoloWriter`::

    out_dir/data.yaml                   train/val/test image folders, class names
    out_dir/images/{split}/{stem}.{ext} the scene's image bytes
    out_dir/labels/{split}/{stem}.txt   one line per object (empty file: background image)
    out_dir/provenance.jsonl            per image: scene id, source, source key, URL, licence

``data.yaml`` has no ``path`` unless asked for (``include_path``): Ultralytics then takes the
folder of ``data.yaml`` itself as the dataset root, so the export can be moved and holds no
absolute local path.

Ultralytics finds a label file by replacing ``/images/`` with ``/labels/`` in the image's path
and its extension with ``.txt``. Label lines, all coordinates normalised to 0–1 by the image's
width (x) and height (y), 6 decimals:

* ``task="detect"``: ``class cx cy w h``, the box centre and size. Boxes are clipped to the
  image first (Ultralytics rejects an image's labels when a coordinate is outside [0, 1]).
* ``task="segment"``: ``class x1 y1 x2 y2 ...``, one polygon per object, traced from the mask
  with OpenCV (``cv2.findContours``, ``RETR_EXTERNAL``, ``CHAIN_APPROX_SIMPLE``). Contour
  points are pixel indices (``x / width``), the convention of Ultralytics' own mask converter
  and of its polygon rasteriser (``cv2.fillPoly``), so mask -> polygon -> mask round-trips.
  Parts with fewer than 3 points (single pixels, one-pixel lines) are dropped. An object
  without a mask, or whose mask has no part left, gets its box as a 4-point polygon.

Masks with several disconnected parts: a YOLO segmentation line holds one polygon, and every
part is kept by joining the parts into one polygon the way Ultralytics' COCO converter does
(``ultralytics.data.converter.merge_multi_segment``): consecutive parts (in OpenCV's contour
order) are linked at their closest pair of points by a zero-width "bridge" that the outline
walks out along and back, so the joined polygon covers exactly the parts (plus the bridge
lines when rasterised). Concretely the outline walks part 0 from its start to the point
closest to part 1, jumps to part 1's closest point, recurses, and on the way back finishes
part 1 and then part 0. Modomo implements this itself (:func:`join_parts`) instead of calling
Ultralytics': importing ``ultralytics.data.converter`` loads PyTorch (seconds, and Ultralytics
is only in the optional ``ai`` extra), and the converter's function is AGPL-licensed.

Class ids are ``0..N-1`` over the export's classes (:class:`modomo.export.classes.ClassMap`;
COCO category id - 1). Files are written as scenes arrive; only per-split counters stay in
memory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import cv2
import numpy as np
import yaml
from scipy.spatial import cKDTree

from modomo.analysis.masks import decode_rle
from modomo.export.classes import ClassMap
from modomo.export.coco import (
    _check_file_name,
    _check_split,
    normalise_rle,
    prepare_dirs,
    write_image,
)
from modomo.export.records import SPLITS, ExportObject, ExportScene

__all__ = ["YoloWriter", "join_parts", "mask_polygon"]

_DECIMALS = 6


def join_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Join polygons into one outline linked at closest points (see the module docstring).

    Args:
        parts: polygons, each an (n_i, 2) array of ``(x, y)`` points (any unit), n_i >= 1.

    Returns:
        (M, 2) float64 array: one closed walk through every part. Each part after the first
        is entered at its point closest to the previous part, walked all the way round, and
        left by the same point, so the bridges between parts have zero width.

    Raises:
        ValueError: no parts.
    """
    if not parts:
        raise ValueError("join_parts needs at least one polygon")
    polygons = [np.asarray(part, dtype=np.float64).reshape(-1, 2) for part in parts]
    if len(polygons) == 1:
        return polygons[0]
    count = len(polygons)
    entries = [0] * count
    exits = [0] * (count - 1)
    for i in range(count - 1):
        distances, nearest = cKDTree(polygons[i]).query(polygons[i + 1])
        j = int(np.argmin(distances))
        exits[i] = int(nearest[j])
        entries[i + 1] = j
    rings = []
    for i, polygon in enumerate(polygons):
        ring = np.roll(polygon, -entries[i], axis=0)
        rings.append(np.concatenate([ring, ring[:1]]))  # closed: back at the entry point
    cuts = [(exits[i] - entries[i]) % len(polygons[i]) for i in range(count - 1)]
    forward = [rings[i][: cuts[i] + 1] for i in range(count - 1)]
    backward = [rings[i][cuts[i] :] for i in range(count - 2, -1, -1)]
    return np.concatenate([*forward, rings[-1], *backward])


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """One polygon covering every part of a binary mask, in pixel-index coordinates.

    Args:
        mask: (H, W) bool array.

    Returns:
        (M, 2) float64 array of ``(x, y)`` pixel coordinates (0..W-1, 0..H-1), or None when
        no part of the mask has at least 3 contour points.
    """
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    parts = [contour.reshape(-1, 2) for contour in contours if len(contour) >= 3]
    if not parts:
        return None
    return join_parts(parts)


def _format(values: np.ndarray) -> str:
    return " ".join(f"{v:.{_DECIMALS}f}" for v in values.ravel())


def _clipped_box(obj: ExportObject, width: int, height: int) -> tuple[float, float, float, float]:
    """The object's box as (x1, y1, x2, y2) in pixels, clipped to the image."""
    if len(obj.bbox) != 4:
        raise ValueError(f"object {obj.id}: bbox must be [x, y, w, h], got {obj.bbox!r}")
    x, y, w, h = (float(v) for v in obj.bbox)
    if not all(np.isfinite([x, y, w, h])):
        raise ValueError(f"object {obj.id}: bbox has a non-finite value: {obj.bbox!r}")
    x1, x2 = min(max(x, 0.0), width), min(max(x + w, 0.0), width)
    y1, y2 = min(max(y, 0.0), height), min(max(y + h, 0.0), height)
    return x1, y1, x2, y2


class YoloWriter:
    """Stream scenes into an Ultralytics YOLO dataset (see the module docstring).

    Call :meth:`add` once per scene, then :meth:`close` (writes ``data.yaml``). Usable as a
    context manager (closes when the block ends without an exception).

    Args:
        out_dir: the dataset's folder (created if missing).
        task: ``"detect"`` (box lines) or ``"segment"`` (polygon lines).
        overwrite: remove ``out_dir/images`` and ``out_dir/labels`` when they hold an earlier
            export (stale images and labels would otherwise be trained on); by default such
            folders are refused.
        classes: the class ids (default: every taxonomy category).
        include_path: write the absolute ``out_dir`` as ``data.yaml``'s ``path``.

    Raises:
        ValueError: unknown task.
        FileExistsError: ``out_dir/images`` or ``out_dir/labels`` is not empty and
            ``overwrite`` is False.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        task: Literal["detect", "segment"] = "detect",
        overwrite: bool = False,
        classes: ClassMap | None = None,
        include_path: bool = False,
    ) -> None:
        if task not in ("detect", "segment"):
            raise ValueError(f"task must be 'detect' or 'segment', got {task!r}")
        self.out_dir = Path(out_dir)
        self.task = task
        self.classes = classes or ClassMap.taxonomy()
        self.include_path = include_path
        prepare_dirs([self.out_dir / "images", self.out_dir / "labels"], overwrite=overwrite)
        for split in SPLITS:
            (self.out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
            (self.out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        self._counts = {split: {"images": 0, "annotations": 0} for split in SPLITS}
        self._closed = False
        self._provenance = open(self.out_dir / "provenance.jsonl", "w", encoding="utf-8")  # noqa: SIM115

    def add(self, scene: ExportScene) -> None:
        """Write one scene's image (``scene.read_image()``, read once) and its label file.

        Raises:
            RuntimeError: after :meth:`close`.
            ValueError: unknown split or category, a mask whose size is not the image's, a
                non-finite box, an unsafe ``file_name``, empty image bytes.
            FileExistsError: the image or label file already exists in the split's folder
                (also two file names with one stem, e.g. ``a.jpg`` and ``a.png``).
        """
        if self._closed:
            raise RuntimeError("YoloWriter.add() after close()")
        _check_split(scene.split)
        _check_file_name(scene.file_name)
        lines = [self._line(obj, int(scene.width), int(scene.height)) for obj in scene.objects]
        write_image(self.out_dir / "images" / scene.split, scene.file_name, scene.read_image())
        label = self.out_dir / "labels" / scene.split / (Path(scene.file_name).stem + ".txt")
        with open(label, "x", encoding="utf-8") as handle:  # two images with one stem: refuse
            handle.write("".join(line + "\n" for line in lines))
        record = {
            "file": f"images/{scene.split}/{scene.file_name}",
            "scene_id": scene.id,
            "source": scene.source,
            "source_key": scene.source_key,
            "image_url": scene.image_url,
            "licence": scene.licence,
            "models": scene.models,
            "reviewed": scene.reviewed,
        }
        self._provenance.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._counts[scene.split]["images"] += 1
        self._counts[scene.split]["annotations"] += len(lines)

    def _line(self, obj: ExportObject, width: int, height: int) -> str:
        class_id = self.classes.index(obj.category)
        x1, y1, x2, y2 = _clipped_box(obj, width, height)
        scale = np.array([width, height], dtype=np.float64)
        if self.task == "detect":
            centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) / scale
            size = np.array([x2 - x1, y2 - y1]) / scale
            return f"{class_id} {_format(np.clip(np.concatenate([centre, size]), 0.0, 1.0))}"
        polygon = None
        if obj.mask_rle is not None:
            mask = decode_rle(normalise_rle(obj.mask_rle, height, width))
            polygon = mask_polygon(mask)
        if polygon is None:
            polygon = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)
        return f"{class_id} {_format(np.clip(polygon / scale, 0.0, 1.0))}"

    def close(self) -> dict[str, dict[str, int]]:
        """Write ``data.yaml`` and return the counts; calling it again returns them again.

        ``data.yaml`` holds ``train``/``val``/``test`` (``images/{split}``, listed even when a
        split is empty), ``names`` (``{0: "sofa", ...}``, the export's classes) and, with
        ``include_path``, ``path`` (the absolute ``out_dir``).

        Returns:
            ``{split: {"images": n, "annotations": m}}`` for every split (m = label lines).
        """
        if not self._closed:
            self._provenance.close()
            data: dict[str, object] = (
                {"path": str(self.out_dir.resolve())} if self.include_path else {}
            )
            data |= {split: f"images/{split}" for split in SPLITS}
            data["names"] = dict(enumerate(self.classes.names))
            partial = self.out_dir / "data.yaml.tmp"
            partial.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            partial.replace(self.out_dir / "data.yaml")
            self._closed = True
        return {split: dict(counts) for split, counts in self._counts.items()}

    def __enter__(self) -> YoloWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._provenance.close()
