"""Masks and boxes: COCO RLE encoding and the box arithmetic the detection pipeline needs.

RLE encoding and decoding are pycocotools' (the COCO API), so the stored masks read back
with the same library every COCO tool uses. Box conventions are named in every signature:
``xyxy`` is ``(x1, y1, x2, y2)`` and ``xywh`` is COCO's ``(x, y, width, height)``, both in
pixels with the origin at the image's top-left corner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

__all__ = [
    "box_iou",
    "clip_masks_to_boxes",
    "decode_rle",
    "encode_rle",
    "mask_bbox_xyxy",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode a binary mask as a JSON-able COCO RLE.

    Args:
        mask: (H, W) bool (or 0/1 integer) array.

    Returns:
        ``{"size": [H, W], "counts": str}`` (pycocotools' compressed counts, as ASCII).

    Raises:
        ValueError: ``mask`` is not two-dimensional.
    """
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed string counts or uncompressed list counts).

    Returns:
        (H, W) bool array.
    """
    counts = rle["counts"]
    height, width = (int(v) for v in rle["size"])
    if isinstance(counts, list):
        raw = {"size": [height, width], "counts": counts}
        compressed = mask_utils.frPyObjects(raw, height, width)
    else:
        compressed = {"size": [height, width], "counts": counts.encode()}
    return mask_utils.decode(compressed).astype(bool)


def mask_bbox_xyxy(mask: np.ndarray) -> np.ndarray | None:
    """The tight box around a mask's pixels, xyxy in pixels (exclusive right/bottom edge).

    Args:
        mask: (H, W) bool array.

    Returns:
        (4,) float64 array, or None when the mask is empty.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> float:
    """Intersection over union of two boxes, each (4,) xyxy in pixels; 0 when both are empty."""
    x1, y1 = max(a_xyxy[0], b_xyxy[0]), max(a_xyxy[1], b_xyxy[1])
    x2, y2 = min(a_xyxy[2], b_xyxy[2]), min(a_xyxy[3], b_xyxy[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area_a = max(0.0, a_xyxy[2] - a_xyxy[0]) * max(0.0, a_xyxy[3] - a_xyxy[1])
    area_b = max(0.0, b_xyxy[2] - b_xyxy[0]) * max(0.0, b_xyxy[3] - b_xyxy[1])
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


def xyxy_to_xywh(box: np.ndarray) -> list[float]:
    """``(x1, y1, x2, y2)`` to COCO ``[x, y, w, h]``, pixels, as plain floats."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def xywh_to_xyxy(box: list[float] | np.ndarray) -> np.ndarray:
    """COCO ``[x, y, w, h]`` to ``(x1, y1, x2, y2)``, pixels, as a (4,) float64 array."""
    x, y, w, h = (float(v) for v in box)
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def clip_masks_to_boxes(
    masks: np.ndarray, boxes_xyxy: np.ndarray, margin: float = 0.05
) -> np.ndarray:
    """Keep each mask inside its prompt box, grown by ``margin`` of the box's size per side.

    SAM's box-prompted masks sometimes leak into an adjacent surface of the same colour
    (a sofa into the wall behind it); the detector's box bounds the object, so pixels far
    outside it are not the object.

    Args:
        masks: (N, H, W) bool.
        boxes_xyxy: (N, 4) float xyxy boxes in pixels.
        margin: fraction of the box's width/height allowed outside it on each side.

    Returns:
        (N, H, W) bool, a new array.
    """
    clipped = np.zeros_like(masks, dtype=bool)
    height, width = masks.shape[1:3]
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes_xyxy, dtype=np.float64)):
        dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
        # rounded, not floored/ceiled: on a thin box (a lamp's pole) a whole extra pixel per
        # side would be a large share of the box
        left, top = max(round(x1 - dx), 0), max(round(y1 - dy), 0)
        right, bottom = min(round(x2 + dx), width), min(round(y2 + dy), height)
        clipped[i, top:bottom, left:right] = masks[i, top:bottom, left:right]
    return clipped
