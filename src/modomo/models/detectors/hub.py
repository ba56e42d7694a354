"""What the transformers open-vocabulary backends (Grounding DINO, OWLv2) share: loading a
zero-shot detection checkpoint from a local folder, and turning boxes found by prompts into
the pipeline's detections."""

from __future__ import annotations

from typing import Any

import numpy as np
import supervision as sv

from modomo.analysis.taxonomy import PromptTable
from modomo.models.detectors.selection import Selection, labelled
from modomo.models.weights import Weights

__all__ = ["PromptedDetector"]


class PromptedDetector:
    """A transformers zero-shot detector (``AutoModelForZeroShotObjectDetection``) prompted
    with the taxonomy.

    Args:
        weights: a transformers checkpoint folder (config, weights, processor, tokenizer).
        device: torch device string.
        half: float16 inference (CUDA only).
        selection: thresholds, class-agnostic NMS and the cap per image.
        prompts: the prompts and their categories.

    Raises:
        OSError: the folder is not a checkpoint of this model.
    """

    backend = ""

    def __init__(
        self,
        weights: Weights,
        device: str,
        *,
        half: bool,
        selection: Selection,
        prompts: PromptTable,
    ) -> None:
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.weights = weights
        self.device = device
        self.dtype = torch.float16 if half and device.startswith("cuda") else torch.float32
        self.processor: Any = AutoProcessor.from_pretrained(str(weights.path))
        self.model: Any = AutoModelForZeroShotObjectDetection.from_pretrained(
            str(weights.path), dtype=self.dtype
        )
        self.model.to(device).eval()
        self.selection = selection
        self.prompts = prompts
        self._prepare()

    def _prepare(self) -> None:
        """What a backend computes once from its prompts when it loads (nothing here)."""

    def _select(self, xyxy: np.ndarray, scores: np.ndarray, prompt: np.ndarray) -> sv.Detections:
        """Boxes (n, 4) xyxy pixels, their scores (n,) and prompt indices (n,) as the
        pipeline's detections, after the selection."""
        return self.selection.apply(
            labelled(
                xyxy.astype(np.float32),
                scores,
                [self.prompts.category(int(p)) for p in prompt],
                [self.prompts.prompts[int(p)] for p in prompt],
            )
        )
