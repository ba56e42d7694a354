"""Tests for modomo.analysis.colors (palette extraction, naming, fidelity)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import skimage.data
from skimage.color import rgb2lab

from modomo.analysis import colors
from modomo.analysis.colors import (
    COLOR_NAMES,
    METHOD,
    Palette,
    PaletteColor,
    extract_palette,
    name_color,
    palette_delta_e,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def solid(rgb: tuple[int, int, int], h: int = 20, w: int = 30) -> np.ndarray:
    """(h, w, 3) uint8 image of one colour."""
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


def two_colour(first_rows: int = 70, rows: int = 100, cols: int = 50) -> np.ndarray:
    """Red in the first ``first_rows`` rows, blue below (70% / 30% by default)."""
    img = solid(BLUE, rows, cols)
    img[:first_rows] = RED
    return img


def noise(h: int = 64, w: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Palette content
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "seed"),
    [
        (5, 0),  # default palette size
        (2, 0),  # k equal to the number of colours
        (8, 123),  # k larger than the number of colours, another seed
    ],
)
def test_two_colour_image_gives_exactly_those_colours(k: int, seed: int) -> None:
    palette = extract_palette(two_colour(), k=k, seed=seed)
    assert [c.rgb for c in palette.colors] == [RED, BLUE]
    assert [c.name for c in palette.colors] == ["red", "blue"]
    assert [c.hex for c in palette.colors] == ["#ff0000", "#0000ff"]
    assert palette.colors[0].share == pytest.approx(0.7, abs=0.02)
    assert palette.colors[1].share == pytest.approx(0.3, abs=0.02)
    assert palette.pixel_count == 100 * 50
    assert palette.dominant == palette.colors[0]


@pytest.mark.parametrize(
    "image",
    [
        skimage.data.astronaut(),  # colourful photograph
        skimage.data.coffee(),  # warm photograph
        np.stack([skimage.data.camera()] * 3, axis=-1),  # grayscale photograph as RGB
        noise(),  # uniform noise: thousands of distinct colours
    ],
)
@pytest.mark.parametrize("k", [1, 3, 5])
def test_shares_sum_to_one_and_palette_is_well_formed(image: np.ndarray, k: int) -> None:
    palette = extract_palette(image, k=k)
    shares = [c.share for c in palette.colors]
    assert 1 <= len(palette.colors) <= k
    assert sum(shares) == pytest.approx(1.0, abs=1e-9)
    assert shares == sorted(shares, reverse=True)
    assert all(0.0 < s <= 1.0 for s in shares)
    assert palette.pixel_count == image.shape[0] * image.shape[1]
    assert 0.0 <= palette.brightness <= 1.0
    assert palette.temperature in {"warm", "cool", "neutral"}
    for c in palette.colors:
        assert c.hex == "#{:02x}{:02x}{:02x}".format(*c.rgb)
        assert all(isinstance(v, int) and 0 <= v <= 255 for v in c.rgb)
        expected_lab = rgb2lab(np.array(c.rgb, dtype=np.float64) / 255.0)
        np.testing.assert_allclose(c.lab, expected_lab, atol=1e-9)
        assert c.name in COLOR_NAMES


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((255, 0, 0), "red"),  # primary
        ((196, 164, 120), "light_wood"),  # wood reference itself
        ((128, 128, 128), "gray"),  # mid gray
        ((33, 139, 61), "green"),  # arbitrary colour that is not a bin centre
    ],
)
def test_single_colour_image_gives_one_exact_colour(rgb: tuple[int, int, int], name: str) -> None:
    palette = extract_palette(solid(rgb))
    assert len(palette.colors) == 1
    (only,) = palette.colors
    assert only.rgb == rgb  # exact: bins carry the mean colour, not the bin centre
    assert only.share == 1.0
    assert only.name == name
    assert palette_delta_e(solid(rgb), palette) == pytest.approx(0.0, abs=1e-6)


def test_near_identical_clusters_are_merged() -> None:
    img = solid((95, 95, 95), 10, 10)  # 4-bit bin 5 on every channel
    img[:4] = (97, 97, 97)  # bin 6: a separate cluster, but only Delta E ~0.8 away
    palette = extract_palette(img, k=5)
    assert len(palette.colors) == 1
    assert palette.colors[0].share == 1.0
    assert palette.colors[0].rgb in {(95, 95, 95), (96, 96, 96)}  # pixel-weighted mean


def test_well_separated_colours_are_not_merged() -> None:
    img = solid((100, 100, 100), 10, 10)
    img[:5] = (140, 140, 140)  # Delta E ~15
    palette = extract_palette(img, k=5)
    assert sorted(c.rgb for c in palette.colors) == [(100, 100, 100), (140, 140, 140)]


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (slice(0, 70), RED),  # mask over the red part only
        (slice(70, 100), BLUE),  # mask over the blue part only
    ],
)
def test_mask_restricts_palette_to_selected_pixels(rows: slice, expected: tuple) -> None:
    img = two_colour()
    mask = np.zeros(img.shape[:2], dtype=bool)
    mask[rows] = True
    palette = extract_palette(img, mask=mask)
    assert [c.rgb for c in palette.colors] == [expected]
    assert palette.pixel_count == int(mask.sum())
    assert palette.colors[0].share == 1.0


def test_mask_with_partial_selection_gives_masked_shares() -> None:
    img = two_colour()  # 70 red rows, 30 blue rows
    mask = np.zeros(img.shape[:2], dtype=bool)
    mask[60:80] = True  # 10 red rows + 10 blue rows
    palette = extract_palette(img, mask=mask)
    assert {c.rgb: round(c.share, 6) for c in palette.colors} == {RED: 0.5, BLUE: 0.5}
    assert palette_delta_e(img, palette, mask=mask) == pytest.approx(0.0, abs=1e-6)


def test_rgba_view_with_alpha_mask() -> None:
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)
    rgba[..., :3] = (0, 128, 128)  # teal, opaque
    rgba[..., 3] = 255
    rgba[:, :20] = (255, 255, 255, 0)  # transparent white that must be ignored
    palette = extract_palette(rgba[..., :3], mask=rgba[..., 3] > 0)  # non-contiguous view
    assert [(c.rgb, c.name, c.share) for c in palette.colors] == [((0, 128, 128), "teal", 1.0)]
    assert palette.pixel_count == 40 * 40


# --------------------------------------------------------------------------------------------
# Temperature and brightness
# --------------------------------------------------------------------------------------------


def gradient_gray() -> np.ndarray:
    ramp = np.linspace(0, 255, 64).astype(np.uint8)
    return np.stack([np.tile(ramp, (32, 1))] * 3, axis=-1)


def warm_cool_half() -> np.ndarray:
    img = solid((230, 120, 30), 20, 20)  # orange
    img[10:] = (30, 80, 220)  # blue
    return img


@pytest.mark.parametrize(
    ("image", "temperature"),
    [
        (gradient_gray(), "neutral"),  # grayscale ramp: no chroma
        (solid((200, 195, 190)), "neutral"),  # warm-ish off-white, chroma below threshold
        (solid((240, 140, 30)), "warm"),  # orange
        (solid((150, 105, 60)), "warm"),  # medium wood
        (solid((30, 80, 220)), "cool"),  # blue
        (solid((40, 160, 80)), "cool"),  # green
        (warm_cool_half(), "neutral"),  # equal warm and cool shares
        (skimage.data.coffee(), "warm"),  # real photograph: coffee and a wooden table
    ],
)
def test_temperature(image: np.ndarray, temperature: str) -> None:
    assert extract_palette(image).temperature == temperature


@pytest.mark.parametrize(
    ("rgb", "brightness"),
    [
        ((255, 255, 255), 1.0),  # white
        ((0, 0, 0), 0.0),  # black
        ((119, 119, 119), 0.5),  # L* of sRGB 119 gray is ~50
    ],
)
def test_brightness(rgb: tuple[int, int, int], brightness: float) -> None:
    assert extract_palette(solid(rgb)).brightness == pytest.approx(brightness, abs=0.01)


@pytest.mark.parametrize(
    "image",
    [
        gradient_gray(),  # 64 gray levels, 16 bins
        skimage.data.astronaut(),  # photograph
    ],
)
def test_brightness_is_mean_lightness_of_pixels(image: np.ndarray) -> None:
    # Computed per bin at the L* of the bin's mean colour, so it matches the per-pixel mean
    # of L* closely but not exactly.
    expected = rgb2lab(image / 255.0)[..., 0].mean() / 100.0
    assert extract_palette(image).brightness == pytest.approx(expected, abs=0.005)


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((255, 0, 0), "red"),  # pure red
        ((0, 0, 255), "blue"),  # pure blue
        ((128, 128, 128), "gray"),  # mid gray
        ((250, 250, 250), "white"),  # near white
        ((5, 5, 5), "black"),  # near black
        ((196, 164, 120), "light_wood"),  # light wood (oak, birch)
        ((150, 105, 60), "medium_wood"),  # medium wood (teak)
        ((92, 58, 36), "dark_wood"),  # dark wood (walnut)
        ((255, 165, 0), "orange"),  # CSS orange
        ((0, 128, 128), "teal"),  # CSS teal
        ((245, 245, 220), "cream"),  # CSS beige is paler than our beige: reads as cream
        ([0.0, 0.0, 128.0], "navy"),  # list of floats is accepted
        (np.array([128, 0, 128], dtype=np.uint8), "purple"),  # numpy array is accepted
    ],
)
def test_name_color(rgb: Any, name: str) -> None:
    assert name_color(rgb) == name


def test_every_reference_colour_names_itself() -> None:
    for name, rgb in COLOR_NAMES.items():
        assert name_color(rgb) == name


def test_color_names_include_required_names() -> None:
    required = {
        "white", "black", "gray", "beige", "cream", "red", "orange", "yellow", "pink", "blue",
        "green", "teal", "purple", "brown", "tan", "gold", "light_wood", "medium_wood",
        "dark_wood",
    }  # fmt: skip
    assert required <= set(COLOR_NAMES)
    with pytest.raises(TypeError):
        COLOR_NAMES["new"] = (1, 2, 3)  # type: ignore[index]


@pytest.mark.parametrize(
    "rgb",
    [
        (255, 0),  # too few values
        (1, 2, 3, 4),  # too many values
        (256, 0, 0),  # above range
        (-1, 0, 0),  # below range
        (float("nan"), 0, 0),  # not finite
    ],
)
def test_name_color_rejects_bad_input(rgb: tuple) -> None:
    with pytest.raises(ValueError):
        name_color(rgb)


# --------------------------------------------------------------------------------------------
# Errors and edge cases
# --------------------------------------------------------------------------------------------

GOOD = solid(RED, 4, 4)


@pytest.mark.parametrize(
    ("image", "mask", "k", "message"),
    [
        (GOOD.astype(np.float32), None, 5, "dtype uint8"),  # wrong dtype
        (GOOD.astype(np.uint16), None, 5, "dtype uint8"),  # 16-bit image
        (GOOD[..., 0], None, 5, "shape"),  # 2-D (grayscale) image
        (np.zeros((4, 4, 4), np.uint8), None, 5, "shape"),  # RGBA passed as image
        (GOOD[None], None, 5, "shape"),  # 4-D batch
        (np.zeros((0, 5, 3), np.uint8), None, 5, "empty"),  # zero height
        (np.zeros((5, 0, 3), np.uint8), None, 5, "empty"),  # zero width
        (GOOD.tolist(), None, 5, "numpy array"),  # nested list, not an array
        (GOOD, np.ones((4, 5), bool), 5, "does not match"),  # mask shape mismatch
        (GOOD, np.ones((4, 4, 1), bool), 5, "does not match"),  # mask with channel axis
        (GOOD, np.zeros((4, 4), bool), 5, "no pixels"),  # empty mask
        (GOOD, np.ones((4, 4), np.uint8), 5, "bool"),  # 0/1 mask of the wrong dtype
        (GOOD, None, 0, "k must be"),  # k = 0
        (GOOD, None, -3, "k must be"),  # negative k
        (GOOD, None, 2.5, "k must be"),  # non-integer k
        (GOOD, None, True, "k must be"),  # bool is not a palette size
    ],
)
def test_extract_palette_rejects_bad_input(
    image: object, mask: object, k: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        extract_palette(image, mask=mask, k=k)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "rgb",
    [
        (0, 0, 0),  # black
        (255, 255, 255),  # white
        (12, 34, 56),  # arbitrary
    ],
)
def test_one_pixel_image(rgb: tuple[int, int, int]) -> None:
    palette = extract_palette(solid(rgb, 1, 1))
    assert [(c.rgb, c.share) for c in palette.colors] == [(rgb, 1.0)]
    assert palette.pixel_count == 1


def test_numpy_integer_k_is_accepted() -> None:
    assert len(extract_palette(two_colour(), k=np.int64(2)).colors) == 2


def test_deterministic_for_same_input_and_seed() -> None:
    img = skimage.data.astronaut()
    first = extract_palette(img, k=5, seed=7)
    second = extract_palette(img.copy(), k=5, seed=7)
    assert first == second
    assert first.to_dict() == second.to_dict()


def test_non_contiguous_image_matches_contiguous_copy() -> None:
    img = skimage.data.chelsea()[:, ::-1]  # negative stride view
    assert extract_palette(img) == extract_palette(np.ascontiguousarray(img))


@pytest.mark.parametrize(
    "shape",
    [
        (1, 70_000),  # one row longer than a histogram chunk
        (3, 40_000),  # rows that straddle chunk boundaries
        (50, 1_000),  # several rows per chunk
    ],
)
def test_wide_non_contiguous_image(shape: tuple[int, int]) -> None:
    rgba = np.zeros((*shape, 4), dtype=np.uint8)
    rgba[..., :3] = RED
    rgba[:, : shape[1] // 4, :3] = BLUE
    palette = extract_palette(rgba[..., :3])
    assert {c.rgb: c.share for c in palette.colors} == {RED: 0.75, BLUE: 0.25}


# --------------------------------------------------------------------------------------------
# Histogram exactness (the packed accumulators must not overflow)
# --------------------------------------------------------------------------------------------


def reference_histogram(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    px = pixels.reshape(-1, 3).astype(np.int64)
    idx = (px[:, 0] >> 4) << 8 | (px[:, 1] >> 4) << 4 | (px[:, 2] >> 4)
    counts = np.bincount(idx, minlength=4096)
    nz = np.flatnonzero(counts)
    sums = np.stack([np.bincount(idx, px[:, c], 4096)[nz] for c in range(3)], axis=1)
    return counts[nz].astype(np.float64), sums / counts[nz, None]


@pytest.mark.parametrize(
    ("image", "mask"),
    [
        (noise(300, 500), None),  # many bins, several chunks
        (skimage.data.coffee(), None),  # photograph
        (noise(300, 500)[::2, 1:], None),  # strided view
        (noise(300, 500), noise(300, 500, seed=2)[..., 0] > 100),  # masked
        (solid((255, 0, 7), 2100, 2100), None),  # 4.4M pixels in one bin: crosses _FLUSH
    ],
)
def test_histogram_counts_and_means_are_exact(image: np.ndarray, mask: np.ndarray | None) -> None:
    weights, means = colors._histogram(
        colors._pixel_chunks(image, mask), image.shape[0] * image.shape[1]
    )
    ref_w, ref_means = reference_histogram(image if mask is None else image[mask])
    np.testing.assert_array_equal(weights, ref_w)
    np.testing.assert_allclose(means, ref_means, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip_is_json_serialisable() -> None:
    palette = extract_palette(skimage.data.coffee())
    d = palette.to_dict()
    text = json.dumps(d)
    again = json.loads(text)
    assert again == d
    assert set(d) == {"palette", "dominant", "brightness", "temperature", "pixel_count", "method"}
    assert d["method"] == METHOD == "lab-kmeans-v1"
    assert d["dominant"] == d["palette"][0]
    first = d["palette"][0]
    assert set(first) == {"rgb", "hex", "lab", "name", "share"}
    assert isinstance(first["rgb"], list) and len(first["lab"]) == 3
    assert all(round(v, 2) == v for v in first["lab"])
    assert round(first["share"], 4) == first["share"]
    restored = Palette.from_dict(again)
    assert restored.to_dict() == d
    assert [c.rgb for c in restored.colors] == [c.rgb for c in palette.colors]
    assert restored.pixel_count == palette.pixel_count
    assert restored.temperature == palette.temperature


def test_palette_color_to_dict() -> None:
    color = PaletteColor(
        rgb=(255, 0, 0), hex="#ff0000", lab=(53.2408, 80.0925, 67.2032), name="red", share=0.7
    )
    assert color.to_dict() == {
        "rgb": [255, 0, 0],
        "hex": "#ff0000",
        "lab": [53.24, 80.09, 67.2],
        "name": "red",
        "share": 0.7,
    }
    assert PaletteColor.from_dict(color.to_dict()).rgb == (255, 0, 0)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("palette"),  # missing colours
        lambda d: d.update(palette=[]),  # empty palette
        lambda d: d.update(method="rgb-kmeans-v0"),  # another method's output
        lambda d: d.update(temperature="hot"),  # unknown temperature
        lambda d: d["palette"][0].pop("rgb"),  # colour without rgb
        lambda d: d["palette"][0].update(rgb=[300, 0, 0]),  # rgb out of range
        lambda d: d["palette"][0].update(share=1.5),  # share out of range
    ],
)
def test_from_dict_rejects_invalid(mutate) -> None:
    d = extract_palette(two_colour()).to_dict()
    mutate(d)
    with pytest.raises(ValueError):
        Palette.from_dict(d)


def test_from_dict_without_method_key_is_accepted() -> None:
    d = extract_palette(two_colour()).to_dict()
    del d["method"]
    assert Palette.from_dict(d).dominant.name == "red"


# --------------------------------------------------------------------------------------------
# Fidelity measure
# --------------------------------------------------------------------------------------------


def test_palette_delta_e_is_zero_for_two_colour_image() -> None:
    img = two_colour()
    palette = extract_palette(img)
    assert palette_delta_e(img, palette) == pytest.approx(0.0, abs=1e-6)
    assert palette_delta_e(img, [RED, BLUE]) == pytest.approx(0.0, abs=1e-6)


def test_palette_delta_e_matches_direct_computation() -> None:
    img = noise(16, 16)
    centres = np.array([[10.0, 20.0, 30.0], [200.0, 100.0, 50.0], [128.0, 128.0, 128.0]])
    lab = rgb2lab(img / 255.0).reshape(-1, 3)
    ref = rgb2lab(centres / 255.0)
    expected = np.min(np.linalg.norm(lab[:, None] - ref[None], axis=2), axis=1).mean()
    assert palette_delta_e(img, centres) == pytest.approx(expected, rel=1e-9)


def test_palette_delta_e_single_colour_against_other_colour() -> None:
    # Delta E76 between pure red and pure blue, from the CIELAB values.
    red_lab, blue_lab = rgb2lab(np.array([RED, BLUE], dtype=np.float64) / 255.0)
    expected = float(np.linalg.norm(red_lab - blue_lab))
    assert palette_delta_e(solid(RED), [BLUE]) == pytest.approx(expected, rel=1e-9)


def test_palette_beats_a_single_mean_colour_on_a_photograph() -> None:
    img = skimage.data.astronaut()
    palette = extract_palette(img, k=5)
    mean_colour = img.reshape(-1, 3).mean(axis=0)
    assert palette_delta_e(img, palette) < 0.7 * palette_delta_e(img, [mean_colour])


@pytest.mark.parametrize(
    "palette",
    [
        [],  # no colours
        [[1, 2]],  # wrong width
        [[0, 0, 300]],  # out of range
        [[0, 0, float("inf")]],  # not finite
    ],
)
def test_palette_delta_e_rejects_bad_palette(palette: object) -> None:
    with pytest.raises(ValueError):
        palette_delta_e(GOOD, palette)  # type: ignore[arg-type]


def test_palette_delta_e_validates_image_and_mask() -> None:
    with pytest.raises(ValueError, match="dtype uint8"):
        palette_delta_e(GOOD.astype(float), [RED])
    with pytest.raises(ValueError, match="no pixels"):
        palette_delta_e(GOOD, [RED], mask=np.zeros((4, 4), bool))
