"""The open-vocabulary backend: Grounding DINO (transformers), prompted with the taxonomy
(``MODOMO_DETECTOR=grounding-dino``).

Grounding DINO (Liu et al. 2023, "Grounding DINO: Marrying DINO with Grounded Pre-Training
for Open-Set Object Detection"; Apache-2.0; default checkpoint
``IDEA-Research/grounding-dino-tiny``) scores every query box against every token of a
caption such as ``"sofa . couch . armchair ."``. Its text encoder takes at most
``config.max_text_len`` (256) tokens, so the taxonomy's prompts are split into captions that
fit (:func:`prompt_chunks`), one forward pass per caption, and the boxes of all captions are
merged. (transformers' ``GroundingDinoForObjectDetection`` runs the image backbone inside
each forward pass, so the image features are computed once per caption, not shared.)

Labels come from the prompts' token positions, never from the text the model's phrase
decoder returns: a box's score for a prompt is the mean sigmoid probability of that prompt's
tokens, and the box takes the prompt with the highest score. So a box is "lamp" or
"floor lamp" by which prompt's tokens it matches, never because one string contains the
other; the prompt maps to exactly one category through
:class:`~modomo.analysis.taxonomy.PromptTable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv

from modomo.analysis.taxonomy import PromptTable
from modomo.models.detectors.hub import PromptedDetector

__all__ = ["Caption", "GroundingDinoDetector", "prompt_chunks"]

SEPARATOR = " . "
"""Between prompts in a caption (Grounding DINO's training format: phrases ended by a dot)."""


@dataclass(frozen=True)
class Caption:
    """One caption of prompts and where each prompt's tokens are.

    Attributes:
        text: the caption, e.g. ``"sofa . couch ."``.
        prompts: indices into the :class:`PromptTable` of the prompts it holds.
        spans: per prompt, the token positions (into the tokenized caption, [CLS] at 0).
        tokens: the caption's length in tokens, special tokens included.
    """

    text: str
    prompts: tuple[int, ...]
    spans: tuple[tuple[int, ...], ...]
    tokens: int


def _caption(table: PromptTable, indices: list[int], tokenizer: Any) -> Caption:
    text, starts = "", []
    for index in indices:
        starts.append(len(text))
        text += table.prompts[index] + SEPARATOR
    text = text.rstrip()
    encoded = tokenizer(text, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    spans = []
    for index, start in zip(indices, starts, strict=True):
        end = start + len(table.prompts[index])
        spans.append(
            tuple(t for t, (s, e) in enumerate(offsets) if e > s and start <= s and e <= end)
        )
    return Caption(text, tuple(indices), tuple(spans), len(encoded["input_ids"]))


def prompt_chunks(table: PromptTable, tokenizer: Any, max_tokens: int) -> list[Caption]:
    """The table's prompts as captions of at most ``max_tokens`` tokens each, in order.

    Raises:
        ValueError: one prompt alone is longer than ``max_tokens``, or a prompt has no token
            the tokenizer knows (it could never be matched).
    """
    captions: list[Caption] = []
    current: list[int] = []
    for index in range(len(table)):
        trial = _caption(table, [*current, index], tokenizer)
        if trial.tokens <= max_tokens:
            current.append(index)
            continue
        if not current:
            raise ValueError(f"prompt {table.prompts[index]!r} is longer than {max_tokens} tokens")
        captions.append(_caption(table, current, tokenizer))
        current = [index]
    if current:
        captions.append(_caption(table, current, tokenizer))
    for caption in captions:
        for index, span in zip(caption.prompts, caption.spans, strict=True):
            if not span:
                raise ValueError(f"prompt {table.prompts[index]!r} has no token")
    return captions


class GroundingDinoDetector(PromptedDetector):
    """Grounding DINO on a list of images, every category of the taxonomy prompted (built as
    :class:`~modomo.models.detectors.hub.PromptedDetector`).

    Raises:
        ValueError: a prompt does not fit the text encoder or has no known token.
        OSError: the folder is not a Grounding DINO checkpoint.
    """

    backend = "grounding-dino"

    def _prepare(self) -> None:
        self.captions = prompt_chunks(
            self.prompts, self.processor.tokenizer, int(self.model.config.max_text_len)
        )

    def detect(self, images: list[np.ndarray]) -> list[sv.Detections]:
        """Detect every prompted category in a batch of images.

        Args:
            images: (H, W, 3) uint8 RGB arrays (sizes may differ).

        Returns:
            One ``supervision.Detections`` per image: ``xyxy`` (N, 4) float32 pixels of that
            image, ``confidence`` (N,) the prompt's mean token probability,
            ``data["category"]``, ``data["taxonomy_group"]`` and ``data["prompt"]``.
        """
        if not images:
            return []
        found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in images]
        for caption in self.captions:
            for i, part in enumerate(self._detect_caption(images, caption)):
                found[i].append(part)
        return [
            self._select(*(np.concatenate([p[k] for p in parts]) for k in range(3)))
            for parts in found
        ]

    def _detect_caption(
        self, images: list[np.ndarray], caption: Caption
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per image: boxes xyxy (n, 4), scores (n,) and prompt indices (n,) at or above the
        selection's lowest threshold."""
        import torch
        from torchvision.ops import box_convert

        inputs = self.processor(
            images=images, text=[caption.text] * len(images), return_tensors="pt", padding=True
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        tokens = outputs.logits.shape[-1]
        weights = torch.zeros(tokens, len(caption.prompts), dtype=torch.float32)
        for position, span in enumerate(caption.spans):
            weights[list(span), position] = 1.0 / len(span)
        probabilities = outputs.logits.float().sigmoid()  # (B, queries, tokens)
        scores = probabilities @ weights.to(probabilities.device)  # (B, queries, prompts)
        top, chosen = scores.max(dim=-1)
        boxes = outputs.pred_boxes.float()  # (B, queries, 4) cx, cy, w, h of the image, 0-1
        corners = box_convert(boxes, "cxcywh", "xyxy")
        best, column, xyxy01 = (t.cpu().numpy() for t in (top, chosen, corners))
        prompt_index = np.asarray(caption.prompts)
        parts = []
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            keep = best[i] >= self.selection.floor
            xyxy = np.clip(xyxy01[i][keep] * [width, height, width, height], 0, [width, height] * 2)
            parts.append((xyxy, best[i][keep], prompt_index[column[i][keep]]))
        return parts
