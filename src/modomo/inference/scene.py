"""Per-scene results: a scene's model outputs turned into object rows, a depth PNG and
palettes, in a host process or thread (CPU).

Every per-object step costs the object, not the image: masks arrive as box regions
(:class:`~modomo.analysis.masks.BoxMask`), their COCO RLE is written from the region
(:func:`~modomo.analysis.masks.encode_box_rle`), and an object's palette and depth statistics
come from at most :data:`SAMPLE_PIXELS` of its pixels, drawn uniformly with a fixed seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import supervision as sv

from modomo.analysis.colors import Palette, extract_palette
from modomo.analysis.depth import DepthMap, depth_stats, encode_depth_png
from modomo.analysis.masks import BoxMask, box_iou, box_region, encode_box_rle, xyxy_to_xywh
from modomo.images import LoadedImage
from modomo.inference.clock import StageClock
from modomo.inference.stages import stage
from modomo.models.segmenter import PendingMask

__all__ = [
    "MASKS_KEY",
    "SAMPLE_PIXELS",
    "SCENE_SAMPLE_PIXELS",
    "Inferred",
    "SceneResult",
    "finish_scene",
    "scene_palette",
]

SAMPLE_PIXELS = 16_384
"""Pixels of an object its palette and depth statistics are computed from (all of them when
it has fewer). On the sample photos this costs a mean CIE76 ΔE of well under 1 against
palettes over every pixel (``bench/ai_host.py`` measures and prints it), while a palette's
k-means stays a few milliseconds whatever the object's size."""

SCENE_SAMPLE_PIXELS = 1 << 20
"""Pixels of a scene its palette is computed from, at most: every pixel of a scene of up to
a megapixel, else every s-th pixel of every s-th row, s the smallest stride that keeps to
this (a regular grid: the histogram of a photo's million pixels is the whole photo's within
a fraction of a ΔE, and reading them is a strided copy, not a gather)."""

MASKS_KEY = "box_mask"
"""``Detections.data`` key of the objects' masks, an (N,) object array set by the segment
stage: :class:`~modomo.analysis.masks.BoxMask`, or on a CPU
:class:`~modomo.models.segmenter.PendingMask` to paste here."""


@dataclass
class Inferred:
    """One scene's model outputs.

    Attributes:
        detections: boxes xyxy in image pixels, with ``data["box_mask"]`` after ``segment``.
        depth: the depth map at its own resolution, or None without ``depth``.
    """

    detections: sv.Detections
    depth: DepthMap | None


@dataclass
class SceneResult:
    """What the pipeline found in one scene.

    Attributes:
        objects: ``detected_objects`` rows (without ids): bbox ``[x, y, w, h]`` pixels,
            category, taxonomy_group, confidence, mask_rle, mask_area, mask_box_iou,
            depth_median/min/max, colors, models.
        depth_png: the 16-bit depth PNG at the map's resolution, or None without ``depth``.
        depth_info: unit, offset, scale, min, max, width, height (the map's), image_width,
            image_height (see :mod:`modomo.analysis.depth`), or None.
        depth_model: ``name@version`` of the depth model that produced the map.
        colors: the scene palette JSON, or None without the colors stage.
    """

    objects: list[dict[str, Any]] = field(default_factory=list)
    depth_png: bytes | None = None
    depth_info: dict[str, Any] | None = None
    depth_model: str | None = None
    colors: dict[str, Any] | None = None


def scene_palette(image: LoadedImage, k: int) -> Palette:
    """The scene's palette from at most :data:`SCENE_SAMPLE_PIXELS` of its opaque pixels.

    Raises:
        ValueError: no opaque pixel (see :func:`~modomo.analysis.colors.extract_palette`).
    """
    rgb, alpha = image.rgb, image.alpha
    height, width = rgb.shape[:2]
    stride = math.ceil(math.sqrt(height * width / SCENE_SAMPLE_PIXELS))
    while math.ceil(height / stride) * math.ceil(width / stride) > SCENE_SAMPLE_PIXELS:
        stride += 1
    if stride > 1:
        rgb = np.ascontiguousarray(rgb[::stride, ::stride])
        alpha = None if alpha is None else np.ascontiguousarray(alpha[::stride, ::stride])
    return extract_palette(rgb, alpha, k=k)


