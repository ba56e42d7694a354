"""Masks and boxes: box-region masks, COCO RLE encoding and the box arithmetic the detection
pipeline needs.

An object's mask is kept as the runs of ones down the columns of its box region
(:class:`BoxMask`): on a 12-megapixel photo with 40 objects, full-size masks are 480 MB of
booleans and every per-object step over them costs the whole image; even box-region booleans
cost the region's pixels per step, which for large ragged masks is most of a worker's host
time. :func:`encode_box_rle` writes a box mask's COCO RLE straight from its runs, equal to
pycocotools' ``encode`` of the full-size mask without building it; our own because
pycocotools only encodes full-size Fortran-order arrays. Decoding and the string compression
of the counts are pycocotools' (the COCO API), so the stored masks read back with the same
library every COCO tool uses. Box conventions are named in every signature: ``xyxy`` is
``(x1, y1, x2, y2)`` and ``xywh`` is COCO's ``(x, y, width, height)``, both in pixels with the
origin at the image's top-left corner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

__all__ = [
    "BoxMask",
    "box_iou",
    "box_region",
    "clip_masks_to_boxes",
    "decode_rle",
    "encode_box_rle",
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


@dataclass(frozen=True, eq=False)
class BoxMask:
    """A binary mask stored as the runs of ones down the columns of a region of its image:
    everything outside the region is False.

    Runs rather than booleans because a mask's every use needs only its runs: COCO's RLE is
    the runs in image order, the area their sum, a uniform sample of pixels a draw over
    their lengths. A pasted mask's runs come straight from the mask decoder's logits (cost
    proportional to the region's width times the logit rows under it), so no per-object step
    costs the pixels of the region, however ragged the mask.

    Attributes:
        x, y: the region's top-left corner in image pixels.
        shape: the region's ``(height, width)`` in pixels (``image[y:y+h, x:x+w]``).
        columns: (n,) int64, each run's column in the region.
        starts: (n,) int64, each run's first row in the region.
        lengths: (n,) int64, each run's length in rows (> 0). Runs are sorted by column then
            row, and two runs of a column neither overlap nor touch.
        image_height, image_width: the full image's size in pixels.

    Raises:
        ValueError: the region is outside the image, or a run outside the region.
    """

    x: int
    y: int
    shape: tuple[int, int]
    columns: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    image_height: int
    image_width: int

    def __post_init__(self) -> None:
        h, w = self.shape
        if not (
            self.x >= 0
            and self.y >= 0
            and self.x + w <= self.image_width
            and self.y + h <= self.image_height
        ):
            raise ValueError(
                f"box mask region {w}x{h} at ({self.x}, {self.y}) is outside its "
                f"{self.image_width}x{self.image_height} image"
            )
        if self.columns.size and not (
            self.columns.min() >= 0
            and self.columns.max() < w
            and self.starts.min() >= 0
            and (self.starts + self.lengths).max() <= h
            and self.lengths.min() > 0
        ):
            raise ValueError(f"a run of a box mask is outside its {w}x{h} region")

    @classmethod
    def from_runs(
        cls,
        region_xyxy: tuple[int, int, int, int],
        columns: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        height: int,
        width: int,
    ) -> BoxMask:
        """A mask from the runs of its region's columns, sorted by column then row; runs of a
        column that touch are joined and empty ones dropped.

        Args:
            region_xyxy: integer pixel region, exclusive right/bottom edge, inside the image.
            columns, starts, ends: (n,) ints, each run's region column, first row and row
                after its last.
            height, width: the image's size in pixels.
        """
        x1, y1, x2, y2 = region_xyxy
        columns, starts, ends = (np.asarray(a, np.int64) for a in (columns, starts, ends))
        keep = ends > starts
        columns, starts, ends = columns[keep], starts[keep], ends[keep]
        # a run continues the previous one when in the same column and starting at its end
        joins = np.zeros(columns.size, bool)
        joins[1:] = (columns[1:] == columns[:-1]) & (starts[1:] == ends[:-1])
        first = np.flatnonzero(~joins)
        last = np.append(first[1:], columns.size)[: first.size] - 1
        return cls(
            x1,
            y1,
            (y2 - y1, x2 - x1),
            columns[first],
            starts[first],
            ends[last] - starts[first],
            height,
            width,
        )

    @classmethod
    def from_crop(cls, x: int, y: int, crop: np.ndarray, height: int, width: int) -> BoxMask:
        """A mask from its region's booleans (cost proportional to the region's area).

        Args:
            x, y: the region's top-left corner in image pixels.
            crop: (h, w) bool, the mask inside the region (either memory order; Fortran order
                reads without a copy).
            height, width: the image's size in pixels.
        """
        rows, cols = crop.shape
        region = (x, y, x + cols, y + rows)
        if crop.size == 0:
            empty = np.zeros(0, np.int64)
            return cls.from_runs(region, empty, empty, empty, height, width)
        flat = np.asarray(crop, bool).T.reshape(-1).view(np.uint8)  # column by column
        switch = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        switch = switch[switch % rows != 0]  # between two pixels of the same column
        on = switch[flat[switch] == 1]
        off = switch[flat[switch] == 0]
        # (column, row) of each start and end: a column's first pixel on starts a run at row
        # 0, its last pixel on ends one at row ``rows``
        start_col = np.concatenate((on // rows, np.flatnonzero(flat[::rows])))
        start_row = np.concatenate((on % rows, np.zeros(start_col.size - on.size, np.int64)))
        end_col = np.concatenate((off // rows, np.flatnonzero(flat[rows - 1 :: rows])))
        end_row = np.concatenate((off % rows, np.full(end_col.size - off.size, rows)))
        starts_order = np.lexsort((start_row, start_col))
        ends_order = np.lexsort((end_row, end_col))
        return cls.from_runs(
            region,
            start_col[starts_order],
            start_row[starts_order],
            end_row[ends_order],
            height,
            width,
        )

    @classmethod
    def filled(cls, region_xyxy: tuple[int, int, int, int], height: int, width: int) -> BoxMask:
        """A mask that is True over a whole region (an object without a segmentation mask).

        Args:
            region_xyxy: integer pixel region, exclusive right/bottom edge, inside the image.
        """
        x1, y1, x2, y2 = region_xyxy
        columns = np.arange(x2 - x1 if y2 > y1 else 0)
        zeros = np.zeros_like(columns)
        return cls.from_runs(region_xyxy, columns, zeros, zeros + y2 - y1, height, width)

    @property
    def area(self) -> int:
        """Pixels in the mask."""
        return int(self.lengths.sum())

    def bbox_xyxy(self) -> np.ndarray | None:
        """The tight box around the mask's pixels, xyxy in image pixels (exclusive right and
        bottom edge): (4,) float64, or None when the mask is empty."""
        if self.columns.size == 0:
            return None
        return np.array(
            [
                self.x + self.columns[0],
                self.y + self.starts.min(),
                self.x + self.columns[-1] + 1,
                self.y + (self.starts + self.lengths).max(),
            ],
            dtype=np.float64,
        )

    def _pixels(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image ``(rows, cols)`` of the mask's pixels numbered ``index`` (n,) int64, counting
        run by run."""
        ends = np.cumsum(self.lengths)
        run = np.searchsorted(ends, index, side="right")
        rows = self.starts[run] + index - (ends[run] - self.lengths[run])
        return rows + self.y, self.columns[run] + self.x

    @property
    def crop(self) -> np.ndarray:
        """The region's (h, w) bool mask, in Fortran (column-major) order (tests and small
        images: it costs the region's area)."""
        h, w = self.shape
        out = np.zeros((w, h), bool)
        rows, cols = self._pixels(np.arange(self.area))
        out[cols - self.x, rows - self.y] = True
        return out.T

    def to_full(self) -> np.ndarray:
        """The full-size (image_height, image_width) bool mask (tests and small images only)."""
        full = np.zeros((self.image_height, self.image_width), bool)
        h, w = self.shape
        full[self.y : self.y + h, self.x : self.x + w] = self.crop
        return full

    def sample(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``count`` of the mask's pixels drawn uniformly with replacement, or all of them
        when the mask has no more (cost proportional to ``count`` and the runs, not the area).

        Returns:
            ``(rows, cols)``: (n,) int64 image coordinates. Equal masks and seed give equal
            samples.
        """
        area = self.area
        if area <= count:
            index = np.arange(area)
        else:
            # in order: the runs are then searched front to back (twice as fast)
            index = np.sort(np.random.default_rng(seed).integers(0, area, count))
        return self._pixels(index)


def encode_box_rle(mask: BoxMask) -> dict[str, Any]:
    """The COCO RLE of a box mask, as :func:`encode_rle` gives for its full-size mask.

    COCO's RLE runs over the image in column-major order, starting with a run of zeros
    (possibly empty): the mask's runs are already in that order, so the counts are the gaps
    between them, offset to the image (cost proportional to the runs). A run ending at the
    bottom of one image column and one starting at the top of the next are one run. The
    counts are compressed to pycocotools' string form by pycocotools itself.

    Returns:
        ``{"size": [H, W], "counts": str}``.
    """
    height, width = mask.image_height, mask.image_width
    on = (mask.columns + mask.x) * height + mask.y + mask.starts
    edges = np.stack((on, on + mask.lengths), axis=1).reshape(-1)  # alternately on, off
    # an "off" at the bottom of a column equals an "on" at the top of the next: one run
    keep = np.ones(edges.size, bool)
    joined = np.flatnonzero(edges[1:-1:2] == edges[2::2]) * 2 + 1
    keep[joined] = keep[joined + 1] = False
    edges = edges[keep]
    counts = np.diff(np.concatenate(([0], edges, [height * width])))
    if counts.size > 1 and counts[-1] == 0:  # ones up to the last pixel: no final zero run
        counts = counts[:-1]
    rle = mask_utils.frPyObjects(
        {"size": [height, width], "counts": counts.tolist()}, height, width
    )
    return {"size": [height, width], "counts": rle["counts"].decode()}


def box_region(
    box_xyxy: np.ndarray, height: int, width: int, margin: float = 0.0
) -> tuple[int, int, int, int]:
    """The integer pixel region a box covers, grown by ``margin`` of its size per side and
    clipped to the image.

    With ``margin`` 0 the region is every pixel the box touches (floor/ceil); otherwise the
    grown edges are rounded: on a thin box (a lamp's pole) a whole extra pixel per side would
    be a large share of the box.

    Args:
        box_xyxy: (4,) float xyxy in pixels.

    Returns:
        ``(x1, y1, x2, y2)`` ints, exclusive right/bottom edge, possibly empty.
    """
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    if margin:
        dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
        left, top, right, bottom = round(x1 - dx), round(y1 - dy), round(x2 + dx), round(y2 + dy)
    else:
        left, top = int(np.floor(x1)), int(np.floor(y1))
        right, bottom = int(np.ceil(x2)), int(np.ceil(y2))
    left, top = min(max(left, 0), width), min(max(top, 0), height)
    return left, top, max(min(right, width), left), max(min(bottom, height), top)


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
    for i, box in enumerate(np.asarray(boxes_xyxy, dtype=np.float64)):
        left, top, right, bottom = box_region(box, height, width, margin)
        clipped[i, top:bottom, left:right] = masks[i, top:bottom, left:right]
    return clipped
