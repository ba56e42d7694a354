"""The detection pipeline on batches of decoded images: detect → segment → depth → colours.

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

import numpy as np
import supervision as sv

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
from modomo.models.detector import empty_detections
from modomo.models.device import empty_cache, is_oom
from modomo.models.registry import ModelRegistry

__all__ = ["DetectionPipeline"]


class DetectionPipeline:
    """Runs the chosen stages on batches of images with the registry's models.

    Args:
        models: the process's model registry (models load on first use).
        stages: a subset of :data:`~modomo.inference.stages.STAGES` in order.
        batch_size: images per model call; lowered for the rest of this pipeline's life
            after an out-of-memory error.
        palette_size: colours per palette (k).
        sample_pixels: pixels per object for its palette and depth statistics.
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
        clock: StageClock | None = None,
    ) -> None:
        self.models = models
        self.stages = tuple(stages)
        self.batch_size = batch_size
        self.palette_size = palette_size
        self.sample_pixels = sample_pixels
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
            labels["detector"] = self.models.detector().weights.label
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
        for image, item in zip(images, self.infer(images, boxes), strict=True):
            if isinstance(item, BaseException):
                results.append(item)
                continue
            try:
                results.append(self.finish(image, item))
            except Exception as exc:  # one scene's bad output must not fail the batch
                if is_interrupt(exc):
                    raise
                results.append(exc)
        return results

    def infer(
        self,
        images: Sequence[LoadedImage],
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

    def finish(self, image: LoadedImage, inferred: Inferred) -> SceneResult:
        """One scene's rows, depth PNG and palettes (CPU; safe on any thread).

        Raises:
            Exception: with the stage it failed at noted on it.
        """
        return finish_scene(
            image,
            inferred,
            self.stages,
            self.model_labels(),
            palette_size=self.palette_size,
            sample_pixels=self.sample_pixels,
            clock=self.clock,
        )

    def _infer(self, chunk: Sequence[tuple[LoadedImage, sv.Detections | None]]) -> list[Inferred]:
        rgbs = [image.rgb for image, _ in chunk]
        detections: list[sv.Detections] = [
            given if given is not None else empty_detections() for _, given in chunk
        ]
        if "detect" in self.stages:
            todo = [i for i, (_, given) in enumerate(chunk) if given is None]
            if todo:
                with stage("detect"), self.clock.measure("detect"):
                    found = self.models.detector().detect([rgbs[i] for i in todo])
                for i, det in zip(todo, found, strict=True):
                    detections[i] = det
        if "segment" in self.stages:
            with stage("segment"), self.clock.measure("segment"):
                segmented = self.models.segmenter().segment(rgbs, [d.xyxy for d in detections])
                for det, (masks, _scores) in zip(detections, segmented, strict=True):
                    column = np.empty(len(masks), dtype=object)
                    column[:] = masks
                    det.data[MASKS_KEY] = column
        depths = [None] * len(chunk)
        if "depth" in self.stages:
            with stage("depth"), self.clock.measure("depth model"):
                depths = list(self.models.depth().estimate(rgbs))
        return [Inferred(d, m) for d, m in zip(detections, depths, strict=True)]
