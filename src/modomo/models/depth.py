"""Monocular depth: Depth Anything V2 (relative), ZoeDepth (metric) as the fallback.

Both are transformers ``AutoModelForDepthEstimation`` models with their own image
processors. A map comes back at the model's output resolution with the image's aspect ratio,
its longer side capped by ``MODOMO_DEPTH_MAX_SIDE`` (:func:`modomo.analysis.depth.depth_size`),
resized on the device: the processors' ``post_process_depth_estimation`` would upsample it to
the full image on the host, 48 MB of float32 per 12-megapixel photo that adds no information.
ZoeDepth's reflection padding is cut off as its post-processing does, at the map's scale.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from modomo.analysis.depth import DepthMap, depth_size
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
        max_side: longest side in pixels of a returned map.
    """

    def __init__(self, weights: Weights, device: str, *, half: bool, max_side: int = 1024) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForDepthEstimation

        config = AutoConfig.from_pretrained(str(weights.path))
        self.zoe = config.model_type == "zoedepth"
        metric = self.zoe or getattr(config, "depth_estimation_type", "relative") == "metric"
        self.unit = "metres" if metric else "relative_inverse_depth"
        self.weights = weights
        self.device = device
        self.max_side = max_side
        self.dtype = torch_dtype(device, half and not self.zoe)
        self.processor = AutoImageProcessor.from_pretrained(str(weights.path))
        self.model = AutoModelForDepthEstimation.from_pretrained(
            str(weights.path), dtype=self.dtype
        )
        self.model.to(device).eval()

    def estimate(
        self, images: list[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[DepthMap]:
        """Depth maps for a batch of (H, W, 3) uint8 RGB images, each at the model's output
        resolution with its image's aspect ratio (see the module docstring).

        Args:
            images: the model's inputs (possibly reduced copies of the scenes).
            sizes: per image, the scene's own ``(height, width)`` in pixels, which the maps
                describe (default: the images' sizes).

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
                inputs = self.processor(images=[images[i] for i in indices], return_tensors="pt")
                pixels = inputs["pixel_values"].to(self.device, self.dtype)
                predicted = self.model(pixel_values=pixels).predicted_depth.float()
                for i, depth in zip(indices, predicted, strict=True):
                    height, width = sizes[i] if sizes is not None else images[i].shape[:2]
                    values = self._resize(depth, height, width).cpu().numpy()
                    maps[i] = DepthMap(values, self.unit, self.weights.label, height, width)
        return [m for m in maps if m is not None]

    def _resize(self, depth: Any, height: int, width: int) -> Any:
        """One (h, w) model output as a map of the image: padding cut, resized to the
        stored size (bilinear)."""
        import torch.nn.functional as F

        if self.zoe and getattr(self.processor, "do_pad", True):
            # ZoeDepthImageProcessor pads each side by int(sqrt(side / 2) * 3) image pixels
            # (post_process_depth_estimation's do_remove_padding), here at the map's scale
            rows, cols = depth.shape
            pad_h, pad_w = int(np.sqrt(height / 2) * 3), int(np.sqrt(width / 2) * 3)
            top = round(pad_h * rows / (height + 2 * pad_h))
            left = round(pad_w * cols / (width + 2 * pad_w))
            depth = depth[top : rows - top, left : cols - left]
        rows, cols = depth.shape
        size = depth_size(height, width, rows, cols, self.max_side)
        return F.interpolate(depth[None, None], size, mode="bilinear", align_corners=False)[0, 0]


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

    def estimate(
        self, images: list[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[DepthMap]:
        """Depth maps (see :meth:`DepthEstimator.estimate`), from the fallback if need be."""
        if self.primary is not None:
            try:
                return self.primary.estimate(images, sizes)
            except Exception as exc:
                if is_oom(exc) or self._load_fallback is None:
                    raise
                log.warning("primary depth model failed (%s); using the fallback", exc)
        return self._fallback().estimate(images, sizes)
