"""The segmenter: SAM 2.1 prompted with the detector's boxes, one mask per box.

transformers' ``Sam2Model`` rather than ultralytics' SAM 2: its image encoder runs once on a
whole batch of images (``get_image_embeddings``), and each image's boxes are then decoded
against its cached embedding, so batching and the box prompts are both explicit; it loads
the official ``facebook/sam2.1-*`` checkpoints from the hub cache like the other
transformers models, under the same offline rules. (Ultralytics' SAM wrapper takes one image
per call and downloads its own weight files.)

Masks are pasted into their box region only (:func:`paste_in_region`), on the model's
device: the mask decoder's low-resolution logits (256x256 for SAM 2.1) are upsampled for the
region's pixels alone, with the same bilinear sampling as the processor's
``post_process_masks`` (``F.interpolate(..., mode="bilinear", align_corners=False)`` to the
whole image), and only the region's booleans are copied to the host. The cost is
proportional to the box's area, not the image's; the processor's way costs a full-size float
upsampling per box (9 s per 12-megapixel photo with 40 objects on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modomo.analysis.masks import BoxMask, box_region
from modomo.models.device import torch_dtype
from modomo.models.weights import Weights

__all__ = [
    "BOX_MARGIN",
    "PendingMask",
    "Sam2Segmenter",
    "bilinear_taps",
    "masks_from_logits",
    "paste_in_region",
    "paste_masks",
]

BOXES_PER_CALL = 64
"""Box prompts decoded per mask-decoder call (bounds memory on crowded scenes)."""

BOX_MARGIN = 0.05
"""A mask is kept inside its prompt box grown by this fraction of the box's size per side:
SAM's box-prompted masks sometimes leak into an adjacent surface of the same colour (a sofa
into the wall behind it), and pixels far outside the detector's box are not the object."""


def bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output pixel, the two input pixels and the weight of the second, as PyTorch's
    bilinear upsampling with ``align_corners=False`` computes them
    (``area_pixel_compute_source_index`` in ATen's ``UpSample.h``): source position
    ``max((i + 0.5) * size_in / size_out - 0.5, 0)``, in float32.

    Returns:
        ``(lower, upper, weight)``: (size_out,) int64, int64 and float32 arrays.
    """
    scale = np.float32(size_in / size_out)
    source = (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    source = np.maximum(source, np.float32(0))
    lower = np.minimum(source.astype(np.int64), size_in - 1)
    upper = np.minimum(lower + 1, size_in - 1)
    return lower, upper, (source - lower).astype(np.float32)


def paste_in_region(
    logits: Any,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    cols: tuple[np.ndarray, np.ndarray, np.ndarray],
    region: tuple[int, int, int, int],
    threshold: float = 0.0,
) -> np.ndarray:
    """Upsample one mask's logits over a region of the image and threshold them.

    On an accelerator (``logits`` a torch tensor there) every pixel of the region is
    interpolated on the device and only the booleans are copied to the host. On the CPU
    (``logits`` a NumPy array: no torch, so host threads do not contend for torch's thread
    pool) the same result is found cell by cell: a pixel's value is a convex combination of
    the four logits around it, so where all four are above the threshold (or none is) the
    whole cell of pixels between them is decided at once, and only the pixels of cells on
    the mask's edge are interpolated (every pixel is, when more than :data:`EDGE_CELLS` of the
    cells are on an edge).

    Args:
        logits: (h, w) float array or torch tensor, the mask decoder's low-resolution output
            for the whole image.
        rows, cols: :func:`bilinear_taps` from ``h`` to the image height and from ``w`` to
            the image width (computed once per image).
        region: ``(x1, y1, x2, y2)`` integer pixels, exclusive right/bottom edge.
        threshold: logit above which a pixel is in the mask (0, as ``post_process_masks``).

    Returns:
        (y2 - y1, x2 - x1) bool array in Fortran (column-major) order, COCO RLE's order.
    """
    if isinstance(logits, np.ndarray):
        crop = _paste_by_cells(logits, rows, cols, region, threshold)
        if crop is not None:
            return crop
        return _paste_by_rows(logits, rows, cols, region, threshold)
    import torch

    def on_device(taps: np.ndarray) -> Any:
        return torch.from_numpy(taps).to(logits.device)

    values = _interpolate(logits, rows, cols, region, on_device)
    return np.ascontiguousarray((values > threshold).cpu().numpy()).T


def _interpolate(
    grid: Any,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    cols: tuple[np.ndarray, np.ndarray, np.ndarray],
    region: tuple[int, int, int, int],
    convert: Callable[[np.ndarray], Any],
) -> Any:
    """Every pixel of the region, columns first, reading only the grid rows under it.

    Args:
        grid: (h, w) float NumPy array or torch tensor.
        convert: turns NumPy taps into the grid's kind of array (and device).

    Returns:
        (region columns, region rows) float values: the region transposed (made contiguous
        in that order, its ``.T`` is in COCO's column order).
    """
    x1, y1, x2, y2 = region
    top, bottom, wy = (t[y1:y2] for t in rows)
    left, right, wx = (t[x1:x2] for t in cols)
    if top.size == 0 or left.size == 0:
        return convert(np.zeros((left.size, top.size), np.float32))
    first = int(top[0])
    sub = grid[first : int(bottom[-1]) + 1]
    left, right, wx = convert(left), convert(right), convert(wx)
    band = (sub[:, left] * (1 - wx) + sub[:, right] * wx).T  # (region columns, sub rows)
    upper, lower, wy = convert(top - first), convert(bottom - first), convert(wy)
    return band[:, upper] * (1 - wy) + band[:, lower] * wy


def _paste_by_rows(
    grid: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    cols: tuple[np.ndarray, np.ndarray, np.ndarray],
    region: tuple[int, int, int, int],
    threshold: float,
) -> np.ndarray:
    """:func:`paste_in_region` for a ragged mask on the CPU: every pixel interpolated, the
    same arithmetic as :func:`_interpolate`, but one run of image rows between the same two
    grid rows at a time, written straight into the column-major result (cache-sized blocks,
    no full-size gathers or temporaries: several times faster on a 12-megapixel region)."""
    x1, y1, x2, y2 = region
    top, bottom, wy = (t[y1:y2] for t in rows)
    left, right, wx = (t[x1:x2] for t in cols)
    out = np.zeros((left.size, top.size), bool)  # (region columns, region rows)
    if top.size == 0 or left.size == 0:
        return out.T
    first = int(top[0])
    sub = grid[first : int(bottom[-1]) + 1]
    band = np.ascontiguousarray((sub[:, left] * (1 - wx) + sub[:, right] * wx).T)
    starts, counts = _runs(top)
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        upper = band[:, int(top[start]) - first, None]
        lower = band[:, int(bottom[start]) - first, None]
        weight = wy[start : start + count]
        np.greater(
            upper * (1 - weight) + lower * weight, threshold, out=out[:, start : start + count]
        )
    return out.T


EDGE_CELLS = 0.25
"""Above this share of edge cells in a region (a ragged mask: random weights), interpolating
every pixel is cheaper than cell by cell."""


def _paste_by_cells(
    grid: np.ndarray,
    rows: tuple[Any, Any, Any],
    cols: tuple[Any, Any, Any],
    region: tuple[int, int, int, int],
    threshold: float,
) -> np.ndarray | None:
    """:func:`paste_in_region` cell by cell on the CPU, or None for a ragged mask."""
    x1, y1, x2, y2 = region
    top, bottom, wy = (t[y1:y2] for t in rows)
    left, right, wx = (t[x1:x2] for t in cols)
    row_start, row_count = _runs(top)
    col_start, col_count = _runs(left)
    # per cell (i, j): its four corners (i or i+1, j or j+1; clamped at the last) above?
    above = np.pad(grid > threshold, ((0, 1), (0, 1)), mode="edge")
    corners = (above[:-1, :-1], above[1:, :-1], above[:-1, 1:], above[1:, 1:])
    cell_rows, cell_cols = np.ix_(top[row_start], left[col_start])
    all_on = np.logical_and.reduce(corners)[cell_rows, cell_cols]
    edge = np.logical_or.reduce(corners)[cell_rows, cell_cols] & ~all_on
    if edge.size and np.count_nonzero(edge) > EDGE_CELLS * edge.size:
        return None
    # (region columns, region rows) in C order: the region's transpose, built block by block
    out = np.repeat(np.repeat(all_on.T, col_count, axis=0), row_count, axis=1)
    cells = np.nonzero(edge)
    r, c = _cell_pixels((cells[0], cells[1]), row_start, row_count, col_start, col_count)
    if r.size:
        ty, tx = wy[r], wx[c]
        band_left = grid[top[r], left[c]] * (1 - ty) + grid[bottom[r], left[c]] * ty
        band_right = grid[top[r], right[c]] * (1 - ty) + grid[bottom[r], right[c]] * ty
        out[c, r] = band_left * (1 - tx) + band_right * tx > threshold
    return out.T


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of equal values of a non-decreasing (n,) array."""
    starts = np.flatnonzero(np.diff(values, prepend=values[:1] - 1)) if values.size else values
    return starts, np.diff(np.append(starts, values.size))


def _cell_pixels(
    cells: tuple[np.ndarray, np.ndarray],
    row_start: np.ndarray,
    row_count: np.ndarray,
    col_start: np.ndarray,
    col_count: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The region pixels ``(rows, cols)`` of the given cells (indices into the runs)."""
    a, b = cells
    if a.size == 0:
        return a, b
    height, width = row_count[a], col_count[b]
    dr = np.arange(height.max())[None, :, None]
    dc = np.arange(width.max())[None, None, :]
    inside = (dr < height[:, None, None]) & (dc < width[:, None, None])
    r = np.broadcast_to(row_start[a][:, None, None] + dr, inside.shape)[inside]
    c = np.broadcast_to(col_start[b][:, None, None] + dc, inside.shape)[inside]
    return r, c


def paste_masks(logits: Any, boxes: np.ndarray, size: Sequence[int]) -> list[BoxMask]:
    """Each box's mask, pasted into the box grown by :data:`BOX_MARGIN`.

    Args:
        logits: (N, h, w) float torch tensor on the model's device, or NumPy array, the mask
            decoder's low-resolution logits for the whole image.
        boxes: (N, 4) float xyxy prompt boxes in image pixels.
        size: the image's ``(height, width)``.

    Returns:
        N :class:`BoxMask`, their regions copied to the host.
    """
    height, width = size
    rows = bilinear_taps(logits.shape[-2], height)
    cols = bilinear_taps(logits.shape[-1], width)
    masks = []
    for mask_logits, box in zip(logits, boxes, strict=True):
        region = box_region(box, height, width, BOX_MARGIN)
        crop = paste_in_region(mask_logits, rows, cols, region)
        masks.append(BoxMask(region[0], region[1], crop, height, width))
    return masks


@dataclass(frozen=True)
class PendingMask:
    """A box's mask logits not yet pasted: on a CPU the pasting is host work, done in a host
    process or thread with the rest of the scene's (:mod:`modomo.inference.host`), not on
    the thread that feeds the models.

    Only the window of the low-resolution grid that pasting the box's region reads is kept
    (a few percent of it for most objects), so what goes to a host process is small.

    Attributes:
        logits: (h, w) float32 array, the window of the low-resolution logits.
        box: (4,) float xyxy prompt box in the scene's pixels.
        size: the scene's ``(height, width)``.
        offset: the window's ``(row, column)`` in the grid.
        grid: the whole grid's ``(rows, columns)``.
    """

    logits: np.ndarray
    box: np.ndarray
    size: tuple[int, int]
    offset: tuple[int, int] = (0, 0)
    grid: tuple[int, int] | None = None

    def paste(self) -> BoxMask:
        """The mask pasted into the box grown by :data:`BOX_MARGIN` (see :func:`paste_masks`);
        the same as pasting from the whole grid, whose cells outside the window it never
        reads."""
        grid = self.logits
        if self.grid is not None and grid.shape != self.grid:
            grid = np.zeros(self.grid, np.float32)
            row, col = self.offset
            grid[row : row + self.logits.shape[0], col : col + self.logits.shape[1]] = self.logits
        return paste_masks(grid[None], self.box[None], self.size)[0]


def masks_from_logits(
    logits: Any, boxes: np.ndarray, size: Sequence[int]
) -> list[BoxMask] | list[PendingMask]:
    """Each box's mask: pasted now on an accelerator, left to the host on the CPU (with only
    the window of the grid that its region reads).

    Args:
        logits: (N, h, w) float torch tensor on the model's device.
        boxes: (N, 4) float xyxy boxes in the scene's pixels.
        size: the scene's ``(height, width)``.
    """
    if logits.device.type != "cpu":
        return paste_masks(logits, boxes, size)
    height, width = size
    grids = logits.float().numpy()
    shape = (grids.shape[-2], grids.shape[-1])
    rows = bilinear_taps(shape[0], height)
    cols = bilinear_taps(shape[1], width)
    pending = []
    for grid, box in zip(grids, boxes, strict=True):
        x1, y1, x2, y2 = box_region(box, height, width, BOX_MARGIN)
        if x2 <= x1 or y2 <= y1:  # nothing to paste
            window, offset = np.zeros((0, 0), np.float32), (0, 0)
        else:
            # the grid rows and columns the region's bilinear taps read, both ends included
            r0, r1 = int(rows[0][y1]), int(rows[1][y2 - 1])
            c0, c1 = int(cols[0][x1]), int(cols[1][x2 - 1])
            window, offset = grid[r0 : r1 + 1, c0 : c1 + 1].copy(), (r0, c0)
        pending.append(PendingMask(window, box, (height, width), offset, shape))
    return pending


class Sam2Segmenter:
    """SAM 2.1 (transformers) box-prompted masks.

    Args:
        weights: resolved weights folder (``config.json``, safetensors, processor config).
        device: torch device string.
        half: float16 on CUDA.
    """

    def __init__(self, weights: Weights, device: str, *, half: bool) -> None:
        from transformers import Sam2Model, Sam2Processor

        self.weights = weights
        self.device = device
        self.dtype = torch_dtype(device, half)
        self.processor = Sam2Processor.from_pretrained(str(weights.path))
        self.model = Sam2Model.from_pretrained(str(weights.path), dtype=self.dtype)
        self.model.to(device).eval()  # type: ignore[arg-type]

    def segment(
        self,
        images: list[Any],
        boxes: list[np.ndarray],
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[tuple[list[BoxMask | PendingMask], np.ndarray]]:
        """One mask per box, inside the box grown by :data:`BOX_MARGIN`.

        Args:
            images: (h, w, 3) uint8 RGB arrays, the model's inputs (possibly reduced copies
                of the scenes: the encoder sees 1024x1024 either way).
            boxes: per image, (N, 4) float xyxy prompt boxes in that input's pixels.
            sizes: per image, the scene's own ``(height, width)``: masks are pasted at that
                size, the box regions scaled to it (default: the inputs' sizes).

        Returns:
            Per image ``(masks, scores)``: N :class:`BoxMask` (:class:`PendingMask` on the
            CPU, see :func:`masks_from_logits`) and (N,) float32 predicted IoU scores.
        """
        import torch

        results: list[tuple[list[BoxMask | PendingMask], np.ndarray]] = []
        with torch.inference_mode():
            encoded = self.processor(images=images, return_tensors="pt")
            pixels = encoded["pixel_values"].to(self.device, self.dtype)
            embeddings = self.model.get_image_embeddings(pixels)
            inputs = [[int(v) for v in size] for size in encoded["original_sizes"]]
            targets = [list(s) for s in sizes] if sizes is not None else inputs
            for index, (size, image_boxes) in enumerate(zip(inputs, boxes, strict=True)):
                if len(image_boxes) == 0:
                    results.append(([], np.zeros((0,), np.float32)))
                    continue
                image_embeddings = [level[index : index + 1] for level in embeddings]
                (height, width), (h, w) = targets[index], size
                scale = np.array([width / w, height / h] * 2, np.float32)  # to the scene
                masks: list[BoxMask | PendingMask] = []
                scores = []
                for start in range(0, len(image_boxes), BOXES_PER_CALL):
                    chunk = np.asarray(image_boxes[start : start + BOXES_PER_CALL], np.float32)
                    prompt = self.processor(
                        original_sizes=[size], input_boxes=[chunk.tolist()], return_tensors="pt"
                    )
                    output = self.model(
                        image_embeddings=image_embeddings,
                        input_boxes=prompt["input_boxes"].to(self.device, self.dtype),
                        multimask_output=False,
                    )
                    logits = output.pred_masks[0, :, 0].float()
                    masks.extend(masks_from_logits(logits, chunk * scale, targets[index]))
                    scores.append(output.iou_scores[0, :, 0].float().cpu().numpy())
                results.append((masks, np.concatenate(scores)))
        return results
