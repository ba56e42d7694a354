"""The segmenter: SAM 2.1 prompted with the detector's boxes, one mask per box.

transformers' ``Sam2Model`` rather than ultralytics' SAM 2: its image encoder runs once on a
whole batch of images (``get_image_embeddings``), and each image's boxes are then decoded
against its cached embedding, so batching and the box prompts are both explicit; it loads
the official ``facebook/sam2.1-*`` checkpoints from the hub cache like the other
transformers models, under the same offline rules. (Ultralytics' SAM wrapper takes one image
per call and downloads its own weight files.)
"""

from __future__ import annotations

import numpy as np

from modomo.models.device import torch_dtype
from modomo.models.weights import Weights

__all__ = ["Sam2Segmenter"]

BOXES_PER_CALL = 64
"""Box prompts decoded per mask-decoder call (bounds memory on crowded scenes)."""


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
        self, images: list[np.ndarray], boxes: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """One mask per box.

        Args:
            images: (H, W, 3) uint8 RGB arrays.
            boxes: per image, (N, 4) float xyxy prompt boxes in that image's pixels.

        Returns:
            Per image ``(masks, scores)``: (N, H, W) bool masks at the image's size and (N,)
            float32 predicted IoU scores.
        """
        import torch

        results: list[tuple[np.ndarray, np.ndarray]] = []
        with torch.inference_mode():
            encoded = self.processor(images=images, return_tensors="pt")
            pixels = encoded["pixel_values"].to(self.device, self.dtype)
            embeddings = self.model.get_image_embeddings(pixels)
            sizes = [[int(v) for v in size] for size in encoded["original_sizes"]]
            for index, (size, image_boxes) in enumerate(zip(sizes, boxes, strict=True)):
                height, width = size
                if len(image_boxes) == 0:
                    results.append((np.zeros((0, height, width), bool), np.zeros((0,), np.float32)))
                    continue
                image_embeddings = [level[index : index + 1] for level in embeddings]
                masks, scores = [], []
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
                    full = self.processor.post_process_masks(
                        output.pred_masks.float().cpu(), [size]
                    )[0]
                    masks.append(full[:, 0].numpy().astype(bool))
                    scores.append(output.iou_scores[0, :, 0].float().cpu().numpy())
                results.append((np.concatenate(masks), np.concatenate(scores)))
        return results
