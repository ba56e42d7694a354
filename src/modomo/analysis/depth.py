"""Depth maps: 16-bit PNG encoding with an affine scale, and per-object depth statistics.

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

__all__ = ["DepthMap", "decode_depth_png", "depth_stats", "encode_depth_png"]

Q_MAX = 65535


@dataclass(frozen=True)
class DepthMap:
    """A depth map at the image's resolution.

    Attributes:
        values: (H, W) float32 depth, in ``unit``.
        unit: ``metres`` or ``relative_inverse_depth``.
        model: the model that produced it (``name@version``).
    """

    values: np.ndarray
    unit: str
    model: str


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


def decode_depth_png(data: bytes, info: dict[str, Any]) -> np.ndarray:
    """Read a depth PNG written by :func:`encode_depth_png`; returns (H, W) float32 depth."""
    q = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
    return (info["offset"] + info["scale"] * q).astype(np.float32)


def depth_stats(depth: np.ndarray, region: np.ndarray) -> tuple[float, float, float] | None:
    """Median, minimum and maximum depth over a region.

    Args:
        depth: (H, W) float depth map.
        region: (H, W) bool mask of the object (or its box).

    Returns:
        ``(median, min, max)`` in the map's unit, or None when the region has no finite depth.
    """
    values = depth[region & np.isfinite(depth)]
    if values.size == 0:
        return None
    return float(np.median(values)), float(values.min()), float(values.max())
