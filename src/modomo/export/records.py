"""What an export reads: one scene with its objects, as plain values (no database rows).

The exporter (:mod:`modomo.export.runner`) streams these from the database in chunks; each
format writer (:mod:`modomo.export.coco`, :mod:`.yolo`, :mod:`.hf`) consumes them one at a
time and never holds the whole dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SPLITS", "ExportObject", "ExportScene"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The splits an export writes, in this order."""


@dataclass(frozen=True)
class ExportObject:
    """One detected object.

    Attributes:
        id: the object's uuid (string).
        bbox: ``[x, y, w, h]`` in pixels of the stored image (COCO convention).
        category: taxonomy category (:data:`modomo.analysis.taxonomy.CATEGORIES`).
        taxonomy_group: the category's group.
        confidence: detector confidence in [0, 1].
        mask_rle: COCO compressed RLE ``{"size": [h, w], "counts": str}`` or None.
        mask_area: the mask's pixel count, or None without a mask.
        depth_median / depth_min / depth_max: depth over the mask, in the scene's depth unit.
        colors: the object's palette JSON, or None.
        labelled_by: ``model`` or ``human`` (a reviewed label, ``modomo annotations
            import``).
    """

    id: str
    bbox: list[float]
    category: str
    taxonomy_group: str
    confidence: float
    mask_rle: dict[str, Any] | None = None
    mask_area: int | None = None
    depth_median: float | None = None
    depth_min: float | None = None
    depth_max: float | None = None
    colors: dict[str, Any] | None = None
    labelled_by: str = "model"


@dataclass(frozen=True)
class ExportScene:
    """One scene, its objects and where its image is.

    Attributes:
        id: the scene's uuid (string).
        split: ``train``, ``val`` or ``test`` (:meth:`modomo.export.splits.Splitter.assign`).
        file_name: the image's file name in the export (``<scene id>.<ext>``).
        width / height: image size in pixels (upright, as stored).
        source / source_key / image_url: provenance.
        licence: the image's licence where the source states one, else None.
        room_type / style / scene_type: labels (``unknown`` where CLIP abstained), or None.
        colors: the scene palette JSON, or None.
        depth_info: ``{"unit", "min", "max", ...}`` of the depth map, or None.
        models: ``{role: name@version}`` of the models that produced the labels.
        objects: the scene's detected objects.
        reviewed: its labels were reviewed by people (its objects are theirs).
        read_image: returns the stored image bytes (read lazily, once per writer call).
    """

    id: str
    split: str
    file_name: str
    width: int
    height: int
    source: str
    source_key: str
    image_url: str | None
    licence: str | None
    room_type: str | None
    style: str | None
    scene_type: str | None
    colors: dict[str, Any] | None
    depth_info: dict[str, Any] | None
    models: dict[str, str]
    objects: list[ExportObject] = field(default_factory=list)
    reviewed: bool = False
    read_image: Callable[[], bytes] = field(default=lambda: b"", repr=False, compare=False)
