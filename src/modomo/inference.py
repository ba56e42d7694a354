"""The detection pipeline on a batch of decoded images: detect → segment → depth → colours.

Free of Celery and the database: :class:`DetectionPipeline` turns images into per-scene
results (object rows, a depth PNG, palettes); the task stores them. Model calls are batched
(``MODOMO_AI_BATCH_SIZE`` images per call) and a CUDA out-of-memory error halves the batch
(:func:`modomo.batching.map_with_backoff`); an image that fails alone is returned as that
scene's error, with the stage it failed at as a note on the exception (:func:`failed_stage`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import supervision as sv

from modomo.analysis.colors import extract_palette
from modomo.analysis.depth import DepthMap, depth_stats, encode_depth_png
from modomo.analysis.masks import (
    box_iou,
    clip_masks_to_boxes,
    encode_rle,
    mask_bbox_xyxy,
    xyxy_to_xywh,
)
from modomo.batching import is_interrupt, map_with_backoff
from modomo.images import LoadedImage
from modomo.models.detector import empty_detections
from modomo.models.device import empty_cache, is_oom
from modomo.models.registry import ModelRegistry

__all__ = ["STAGES", "DetectionPipeline", "SceneResult", "failed_stage", "parse_stages"]

STAGES: tuple[str, ...] = ("detect", "segment", "depth", "colors")
"""The pipeline's stages, in order. ``colors`` is the scene palette plus, with detections,
each object's palette over its mask (or its box without ``segment``)."""


_STAGE_NOTE = "modomo: failed at stage "


def failed_stage(exc: BaseException) -> str | None:
    """The pipeline stage a scene's exception from :meth:`DetectionPipeline.run` failed at
    (``detect``, ``segment``, ``depth`` or ``colors``), or None when it does not say.

    The stage travels as a note on the exception itself (``exc.add_note``), so its type is
    untouched: out-of-memory detection and the caller's ``except`` clauses still see it.
    """
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith(_STAGE_NOTE):
            return note.removeprefix(_STAGE_NOTE)
    return None


@contextmanager
def _stage(name: str) -> Iterator[None]:
    """Note ``name`` on an exception raised in the block, unless an inner block did."""
    try:
        yield
    except Exception as exc:
        if failed_stage(exc) is None:
            exc.add_note(f"{_STAGE_NOTE}{name}")
        raise


def parse_stages(text: str | Sequence[str]) -> tuple[str, ...]:
    """Parse ``--pipeline``: a comma-separated subset of :data:`STAGES` or ``full``.

    Returns:
        The stages in pipeline order.

    Raises:
        ValueError: an unknown stage, or ``segment`` without ``detect`` (masks are prompted
            by the detector's boxes).
    """
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    names = [s for s in names if s]
    if names == ["full"]:
        return STAGES
    unknown = sorted(set(names) - set(STAGES))
    if unknown or not names:
        raise ValueError(
            f"unknown pipeline stage(s) {unknown or names}: use a comma-separated subset of "
            f"{','.join(STAGES)}, or full"
        )
    if "segment" in names and "detect" not in names:
        raise ValueError("the segment stage needs detect: masks are prompted by its boxes")
    return tuple(s for s in STAGES if s in names)


@dataclass
class SceneResult:
    """What the pipeline found in one scene.

    Attributes:
        objects: ``detected_objects`` rows (without ids): bbox ``[x, y, w, h]`` pixels,
            category, taxonomy_group, confidence, mask_rle, mask_area, mask_box_iou,
            depth_median/min/max, colors, models.
        depth_png: the 16-bit depth PNG, or None without the depth stage.
        depth_info: unit, offset, scale, min, max, width, height (see
            :mod:`modomo.analysis.depth`), or None.
        depth_model: ``name@version`` of the depth model that produced the map.
        colors: the scene palette JSON, or None without the colors stage.
    """

    objects: list[dict[str, Any]] = field(default_factory=list)
    depth_png: bytes | None = None
    depth_info: dict[str, Any] | None = None
    depth_model: str | None = None
    colors: dict[str, Any] | None = None


@dataclass
class _Inferred:
    detections: sv.Detections
    depth: DepthMap | None


