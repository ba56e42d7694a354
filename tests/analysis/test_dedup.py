"""Tests for modomo.analysis.dedup (Hamming / cosine self-joins, groups) and modomo.images.phash.

The pHash tests use real photographs that ship inside scikit-image and scikit-learn (see
``scripts/demo_sources.py``), and transformed copies of them made here.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import sklearn.datasets
from PIL import Image, ImageEnhance

from modomo.analysis import dedup
from modomo.analysis.dedup import (
    brute_force_hamming_pairs,
    choose_canonical,
    choose_chunks,
    cosine_pairs,
    duplicate_groups,
    hamming_pairs,
    hex_to_uint64,
    nearest,
    uint64_to_hex,
)
from modomo.config import Settings
from modomo.images.loading import ImageError
from modomo.images.phash import phash_hex, phash_of_array

MAX_PIXELS = 50_000_000
DEFAULT_DISTANCE = Settings.model_fields["phash_max_distance"].default


def random_hashes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, n, dtype=np.uint64, endpoint=False)


def flip_bits(value: np.uint64, count: int, rng: np.random.Generator) -> np.uint64:
    """``value`` with ``count`` distinct random bits flipped."""
    mask = 0
    for bit in rng.choice(64, size=count, replace=False):
        mask |= 1 << int(bit)
    return np.uint64(int(value) ^ mask)


def planted(n: int = 3000, copies: int = 200, max_flips: int = 12, seed: int = 0) -> np.ndarray:
    """``n`` random hashes, ``copies`` near-copies of some of them (0..max_flips bits flipped)
    and a few exact duplicates."""
    rng = np.random.default_rng(seed)
    base = random_hashes(n, seed)
    sources = rng.integers(0, n, copies)
    near = [flip_bits(base[s], int(rng.integers(0, max_flips + 1)), rng) for s in sources]
    return np.concatenate([base, np.array(near, dtype=np.uint64), base[:5], base[:1]])


# --------------------------------------------------------------------------------------
# hex


def test_hex_round_trip() -> None:
    values = np.concatenate(
        [np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64), random_hashes(1000, 3)]
    )
    texts = uint64_to_hex(values)
    assert texts[:4] == ["0000000000000000", "0000000000000001", "8000000000000000", "f" * 16]
    assert all(len(t) == 16 and t == t.lower() for t in texts)
    back = hex_to_uint64(texts)
    assert back.dtype == np.uint64 and back.shape == (1004,)
    np.testing.assert_array_equal(back, values)
    assert hex_to_uint64(["ABCDEF0123456789"])[0] == np.uint64(0xABCDEF0123456789)
    assert hex_to_uint64([]).shape == (0,)
    assert uint64_to_hex([255, 2**64 - 1]) == ["00000000000000ff", "f" * 16]


@pytest.mark.parametrize(
    "bad",
    [["123"], ["0x23456789abcdef"], ["g123456789abcdef"], ["0123456789abcdeé"], [None], [12]],
)
def test_hex_to_uint64_rejects(bad: list[object]) -> None:
    with pytest.raises(ValueError, match="hash 1 is not a 16-character hex string"):
        hex_to_uint64(["0123456789abcdef", *bad])  # type: ignore[list-item]


@pytest.mark.parametrize("bad", [[-1], [2**64], [1.5], np.zeros((2, 2), dtype=np.uint64)])
def test_uint64_to_hex_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        uint64_to_hex(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Hamming self-join


@pytest.mark.parametrize("r", [0, 3, 8, 10, 12])
def test_hamming_pairs_matches_brute_force(r: int) -> None:
    hashes = planted()
    pairs, dists = hamming_pairs(hashes, r)
    ref_pairs, ref_dists = brute_force_hamming_pairs(hashes, r)
    assert pairs.dtype == np.int64 and dists.dtype == np.uint8
    assert pairs.shape == (dists.size, 2)
    np.testing.assert_array_equal(pairs, ref_pairs)
    np.testing.assert_array_equal(dists, ref_dists)
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert np.array_equal(np.lexsort((pairs[:, 1], pairs[:, 0])), np.arange(len(pairs)))
    xor = hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]]
    np.testing.assert_array_equal(np.bitwise_count(xor), dists)
    # the exact duplicates appended by planted() are always found
    n = 3200
    assert {(0, n + 5), (0, n), (1, n + 1), (n, n + 5)} <= set(map(tuple, pairs.tolist()))


@pytest.mark.parametrize("chunks", [3, 4, 5, 6, 8, 11])
def test_hamming_pairs_every_chunk_count_and_small_blocks(
    monkeypatch: pytest.MonkeyPatch, chunks: int
) -> None:
    """Forced chunk counts (sparse and dense tables, radii 0..3) and tiny candidate blocks."""
    hashes = planted(1500, 150, max_flips=10, seed=chunks)
    ref_pairs, ref_dists = brute_force_hamming_pairs(hashes, 10)
    monkeypatch.setattr(dedup, "choose_chunks", lambda n, r: chunks)
    monkeypatch.setattr(dedup, "CANDIDATE_BLOCK", 257)
    pairs, dists = hamming_pairs(hashes, 10)
    np.testing.assert_array_equal(pairs, ref_pairs)
    np.testing.assert_array_equal(dists, ref_dists)


def test_hamming_pairs_edge_cases() -> None:
    for n in (0, 1):
        pairs, dists = hamming_pairs(random_hashes(n, 0), 10)
        assert pairs.shape == (0, 2) and pairs.dtype == np.int64
        assert dists.shape == (0,) and dists.dtype == np.uint8
    same = np.full(40, 0xDEADBEEF, dtype=np.uint64)
    pairs, dists = hamming_pairs(same, 0)
    assert pairs.tolist() == [[i, j] for i, j in itertools.combinations(range(40), 2)]
    assert not dists.any()
    two = np.array([0, 2**32 - 1], dtype=np.uint64)  # 32 bits apart
    assert hamming_pairs(two, 31)[0].shape == (0, 2)
    assert hamming_pairs(two, 32)[0].tolist() == [[0, 1]]
    # non-contiguous input
    strided = planted(600, 60)[::2]
    np.testing.assert_array_equal(
        hamming_pairs(strided, 10)[0], brute_force_hamming_pairs(strided, 10)[0]
    )


@pytest.mark.parametrize("fn", [hamming_pairs, brute_force_hamming_pairs])
def test_hamming_pairs_rejects(fn: Callable[..., object]) -> None:
    hashes = random_hashes(10, 0)
    for bad_r in (-1, 33):
        with pytest.raises(ValueError, match=r"max_distance must be in \[0, 32\]"):
            fn(hashes, bad_r)
    for bad_type in (True, 2.0):
        with pytest.raises(ValueError, match="max_distance must be an int"):
            fn(hashes, bad_type)
    for bad in (hashes.astype(np.int64), hashes.reshape(2, 5), list(hashes)):
        with pytest.raises(ValueError, match="one-dimensional uint64"):
            fn(bad, 10)


def test_choose_chunks() -> None:
    assert choose_chunks(200_000, 10) == 4  # 16-bit chunks, radius 2
    for r in (0, 1, 2):
        assert choose_chunks(200_000, r) == 3
    for n in (0, 10, 1000, 10**6):
        for r in range(33):
            m = choose_chunks(n, r)
            assert 3 <= m <= max(3, r + 1) and -(-64 // m) <= 22


# --------------------------------------------------------------------------------------
# pHash on real photographs

SKIMAGE_DIR = Path(os.path.dirname(skimage.data.__file__))
SKLEARN_DIR = Path(os.path.dirname(sklearn.datasets.__file__)) / "images"
PHOTOS = [
    SKIMAGE_DIR / "astronaut.png",
    SKIMAGE_DIR / "coffee.png",
    SKIMAGE_DIR / "chelsea.png",
    SKIMAGE_DIR / "rocket.jpg",
    SKIMAGE_DIR / "motorcycle_left.png",
    SKIMAGE_DIR / "ihc.png",
    SKLEARN_DIR / "china.jpg",
    SKLEARN_DIR / "flower.jpg",
]


def encode(im: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buf = io.BytesIO()
    if fmt == "PNG":
        options.setdefault("compress_level", 1)
    im.save(buf, fmt, **options)
    return buf.getvalue()


def crop(im: Image.Image, side: str) -> Image.Image:
    """Crop 5% of the width (left/right) or height (top/bottom) off one side, or 2.5% off
    each of the four sides (``centre``: 95% x 95% of the picture is kept)."""
    w, h = im.size
    dw, dh = round(w * 0.05), round(h * 0.05)
    boxes = {
        "right": (0, 0, w - dw, h),
        "left": (dw, 0, w, h),
        "top": (0, dh, w, h),
        "bottom": (0, 0, w, h - dh),
        "centre": (dw // 2, dh // 2, w - dw // 2, h - dh // 2),
    }
    return im.crop(boxes[side])


def transformed_copies(path: Path) -> dict[str, bytes]:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    copies = {
        "original": path.read_bytes(),
        "half": encode(im.resize((w // 2, h // 2), Image.Resampling.LANCZOS)),
        "jpeg60": encode(im, "JPEG", quality=60),
        "bright": encode(ImageEnhance.Brightness(im).enhance(1.2)),
    }
    for side in ("right", "left", "top", "bottom", "centre"):
        copies[f"crop_{side}"] = encode(crop(im, side))
    return copies


@pytest.fixture(scope="module")
def photo_hashes() -> dict[str, dict[str, str]]:
    """photo name -> variant -> pHash hex."""
    assert all(p.is_file() for p in PHOTOS), "scikit-image / scikit-learn sample photos missing"
    return {
        p.name: {k: phash_hex(v, max_pixels=MAX_PIXELS) for k, v in transformed_copies(p).items()}
        for p in PHOTOS
    }


def distance(a: str, b: str) -> int:
    return int(int(a, 16) ^ int(b, 16)).bit_count()


#: Variants that the default threshold (10 bits) must pair with their original. Measured
#: distances (Pillow 13.0, imagehash 4.3): resize 50%, JPEG q60 and brightness x1.2 move 0-6
#: bits; cropping 5% of the width off the right side 6-8 bits. Other 5% crops move more:
#: off the left side up to 10 (rocket), off the bottom up to 12 (china), 2.5% off all four
#: sides up to 12 (rocket), and off the top up to 16 (coffee) -- pHash is sensitive to crops,
#: which shift the picture against the DCT basis. test_phash_crops_are_separable checks that
#: some threshold still separates all those copies from other photos.
DEFAULT_VARIANTS = ("half", "jpeg60", "bright", "crop_right")


def test_phash_default_threshold_pairs_copies_and_not_photos(
    photo_hashes: dict[str, dict[str, str]],
) -> None:
    assert DEFAULT_DISTANCE == 10
    names: list[tuple[str, str]] = []
    hexes: list[str] = []
    for photo, variants in photo_hashes.items():
        for variant in ("original", *DEFAULT_VARIANTS):
            names.append((photo, variant))
            hexes.append(variants[variant])
    pairs, _ = hamming_pairs(hex_to_uint64(hexes), DEFAULT_DISTANCE)
    found = {(names[i], names[j]) for i, j in pairs.tolist()}
    for photo in photo_hashes:
        for variant in DEFAULT_VARIANTS:
            d = distance(photo_hashes[photo]["original"], photo_hashes[photo][variant])
            assert ((photo, "original"), (photo, variant)) in found, (photo, variant, d)
    cross = [(a, b) for a, b in found if a[0] != b[0]]
    assert not cross


def test_phash_crops_are_separable(
    photo_hashes: dict[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every copy (all crops included) is closer to its original than any copy of another
    photo is to any copy of this one, so *some* threshold separates them; the distance
    table is printed (``pytest -s``) to choose it."""
    variants = [v for v in next(iter(photo_hashes.values())) if v != "original"]
    with capsys.disabled():
        print("\npHash distance to the original:")
        print(f"{'photo':<22}" + "".join(f"{v:>13}" for v in variants))
        for photo, hashes in photo_hashes.items():
            row = [distance(hashes["original"], hashes[v]) for v in variants]
            print(f"{photo:<22}" + "".join(f"{d:>13}" for d in row))
    same = max(distance(h["original"], h[v]) for h in photo_hashes.values() for v in variants)
    other = min(
        distance(a, b)
        for x, y in itertools.combinations(photo_hashes.values(), 2)
        for a in x.values()
        for b in y.values()
    )
    with capsys.disabled():
        print(f"largest copy distance {same}, smallest distance between different photos {other}")
    assert same < other


