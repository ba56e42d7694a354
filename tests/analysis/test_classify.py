"""Zero-shot classification logic with a fake text encoder (the model is faked, the prompt
ensembling and the softmax are the real code)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from modomo.analysis.classify import (
    PROMPT_TEMPLATES,
    SCENE_TYPE_PHRASES,
    SCENE_TYPES,
    UNKNOWN,
    LabelSet,
    Prediction,
    build_label_sets,
    classify,
    ensemble_text_embeddings,
    label_text,
)
from modomo.config import DEFAULT_ROOM_TYPES, DEFAULT_STYLES

DIM = 16
LABELS = ("living_room", "bedroom", "kitchen")
TEMPLATES = ("a photo of a {}.", "an interior photo of a {}.", "a wide-angle photo of a {}.")


class FakeEncoder:
    """Prompt ``template.format(label_text(label))`` -> ``scale_t * (3 * e_label + noise_t)``:
    a known direction per label, a template-specific offset and a template-specific norm
    (so an ensemble that forgot to normalise each prompt would come out different)."""

    def __init__(self, labels: tuple[str, ...], templates: tuple[str, ...]) -> None:
        rng = np.random.default_rng(3)
        self.raw: dict[str, np.ndarray] = {}
        self.calls: list[list[str]] = []
        for t, template in enumerate(templates):
            noise = rng.normal(0, 0.5, DIM)
            scale = 1.0 + 2.0 * t
            for i, label in enumerate(labels):
                direction = np.zeros(DIM)
                direction[i] = 3.0
                self.raw[template.format(label_text(label))] = scale * (direction + noise)

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([self.raw[text] for text in texts]).astype(np.float32)


def hashed_encoder(texts: list[str]) -> np.ndarray:
    """Any text -> a pseudo-random vector seeded by the text."""
    seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
    return np.stack([np.random.default_rng(s).normal(size=DIM) for s in seeds]).astype(np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def orthonormal_set(n: int = 3, dim: int = DIM) -> LabelSet:
    return LabelSet("room_type", LABELS[:n], np.eye(n, dim, dtype=np.float32))


def test_ensemble_averages_normalised_prompt_embeddings() -> None:
    encode = FakeEncoder(LABELS, TEMPLATES)
    weights = ensemble_text_embeddings(encode, LABELS, TEMPLATES)
    assert weights.shape == (3, DIM) and weights.dtype == np.float32
    assert len(encode.calls) == 1 and len(encode.calls[0]) == 9  # one encoder pass
    for i, label in enumerate(LABELS):
        prompts = [t.format(label_text(label)) for t in TEMPLATES]
        expected = unit(np.mean([unit(encode.raw[p]) for p in prompts], axis=0))
        naive = unit(np.mean([encode.raw[p] for p in prompts], axis=0))
        np.testing.assert_allclose(weights[i], expected, atol=1e-6)
        assert not np.allclose(weights[i], naive, atol=1e-3)  # the norms did not leak in
    np.testing.assert_allclose(np.linalg.norm(weights, axis=1), 1.0, atol=1e-6)


def test_classify_picks_the_label_nearest_to_the_image() -> None:
    encode = FakeEncoder(LABELS, TEMPLATES)
    label_set = LabelSet("room_type", LABELS, ensemble_text_embeddings(encode, LABELS, TEMPLATES))
    rng = np.random.default_rng(0)
    images = []
    for i in (2, 0, 1):
        v = np.zeros(DIM)
        v[i] = 1.0
        images.append(unit(v + rng.normal(0, 0.05, DIM)))
    predictions = classify(
        np.array(images, np.float32), label_set, logit_scale=100.0, top_k=3, min_probability=0.4
    )
    assert [p.label for p in predictions] == ["kitchen", "living_room", "bedroom"]
    assert all(p.probability > 0.9 for p in predictions)


def test_top_k_is_sorted_and_matches_a_manual_softmax() -> None:
    label_set = LabelSet("style", ("a", "b", "c", "d"), unit(np.eye(4, DIM) + 0.1))
    image = unit(np.array([0.2, 0.9, 0.5, 0.1] + [0.0] * (DIM - 4)))[None, :]
    (prediction,) = classify(image, label_set, logit_scale=10.0, top_k=3, min_probability=0.0)
    logits = 10.0 * image @ label_set.embeddings.T.astype(np.float64)
    manual = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert [name for name, _ in prediction.top_k] == ["b", "c", "a"]
    for name, probability in prediction.top_k:
        assert probability == pytest.approx(manual["abcd".index(name)], rel=1e-6)
    probabilities = [p for _, p in prediction.top_k]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1.0
    assert prediction.label == "b" and prediction.probability == probabilities[0]
    # top_k larger than the label count keeps every label, summing to one
    (every,) = classify(image, label_set, logit_scale=10.0, top_k=20, min_probability=0.0)
    assert len(every.top_k) == 4 and sum(p for _, p in every.top_k) == pytest.approx(1.0)


def test_an_image_equidistant_to_every_label_is_unknown() -> None:
    label_set = orthonormal_set(3)
    image = unit(np.array([1.0, 1.0, 1.0] + [0.0] * (DIM - 3)))[None, :]
    (prediction,) = classify(image, label_set, logit_scale=100.0, top_k=3, min_probability=0.4)
    assert prediction.label == UNKNOWN
    assert prediction.probability == pytest.approx(1 / 3)
    assert [name for name, _ in prediction.top_k] == list(LABELS)  # ties keep label order
    assert prediction.to_json() == {
        "label": "unknown",
        "probability": 0.3333,
        "top_k": [{"label": name, "probability": 0.3333} for name in LABELS],
    }


def test_softmax_is_stable_at_huge_scales_and_unnormalised_inputs() -> None:
    label_set = orthonormal_set(3)
    image = np.array([[5.0, 4.0, 0.0] + [0.0] * (DIM - 3)], np.float32)  # not unit length
    (prediction,) = classify(image, label_set, logit_scale=1e6, top_k=2, min_probability=0.4)
    assert prediction.label == "living_room" and prediction.probability == pytest.approx(1.0)
    assert all(np.isfinite(p) for _, p in prediction.top_k)
    assert (
        classify(np.zeros((0, DIM)), label_set, logit_scale=100, top_k=1, min_probability=0) == []
    )


def test_prediction_json_rounds_to_four_decimals() -> None:
    prediction = Prediction("bedroom", 0.912345678, [("bedroom", 0.912345678), ("hall", 0.05)])
    assert prediction.to_json() == {
        "label": "bedroom",
        "probability": 0.9123,
        "top_k": [
            {"label": "bedroom", "probability": 0.9123},
            {"label": "hall", "probability": 0.05},
        ],
    }


def test_label_text_phrasing() -> None:
    assert label_text("mid_century_modern") == "mid-century modern"
    assert label_text("kids_room") == "kid's room"
    assert label_text("living_room") == "living room"
    assert label_text("art_deco") == "art deco"
    assert label_text("japandi") == "japandi"
    assert label_text("walk_in__closet") == "walk in closet"


def test_label_sets_for_the_default_labels() -> None:
    sets = build_label_sets(hashed_encoder, DEFAULT_ROOM_TYPES, DEFAULT_STYLES)
    assert list(sets) == ["room_type", "style", "scene_type"]
    assert sets["room_type"].embeddings.shape == (9, DIM)
    assert sets["style"].embeddings.shape == (15, DIM)
    assert sets["scene_type"].labels == SCENE_TYPES
    assert sets["scene_type"].embeddings.shape == (3, DIM)
    for label_set in sets.values():
        assert label_set.embeddings.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(label_set.embeddings, axis=1), 1.0, atol=1e-6)


def test_label_sets_fill_every_template_with_each_phrase() -> None:
    seen: list[str] = []

    def encode(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return hashed_encoder(texts)

    build_label_sets(encode, ("kids_room", "bedroom"), ("mid_century_modern", "rustic"))
    for template in PROMPT_TEMPLATES["room_type"]:
        assert template.format("kid's room") in seen
    for template in PROMPT_TEMPLATES["style"]:
        assert template.format("mid-century modern") in seen
    for template in PROMPT_TEMPLATES["scene_type"]:
        assert template.format(SCENE_TYPE_PHRASES["object"]) in seen
    expected = sum(
        n * len(PROMPT_TEMPLATES[a]) for a, n in (("room_type", 2), ("style", 2), ("scene_type", 3))
    )
    assert len(seen) == expected


def test_errors() -> None:
    label_set = orthonormal_set(3)
    image = unit(np.ones((1, DIM)))
    with pytest.raises(ValueError, match="dimension 16"):
        classify(np.ones((1, 8)), label_set, logit_scale=100, top_k=1, min_probability=0.4)
    with pytest.raises(ValueError, match="dimension"):
        classify(np.ones(DIM), label_set, logit_scale=100, top_k=1, min_probability=0.4)
    with pytest.raises(ValueError, match="top_k"):
        classify(image, label_set, logit_scale=100, top_k=0, min_probability=0.4)
    with pytest.raises(ValueError, match="min_probability"):
        classify(image, label_set, logit_scale=100, top_k=1, min_probability=1.5)
    with pytest.raises(ValueError, match="logit_scale"):
        classify(image, label_set, logit_scale=0, top_k=1, min_probability=0.4)
    with pytest.raises(ValueError, match="non-zero"):
        classify(np.zeros((1, DIM)), label_set, logit_scale=100, top_k=1, min_probability=0.4)
    with pytest.raises(ValueError, match="labels but embeddings"):
        LabelSet("style", ("a", "b"), np.eye(3, DIM))
    with pytest.raises(ValueError, match="shape"):
        ensemble_text_embeddings(lambda texts: np.ones((1, DIM)), ("a", "b"), ("{}",))
    with pytest.raises(ValueError, match="non-zero"):
        ensemble_text_embeddings(lambda texts: np.zeros((len(texts), DIM)), ("a", "b"), ("{}",))
    with pytest.raises(ValueError, match="placeholder"):
        ensemble_text_embeddings(hashed_encoder, ("a", "b"), ("a photo",))
    with pytest.raises(ValueError, match="distinct"):
        build_label_sets(hashed_encoder, ("bedroom", "bedroom"), DEFAULT_STYLES)
    with pytest.raises(ValueError, match="distinct"):
        build_label_sets(hashed_encoder, DEFAULT_ROOM_TYPES, ("modern",))
    with pytest.raises(ValueError, match="not a label"):
        build_label_sets(hashed_encoder, DEFAULT_ROOM_TYPES, ("modern", UNKNOWN))