class DetectionPipeline:
    """Runs the chosen stages on batches of images with the registry's models.

    Args:
        models: the process's model registry (models load on first use).
        stages: a subset of :data:`STAGES` in order (see :func:`parse_stages`).
        batch_size: images per model call; lowered for the rest of this pipeline's life
            after an out-of-memory error.
        palette_size: colours per palette (k).
    """

    def __init__(
        self,
        models: ModelRegistry,
        stages: Sequence[str],
        *,
        batch_size: int,
        palette_size: int = 5,
    ) -> None:
        self.models = models
        self.stages = tuple(stages)
        self.batch_size = batch_size
        self.palette_size = palette_size

    def load(self) -> None:
        """Load the models of this pipeline's stages now (once per process).

        Raises:
            MissingWeightsError: weights are not available locally.
        """
        self.models.warm_up(self.stages)

    def model_labels(self) -> dict[str, str]:
        """``{role: name@version}`` of the loaded models of this pipeline's stages."""
        labels = {}
        if "detect" in self.stages:
            labels["detector"] = self.models.detector().weights.label
        if "segment" in self.stages:
            labels["segmenter"] = self.models.segmenter().weights.label
        return labels

    def run(
        self,
        images: Sequence[LoadedImage],
        boxes: Sequence[sv.Detections | None] | None = None,
    ) -> list[SceneResult | BaseException]:
        """Process a batch of images.

        Args:
            images: decoded images ((H, W, 3) uint8 RGB plus optional alpha).
            boxes: per image, detections to use instead of running the detector (re-running
                masks and depth on stored boxes); None entries are detected.

        Returns:
            Per image its :class:`SceneResult` or the exception that failed it, which
            :func:`failed_stage` tells the stage of.
        """
        results: list[SceneResult | BaseException] = []
        given = list(boxes) if boxes is not None else [None] * len(images)
        for start in range(0, len(images), self.batch_size):
            chunk = list(zip(images[start : start + self.batch_size], given[start:], strict=False))
            inferred, largest = map_with_backoff(
                chunk,
                self._infer,
                is_oom=is_oom,
                after_oom=lambda: empty_cache(self.models.device),
            )
            if 0 < largest < self.batch_size:
                self.batch_size = largest
            for (image, _), item in zip(chunk, inferred, strict=True):
                if isinstance(item, BaseException):
                    results.append(item)
                    continue
                try:
                    results.append(self._finish(image, item))
                except Exception as exc:  # one scene's bad output must not fail the batch
                    if is_interrupt(exc):
                        raise
                    results.append(exc)
        return results

    # --- model calls (batched, on the accelerator) ----------------------------------------
    def _infer(self, chunk: Sequence[tuple[LoadedImage, sv.Detections | None]]) -> list[_Inferred]:
        rgbs = [image.rgb for image, _ in chunk]
        detections: list[sv.Detections] = [
            given if given is not None else empty_detections() for _, given in chunk
        ]
        if "detect" in self.stages:
            todo = [i for i, (_, given) in enumerate(chunk) if given is None]
            if todo:
                with _stage("detect"):
                    found = self.models.detector().detect([rgbs[i] for i in todo])
                for i, det in zip(todo, found, strict=True):
                    detections[i] = det
        if "segment" in self.stages:
            with _stage("segment"):
                segmented = self.models.segmenter().segment(rgbs, [d.xyxy for d in detections])
                for det, (masks, _scores) in zip(detections, segmented, strict=True):
                    det.mask = clip_masks_to_boxes(masks, det.xyxy) if len(det) else None
        depths: list[DepthMap | None] = [None] * len(chunk)
        if "depth" in self.stages:
            with _stage("depth"):
                depths = list(self.models.depth().estimate(rgbs))
        return [_Inferred(d, m) for d, m in zip(detections, depths, strict=True)]

    # --- per-scene results (CPU) ----------------------------------------------------------
    def _finish(self, image: LoadedImage, inferred: _Inferred) -> SceneResult:
        result = SceneResult()
        rgb = image.rgb
        height, width = rgb.shape[:2]
        depth = inferred.depth
        if depth is not None:
            with _stage("depth"):
                result.depth_png, info = encode_depth_png(depth.values)
                result.depth_info = {"unit": depth.unit, **info}
                result.depth_model = depth.model
        if "colors" in self.stages and (image.alpha is None or image.alpha.any()):
            with _stage("colors"):
                result.colors = extract_palette(rgb, image.alpha, k=self.palette_size).to_dict()
        models = self.model_labels() if len(inferred.detections) else {}
        if depth is not None:
            models["depth"] = depth.model
        det = inferred.detections
        for i in range(len(det)):
            with _stage("detect"):
                box = det.xyxy[i].astype(np.float64)
                x1, y1 = int(np.floor(max(box[0], 0))), int(np.floor(max(box[1], 0)))
                x2, y2 = int(np.ceil(min(box[2], width))), int(np.ceil(min(box[3], height)))
                region = np.zeros((height, width), dtype=bool)
                region[y1:y2, x1:x2] = True
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
            if det.mask is not None:
                with _stage("segment"):
                    mask = det.mask[i]
                    row["mask_rle"] = encode_rle(mask)
                    row["mask_area"] = int(mask.sum())
                    mask_box = mask_bbox_xyxy(mask)
                    row["mask_box_iou"] = box_iou(mask_box, box) if mask_box is not None else 0.0
                    if mask.any():
                        region = mask
            if depth is not None:
                with _stage("depth"):
                    stats = depth_stats(depth.values, region)
                    if stats is not None:
                        row["depth_median"], row["depth_min"], row["depth_max"] = stats
            if "colors" in self.stages and region.any():
                with _stage("colors"):
                    row["colors"] = extract_palette(rgb, region, k=self.palette_size).to_dict()
            result.objects.append(row)
        return result