def test_phash_exif_rotation_gives_upright_hash() -> None:
    upright = Image.fromarray(skimage.data.chelsea())
    # Orientation 6 = "rotate 90 degrees clockwise to display": store the picture turned
    # 90 degrees counter-clockwise.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ("PNG", "JPEG"):
        expected = phash_hex(encode(upright, fmt), max_pixels=MAX_PIXELS)
        assert phash_hex(encode(stored, fmt, exif=exif), max_pixels=MAX_PIXELS) == expected
        assert distance(phash_hex(encode(stored, fmt), max_pixels=MAX_PIXELS), expected) > 10


def test_phash_of_array_matches_file_and_rejects_bad_arrays() -> None:
    rgb = skimage.data.astronaut()
    value = phash_of_array(rgb)
    assert len(value) == 16 and value == value.lower() and int(value, 16) >= 0
    assert phash_hex(encode(Image.fromarray(rgb)), max_pixels=MAX_PIXELS) == value
    for bad in (rgb.astype(np.float32), rgb[:, :, 0], rgb[:, :, :2], rgb[:0], [[[0, 0, 0]]]):
        with pytest.raises(ValueError):
            phash_of_array(bad)  # type: ignore[arg-type]


def test_phash_hex_errors() -> None:
    good = encode(Image.fromarray(skimage.data.coffee()), "JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        phash_hex(good[: len(good) // 2], max_pixels=MAX_PIXELS)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        phash_hex(b"\xff\xd8\xff\xe0" + bytes(200), max_pixels=MAX_PIXELS)
    with pytest.raises(ImageError, match="not an image"):
        phash_hex(b"<html><body>404</body></html>", max_pixels=MAX_PIXELS)
    with pytest.raises(ImageError, match="empty file"):
        phash_hex(b"", max_pixels=MAX_PIXELS)
    with pytest.raises(ImageError, match="image too large"):
        phash_hex(good, max_pixels=1000)
    with pytest.raises(ValueError, match="max_pixels"):
        phash_hex(good, max_pixels=0)


# --------------------------------------------------------------------------------------
# cosine


def embeddings_with_copies(
    n: int = 3000, copies: int = 100, dim: int = 64, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Random unit vectors plus ``copies`` noisy copies (cosine ~0.98 to their source);
    returns (embeddings, sources) where copy ``t`` is row ``n + t`` of source ``sources[t]``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, dim)).astype(np.float32)
    sources = rng.choice(n, copies, replace=False)
    near = base[sources] / np.linalg.norm(base[sources], axis=1, keepdims=True)
    near = near + 0.02 * rng.normal(size=(copies, dim)).astype(np.float32)
    vectors = np.vstack([base, near]).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), sources


