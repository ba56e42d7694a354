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
from modomo.images import LoadedImage, load_image, sniff_mime
from modomo.inference.clock import StageClock
from modomo.inference.host_processes import FinishSpec, HostedScene, HostProcesses
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

__all__ = [
    "DEPTH_SHORT_SIDE",
    "INPUT_SIDE",
    "DetectionPipeline",
    "SceneInput",
    "reduced_view",
    "view_to_scene",
]

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
        return self.image.size

    def to_scene(self) -> np.ndarray:
        """(4,) float32 factors taking xyxy boxes from the view's pixels to the scene's."""
        return view_to_scene(self.size, self.view.shape[:2])


def view_to_scene(size: tuple[int, int], view: tuple[int, int]) -> np.ndarray:
    """(4,) float32 factors taking xyxy boxes from a view's pixels (``view``: its
    ``(h, w)``) to its scene's (``size``: ``(height, width)``)."""
    (height, width), (h, w) = size, view
    return np.array([width / w, height / h, width / w, height / h], np.float32)


def reduced_view(rgb: np.ndarray, input_side: int) -> np.ndarray:
    """The models' copy of an (H, W, 3) uint8 image: longer side ``input_side`` and shorter
    side at least :data:`DEPTH_SHORT_SIDE`, area-averaged (OpenCV ``INTER_AREA``); the
    array itself when it is no larger."""
    import cv2  # here: the API and the CLI import this package but never prepare scenes

    height, width = rgb.shape[:2]
    scale = max(input_side / max(height, width), DEPTH_SHORT_SIDE / min(height, width))
    if scale >= 1:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


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
        hosts: host processes that :meth:`decode` and :meth:`finish` scenes (None: this
            process does, on whatever thread calls them).
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
        hosts: HostProcesses | None = None,
    ) -> None:
        self.models = models
        self.hosts = hosts
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
        with self.clock.measure("prepare"):
            return SceneInput(image, reduced_view(image.rgb, self.input_side))

    def decode(self, data: bytes, *, max_pixels: int) -> SceneInput | HostedScene:
        """Decode an image file's bytes and :meth:`prepare` it: in a host process when the
        pipeline has them (the scene stays there for :meth:`finish`), else here. A JPEG is
        decoded on a CUDA device when the models run on one, else on the CPU at the
        smallest DCT scale that still covers the models' copy (``reduced``, see
        :func:`~modomo.images.load_image`): a 12-megapixel photo at half its size, whose
        pixels the palettes then sample.

        Args:
            data: the complete file.
            max_pixels: largest accepted ``width * height``.

        Raises:
            ImageError: the image is not usable.
            HostProcessError: the host process ended.
        """
        device = self.models.device
        on_device = str(device).startswith("cuda") and sniff_mime(data) == "image/jpeg"
        if self.hosts is None or on_device:
            with self.clock.measure("decode"):
                image = load_image(
                    data,
                    max_pixels=max_pixels,
                    device=device,
                    reduced=(self.input_side, DEPTH_SHORT_SIDE),
                )
            if self.hosts is None:
                return self.prepare(image)
            return self.hosts.load(
                image, max_pixels=max_pixels, input_side=self.input_side, clock=self.clock
            )
        return self.hosts.load(
            data, max_pixels=max_pixels, input_side=self.input_side, clock=self.clock
        )

    def infer(
        self,
        images: Sequence[SceneInput | HostedScene],
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

    def finish(self, scene: SceneInput | HostedScene, inferred: Inferred) -> SceneResult:
        """One scene's rows, depth PNG and palettes (CPU; safe on any thread), in the host
        process holding the scene when it is a :class:`HostedScene`.

        Raises:
            HostProcessError: the host process ended or no longer holds the scene.
            Exception: with the stage it failed at noted on it.
        """
        spec = FinishSpec(self.stages, self.model_labels(), self.palette_size, self.sample_pixels)
        if isinstance(scene, HostedScene):
            assert self.hosts is not None
            return self.hosts.finish(scene, inferred, spec, self.clock)
        return finish_scene(
            scene.image,
            inferred,
            spec.stages,
            spec.model_labels,
            palette_size=spec.palette_size,
            sample_pixels=spec.sample_pixels,
            clock=self.clock,
        )

    def _infer(
        self, chunk: Sequence[tuple[SceneInput | HostedScene, sv.Detections | None]]
    ) -> list[Inferred]:
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
