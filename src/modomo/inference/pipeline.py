"""The detection pipeline on batches of decoded images: detect → segment → depth → colours.

The models see a reduced copy of each scene (:meth:`DetectionPipeline.prepare`, on a host
thread): every one of them resizes its input to a fixed size (SAM 2.1: 1024x1024, YOLO:
``MODOMO_DETECTOR_IMAGE_SIZE``, Depth Anything V2: 518 on the short side), so a 12-megapixel
photo costs them no more than its copy with the longer side at ``input_side`` and the
shorter at least 518 (area-averaged with OpenCV, which also spares their processors'
slower resizing of the full image). Boxes come back in the scene's pixels; masks and depth
describe the scene.

Free of Celery and the database. :meth:`DetectionPipeline.infer` runs the models of a batch
on the device (``MODOMO_AI_BATCH_SIZE`` images per call; a CUDA out-of-memory error halves
the batch, :func:`modomo.batching.map_with_backoff`); :meth:`DetectionPipeline.finish` turns
one scene's outputs into its rows on a host thread (:mod:`modomo.inference.scene`);
:meth:`DetectionPipeline.run` does both in turn for callers without a host pool. An image that
fails alone is returned as that scene's error, with the stage it failed at noted on the
exception (:func:`~modomo.inference.stages.failed_stage`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import supervision as sv

from modomo.analysis.depth import DepthMap
from modomo.batching import is_interrupt, map_with_backoff
from modomo.images import LoadedImage
from modomo.inference.clock import StageClock
from modomo.inference.scene import (
    MASKS_KEY,
    SAMPLE_PIXELS,
    Inferred,
    SceneResult,
    finish_scene,
)
from modomo.inference.stages import stage
from modomo.models.detectors import empty_detections
from modomo.models.device import empty_cache, is_oom
from modomo.models.registry import ModelRegistry

__all__ = ["DEPTH_SHORT_SIDE", "INPUT_SIDE", "DetectionPipeline", "SceneInput"]

INPUT_SIDE = 1024
"""Longer side, in pixels, of the models' copy of a scene (SAM 2.1's 1024x1024 input)."""

DEPTH_SHORT_SIDE = 518
"""The copy's shorter side is at least this (Depth Anything V2's input, 518 on the short
side, so a panorama keeps its depth resolution)."""


@dataclass(frozen=True)
class SceneInput:
    """A decoded scene and the models' copy of it.

    Attributes:
        image: the scene ((H, W, 3) uint8 RGB, optional alpha).
        view: (h, w, 3) uint8 RGB, the scene reduced for the models (the scene's own array
            when it is small enough).
    """

    image: LoadedImage
    view: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """The scene's ``(height, width)`` in pixels."""
        height, width = self.image.rgb.shape[:2]
        return height, width

    def to_scene(self) -> np.ndarray:
        """(4,) float32 factors taking xyxy boxes from the view's pixels to the scene's."""
        (height, width), (h, w) = self.size, self.view.shape[:2]
        return np.array([width / w, height / h, width / w, height / h], np.float32)


