"""Scene previews (modomo.preview): objects drawn over the photograph, and contact sheets."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from modomo.preview import contact_sheet, render_preview

HEIGHT, WIDTH = 300, 400
BACKGROUND = (200, 200, 200)
RED = (220, 30, 30)
# the red rectangle, rows 60:240, columns 80:280; the object's box is the rectangle
RECT = (slice(60, 240), slice(80, 280))
BBOX = [80.0, 60.0, 200.0, 180.0]


def _image() -> np.ndarray:
    rgb = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    rgb[:] = BACKGROUND
    rgb[RECT] = RED
    return rgb


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _sofa(with_mask: bool = True) -> dict:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[RECT] = True
    return {
        "bbox": BBOX,
        "category": "sofa",
        "confidence": 0.87,
        "mask_rle": _rle(mask) if with_mask else None,
    }


def _decode(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "RGB"
        return np.asarray(image).copy()


def test_preview_is_downscaled_and_colours_the_mask_only() -> None:
    rgb = _image()
    original = rgb.copy()
    out = _decode(render_preview(rgb, [_sofa()], max_size=200))

    assert out.shape == (150, 200, 3)  # longest side 200, aspect ratio 4:3 kept
    np.testing.assert_array_equal(rgb, original)  # the input is not drawn on
    # the mask's centre (image (150, 180) -> preview (75, 90)), well inside the box lines
    # and away from the label in the top-left corner: the mask fill tinted the red
    inside = out[70:85, 80:100].astype(int)
    assert np.abs(inside - np.array(RED)).max(axis=-1).min() > 40
    # far from the box (bottom-right corner, image rows >= 270, columns >= 340): untouched
    far = out[136:, 171:].astype(int)
    assert np.abs(far - np.array(BACKGROUND)).max() <= 1


def test_preview_without_mask_draws_box_but_keeps_the_inside() -> None:
    out = _decode(render_preview(_image(), [_sofa(with_mask=False)], max_size=None))
    assert out.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(out[140:160, 170:190], np.broadcast_to(RED, (20, 20, 3)))
    # the left edge of the box (x = 80) at mid-height is drawn in the box colour
    assert tuple(out[150, 80]) not in (RED, BACKGROUND)


def test_same_category_gets_the_same_colour() -> None:
    rgb = np.full((HEIGHT, WIDTH, 3), BACKGROUND, dtype=np.uint8)
    objects = [
        {"bbox": [20, 100, 100, 150], "category": "chair", "confidence": 0.5, "mask_rle": None},
        {"bbox": [250, 100, 100, 150], "category": "chair", "confidence": 0.9, "mask_rle": None},
    ]
    out = _decode(render_preview(rgb, objects, max_size=None))
    left_edge_a, left_edge_b = tuple(out[200, 20]), tuple(out[200, 250])
    assert left_edge_a != BACKGROUND
    assert left_edge_a == left_edge_b


def test_no_objects_round_trips_unchanged_at_full_size() -> None:
    rgb = _image()
    np.testing.assert_array_equal(_decode(render_preview(rgb, [], max_size=None)), rgb)
    # larger than the photograph: never upscaled
    np.testing.assert_array_equal(_decode(render_preview(rgb, [], max_size=1000)), rgb)
    assert _decode(render_preview(rgb, [], max_size=100)).shape == (75, 100, 3)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((30, 40, 3), dtype=np.float32),
        np.zeros((30, 40), dtype=np.uint8),
        np.zeros((30, 40, 4), dtype=np.uint8),
        np.zeros((0, 40, 3), dtype=np.uint8),
        [[[0, 0, 0]]],
    ],
    ids=["float32", "2d", "rgba", "empty", "list"],
)
def test_bad_image_raises_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="H, W, 3|non-empty"):
        render_preview(bad, [])  # type: ignore[arg-type]


def test_bad_objects_and_sizes_raise_value_error() -> None:
    rgb = _image()
    wrong_size = np.ones((10, 10), dtype=bool)
    with pytest.raises(ValueError, match="mask size"):
        render_preview(rgb, [{**_sofa(), "mask_rle": _rle(wrong_size)}])
    with pytest.raises(ValueError, match="bbox"):
        render_preview(rgb, [{"category": "sofa", "confidence": 0.5, "mask_rle": None}])
    with pytest.raises(ValueError, match="max_size"):
        render_preview(rgb, [], max_size=0)


def test_contact_sheet_tiles_previews() -> None:
    wide = render_preview(_image(), [_sofa()], max_size=200)  # 200 x 150
    tall = render_preview(np.full((120, 40, 3), 10, dtype=np.uint8), [], max_size=None)

    sheet = _decode(contact_sheet([wide, tall, wide, wide, tall], columns=3, cell=64))
    assert sheet.shape == (2 * 64, 3 * 64, 3)
    # the wide preview fills its cell's width, centred vertically: 64 x 48, 8 rows above
    assert tuple(sheet[32, 32]) != tuple(sheet[2, 32])
    # the tall, dark preview (shrunk to 21 x 64) sits in the middle of the second cell
    assert np.abs(sheet[32, 96].astype(int) - 10).max() <= 2

    assert _decode(contact_sheet([tall], columns=4, cell=64)).shape == (64, 64, 3)
    with pytest.raises(ValueError):
        contact_sheet([])
    with pytest.raises(ValueError):
        contact_sheet([wide], columns=0)