@pytest.mark.parametrize("exact", [True, False, None])
def test_cosine_pairs_finds_planted_and_agrees_with_brute_force(exact: bool | None) -> None:
    vectors, sources = embeddings_with_copies()
    n = 3000
    pairs, sims = cosine_pairs(vectors, 0.9, exact=exact)  # None: N > 2048 -> HNSW
    assert pairs.dtype == np.int64 and sims.dtype == np.float32 and pairs.shape == (100, 2)
    expected = sorted((int(s), n + t) for t, s in enumerate(sources))
    assert pairs.tolist() == [list(p) for p in expected]
    full = vectors @ vectors.T
    i, j = np.nonzero(np.triu(full >= 0.9, 1))
    near_threshold = np.abs(full[np.triu_indices(len(vectors), 1)] - 0.9) < 1e-4
    assert not near_threshold.any()
    np.testing.assert_array_equal(pairs, np.stack([i, j], axis=1))
    np.testing.assert_allclose(sims, full[i, j], atol=1e-5)
    assert (sims > 0.95).all()


def test_cosine_pairs_normalises_and_edge_cases() -> None:
    vectors, sources = embeddings_with_copies(200, 5, dim=16, seed=4)
    scaled = vectors * np.random.default_rng(0).uniform(0.5, 20, size=(205, 1))
    np.testing.assert_array_equal(cosine_pairs(scaled, 0.9)[0], cosine_pairs(vectors, 0.9)[0])
    assert len(cosine_pairs(vectors, 0.9)[0]) == 5
    assert cosine_pairs(vectors, 1.0)[0].shape == (0, 2)
    with_zero = np.vstack([vectors, np.zeros((2, 16))])
    assert len(cosine_pairs(with_zero, 0.9)[0]) == 5
    for n in (0, 1):
        pairs, sims = cosine_pairs(np.ones((n, 8), dtype=np.float32), 0.5)
        assert pairs.shape == (0, 2) and pairs.dtype == np.int64
        assert sims.shape == (0,) and sims.dtype == np.float32
    identical = np.ones((4, 3), dtype=np.float32)
    assert cosine_pairs(identical, 0.99, k=3)[0].tolist() == [
        list(p) for p in itertools.combinations(range(4), 2)
    ]