class DetectionPipeline:
    """Runs the chosen stages on batches of images with the registry's models.

    Args:
        models: the process's model registry (models load on first use).
        stages: a subset of :data:`~modomo.inference.stages.STAGES` in order.
        batch_size: images per model call; lowered for the rest of this pipeline's life
            after an out-of-memory error.
        palette_size: colours per palette (k).
        sample_pixels: pixels per object for its palette and depth statistics.
        input_side: longer side of the models' copy of a scene (at least :data:`INPUT_SIDE`
            and the detector's input size).
        clock: where the stages' seconds are summed (``bench/ai_host.py``).
    """

    def __init__(
        self,
        models: ModelRegistry,
        stages: Sequence[str],
        *,
        batch_size: int,
        palette_size: int = 5,
        sample_pixels: int = SAMPLE_PIXELS,
        input_side: int = INPUT_SIDE,
        clock: StageClock | None = None,
    ) -> None:
        self.models = models
        self.stages = tuple(stages)
        self.batch_size = batch_size
        self.palette_size = palette_size
        self.sample_pixels = sample_pixels
        self.input_side = input_side
        self.clock = clock or StageClock()

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
            detector = self.models.detector()
            labels["detector"] = detector.weights.label
            labels["detector_backend"] = detector.backend
        if "segment" in self.stages:
            labels["segmenter"] = self.models.segmenter().weights.label
        return labels

    def run(
        self,
        images: Sequence[LoadedImage],
        boxes: Sequence[sv.Detections | None] | None = None,
    ) -> list[SceneResult | BaseException]:
        """Process a batch of images: :meth:`infer`, then :meth:`finish` each in turn.

        Args:
            images: decoded images ((H, W, 3) uint8 RGB plus optional alpha).
            boxes: per image, detections to use instead of running the detector (re-running
                masks and depth on stored boxes); None entries are detected.

        Returns:
            Per image its :class:`SceneResult` or the exception that failed it.
        """
        results: list[SceneResult | BaseException] = []
        inputs = [self.prepare(image) for image in images]
        for scene, item in zip(inputs, self.infer(inputs, boxes), strict=True):
            if isinstance(item, BaseException):
                results.append(item)
                continue
            try:
                results.append(self.finish(scene, item))
            except Exception as exc:  # one scene's bad output must not fail the batch
                if is_interrupt(exc):
                    raise
                results.append(exc)
        return results

    def prepare(self, image: LoadedImage) -> SceneInput:
        """A scene with the models' reduced copy of it (CPU; safe on any thread).

        Args:
            image: the decoded scene.
        """
        import cv2  # here: the API and the CLI import this package but never prepare scenes

        with self.clock.measure("prepare"):
            height, width = image.rgb.shape[:2]
            scale = max(self.input_side / max(height, width), DEPTH_SHORT_SIDE / min(height, width))
            if scale >= 1:
                return SceneInput(image, image.rgb)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            return SceneInput(image, cv2.resize(image.rgb, size, interpolation=cv2.INTER_AREA))

    def infer(
        self,
        images: Sequence[SceneInput],
        boxes: Sequence[sv.Detections | None] | None = None,
    ) -> list[Inferred | BaseException]:
        """Run the models on a batch, ``batch_size`` images per call (see :meth:`run`).

        Returns:
            Per image its model outputs or the exception that failed it.
        """
        results: list[Inferred | BaseException] = []
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
            results.extend(inferred)
        return results

    def finish(self, scene: SceneInput, inferred: Inferred) -> SceneResult:
        """One scene's rows, depth PNG and palettes (CPU; safe on any thread).

        Raises:
            Exception: with the stage it failed at noted on it.
        """
        return finish_scene(
            scene.image,
            inferred,
            self.stages,
            self.model_labels(),
            palette_size=self.palette_size,
            sample_pixels=self.sample_pixels,
            clock=self.clock,
        )

    def _infer(self, chunk: Sequence[tuple[SceneInput, sv.Detections | None]]) -> list[Inferred]:
        views = [scene.view for scene, _ in chunk]
        sizes = [scene.size for scene, _ in chunk]
        detections: list[sv.Detections] = [
            given if given is not None else empty_detections() for _, given in chunk
        ]
        if "detect" in self.stages:
            todo = [i for i, (_, given) in enumerate(chunk) if given is None]
            if todo:
                with stage("detect"), self.clock.measure("detect"):
                    found = self.models.detector().detect([views[i] for i in todo])
                for i, det in zip(todo, found, strict=True):
                    det.xyxy = det.xyxy * chunk[i][0].to_scene()
                    detections[i] = det
        if "segment" in self.stages:
            with stage("segment"), self.clock.measure("segment"):
                prompts = [
                    d.xyxy / scene.to_scene()
                    for d, (scene, _) in zip(detections, chunk, strict=True)
                ]
                segmented = self.models.segmenter().segment(views, prompts, sizes)
                for det, (masks, _scores) in zip(detections, segmented, strict=True):
                    column = np.empty(len(masks), dtype=object)
                    column[:] = masks
                    det.data[MASKS_KEY] = column
        depths: list[DepthMap | None] = [None] * len(chunk)
        if "depth" in self.stages:
            with stage("depth"), self.clock.measure("depth model"):
                depths = list(self.models.depth().estimate(views, sizes))
        return [Inferred(d, m) for d, m in zip(detections, depths, strict=True)]
