"""Zero-shot scene classification from CLIP embeddings: room type, interior style, scene type.

The method is CLIP's zero-shot classifier (Radford et al. 2021, "Learning Transferable
Visual Models From Natural Language Supervision", sections 3.1.2 and 3.1.4): each label is
written out in several prompt templates ("a photo of a {}.", ...), the text encoder embeds
each prompt, and the label's classifier weight is the mean of the L2-normalised prompt
embeddings, normalised again (prompt ensembling, computed once per worker, not per image).
An image's label probabilities are ``softmax(logit_scale * cos(image, label))`` over the
labels of one attribute; below a minimum top-1 probability the answer is :data:`UNKNOWN`.

Pure NumPy: the text encoder comes in as a function (``encode_texts``), so this module
imports no torch, and tests fake the model, not this logic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ATTRIBUTES",
    "LABEL_PHRASES",
    "PROMPT_TEMPLATES",
    "SCENE_TYPES",
    "SCENE_TYPE_PHRASES",
    "UNKNOWN",
    "LabelSet",
    "Prediction",
    "build_label_sets",
    "classify",
    "ensemble_text_embeddings",
    "label_text",
]

UNKNOWN = "unknown"
"""The label stored when the top-1 probability is below the minimum."""

ATTRIBUTES = ("room_type", "style", "scene_type")
"""The attributes classified per scene, in the order :func:`build_label_sets` returns them."""

SCENE_TYPES = ("scene", "object", "hybrid")
"""Scene-type labels: a whole room, a single product shot, or furniture close up in a room."""

SCENE_TYPE_PHRASES: dict[str, str] = {
    "scene": "a whole room interior with furniture and decor",
    "object": "a single piece of furniture or product on a plain white background",
    "hybrid": "a close-up of a piece of furniture in a room",
}
"""What the scene-type labels mean, as the text encoder reads them."""

LABEL_PHRASES: dict[str, str] = {
    "kids_room": "kid's room",
    "home_office": "home office",
    "outdoor": "outdoor patio",
    "mid_century_modern": "mid-century modern",
    "art_deco": "art deco",
}
"""Phrasing overrides for labels whose words are not just the label with spaces."""

PROMPT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "room_type": (
        "a photo of a {}.",
        "a photo of the {} of a house.",
        "an interior photo of a {}.",
        "a wide-angle photo of a {}.",
        "a real estate photo of a {}.",
        "an interior design photo of a {}.",
    ),
    "style": (
        "a photo of a {} interior.",
        "a {} style room.",
        "interior design in the {} style.",
        "a photo of a room decorated in {} style.",
        "a {} home interior.",
        "{} interior design.",
    ),
    "scene_type": (
        "a photo of {}.",
        "a picture of {}.",
        "an image showing {}.",
        "a photograph of {}.",
    ),
}
"""Prompt templates per attribute (``{}`` is the label's phrase), after CLIP's section 3.1.4:
several context sentences per label, averaged in embedding space."""


def label_text(label: str) -> str:
    """The words a label stands for: ``mid_century_modern`` -> ``mid-century modern``,
    ``kids_room`` -> ``kid's room``; otherwise underscores become spaces."""
    if label in LABEL_PHRASES:
        return LABEL_PHRASES[label]
    return " ".join(label.replace("_", " ").split())


def _normalise(vectors: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
        raise ValueError(f"{what}: embeddings must be finite and non-zero")
    return vectors / norms


def ensemble_text_embeddings(
    encode_texts: Callable[[list[str]], np.ndarray],
    labels: Sequence[str],
    templates: Sequence[str],
    *,
    phrase: Callable[[str], str] = label_text,
) -> np.ndarray:
    """Classifier weights by prompt ensembling (CLIP, section 3.1.4).

    For each label, every template is filled with the label's phrase; the prompts are
    embedded (one ``encode_texts`` call for all of them), each embedding is L2-normalised,
    the label's embeddings are averaged, and the mean is normalised again.

    Args:
        encode_texts: the text encoder: ``T`` strings -> (T, D) array.
        labels: the L label names (snake_case).
        templates: prompt templates, each with one ``{}``.
        phrase: a label's words (default :func:`label_text`).

    Returns:
        (L, D) float32 unit vectors, row ``i`` for ``labels[i]``.

    Raises:
        ValueError: no labels or no templates, a template without ``{}``, or the encoder
            returned the wrong shape or a zero / non-finite embedding.
    """
    if not labels or not templates:
        raise ValueError("need at least one label and one template")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"templates without a {{}} placeholder: {bad}")
    prompts = [template.format(phrase(label)) for label in labels for template in templates]
    encoded = np.asarray(encode_texts(prompts), dtype=np.float64)
    if encoded.ndim != 2 or encoded.shape[0] != len(prompts):
        raise ValueError(
            f"encode_texts returned shape {encoded.shape} for {len(prompts)} prompts; "
            "expected (prompts, dim)"
        )
    per_label = _normalise(encoded, "encode_texts").reshape(len(labels), len(templates), -1)
    return _normalise(per_label.mean(axis=1), "ensembled labels").astype(np.float32)


@dataclass(frozen=True)
class LabelSet:
    """The labels of one attribute and their ensembled text embeddings.

    Attributes:
        attribute: ``room_type``, ``style`` or ``scene_type``.
        labels: the L labels, in the order of ``embeddings``' rows.
        embeddings: (L, D) float32 unit vectors (:func:`ensemble_text_embeddings`).
    """

    attribute: str
    labels: tuple[str, ...]
    embeddings: np.ndarray

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.labels):
            raise ValueError(
                f"{self.attribute}: {len(self.labels)} labels but embeddings of shape "
                f"{self.embeddings.shape}"
            )

    @property
    def dim(self) -> int:
        """The embedding dimension D."""
        return int(self.embeddings.shape[1])