def test_cosine_pairs_rejects() -> None:
    good = np.eye(4, dtype=np.float32)
    for bad in (np.ones(4), np.ones((3, 0)), np.array([[np.nan, 1.0]]), np.array([["a"]])):
        with pytest.raises(ValueError):
            cosine_pairs(bad, 0.9)
    for bad_sim in (1.5, -2.0):
        with pytest.raises(ValueError, match="min_similarity"):
            cosine_pairs(good, bad_sim)
    with pytest.raises(ValueError, match="k must be"):
        cosine_pairs(good, 0.9, k=0)


def test_nearest() -> None:
    vectors, sources = embeddings_with_copies(500, 10, dim=32, seed=2)
    idx, sims = nearest(vectors, vectors[sources[0]] * 3.0, 2)
    assert idx.tolist() == [sources[0], 500] and idx.dtype == np.int64
    assert sims.dtype == np.float32 and sims[0] == pytest.approx(1.0, abs=1e-5)
    idx, sims = nearest(vectors, vectors[:3], 4)
    assert idx.shape == sims.shape == (3, 4)
    assert idx[:, 0].tolist() == [0, 1, 2]
    assert (np.diff(sims, axis=1) <= 1e-6).all()
    brute = np.argsort(-(vectors @ vectors[:3].T), axis=0)[:4].T
    np.testing.assert_array_equal(idx, brute)
    assert nearest(vectors[:2], vectors[0], 5)[0].shape == (2,)
    with pytest.raises(ValueError, match="dimension"):
        nearest(vectors, np.ones(5), 1)
    with pytest.raises(ValueError, match="k must be"):
        nearest(vectors, vectors[0], 0)


