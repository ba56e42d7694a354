"""The colour task's pieces that need no services: decoding to palette JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modomo.images import ImageError, load_image
from modomo.tasks.color_tasks import palette_json
from tests.support import encode


def test_palette_json_is_json_with_shares_summing_to_one() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    image[:7] = (255, 0, 0)
    image[7:] = (0, 0, 255)
    colors = palette_json(load_image(encode(image), max_pixels=10_000))
    json.dumps(colors)
    assert [c["name"] for c in colors["palette"]] == ["red", "blue"]
    assert sum(c["share"] for c in colors["palette"]) == pytest.approx(1)


def test_transparent_pixels_are_left_out() -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:, :5] = (0, 128, 0, 255)  # opaque green half
    rgba[:, 5:] = (255, 0, 0, 0)  # invisible red half
    colors = palette_json(load_image(encode(rgba), max_pixels=10_000))
    assert [c["name"] for c in colors["palette"]] == ["green"]


def test_fully_transparent_image_fails_with_a_reason() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ImageError, match="fully transparent"):
        palette_json(load_image(encode(rgba), max_pixels=10_000))
