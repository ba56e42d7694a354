"""CLIP image and text embeddings (transformers ``CLIPModel``), for zero-shot scene
classification (:mod:`modomo.analysis.classify`) and the stored image embeddings.

Embeddings are the projected, L2-normalised features CLIP compares by cosine similarity
(Radford et al. 2021); their dimension is the model's ``projection_dim`` (512 for
``openai/clip-vit-base-patch32``), which must match ``MODOMO_EMBEDDING_DIM``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from modomo.analysis.classify import LabelSet, build_label_sets
from modomo.models.device import torch_dtype
from modomo.models.weights import Weights

__all__ = ["MAX_LOGIT_SCALE", "MAX_TEXT_TOKENS", "ClipEncoder"]

MAX_LOGIT_SCALE = 100.0
"""CLIP clips its learned temperature ``exp(logit_scale)`` at 100 (paper, section 2.5)."""

MAX_TEXT_TOKENS = 77
"""CLIP's text context length; longer prompts are truncated."""

TEXT_BATCH = 256
"""Prompts per text-encoder call."""


def _pooled(output: Any) -> Any:
    """The projected features from ``get_image_features`` / ``get_text_features``: a tensor
    in transformers 4, an output object with the projection in ``pooler_output`` in 5."""
    return output if hasattr(output, "ndim") else output.pooler_output


class ClipEncoder:
    """One CLIP model: image and text encoders into a shared, L2-normalised space.

    Args:
        weights: resolved weights folder (``clip`` role).
        device: torch device string.
        half: float16 on CUDA (``MODOMO_HALF_PRECISION``); embeddings come back float32.

    Attributes:
        weights: the weights, whose ``label`` is recorded with results.
        dim: the embedding dimension (``projection_dim``).
        logit_scale: CLIP's learned ``exp(logit_scale)``, at most 100.

    Out-of-memory errors propagate: the caller halves the batch
    (:func:`modomo.batching.map_with_backoff`).
    """

    def __init__(self, weights: Weights, device: str, *, half: bool) -> None:
        import torch
        from transformers import AutoProcessor, CLIPModel

        self.weights = weights
        self.device = device
        self.dtype = torch_dtype(device, half)
        self.processor = AutoProcessor.from_pretrained(str(weights.path))
        model_class: Any = CLIPModel  # transformers' decorated from_pretrained confuses mypy
        self.model = model_class.from_pretrained(str(weights.path), dtype=self.dtype)
        self.model.to(device).eval()
        config: Any = self.model.config
        self.dim = int(config.projection_dim)
        with torch.no_grad():
            scale = float(self.model.logit_scale.detach().float().exp().item())
        self.logit_scale = min(scale, MAX_LOGIT_SCALE)
        self.max_text_tokens = min(MAX_TEXT_TOKENS, int(config.text_config.max_position_embeddings))
        self._label_sets: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, LabelSet]] = {}
        self._lock = threading.Lock()

    def _unit(self, features: Any) -> np.ndarray:
        """(N, dim) float32 unit rows on the CPU (normalised in float32, also under half)."""
        features = features.float()
        features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return features.cpu().numpy().astype(np.float32, copy=False)  # type: ignore[no-any-return]

    def encode_images(self, images: list[np.ndarray]) -> np.ndarray:
        """Image embeddings for a batch of RGB images of any sizes.

        The processor resizes each image's short side to the model's input size and centre
        crops it (CLIP's preprocessing), so differently sized images share one batch.

        Args:
            images: (H, W, 3) uint8 RGB arrays.

        Returns:
            (N, dim) float32, each row L2-normalised.

        Raises:
            ValueError: an image is not (H, W, 3) uint8.
        """
        import torch

        if not images:
            return np.zeros((0, self.dim), np.float32)
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"expected (H, W, 3) uint8 RGB images, got {image.shape} {image.dtype}"
                )
        inputs = self.processor(
            images=list(images), return_tensors="pt", input_data_format="channels_last"
        )
        with torch.inference_mode():
            pixels = inputs["pixel_values"].to(self.device, self.dtype)
            features = _pooled(self.model.get_image_features(pixel_values=pixels))
            return self._unit(features)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Text embeddings (prompts longer than 77 tokens are truncated).

        Returns:
            (T, dim) float32, each row L2-normalised.
        """
        import torch

        if not texts:
            return np.zeros((0, self.dim), np.float32)
        chunks: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), TEXT_BATCH):
                tokens = self.processor.tokenizer(
                    list(texts[start : start + TEXT_BATCH]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_text_tokens,
                    return_tensors="pt",
                )
                features = self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device),
                )
                chunks.append(self._unit(_pooled(features)))
        return np.concatenate(chunks)

    def label_sets(self, room_types: Sequence[str], styles: Sequence[str]) -> dict[str, LabelSet]:
        """The zero-shot classifier weights for these labels
        (:func:`modomo.analysis.classify.build_label_sets`), computed once per label lists."""
        key = (tuple(room_types), tuple(styles))
        with self._lock:
            if key not in self._label_sets:
                self._label_sets[key] = build_label_sets(self.encode_texts, *key)
            return self._label_sets[key]

    def check_dim(self, expected: int) -> None:
        """Check the embedding dimension against the stored embeddings' (the setting).

        Raises:
            ValueError: the model's ``projection_dim`` is not ``expected``.
        """
        if self.dim != expected:
            raise ValueError(
                f"CLIP weights {self.weights.label} embed into {self.dim} dimensions but "
                f"MODOMO_EMBEDDING_DIM={expected} (the database's vector column): set "
                f"MODOMO_CLIP_WEIGHTS to a model with projection_dim {expected}, or migrate "
                "the embeddings to the new dimension"
            )
