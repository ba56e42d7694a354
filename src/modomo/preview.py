"""Preview images for humans: a scene's detected objects drawn over its photograph.

:func:`render_preview` draws each stored object (mask fill, box and a ``"sofa 0.87"`` label)
with supervision's annotators and returns a PNG; :func:`contact_sheet` tiles several previews
into one PNG (an export's contact sheet). Nothing here touches Celery or the database: the
caller passes the decoded photograph and the object rows as plain mappings.

Colours are chosen by category, and the choice is stable across scenes and processes (a CRC-32
of the category name picks the palette entry), so a sofa has the same colour in every preview.
Different categories can share a colour when there are more categories than palette entries.

The photograph is downscaled *before* drawing, and boxes and masks are scaled with it, so the
line thickness and label text are sized for the preview that is actually looked at (labels
drawn on a 4,000-pixel photograph and then shrunk to 512 would be unreadable), and the mask
blending runs on the small image.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import supervision as sv
from PIL import Image

from modomo.analysis.masks import decode_rle, xywh_to_xyxy

__all__ = ["contact_sheet", "render_preview"]

_PALETTE = sv.ColorPalette.DEFAULT
_SHEET_BACKGROUND = (24, 24, 27)
_MIN_TEXT_SCALE = 0.35


def _class_id(category: str) -> int:
    """A palette index for a category name, the same in every process (unlike ``hash``)."""
    return zlib.crc32(category.encode("utf-8")) % len(_PALETTE.colors)


def _check_rgb(rgb: Any) -> tuple[int, int]:
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"expected an (H, W, 3) uint8 numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got shape {rgb.shape} {rgb.dtype}")
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    if height == 0 or width == 0:
        raise ValueError(f"expected a non-empty image, got shape {rgb.shape}")
    return height, width


def _target_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """(width, height) with the longest side at most ``max_size``; never upscales."""
    if max_size is None:
        return width, height
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise ValueError(f"max_size must be a positive int or None, got {max_size!r}")
    scale = max_size / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool to (size[1], size[0]) bool; a pixel is in when half its area or more was."""
    if (mask.shape[1], mask.shape[0]) == size:
        return mask
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(small) >= 128


