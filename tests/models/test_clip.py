"""The CLIP wrapper and its registry accessor, with the random-weight tiny CLIP built by
scripts/build_random_models.py (embeddings are noise: shapes, norms and plumbing only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modomo.analysis.classify import UNKNOWN, classify
from modomo.config import DEFAULT_ROOM_TYPES, DEFAULT_STYLES, Settings, load_settings
from modomo.models import MissingWeightsError, resolve
from modomo.models.clip import ClipEncoder
from modomo.models.registry import ModelRegistry


@pytest.fixture(scope="module")
def encoder(tiny_models: dict[str, Path]) -> ClipEncoder:
    weights = resolve("clip", str(tiny_models["clip"]), Path("/nonexistent"))
    return ClipEncoder(weights, "cpu", half=False)


def settings_for(models: dict[str, Path], tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "device": "cpu",
        "clip_weights": str(models["clip"]),
    }
    values.update(overrides)
    return load_settings(**values)


def rgb(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def test_image_embeddings_are_unit_float32_rows(encoder: ClipEncoder) -> None:
    images = [rgb((60, 80), 0), rgb((300, 90), 1), rgb((1, 300), 2), rgb((3, 5), 3)]
    embeddings = encoder.encode_images(images)
    assert embeddings.shape == (4, 512) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert encoder.dim == 512
    # the same image gives the same embedding, alone or in a batch
    np.testing.assert_allclose(encoder.encode_images([images[1]])[0], embeddings[1], atol=1e-5)
    np.testing.assert_array_equal(encoder.encode_images(images), embeddings)
    assert not np.allclose(embeddings[0], embeddings[1])
    assert encoder.encode_images([]).shape == (0, 512)


def test_bad_images_are_refused(encoder: ClipEncoder) -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        encoder.encode_images([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        encoder.encode_images([np.zeros((10, 10, 3), np.float32)])


def test_text_embeddings(encoder: ClipEncoder) -> None:
    texts = ["a photo of a kid's room.", "a japandi style room.", "très chic " * 100]
    embeddings = encoder.encode_texts(texts)
    assert embeddings.shape == (3, 512) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(embeddings[0], embeddings[1])
    # padding does not change an embedding: alone equals in a padded batch
    np.testing.assert_allclose(encoder.encode_texts(texts[1:2])[0], embeddings[1], atol=1e-5)
    assert encoder.encode_texts([]).shape == (0, 512)


def test_label_sets_are_built_once(encoder: ClipEncoder) -> None:
    sets = encoder.label_sets(DEFAULT_ROOM_TYPES, DEFAULT_STYLES)
    assert sets["room_type"].embeddings.shape == (9, 512)
    assert sets["style"].embeddings.shape == (15, 512)
    assert sets["scene_type"].embeddings.shape == (3, 512)
    assert sets["room_type"].labels == DEFAULT_ROOM_TYPES
    assert encoder.label_sets(list(DEFAULT_ROOM_TYPES), list(DEFAULT_STYLES)) is sets
    assert encoder.label_sets(("bedroom", "kitchen"), DEFAULT_STYLES) is not sets
    embeddings = encoder.encode_images([rgb((64, 64), 5), rgb((120, 40), 6)])
    for label_set in sets.values():
        predictions = classify(
            embeddings,
            label_set,
            logit_scale=encoder.logit_scale,
            top_k=3,
            min_probability=0.4,
        )
        assert len(predictions) == 2
        for prediction in predictions:
            assert prediction.label in {*label_set.labels, UNKNOWN}
            assert len(prediction.top_k) == 3


def test_logit_scale_is_clip_temperature(encoder: ClipEncoder) -> None:
    # CLIPConfig's initial logit_scale is log(1 / 0.07); exp of it is about 14.3, under 100
    assert encoder.logit_scale == pytest.approx(1 / 0.07, rel=1e-3)


def test_check_dim(encoder: ClipEncoder) -> None:
    encoder.check_dim(512)
    with pytest.raises(ValueError, match="MODOMO_EMBEDDING_DIM=768") as info:
        encoder.check_dim(768)
    assert "MODOMO_CLIP_WEIGHTS" in str(info.value)


def test_hub_weights_are_never_downloaded(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="modomo models pull clip"):
        resolve("clip", "openai/clip-vit-base-patch32", tmp_path)


def test_registry_loads_clip_once(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    registry = ModelRegistry(settings_for(tiny_models, tmp_path))
    clip = registry.clip()
    assert clip is registry.clip()
    assert clip.weights.label == f"{tiny_models['clip']}@local"
    assert set(registry.load_seconds) == {"clip"}
    registry.warm_up(("classify",))
    assert registry.clip() is clip
    assert len(clip._label_sets) == 1  # warm-up embedded the configured labels
    settings = registry.settings
    assert clip.label_sets(settings.room_types, settings.styles)["style"].labels == DEFAULT_STYLES


def test_registry_refuses_a_dimension_mismatch(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    registry = ModelRegistry(settings_for(tiny_models, tmp_path, embedding_dim=768))
    with pytest.raises(ValueError, match="MODOMO_EMBEDDING_DIM"):
        registry.clip()
