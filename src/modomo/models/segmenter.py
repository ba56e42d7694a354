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

from typing import Any

import numpy as np

from modomo.analysis.masks import BoxMask, box_region
from modomo.models.device import torch_dtype
from modomo.models.weights import Weights

__all__ = ["BOX_MARGIN", "Sam2Segmenter", "bilinear_taps", "paste_in_region"]

BOXES_PER_CALL = 64
"""Box prompts decoded per mask-decoder call (bounds memory on crowded scenes)."""

BOX_MARGIN = 0.05
"""A mask is kept inside its prompt box grown by this fraction of the box's size per side:
SAM's box-prompted masks sometimes leak into an adjacent surface of the same colour (a sofa
into the wall behind it), and pixels far outside the detector's box are not the object."""


def bilinear_taps(size_in: int, size_out: int, device: Any = "cpu") -> tuple[Any, Any, Any]:
    """Per output pixel, the two input pixels and the weight of the second, as PyTorch's
    bilinear upsampling with ``align_corners=False`` computes them
    (``area_pixel_compute_source_index`` in ATen's ``UpSample.h``): source position
    ``max((i + 0.5) * size_in / size_out - 0.5, 0)``.

    Returns:
        ``(lower, upper, weight)``: (size_out,) int64, int64 and float32 torch tensors.
    """
    import torch

    scale = torch.tensor(size_in / size_out, dtype=torch.float32)
    source = ((torch.arange(size_out, device=device, dtype=torch.float32) + 0.5) * scale - 0.5)
    source = source.clamp_min(0)
    lower = source.floor().long().clamp_max(size_in - 1)
    upper = (lower + 1).clamp_max(size_in - 1)
    return lower, upper, source - lower


def paste_in_region(
    logits: Any,
    rows: tuple[Any, Any, Any],
    cols: tuple[Any, Any, Any],
    region: tuple[int, int, int, int],
    threshold: float = 0.0,
) -> Any:
    """Upsample one mask's logits over a region of the image and threshold them.

    Args:
        logits: (h, w) float torch tensor, the mask decoder's low-resolution output for the
            whole image.
        rows, cols: :func:`bilinear_taps` from ``h`` to the image height and from ``w`` to
            the image width (computed once per image).
        region: ``(x1, y1, x2, y2)`` integer pixels, exclusive right/bottom edge.
        threshold: logit above which a pixel is in the mask (0, as ``post_process_masks``).

    Returns:
        (y2 - y1, x2 - x1) bool torch tensor on the logits' device.
    """
    x1, y1, x2, y2 = region
    top, bottom, wy = (t[y1:y2] for t in rows)
    left, right, wx = (t[x1:x2] for t in cols)
    wy, wx = wy[:, None], wx[None, :]
    band = logits[top] * (1 - wy) + logits[bottom] * wy  # (region rows, w)
    values = band[:, left] * (1 - wx) + band[:, right] * wx
    return values > threshold


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
        self, images: list[Any], boxes: list[np.ndarray]
    ) -> list[tuple[list[BoxMask], np.ndarray]]:
        """One mask per box, inside the box grown by :data:`BOX_MARGIN`.

        Args:
            images: (H, W, 3) uint8 RGB arrays (or (3, H, W) uint8 torch tensors, e.g.
                decoded on the device).
            boxes: per image, (N, 4) float xyxy prompt boxes in that image's pixels.

        Returns:
            Per image ``(masks, scores)``: N :class:`BoxMask` and (N,) float32 predicted IoU
            scores.
        """
        import torch

        results: list[tuple[list[BoxMask], np.ndarray]] = []
        with torch.inference_mode():
            encoded = self.processor(images=images, return_tensors="pt")
            pixels = encoded["pixel_values"].to(self.device, self.dtype)
            embeddings = self.model.get_image_embeddings(pixels)
            sizes = [[int(v) for v in size] for size in encoded["original_sizes"]]
            for index, (size, image_boxes) in enumerate(zip(sizes, boxes, strict=True)):
                if len(image_boxes) == 0:
                    results.append(([], np.zeros((0,), np.float32)))
                    continue
                image_embeddings = [level[index : index + 1] for level in embeddings]
                masks: list[BoxMask] = []
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
                    masks.extend(self._paste(output.pred_masks[0, :, 0].float(), chunk, size))
                    scores.append(output.iou_scores[0, :, 0].float().cpu().numpy())
                results.append((masks, np.concatenate(scores)))
        return results

    def _paste(self, logits: Any, boxes: np.ndarray, size: list[int]) -> list[BoxMask]:
        height, width = size
        rows = bilinear_taps(logits.shape[-2], height, logits.device)
        cols = bilinear_taps(logits.shape[-1], width, logits.device)
        masks = []
        for mask_logits, box in zip(logits, boxes, strict=True):
            region = box_region(box, height, width, BOX_MARGIN)
            crop = paste_in_region(mask_logits, rows, cols, region)
            masks.append(BoxMask(region[0], region[1], crop.cpu().numpy(), height, width))
        return masks