# --------------------------------------------------------------------------------------
# groups


def test_duplicate_groups() -> None:
    labels = duplicate_groups(7, np.array([[5, 6], [1, 3], [3, 6], [2, 2]]))
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 2, 1, 3, 1, 1]
    assert duplicate_groups(3, np.zeros((0, 2), dtype=np.int64)).tolist() == [0, 1, 2]
    assert duplicate_groups(0, np.zeros((0, 2), dtype=np.int64)).shape == (0,)
    pairs, _ = hamming_pairs(np.array([7, 7, 2**40, 6], dtype=np.uint64), 1)
    assert duplicate_groups(4, pairs).tolist() == [0, 0, 1, 0]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        duplicate_groups(3, np.array([[0, 3]]))
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        duplicate_groups(3, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="non-negative"):
        duplicate_groups(-1, np.zeros((0, 2), dtype=np.int64))


def test_choose_canonical() -> None:
    labels = np.array([0, 1, 0, 1, 2, 0, 1])
    score = np.array([5, 3, 9, 3, 1, 9, 2])
    result = choose_canonical(labels, score)
    assert result.dtype == np.int64
    # group 0: items 0, 2, 5 -> 2 and 5 tie on 9, the lower index wins
    # group 1: items 1, 3, 6 -> 1 and 3 tie on 3 -> 1; group 2: item 4 alone
    assert result.tolist() == [2, 1, 2, 1, 4, 2, 1]
    assert choose_canonical(np.array([10, -4, 10]), np.array([0.5, 1.0, 2.5])).tolist() == [
        2,
        1,
        2,
    ]
    assert choose_canonical(np.zeros(0, dtype=np.int64), np.zeros(0)).shape == (0,)
    with pytest.raises(ValueError, match="equal length"):
        choose_canonical(np.zeros(3, dtype=np.int64), np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        choose_canonical(np.zeros(2, dtype=np.int64), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="integers"):
        choose_canonical(np.zeros(2), np.zeros(2))
