"""The per-process model registry: each model is loaded once, lazily, on first use.

A Celery prefork worker imports the task modules in its parent process and forks children;
the registry is only touched inside a task (or the optional warm-up, which runs in the child
after the fork), so the parent never initialises CUDA. The registry is keyed by process id:
a forked child never inherits a parent's models.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from modomo.config import Settings, get_settings
from modomo.models.clip import ClipEncoder
from modomo.models.depth import DepthEstimator, FallbackDepth
from modomo.models.detectors import (
    Detector,
    GroundingDinoDetector,
    Owlv2Detector,
    Selection,
    YoloDetector,
    YoloeDetector,
)
from modomo.models.device import resolve_device, set_torch_threads
from modomo.models.segmenter import Sam2Segmenter
from modomo.models.weights import resolve

__all__ = ["ModelRegistry", "registry"]

log = logging.getLogger(__name__)


class ModelRegistry:
    """Lazily built models for one process.

    Args:
        settings: weights, device and precision settings (default: the process's).

    Raises (from the accessors):
        MissingWeightsError: a model's weights are not available locally.
        ValueError / RuntimeError: a bad device or an unusable model.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._lock = threading.Lock()
        self._models: dict[str, Any] = {}
        self._device: str | None = None
        self.load_seconds: dict[str, float] = {}

    @property
    def device(self) -> str:
        """The resolved torch device (resolved on first use, in this process)."""
        if self._device is None:
            self._device = resolve_device(self.settings.device)
        return self._device

    @property
    def half(self) -> bool:
        """Whether models run in float16 (CUDA and ``MODOMO_HALF_PRECISION``)."""
        return self.settings.half_precision and self.device.startswith("cuda")

    def _get(self, role: str, build: Any) -> Any:
        with self._lock:
            if role not in self._models:
                started = time.perf_counter()
                self._models[role] = build()
                # importing a model's library may have changed torch's thread count
                # (ultralytics sets one thread on small machines): Modomo sets it
                set_torch_threads(self.settings.torch_threads)
                self.load_seconds[role] = time.perf_counter() - started
                log.info("loaded %s on %s in %.1f s", role, self.device, self.load_seconds[role])
            return self._models[role]

    def _weights(self, role: str, name: str) -> Any:
        return resolve(role, name, self.settings.model_cache)

    def detector(self) -> Detector:
        """The detector of ``MODOMO_DETECTOR`` (weights ``MODOMO_DETECTOR_WEIGHTS``), with
        the selection of ``MODOMO_DETECTOR_THRESHOLD(S)``, ``_NMS_IOU`` and
        ``_MAX_DETECTIONS``; open-vocabulary backends prompted with the taxonomy's prompts
        and ``MODOMO_DETECTOR_PROMPTS``."""
        s = self.settings

        def load() -> Detector:
            from modomo.analysis.taxonomy import PromptTable

            weights = self._weights("detector", s.detector_weights)
            selection = Selection(
                threshold=s.detector_threshold,
                thresholds=s.detector_thresholds,
                nms_iou=s.detector_nms_iou,
                max_detections=s.detector_max_detections,
            )
            if s.detector in ("grounding-dino", "owlv2"):
                backend = GroundingDinoDetector if s.detector == "grounding-dino" else Owlv2Detector
                return backend(
                    weights,
                    self.device,
                    half=self.half,
                    selection=selection,
                    prompts=PromptTable(s.detector_prompts),
                )
            if s.detector == "yoloe":
                return YoloeDetector(
                    weights,
                    self.device,
                    half=self.half,
                    selection=selection,
                    prompts=PromptTable(s.detector_prompts),
                    image_size=s.detector_image_size,
                )
            return YoloDetector(
                weights,
                self.device,
                half=self.half,
                selection=selection,
                image_size=s.detector_image_size,
            )

        return self._get("detector", load)

    def segmenter(self) -> Sam2Segmenter:
        """SAM 2.1 (``MODOMO_SEGMENTER_WEIGHTS``)."""
        return self._get(
            "segmenter",
            lambda: Sam2Segmenter(
                self._weights("segmenter", self.settings.segmenter_weights),
                self.device,
                half=self.half,
            ),
        )

    def depth(self) -> FallbackDepth:
        """Depth Anything V2 with ZoeDepth as the fallback (``MODOMO_DEPTH_*WEIGHTS``)."""
        s = self.settings

        def load(role: str, name: str) -> DepthEstimator:
            return DepthEstimator(
                self._weights(role, name), self.device, half=self.half, max_side=s.depth_max_side
            )

        fallback = (
            (lambda: load("depth_fallback", s.depth_fallback_weights))
            if s.depth_fallback_weights
            else None
        )
        return self._get(
            "depth", lambda: FallbackDepth(lambda: load("depth", s.depth_weights), fallback)
        )

    def clip(self) -> ClipEncoder:
        """CLIP (``MODOMO_CLIP_WEIGHTS``) for scene classification and image embeddings.

        Raises:
            ValueError: the model's embedding dimension is not ``MODOMO_EMBEDDING_DIM``.
        """

        def load() -> ClipEncoder:
            encoder = ClipEncoder(
                self._weights("clip", self.settings.clip_weights), self.device, half=self.half
            )
            encoder.check_dim(self.settings.embedding_dim)
            return encoder

        return self._get("clip", load)

    def warm_up(self, stages: tuple[str, ...]) -> None:
        """Load the models ``stages`` need now rather than on the first task (for
        ``classify``, also CLIP's label embeddings for the configured labels)."""
        if "detect" in stages:
            self.detector()
        if "segment" in stages:
            self.segmenter()
        if "depth" in stages:
            self.depth()
        if "classify" in stages:
            self.clip().label_sets(self.settings.room_types, self.settings.styles)


_registries: dict[int, ModelRegistry] = {}
_registries_lock = threading.Lock()


def registry() -> ModelRegistry:
    """This process's registry (a new one in each forked child)."""
    pid = os.getpid()
    with _registries_lock:
        if pid not in _registries:
            _registries.clear()
            _registries[pid] = ModelRegistry()
        return _registries[pid]