def build_label_sets(
    encode_texts: Callable[[list[str]], np.ndarray],
    room_types: Sequence[str],
    styles: Sequence[str],
) -> dict[str, LabelSet]:
    """The label sets of :data:`ATTRIBUTES`, with :data:`PROMPT_TEMPLATES` ensembled.

    Costs one text-encoder pass over every (label, template) prompt: compute it once per
    worker (:meth:`modomo.models.clip.ClipEncoder.label_sets` caches it).

    Args:
        encode_texts: the text encoder (see :func:`ensemble_text_embeddings`).
        room_types: room-type labels (``MODOMO_ROOM_TYPES``).
        styles: style labels (``MODOMO_STYLES``); scene types are :data:`SCENE_TYPES`.

    Returns:
        ``{"room_type": ..., "style": ..., "scene_type": ...}``.

    Raises:
        ValueError: fewer than two labels, a repeated label, ``unknown`` as a label, or a
            bad encoder output.
    """
    chosen = {"room_type": tuple(room_types), "style": tuple(styles), "scene_type": SCENE_TYPES}
    sets: dict[str, LabelSet] = {}
    for attribute in ATTRIBUTES:
        labels = chosen[attribute]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"{attribute}: need two or more distinct labels, got {labels}")
        if UNKNOWN in labels:
            raise ValueError(f"{attribute}: {UNKNOWN!r} is the answer when unsure, not a label")
        phrase = SCENE_TYPE_PHRASES.__getitem__ if attribute == "scene_type" else label_text
        embeddings = ensemble_text_embeddings(
            encode_texts, labels, PROMPT_TEMPLATES[attribute], phrase=phrase
        )
        sets[attribute] = LabelSet(attribute, labels, embeddings)
    return sets


@dataclass(frozen=True)
class Prediction:
    """One image's answer for one attribute.

    Attributes:
        label: the most probable label, or :data:`UNKNOWN` when its probability is below
            the minimum.
        probability: the most probable label's probability (also when ``label`` is
            ``unknown``).
        top_k: the k most probable ``(label, probability)``, most probable first.
    """

    label: str
    probability: float
    top_k: list[tuple[str, float]]

    def to_json(self) -> dict[str, Any]:
        """``{"label", "probability", "top_k": [{"label", "probability"}]}``, probabilities
        rounded to 4 decimals."""
        return {
            "label": self.label,
            "probability": round(self.probability, 4),
            "top_k": [{"label": name, "probability": round(p, 4)} for name, p in self.top_k],
        }


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of an (N, L) array, shifted by each row's maximum for stability."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def classify(
    image_embeddings: np.ndarray,
    label_set: LabelSet,
    *,
    logit_scale: float,
    top_k: int,
    min_probability: float,
) -> list[Prediction]:
    """Zero-shot classification of N images against one label set.

    Probabilities are ``softmax(logit_scale * image @ text.T)`` over the set's labels, as
    CLIP's logits (cosine similarity times the learned temperature, at most 100).

    Args:
        image_embeddings: (N, D) image embeddings, L2-normalised (normalised again here, so
            the logits are cosine similarities whatever the input's norm).
        label_set: the attribute's labels and text embeddings, dimension D.
        logit_scale: CLIP's ``exp(logit_scale)`` (:attr:`ClipEncoder.logit_scale`), > 0.
        top_k: labels kept per image (at most the number of labels).
        min_probability: below this top-1 probability the label is :data:`UNKNOWN`.

    Returns:
        One :class:`Prediction` per image, in order.

    Raises:
        ValueError: ``image_embeddings`` is not (N, D) with the label set's D, an embedding
            is zero or not finite, ``top_k`` < 1, ``logit_scale`` <= 0 or
            ``min_probability`` outside [0, 1].
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if not logit_scale > 0:
        raise ValueError(f"logit_scale must be positive, got {logit_scale}")
    if not 0.0 <= min_probability <= 1.0:
        raise ValueError(f"min_probability must be in [0, 1], got {min_probability}")
    images = np.asarray(image_embeddings, dtype=np.float64)
    if images.ndim != 2 or images.shape[1] != label_set.dim:
        raise ValueError(
            f"image embeddings of shape {images.shape} do not match the {label_set.attribute} "
            f"text embeddings' dimension {label_set.dim}; expected (N, {label_set.dim})"
        )
    if images.shape[0] == 0:
        return []
    images = _normalise(images, "image embeddings")
    text = label_set.embeddings.astype(np.float64)
    probabilities = _softmax(logit_scale * images @ text.T)
    k = min(top_k, len(label_set.labels))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    predictions: list[Prediction] = []
    for row, indices in zip(probabilities, order, strict=True):
        ranked = [(label_set.labels[i], float(row[i])) for i in indices]
        best, probability = ranked[0]
        label = best if probability >= min_probability else UNKNOWN
        predictions.append(Prediction(label, probability, ranked))
    return predictions
