"""Depth maps: 16-bit PNG encoding with an affine scale, and per-object depth statistics.

A map is kept at the depth model's output resolution (Depth Anything V2 Small: 518 pixels on
the short side), capped by ``MODOMO_DEPTH_MAX_SIDE``, with the image's aspect ratio: map
pixel ``(row, col)`` covers image pixels ``row * image_height / height`` onwards (and
likewise for columns). Upsampling it to a 12-megapixel photo would add no information and
cost 48 MB per scene; ``depth_info`` records both sizes, so a reader scales it back with
:func:`upsample_depth` when it needs one value per image pixel.

A depth map is stored losslessly enough for datasets as a 16-bit greyscale PNG ``q`` plus
``offset`` and ``scale`` so that ``depth = offset + scale * q`` (the quantisation step is
``(max - min) / 65535`` of the map's own range). The unit is the model's: ``metres`` for
metric models (ZoeDepth), ``relative_inverse_depth`` for Depth Anything V2's relative output
(larger is nearer, no absolute scale).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "DepthMap",
    "decode_depth_png",
    "depth_size",
    "depth_stats",
    "encode_depth_png",
    "upsample_depth",
]

Q_MAX = 65535


@dataclass(frozen=True)
class DepthMap:
    """A depth map of an image, at the map's own resolution (see the module docstring).

    Attributes:
        values: (h, w) float32 depth, in ``unit``; the image's aspect ratio.
        unit: ``metres`` or ``relative_inverse_depth``.
        model: the model that produced it (``name@version``).
        image_height, image_width: the image's size in pixels.
    """

    values: np.ndarray
    unit: str
    model: str
    image_height: int
    image_width: int

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Depth at image pixels (nearest map pixel).

        Args:
            rows, cols: (n,) int image coordinates.

        Returns:
            (n,) float32 depth in ``unit``.
        """
        height, width = self.values.shape
        r = np.minimum(((rows + 0.5) * (height / self.image_height)).astype(np.int64), height - 1)
        c = np.minimum(((cols + 0.5) * (width / self.image_width)).astype(np.int64), width - 1)
        return self.values[r, c]


def depth_size(
    image_height: int, image_width: int, model_height: int, model_width: int, max_side: int
) -> tuple[int, int]:
    """The stored map's (height, width): the image's aspect ratio at the model output's
    resolution (its larger scale of the two axes), the longer side at most ``max_side`` and
    never above the image's own size."""
    scale = max(model_height / image_height, model_width / image_width)
    scale = min(scale, max_side / max(image_height, image_width), 1.0)
    return max(1, round(image_height * scale)), max(1, round(image_width * scale))


def encode_depth_png(depth: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """Quantise a depth map to a 16-bit PNG.

    Args:
        depth: (H, W) float array; non-finite values are stored as the minimum.

    Returns:
        ``(png_bytes, info)`` with ``info = {"offset", "scale", "min", "max", "width",
        "height"}``; ``depth ≈ offset + scale * png``.

    Raises:
        ValueError: ``depth`` is not two-dimensional or has no finite value.
    """
    if depth.ndim != 2:
        raise ValueError(f"expected an (H, W) depth map, got shape {depth.shape}")
    finite = np.isfinite(depth)
    if not finite.any():
        raise ValueError("depth map has no finite value")
    lo, hi = float(depth[finite].min()), float(depth[finite].max())
    scale = (hi - lo) / Q_MAX if hi > lo else 1.0
    clean = np.where(finite, depth, lo)
    q = np.clip(np.rint((clean - lo) / scale), 0, Q_MAX).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(q).save(buffer, format="PNG", optimize=False, compress_level=3)
    height, width = depth.shape
    info = {"offset": lo, "scale": scale, "min": lo, "max": hi, "width": width, "height": height}
    return buffer.getvalue(), info


def upsample_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """A stored map resized to the image's size (bilinear, OpenCV).

    Args:
        depth: (h, w) float32, e.g. from :func:`decode_depth_png`.
        height, width: the image's size (``depth_info["image_height"]`` / ``["image_width"]``).

    Returns:
        (height, width) float32.
    """
    import cv2

    return np.asarray(
        cv2.resize(depth.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    )


def decode_depth_png(data: bytes, info: dict[str, Any]) -> np.ndarray:
    """Read a depth PNG written by :func:`encode_depth_png`; returns (H, W) float32 depth."""
    q = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
    return (info["offset"] + info["scale"] * q).astype(np.float32)


def depth_stats(values: np.ndarray) -> tuple[float, float, float] | None:
    """Median, minimum and maximum of an object's depth values.

    Args:
        values: (n,) float depth at the object's pixels (all of them, or a sample:
            :meth:`DepthMap.at` of :meth:`modomo.analysis.masks.BoxMask.sample`).

    Returns:
        ``(median, min, max)`` in the map's unit, or None when no value is finite.
    """
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    return float(np.median(values)), float(values.min()), float(values.max())
