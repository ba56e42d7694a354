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
whole image), and only the runs of each region column (a :class:`BoxMask`) are copied to the
host. On the CPU the runs are found from the logits without the pixels. The processor's way
costs a full-size float upsampling per box (9 s per 12-megapixel photo with 40 objects on a
CPU).
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
) -> BoxMask:
    """Upsample one mask's logits over a region of the image, threshold them and keep the
    runs of each region column.

    On an accelerator (``logits`` a torch tensor there) every pixel of the region is
    interpolated on the device and only the runs' ends are copied to the host. On the CPU
    (``logits`` a NumPy array: no torch, so host threads do not contend for torch's thread
    pool) the runs are found without the pixels (:func:`_grid_runs`): cost proportional to
    the region's width times the logit rows under it, however ragged the mask.

    Args:
        logits: (h, w) float array or torch tensor, the mask decoder's low-resolution output
            for the whole image.
        rows, cols: :func:`bilinear_taps` from ``h`` to the image height and from ``w`` to
            the image width (computed once per image).
        region: ``(x1, y1, x2, y2)`` integer pixels, exclusive right/bottom edge.
        threshold: logit above which a pixel is in the mask (0, as ``post_process_masks``).

    Returns:
        The region's :class:`BoxMask`.
    """
    if isinstance(logits, np.ndarray):
        columns, starts, ends = _grid_runs(logits, rows, cols, region, threshold)
    else:
        columns, starts, ends = _device_runs(logits, rows, cols, region, threshold)
    return BoxMask.from_runs(region, columns, starts, ends, rows[0].size, cols[0].size)


def _device_runs(
    logits: Any,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    cols: tuple[np.ndarray, np.ndarray, np.ndarray],
    region: tuple[int, int, int, int],
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`paste_in_region` on the logits' device: every pixel, then each column's
    switches; returns the runs' region columns, first rows and ends as (n,) int64."""
    import torch
    import torch.nn.functional as F

    def on_device(taps: np.ndarray) -> Any:
        return torch.from_numpy(taps).to(logits.device)

    values = _interpolate(logits, rows, cols, region, on_device)  # (columns, rows)
    step = torch.diff(F.pad((values > threshold).to(torch.int8), (1, 1)), dim=1)
    starts = torch.nonzero(step == 1).cpu().numpy()  # (column, row), column by column
    ends = torch.nonzero(step == -1).cpu().numpy()
    return starts[:, 0], starts[:, 1], ends[:, 1]


def _interpolate(
    grid: Any,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    cols: tuple[np.ndarray, np.ndarray, np.ndarray],
    region: tuple[int, int, int, int],
    convert: Callable[[np.ndarray], Any],
) -> Any:
    """Every pixel of the region, columns first, reading only the grid rows under it.

    Args:
        grid: (h, w) float torch tensor.
        convert: turns NumPy taps into the grid's kind of array (and device).

    Returns:
        (region columns, region rows) float values: the region transposed.
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


def _grid_runs(
    grid: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    cols: tuple[np.ndarray, np.ndarray, np.ndarray],
    region: tuple[int, int, int, int],
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`paste_in_region` on the CPU, without the pixels.

    Down a region column the upsampled value is, between two grid rows, linear in the rows'
    bilinear weight, which grows with the image row: over the image rows between the same two
    grid rows the mask is on everywhere, nowhere, or on one side of the row where the line
    crosses the threshold. So per column the grid is interpolated across (as
    ``F.interpolate``), and per stretch between two grid rows the crossing row is found
    from the stretch's weights; runs touching across stretches are joined by
    :meth:`BoxMask.from_runs`. A pixel whose value is within float rounding of the threshold
    may fall the other way than in ``F.interpolate``.

    Returns:
        The runs' region columns, first rows and ends, column by column: (n,) int64 each.
    """
    x1, y1, x2, y2 = region
    top, bottom, wy = (t[y1:y2] for t in rows)
    left, right, wx = (t[x1:x2] for t in cols)
    if top.size == 0 or left.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    first = int(top[0])
    sub = grid[first : int(bottom[-1]) + 1]
    band = sub[:, left] * (1 - wx) + sub[:, right] * wx  # (grid rows, region columns)
    stretch, length = _runs(top)  # the region rows between the same two grid rows
    upper = band[top[stretch] - first]  # (stretches, region columns)
    lower = band[bottom[stretch] - first]
    upper_on, lower_on = upper > threshold, lower > threshold
    begin = np.broadcast_to(stretch[:, None], upper.shape).copy()
    end = np.where(upper_on | lower_on, (stretch + length)[:, None], begin)
    crossing = np.nonzero(upper_on != lower_on)
    if crossing[0].size:
        a = upper[crossing].astype(np.float64)
        b = lower[crossing].astype(np.float64)
        weight = (threshold - a) / (b - a)  # where the line crosses the threshold
        rising = b > a  # on past the crossing (larger weights), else before it
        low, high = stretch[crossing[0]], (stretch + length)[crossing[0]]
        # the first region row past the crossing, inverting the taps' source position
        # (y + 0.5) * scale - 0.5, then set right against the rows' own weights
        scale = float(np.float32(grid.shape[0] / rows[0].size))
        source = top[low].astype(np.float64) + weight
        past = np.clip(np.floor((source + 0.5) / scale - 0.5).astype(np.int64) + 1 - y1, low, high)

        def beyond(row: np.ndarray) -> np.ndarray:  # is the region row past the crossing?
            w = wy[np.minimum(row, wy.size - 1)]
            return np.where(rising, w > weight, w >= weight)

        past -= (past > low) & beyond(past - 1)
        past += (past < high) & ~beyond(past)
        begin[crossing] = np.where(rising, past, low)
        end[crossing] = np.where(rising, high, past)
    columns = np.broadcast_to(np.arange(left.size), upper.shape)
    return columns.T.reshape(-1), begin.T.reshape(-1), end.T.reshape(-1)


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of equal values of a non-decreasing (n,) array."""
    starts = np.flatnonzero(np.diff(values, prepend=values[:1] - 1)) if values.size else values
    return starts, np.diff(np.append(starts, values.size))


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
    return [
        paste_in_region(mask_logits, rows, cols, box_region(box, height, width, BOX_MARGIN))
        for mask_logits, box in zip(logits, boxes, strict=True)
    ]


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
