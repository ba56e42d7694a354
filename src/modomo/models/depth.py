"""Monocular depth: Depth Anything V2 (relative), ZoeDepth (metric) as the fallback.

Both are transformers ``AutoModelForDepthEstimation`` models with their own image
processors and ``post_process_depth_estimation``; maps come back at each image's size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from modomo.analysis.depth import DepthMap
from modomo.models.device import is_oom, torch_dtype
from modomo.models.weights import Weights

__all__ = ["DepthEstimator", "FallbackDepth"]

log = logging.getLogger(__name__)


class DepthEstimator:
    """One depth model.

    Args:
        weights: resolved weights folder.
        device: torch device string.
        half: float16 on CUDA (Depth Anything); ZoeDepth always runs in float32, its
            metric bins head loses precision in float16.
    """

    def __init__(self, weights: Weights, device: str, *, half: bool) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForDepthEstimation

        config = AutoConfig.from_pretrained(str(weights.path))
        self.zoe = config.model_type == "zoedepth"
        metric = self.zoe or getattr(config, "depth_estimation_type", "relative") == "metric"
        self.unit = "metres" if metric else "relative_inverse_depth"
        self.weights = weights
        self.device = device
        self.dtype = torch_dtype(device, half and not self.zoe)
        self.processor = AutoImageProcessor.from_pretrained(str(weights.path))
        self.model = AutoModelForDepthEstimation.from_pretrained(
            str(weights.path), dtype=self.dtype
        )
        self.model.to(device).eval()

    def estimate(self, images: list[np.ndarray]) -> list[DepthMap]:
        """Depth maps for a batch of (H, W, 3) uint8 RGB images, each at its image's size.

        Images of the same size run as one batch (the processors resize by aspect ratio, so
        differently shaped images cannot share a tensor).
        """
        import torch

        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(index)
        maps: list[DepthMap | None] = [None] * len(images)
        with torch.inference_mode():
            for indices in by_shape.values():
                group = [images[i] for i in indices]
                sizes = [(image.shape[0], image.shape[1]) for image in group]
                inputs = self.processor(images=group, return_tensors="pt")
                pixels = inputs["pixel_values"].to(self.device, self.dtype)
                outputs = self.model(pixel_values=pixels)
                outputs.predicted_depth = outputs.predicted_depth.float()
                if self.zoe:
                    post = self.processor.post_process_depth_estimation(
                        outputs, source_sizes=sizes, target_sizes=sizes
                    )
                else:
                    post = self.processor.post_process_depth_estimation(outputs, target_sizes=sizes)
                for i, item in zip(indices, post, strict=True):
                    values = item["predicted_depth"].float().cpu().numpy().astype(np.float32)
                    maps[i] = DepthMap(values, self.unit, self.weights.label)
        return [m for m in maps if m is not None]


class FallbackDepth:
    """The primary depth model, or the fallback when the primary fails to load or to run.

    Out-of-memory errors are not a model failure: they propagate so the caller can halve
    the batch. The model that produced each map is named on it (:attr:`DepthMap.model`).

    Args:
        load_primary: builds the primary model (may raise).
        load_fallback: builds the fallback, or None for no fallback.
    """

    def __init__(
        self,
        load_primary: Callable[[], DepthEstimator],
        load_fallback: Callable[[], DepthEstimator] | None,
    ) -> None:
        self._load_fallback = load_fallback
        self.primary: DepthEstimator | None = None
        self.fallback: DepthEstimator | None = None
        self.primary_error: str | None = None
        try:
            self.primary = load_primary()
        except Exception as exc:
            if load_fallback is None:
                raise
            self.primary_error = f"{type(exc).__name__}: {exc}"
            log.warning("primary depth model failed to load (%s); using the fallback", exc)
            self.fallback = load_fallback()

    def _fallback(self) -> DepthEstimator:
        if self.fallback is None:
            if self._load_fallback is None:
                raise RuntimeError("no depth fallback configured")
            self.fallback = self._load_fallback()
        return self.fallback

    def estimate(self, images: list[np.ndarray]) -> list[DepthMap]:
        """Depth maps (see :meth:`DepthEstimator.estimate`), from the fallback if need be."""
        if self.primary is not None:
            try:
                return self.primary.estimate(images)
            except Exception as exc:
                if is_oom(exc) or self._load_fallback is None:
                    raise
                log.warning("primary depth model failed (%s); using the fallback", exc)
        return self._fallback().estimate(images)