def _to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def render_preview(
    rgb: np.ndarray,
    objects: Sequence[Mapping[str, Any]],
    max_size: int | None = 512,
) -> bytes:
    """Draw a scene's detected objects over its photograph, as a PNG.

    Args:
        rgb: The photograph, (H, W, 3) uint8, RGB channel order. Not modified.
        objects: Detected objects as stored in the database, each a mapping with
            ``bbox``: ``[x, y, w, h]`` in pixels of ``rgb`` (COCO xywh, top-left corner);
            ``category``: str; ``confidence``: float in [0, 1] (or None: label without score);
            ``mask_rle``: a COCO RLE ``{"size": [H, W], "counts": str}`` of the same size as
            ``rgb``, or None (box and label only). Boxes reaching outside the image are clipped.
        max_size: Longest side of the result in pixels; larger photographs are downscaled
            (Lanczos, aspect ratio kept), smaller ones are never upscaled. None keeps the
            original size.

    Returns:
        PNG bytes of an RGB image, (round(W * s), round(H * s)) pixels where
        ``s = min(1, max_size / max(H, W))``. With no objects it is the (downscaled) photograph
        itself, pixel for pixel when nothing is downscaled.

    Raises:
        ValueError: ``rgb`` is not an (H, W, 3) uint8 array (or is empty); ``max_size`` is not a
            positive int or None; an object lacks ``bbox``/``category``, its ``bbox`` is not four
            numbers, or its ``mask_rle`` is unreadable or its size differs from the photograph's
            (H, W).
    """
    height, width = _check_rgb(rgb)
    out_w, out_h = _target_size(width, height, max_size)
    image = Image.fromarray(rgb)
    if (out_w, out_h) != (width, height):
        image = image.resize((out_w, out_h), Image.Resampling.LANCZOS)
    if not objects:
        return _to_png(image)

    sx, sy = out_w / width, out_h / height
    scale = np.array([sx, sy, sx, sy])
    boxes, masks, confidences, class_ids, names, labels = [], [], [], [], [], []
    has_mask = False
    for index, obj in enumerate(objects):
        try:
            category = str(obj["category"])
            xyxy = xywh_to_xyxy(obj["bbox"]) * scale
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"object {index}: needs a 4-number bbox and a category ({exc})"
            ) from exc
        boxes.append(np.clip(xyxy, 0, [out_w, out_h, out_w, out_h]))
        confidence = obj.get("confidence")
        confidences.append(np.nan if confidence is None else float(confidence))
        class_ids.append(_class_id(category))
        names.append(category)
        labels.append(category if confidence is None else f"{category} {float(confidence):.2f}")
        rle = obj.get("mask_rle")
        if rle is None:
            masks.append(np.zeros((out_h, out_w), dtype=bool))
            continue
        try:
            mask = decode_rle(rle)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"object {index}: unreadable mask_rle ({exc!r})") from exc
        if mask.shape != (height, width):
            raise ValueError(
                f"object {index}: mask size {list(mask.shape)} differs from the image's "
                f"{[height, width]}"
            )
        masks.append(_resize_mask(mask, (out_w, out_h)))
        has_mask = True

    detections = sv.Detections(
        xyxy=np.asarray(boxes, dtype=np.float32),
        mask=np.stack(masks) if has_mask else None,
        confidence=np.asarray(confidences, dtype=np.float32),
        class_id=np.asarray(class_ids, dtype=int),
        data={"class_name": np.asarray(names)},
    )
    resolution = (out_w, out_h)
    thickness = sv.calculate_optimal_line_thickness(resolution)
    # supervision's scale is proportional to the image; below ~0.35 OpenCV's font is unreadable
    text_scale = max(_MIN_TEXT_SCALE, sv.calculate_optimal_text_scale(resolution))
    annotated = image
    if has_mask:
        annotated = sv.MaskAnnotator(color=_PALETTE, opacity=0.45).annotate(annotated, detections)
    annotated = sv.BoxAnnotator(color=_PALETTE, thickness=thickness).annotate(annotated, detections)
    annotated = sv.LabelAnnotator(
        color=_PALETTE,
        text_scale=text_scale,
        text_thickness=max(1, thickness // 2),
        text_padding=max(2, round(text_scale * 8)),
        smart_position=True,
    ).annotate(annotated, detections, labels=labels)
    return _to_png(annotated)


def contact_sheet(previews: Sequence[bytes], columns: int = 4, cell: int = 256) -> bytes:
    """Tile preview images into one sheet, row by row, as a PNG.

    Args:
        previews: Encoded images (PNG or anything Pillow reads), e.g. :func:`render_preview`'s.
        columns: Cells per row; a sheet with fewer previews is only as wide as it needs.
        cell: Side of each square cell in pixels; each preview is shrunk (Lanczos, aspect ratio
            kept, never enlarged) to fit and centred on a dark background.

    Returns:
        PNG bytes of an RGB image, ``min(columns, n) * cell`` wide and
        ``ceil(n / columns) * cell`` high for ``n`` previews.

    Raises:
        ValueError: ``previews`` is empty, or ``columns`` or ``cell`` is below 1.
        PIL.UnidentifiedImageError: a preview is not a readable image.
    """
    if not previews:
        raise ValueError("contact_sheet needs at least one preview")
    if columns < 1 or cell < 1:
        raise ValueError(f"columns and cell must be >= 1, got {columns} and {cell}")
    used_columns = min(columns, len(previews))
    rows = math.ceil(len(previews) / columns)
    sheet = Image.new("RGB", (used_columns * cell, rows * cell), _SHEET_BACKGROUND)
    for index, data in enumerate(previews):
        with Image.open(io.BytesIO(data)) as opened:
            tile = opened.convert("RGB")
        tile.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        row, column = divmod(index, columns)
        left = column * cell + (cell - tile.width) // 2
        top = row * cell + (cell - tile.height) // 2
        sheet.paste(tile, (left, top))
    return _to_png(sheet)
