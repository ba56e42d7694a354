import numpy as np
import pytest
from PIL import Image

from modomo.analysis.depth import (
    DepthMap,
    decode_depth_png,
    depth_size,
    depth_stats,
    encode_depth_png,
    upsample_depth,
)


def test_depth_png_is_16_bit_and_round_trips_within_one_step() -> None:
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 9.5, size=(48, 64)).astype(np.float32)
    data, info = encode_depth_png(depth)
    import io

    image = Image.open(io.BytesIO(data))
    assert image.mode.startswith("I;16") and image.size == (64, 48)
    assert info["min"] == pytest.approx(depth.min()) and info["max"] == pytest.approx(depth.max())
    back = decode_depth_png(data, info)
    assert np.abs(back - depth).max() <= info["scale"]


def test_constant_and_non_finite_maps() -> None:
    depth = np.full((4, 5), 2.0, np.float32)
    depth[0, 0] = np.nan
    data, info = encode_depth_png(depth)
    assert np.allclose(decode_depth_png(data, info), 2.0)
    with pytest.raises(ValueError, match="finite"):
        encode_depth_png(np.full((2, 2), np.nan))


def test_depth_stats_of_values() -> None:
    assert depth_stats(np.array([5.0, 7.0, 6.0, np.nan], np.float32)) == (6.0, 5.0, 7.0)
    assert depth_stats(np.array([np.inf], np.float32)) is None
    assert depth_stats(np.zeros(0, np.float32)) is None


def test_a_map_at_model_resolution_answers_for_image_pixels() -> None:
    # a 3x4 map of a 300x400 image: each map pixel covers 100x100 image pixels
    depth = DepthMap(np.arange(12, dtype=np.float32).reshape(3, 4), "metres", "m@1", 300, 400)
    rows, cols = np.array([0, 99, 100, 299, 150]), np.array([0, 99, 399, 399, 250])
    assert depth.at(rows, cols).tolist() == [0.0, 0.0, 7.0, 11.0, 6.0]


def test_depth_size_keeps_the_model_resolution_and_the_aspect_ratio() -> None:
    # Depth Anything's 518x686 output of a 3024x4032 photo: its finer axis kept, at 3:4
    assert depth_size(3024, 4032, 518, 686, max_side=1024) == (518, 691)
    # capped
    assert depth_size(3024, 4032, 1036, 1372, max_side=1024) == (768, 1024)
    # never above the image's own size
    assert depth_size(100, 200, 518, 1036, max_side=1024) == (100, 200)


def test_upsample_depth_to_the_image() -> None:
    depth = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    full = upsample_depth(depth, 4, 4)
    assert full.shape == (4, 4) and full[0, 0] == 0.0 and full[3, 3] == 3.0
    assert 0.0 < full[1, 1] < full[2, 2] < 3.0
