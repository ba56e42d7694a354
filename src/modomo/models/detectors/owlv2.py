"""The open-vocabulary ViT backend: OWLv2 (transformers), prompted with the taxonomy
(``MODOMO_DETECTOR=owlv2``).

OWLv2 (Minderer et al. 2023, "Scaling Open-Vocabulary Object Detection"; Apache-2.0; default
checkpoint ``google/owlv2-base-patch16-ensemble``) scores every image patch's box against
text query embeddings. Unlike Grounding DINO, the text and the image meet only in the
classification head, so every prompt is a separate query (at most 16 tokens each, no
caption limit): the queries are embedded once when the model loads and each batch of images
is encoded once, whatever the number of prompts. A box takes the query with the highest
logit; its confidence is that logit's sigmoid (transformers' ``post_process_object_detection``
does the same), and the query is a prompt of exactly one category
(:class:`~modomo.analysis.taxonomy.PromptTable`).

OWLv2's image processor pads each image to a square (bottom and right) before resizing, so
its boxes are fractions of the padded square: pixels are fractions times the longer side.
"""

from __future__ import annotations

import numpy as np
import supervision as sv

from modomo.models.detectors.hub import PromptedDetector

__all__ = ["MAX_QUERY_TOKENS", "Owlv2Detector"]

MAX_QUERY_TOKENS = 16
"""OWLv2's text queries are padded or cut to 16 tokens (its position embeddings)."""


class Owlv2Detector(PromptedDetector):
    """OWLv2 on a list of images, every category of the taxonomy prompted (built as
    :class:`~modomo.models.detectors.hub.PromptedDetector`).

    Raises:
        OSError: the folder is not an OWLv2 checkpoint.
    """

    backend = "owlv2"

    def _prepare(self) -> None:
        import torch

        tokens = self.processor.tokenizer(
            self.prompts.prompts,
            padding="max_length",
            max_length=MAX_QUERY_TOKENS,
            truncation=True,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            # (prompts, dim): the queries, embedded once for every image to come
            self.queries = self.model.owlv2.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            ).pooler_output  # projected, as the model's own forward pass uses them

    def detect(self, images: list[np.ndarray]) -> list[sv.Detections]:
        """Detect every prompted category in a batch of images.

        Args:
            images: (H, W, 3) uint8 RGB arrays (sizes may differ).

        Returns:
            One ``supervision.Detections`` per image: ``xyxy`` (N, 4) float32 pixels of that
            image, ``confidence`` (N,), ``data["category"]``, ``data["taxonomy_group"]`` and
            ``data["prompt"]``.
        """
        import torch
        from torchvision.ops import box_convert

        if not images:
            return []
        pixels = self.processor.image_processor(images=images, return_tensors="pt")
        pixel_values = pixels["pixel_values"].to(self.device, self.dtype)
        model = self.model
        with torch.inference_mode():
            feature_map = model.image_embedder(pixel_values=pixel_values)[0]
            batch, rows, cols, dim = feature_map.shape
            features = feature_map.reshape(batch, rows * cols, dim)
            queries = self.queries.to(features.dtype)[None].expand(batch, -1, -1)
            mask = torch.ones(queries.shape[:2], dtype=torch.bool, device=features.device)
            logits, _ = model.class_predictor(features, queries, mask)  # (B, patches, prompts)
            boxes = model.box_predictor(features, feature_map)  # (B, patches, 4) cx, cy, w, h
        top, chosen = logits.float().max(dim=-1)
        scores = top.sigmoid()
        boxes = boxes.float()
        corners = box_convert(boxes, "cxcywh", "xyxy")
        best, column, fractions = (t.cpu().numpy() for t in (scores, chosen, corners))
        out = []
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            keep = best[i] >= self.selection.floor
            side = max(height, width)  # boxes are fractions of the padded square
            xyxy = np.clip(fractions[i][keep] * side, 0, [width, height] * 2)
            out.append(self._select(xyxy, best[i][keep], column[i][keep]))
        return out