def pixels_at(rgb: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """The (n, 3) uint8 colours of an (H, W, 3) image at (n,) row-major pixel indices (one
    gather along the pixel axis: several times faster than indexing rows and columns)."""
    return np.take(rgb.reshape(-1, 3), flat, axis=0)


def finish_scene(
    image: LoadedImage,
    inferred: Inferred,
    stages: Sequence[str],
    model_labels: dict[str, str],
    *,
    palette_size: int,
    sample_pixels: int = SAMPLE_PIXELS,
    clock: StageClock | None = None,
) -> SceneResult:
    """Turn one scene's model outputs into its rows, depth PNG and palettes.

    Args:
        image: the decoded scene ((H, W, 3) uint8 RGB, optional alpha), possibly at a
            reduced size (:attr:`~modomo.images.LoadedImage.reduction`): masks, boxes and
            depth describe the whole image, palettes come from the decoded pixels.
        inferred: its model outputs.
        stages: the pipeline's stages.
        model_labels: ``{role: name@version}`` of the detector and segmenter.
        palette_size: colours per palette (k).
        sample_pixels: pixels per object for its palette and depth statistics.
        clock: adds each step's seconds under ``masks``, ``depth`` and ``colors``.

    Returns:
        The scene's result.

    Raises:
        Exception: whatever a step raises, with the stage it failed at noted on it
            (:func:`~modomo.inference.stages.failed_stage`).
    """
    clock = clock or StageClock()
    result = SceneResult()
    rgb, reduction = image.rgb, image.reduction
    height, width = image.size
    depth = inferred.depth
    if depth is not None:
        with stage("depth"), clock.measure("depth"):
            result.depth_png, info = encode_depth_png(depth.values)
            result.depth_info = {
                "unit": depth.unit,
                **info,
                "image_width": width,
                "image_height": height,
            }
            result.depth_model = depth.model
    if "colors" in stages and (image.alpha is None or image.alpha.any()):
        with stage("colors"), clock.measure("colors"):
            result.colors = scene_palette(image, palette_size).to_dict()
    det = inferred.detections
    models = dict(model_labels) if len(det) else {}
    if depth is not None:
        models["depth"] = depth.model
    masks = det.data.get(MASKS_KEY)
    for i in range(len(det)):
        with stage("detect"):
            box = det.xyxy[i].astype(np.float64)
            row: dict[str, Any] = {
                "bbox": xyxy_to_xywh(box),
                "category": str(det.data["category"][i]),
                "taxonomy_group": str(det.data["taxonomy_group"][i]),
                "confidence": float(det.confidence[i]) if det.confidence is not None else 1.0,
                "mask_rle": None,
                "mask_area": None,
                "mask_box_iou": None,
                "depth_median": None,
                "depth_min": None,
                "depth_max": None,
                "colors": None,
                "models": models,
            }
            if "prompt" in det.data:  # what found it: a text prompt or a class name
                row["models"] = {**models, "prompt": str(det.data["prompt"][i])}
            region = BoxMask.filled(box_region(box, height, width), height, width)
        if masks is not None:
            with stage("segment"), clock.measure("masks"):
                mask = masks[i]
                if isinstance(mask, PendingMask):
                    mask = mask.paste()
                row["mask_rle"] = encode_box_rle(mask)
                row["mask_area"] = mask.area
                mask_box = mask.bbox_xyxy()
                row["mask_box_iou"] = box_iou(mask_box, box) if mask_box is not None else 0.0
                if row["mask_area"]:
                    region = mask
        if 0 in region.shape:  # a degenerate box: no pixel to describe
            result.objects.append(row)
            continue
        rows, cols = region.sample(sample_pixels, seed=i)
        if depth is not None:
            with stage("depth"), clock.measure("depth"):
                stats = depth_stats(depth.at(rows, cols))
                if stats is not None:
                    row["depth_median"], row["depth_min"], row["depth_max"] = stats
        if "colors" in stages and rows.size:
            with stage("colors"), clock.measure("colors"):
                if reduction == 1:
                    pixels = pixels_at(rgb, rows * width + cols)
                else:  # the decoded pixel covering each sampled one
                    flat = (rows // reduction) * rgb.shape[1] + cols // reduction
                    pixels = pixels_at(rgb, flat)
                row["colors"] = extract_palette(pixels[None], k=palette_size).to_dict()
        result.objects.append(row)
    return result
