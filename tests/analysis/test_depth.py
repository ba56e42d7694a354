import numpy as np
import pytest
from PIL import Image

from modomo.analysis.depth import decode_depth_png, depth_stats, encode_depth_png


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


def test_depth_stats_over_a_region() -> None:
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    region = np.zeros((3, 4), bool)
    region[1, 1:4] = True
    assert depth_stats(depth, region) == (6.0, 5.0, 7.0)
    assert depth_stats(depth, np.zeros((3, 4), bool)) is None
