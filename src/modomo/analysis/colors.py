"""Colour palettes of interior photographs: dominant colours, names, brightness, temperature.

Colour is the core of what Modomo sells (datasets of rooms described by their palette), so the
palette extractor is our own code rather than an off-the-shelf "dominant colours" helper: we
need to control exactly what a share means, how colours are compared, which names are used and
how fast it runs on every photograph we ingest. Only the standard colour-space conversions and
the CIEDE2000 formula are taken from scikit-image.

Method (``"lab-kmeans-v1"``):

1. **Histogram.** Every selected pixel (all of them; no random subsampling) is quantised to
   4 bits per sRGB channel (4,096 bins). Per bin we accumulate the pixel count and the exact
   per-channel sums with two ``np.bincount`` passes over packed integer weights (see
   :func:`_histogram`), so every non-empty bin carries the exact *mean* colour of its pixels,
   not the bin centre. A flat colour therefore comes out exactly. 4 bits rather than 5 let
   the bin index be computed with one multiply per pixel; on the benchmark set
   (``bench/colors.py``) it costs no measurable fidelity because clusters are built from bin
   means, and it keeps the k-means below small (typically a few hundred to ~1,500 points).
2. **CIELAB.** Only the non-empty bins' mean colours are converted from sRGB (IEC 61966-2-1)
   to CIELAB under D65 / 2-degree observer (CIE 15:2004) with :func:`skimage.color.rgb2lab`.
   Converting every pixel is what makes naive extractors slow.
3. **Weighted k-means in CIELAB.** Greedy k-means++ seeding (Arthur & Vassilvitskii 2007,
   "k-means++: the advantages of careful seeding", SODA): each new centre is the best of
   ``LOCAL_TRIALS`` candidates drawn with probability proportional to weight times squared
   distance; then Lloyd iterations until the assignment no longer changes (at most
   ``MAX_ITER``). Each bin is weighted by its pixel count. Random draws come from
   ``numpy.random.default_rng(seed)``, so the result is deterministic for a given seed.
   ``k`` is capped at the number of non-empty bins.
4. **Clean-up.** Empty clusters are dropped; the closest pair of centres is merged while it is
   closer than ``MERGE_DELTA_E`` (CIE76 Delta E*ab); after every merge the bins are re-assigned
   to the nearest surviving centre and the centres recomputed.
5. **Shares.** A colour's share is the number of pixels in the bins assigned to it divided by
   the number of selected pixels. Shares are therefore exact pixel fractions *at bin
   resolution*: all pixels of one bin go to the same colour, even if a few of them lie nearer
   to another centre. Shares of a palette sum to 1 (up to float rounding).
6. **Reported colour.** A centre's colour is its weighted CIELAB mean converted back to sRGB,
   clipped to the gamut and rounded to 8 bits; ``lab`` is the CIELAB value of that rounded sRGB
   colour, so ``rgb``, ``hex`` and ``lab`` always describe the same colour.
7. **Names.** Each colour gets the name of the nearest entry of :data:`COLOR_NAMES` by
   CIEDE2000 (Sharma, Wu & Dalal 2005, "The CIEDE2000 color-difference formula: implementation
   notes, supplementary test data, and mathematical observations", Color Res. Appl. 30(1)),
   via :func:`skimage.color.deltaE_ciede2000`.
8. **Brightness** is the pixel-weighted mean L* of the bins (each bin at the L* of its mean
   colour) divided by 100. **Temperature** is the project's own heuristic on the CIELAB hue
   angle ``h = atan2(b*, a*)`` of the share-weighted palette colours (see :func:`_temperature`
   for the thresholds).

:func:`palette_delta_e` converts every pixel to CIELAB and measures the mean CIE76 distance to
the nearest palette colour; it is the fidelity measure used by the tests and ``bench/colors.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from skimage.color import deltaE_ciede2000, lab2rgb, rgb2lab

__all__ = [
    "COLOR_NAMES",
    "METHOD",
    "Palette",
    "PaletteColor",
    "extract_palette",
    "name_color",
    "palette_delta_e",
]

#: Identifier written into serialised palettes; bump it when the method's output changes.
METHOD = "lab-kmeans-v1"

#: Pixels per histogram chunk (keeps temporaries in cache).
_CHUNK = 1 << 15
#: Field spacing of the packed float64 accumulators in :func:`_histogram`.
_SPACING_BITS = 26
_SPACING = float(1 << _SPACING_BITS)
#: Pixels accumulated before the packed sums are unpacked: 15 * 2**22 < 2**26 (a field cannot
#: overflow into the next) and 16 * 2**22 * 2**26 < 2**53 (float64 sums stay exact).
_FLUSH = 1 << 22
#: Pixels converted to CIELAB at a time by :func:`palette_delta_e`.
_DELTA_E_CHUNK = 1 << 20
#: Clusters whose centres are closer than this CIE76 Delta E*ab are merged.
MERGE_DELTA_E = 3.0
#: Candidates tried for each k-means++ centre (greedy seeding); the best one is kept.
LOCAL_TRIALS = 16
#: Maximum Lloyd iterations (they stop earlier once the assignment is stable).
MAX_ITER = 10

#: Temperature heuristic (project's own): colours with chroma C* below this are neutral.
NEUTRAL_CHROMA = 12.0
#: Hue-angle ranges in degrees [start, end) that vote "warm" (reds, oranges, yellows).
WARM_HUES: tuple[tuple[float, float], ...] = ((330.0, 360.0), (0.0, 100.0))
#: Hue-angle ranges in degrees [start, end) that vote "cool" (greens, cyans, blues, purples).
COOL_HUES: tuple[tuple[float, float], ...] = ((140.0, 300.0),)
#: Below this total share of chromatic colours the palette is "neutral".
MIN_CHROMATIC_SHARE = 0.25
#: If the warm and cool shares differ by less than this the palette is "neutral".
TEMPERATURE_MARGIN = 0.1

_TEMPERATURES = ("warm", "cool", "neutral")

#: Reference sRGB (0-255) for each colour name. Chosen for interiors: neutrals, common paint
#: colours and three wood tones. Pure primaries name as "red"/"blue", (128,128,128) as "gray".
COLOR_NAMES: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "white": (245, 245, 242),
        "light_gray": (192, 192, 190),
        "gray": (128, 128, 128),
        "charcoal": (64, 64, 66),
        "black": (18, 18, 18),
        "cream": (245, 238, 212),
        "beige": (222, 205, 170),
        "tan": (210, 180, 140),
        "light_wood": (196, 164, 120),
        "medium_wood": (150, 105, 60),
        "dark_wood": (92, 58, 36),
        "brown": (110, 70, 40),
        "red": (220, 30, 30),
        "burgundy": (120, 20, 40),
        "pink": (240, 170, 190),
        "orange": (240, 130, 30),
        "gold": (200, 160, 50),
        "yellow": (245, 215, 40),
        "olive": (110, 110, 40),
        "light_green": (140, 200, 100),
        "sage": (150, 170, 130),
        "green": (50, 150, 60),
        "teal": (0, 128, 128),
        "light_blue": (150, 190, 230),
        "blue": (35, 75, 205),
        "navy": (25, 35, 85),
        "purple": (120, 60, 160),
    }
)

_NAME_LIST: tuple[str, ...] = tuple(COLOR_NAMES)
_NAME_LAB: np.ndarray = rgb2lab(
    np.array([COLOR_NAMES[n] for n in _NAME_LIST], dtype=np.float64) / 255.0
)


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaletteColor:
    """One colour of a palette.

    Attributes:
        rgb: sRGB triplet, integers 0-255.
        hex: ``"#rrggbb"``, lowercase, same colour as ``rgb``.
        lab: CIELAB (D65, 2-degree observer) of ``rgb``; L* in 0-100, a*/b* roughly -128..127.
        name: nearest entry of :data:`COLOR_NAMES` by CIEDE2000.
        share: fraction (0-1) of the selected pixels represented by this colour.
    """

    rgb: tuple[int, int, int]
    hex: str
    lab: tuple[float, float, float]
    name: str
    share: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict.

        Returns:
            ``{"rgb": [r, g, b], "hex": str, "lab": [L, a, b] (2 dp), "name": str,
            "share": float (4 dp)}``.
        """
        return {
            "rgb": [int(c) for c in self.rgb],
            "hex": self.hex,
            "lab": [round(float(c), 2) for c in self.lab],
            "name": self.name,
            "share": round(float(self.share), 4),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PaletteColor:
        """Rebuild a colour from :meth:`to_dict` output.

        Args:
            d: mapping with keys ``rgb``, ``hex``, ``lab``, ``name``, ``share``.

        Returns:
            The colour (values as stored; ``lab`` and ``share`` carry the dict's rounding).

        Raises:
            ValueError: a key is missing or a value has the wrong shape or range.
        """
        try:
            rgb = tuple(int(c) for c in d["rgb"])
            lab = tuple(float(c) for c in d["lab"])
            hex_ = str(d["hex"]).lower()
            name = str(d["name"])
            share = float(d["share"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"invalid palette colour dict: {exc!r}") from exc
        if len(rgb) != 3 or any(c < 0 or c > 255 for c in rgb):
            raise ValueError(f"rgb must be three integers in 0-255, got {d['rgb']!r}")
        if len(lab) != 3:
            raise ValueError(f"lab must have three components, got {d['lab']!r}")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share}")
        return cls(rgb=rgb, hex=hex_, lab=lab, name=name, share=share)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Palette:
    """Colour palette of an image (or of the masked part of one).

    Attributes:
        colors: palette colours sorted by share, descending; at most ``k`` of them.
        brightness: mean L* of the selected pixels divided by 100, in 0-1 (computed per
            histogram bin at the L* of the bin's mean colour; within ~0.005 of the per-pixel
            mean).
        temperature: ``"warm"``, ``"cool"`` or ``"neutral"`` (see :func:`_temperature`).
        pixel_count: number of pixels the palette was computed over.
    """

    colors: tuple[PaletteColor, ...]
    brightness: float
    temperature: str
    pixel_count: int

    @property
    def dominant(self) -> PaletteColor:
        """The colour with the largest share (``colors[0]``).

        Raises:
            ValueError: the palette has no colours.
        """
        if not self.colors:
            raise ValueError("empty palette has no dominant colour")
        return self.colors[0]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict.

        Returns:
            ``{"palette": [colour dicts], "dominant": colour dict, "brightness": float (4 dp),
            "temperature": str, "pixel_count": int, "method": "lab-kmeans-v1"}``.
        """
        return {
            "palette": [c.to_dict() for c in self.colors],
            "dominant": self.dominant.to_dict(),
            "brightness": round(float(self.brightness), 4),
            "temperature": self.temperature,
            "pixel_count": int(self.pixel_count),
            "method": METHOD,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Palette:
        """Rebuild a palette from :meth:`to_dict` output.

        ``"dominant"`` is ignored (it is derived from ``"palette"``); ``"method"`` may be
        absent but, if present, must be ``"lab-kmeans-v1"``.

        Args:
            d: mapping as produced by :meth:`to_dict`.

        Returns:
            The palette, with colours re-sorted by share (descending).

        Raises:
            ValueError: missing keys, an empty palette, an unknown temperature or method.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"palette dict must be a mapping, got {type(d).__name__}")
        method = d.get("method", METHOD)
        if method != METHOD:
            raise ValueError(f"unsupported palette method {method!r}; expected {METHOD!r}")
        try:
            raw_colors = d["palette"]
            brightness = float(d["brightness"])
            temperature = str(d["temperature"])
            pixel_count = int(d["pixel_count"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"invalid palette dict: {exc!r}") from exc
        colors = tuple(PaletteColor.from_dict(c) for c in raw_colors)
        if not colors:
            raise ValueError("palette dict has no colours")
        if temperature not in _TEMPERATURES:
            raise ValueError(f"temperature must be one of {_TEMPERATURES}, got {temperature!r}")
        colors = tuple(sorted(colors, key=lambda c: -c.share))
        return cls(
            colors=colors, brightness=brightness, temperature=temperature, pixel_count=pixel_count
        )


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _validate_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must have shape (H, W, 3) RGB, got {image.shape}; for RGBA pass "
            "image[..., :3] and mask=image[..., 3] > 0"
        )
    if image.dtype != np.uint8:
        raise ValueError(f"image must have dtype uint8, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    return image


def _validate_inputs(image: Any, mask: Any) -> None:
    """Raise ValueError unless image is non-empty (H, W, 3) uint8 and mask is None or a
    non-empty (H, W) bool selection."""
    _validate_image(image)
    if mask is None:
        return
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"mask must be a numpy array, got {type(mask).__name__}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must have dtype bool, got {mask.dtype}")
    if not mask.any():
        raise ValueError("mask selects no pixels")


def _selected_pixels(image: Any, mask: Any) -> np.ndarray:
    """Validate inputs and return the selected pixels as an (N, 3) uint8 array, N >= 1."""
    _validate_inputs(image, mask)
    return image.reshape(-1, 3) if mask is None else image[mask]


def _rgb_triplet(rgb: Any) -> np.ndarray:
    arr = np.asarray(rgb, dtype=np.float64)
    if arr.shape != (3,):
        raise ValueError(f"rgb must be three values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > 255):
        raise ValueError(f"rgb values must be in 0-255, got {rgb!r}")
    return arr


# --------------------------------------------------------------------------------------------
# Histogram and weighted k-means
# --------------------------------------------------------------------------------------------


def _pixel_chunks(image: np.ndarray, mask: np.ndarray | None) -> Iterator[np.ndarray]:
    """Yield the selected pixels as (n, 3) uint8 arrays of at most ``_CHUNK`` pixels.

    Working in cache-sized chunks keeps every temporary small (a large photo would otherwise
    allocate several arrays of 4-8 bytes per pixel) and bounds the per-bin sums that the packed
    accumulators of :func:`_histogram` must hold. Inputs are assumed validated.
    """
    if mask is not None:
        flat = image[mask]
    elif image.flags.c_contiguous:
        flat = image.reshape(-1, 3)
    else:  # e.g. image[..., :3] of an RGBA array: copy one block of rows at a time
        rows = max(1, _CHUNK // image.shape[1])
        for r0 in range(0, image.shape[0], rows):
            block = image[r0 : r0 + rows].reshape(-1, 3)
            for c0 in range(0, block.shape[0], _CHUNK):
                yield block[c0 : c0 + _CHUNK]
        return
    for c0 in range(0, flat.shape[0], _CHUNK):
        yield flat[c0 : c0 + _CHUNK]


def _histogram(chunks: Iterable[np.ndarray], max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantise pixels into 4-bit-per-channel bins with exact per-bin mean colours.

    Per chunk, each pixel's three bytes are read as one little-endian uint32
    ``v = r | g << 8 | b << 16`` (a strided view over a padded copy of the chunk), then:

    * bin index ``(r >> 4) << 8 | (g >> 4) << 4 | (b >> 4)`` =
      ``((v & 0xF0F0F0) * 0x1001001) >> 20`` (the multiply gathers the three high nibbles
      into bits 20-31 without carries);
    * two weighted ``np.bincount`` calls accumulate, per bin,
      ``sum(r & 15) + 2**26 * sum(g & 15)`` and ``count + 2**26 * sum(b & 15)``. These are
      integers held exactly in float64 while each field stays below ``2**26`` and the total
      below ``2**53``, which flushing to separate accumulators every ``_FLUSH`` pixels
      guarantees.

    This gives counts and exact channel sums in two scatter passes with a handful of cheap
    uint32 operations per pixel (instead of four bincounts over int64 indices).

    Args:
        chunks: (n, 3) uint8 sRGB arrays with n <= ``_CHUNK``, e.g. from :func:`_pixel_chunks`.
        max_pixels: an upper bound on n (sizes the scratch buffer), e.g. H * W.

    Returns:
        ``(weights, mean_rgb)``: (M,) float64 pixel counts of the M non-empty bins, and (M, 3)
        float64 exact mean sRGB (0-255) of the pixels in each bin.
    """
    n_bins = 4096
    totals = np.zeros((4, n_bins))  # count, sum r_low, sum g_low, sum b_low
    packed_rg = np.zeros(n_bins)
    packed_nb = np.zeros(n_bins)
    # +1 byte: the last pixel's uint32 read (its top byte is masked off, so it may be garbage)
    buf = np.empty(3 * min(_CHUNK, max_pixels) + 1, dtype=np.uint8)
    pending = 0

    def flush() -> None:
        for packed, lo_row, hi_row in ((packed_rg, 1, 2), (packed_nb, 0, 3)):
            hi = np.floor(packed / _SPACING)
            totals[hi_row] += hi
            totals[lo_row] += packed - hi * _SPACING
            packed[:] = 0.0

    for px in chunks:
        n = px.shape[0]
        if pending + n > _FLUSH:
            flush()
            pending = 0
        pending += n
        buf[: 3 * n] = px.reshape(-1)
        v = np.ascontiguousarray(np.ndarray((n,), dtype="<u4", buffer=buf, strides=(3,)))
        idx = v & np.uint32(0xF0F0F0)
        idx *= np.uint32(0x1001001)
        idx >>= np.uint32(20)
        idx = idx.astype(np.intp)
        v &= np.uint32(0x0F0F0F)  # low nibbles: r at bit 0, g at 8, b at 16
        w = v * np.uint32(1 + (1 << (_SPACING_BITS - 8)))  # g << 26 (+ junk in bits 16-22)
        w &= np.uint32(0xF | (0xF << _SPACING_BITS))  # r + g * 2**26
        packed_rg += np.bincount(idx, weights=w, minlength=n_bins)
        v &= np.uint32(0x0F0000)
        v <<= np.uint32(_SPACING_BITS - 16)
        v |= np.uint32(1)  # 1 + b * 2**26
        packed_nb += np.bincount(idx, weights=v, minlength=n_bins)
    flush()

    nz = np.flatnonzero(totals[0])
    weights = totals[0, nz]
    base = np.stack([nz >> 8, (nz >> 4) & 15, nz & 15], axis=1).astype(np.float64) * 16.0
    mean_rgb = base + totals[1:, nz].T / weights[:, None]
    return weights, mean_rgb


def _assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) for each row of ``x``: (N,) intp.

    Uses ``argmin(|c|^2 - 2 x.c)``, one small matmul instead of an (N, K, 3) difference array.
    """
    scores = x @ (-2.0 * centres.T)
    scores += np.einsum("kc,kc->k", centres, centres)
    return np.argmin(scores, axis=1)


def _cluster_sums(xw: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster pixel counts (k,) and weighted CIELAB means (k, 3) (NaN-free; 0 if empty).

    Args:
        xw: (N, 4) rows ``[w, w*L, w*a, w*b]``.
        labels: (N,) cluster index per row.
        k: number of clusters.
    """
    onehot = labels[:, None] == np.arange(k)
    sums = onehot.T.astype(np.float64) @ xw  # (k, 4)
    totals = sums[:, 0]
    means = sums[:, 1:] / np.maximum(totals, 1e-300)[:, None]
    return totals, means


def _kmeanspp(
    x: np.ndarray, w: np.ndarray, xx: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Weighted greedy k-means++ seeding (Arthur & Vassilvitskii 2007). Returns (k', 3), k'<=k.

    The first centre is drawn with probability proportional to ``w``; each further centre is
    the best (lowest resulting weighted potential) of ``LOCAL_TRIALS`` candidates drawn with
    probability proportional to ``w * D^2`` (the greedy variant scikit-learn also uses, with
    more trials: a single well-seeded run then matches several restarts, at a fraction of the
    cost).
    """
    n = x.shape[0]
    n_trials = LOCAL_TRIALS
    cum = np.cumsum(w)
    first = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), n - 1)
    centres = [x[first]]
    closest = np.maximum(xx - 2.0 * (x @ x[first]) + xx[first], 0.0)
    for _ in range(1, k):
        cum = np.cumsum(w * closest)
        if cum[-1] <= 0.0:  # every remaining point coincides with a centre
            break
        cand = np.searchsorted(cum, rng.random(n_trials) * cum[-1], side="right")
        np.minimum(cand, n - 1, out=cand)
        cand_d = xx[None, :] - 2.0 * (x[cand] @ x.T) + xx[cand][:, None]  # (trials, n)
        np.maximum(cand_d, 0.0, out=cand_d)
        np.minimum(cand_d, closest[None, :], out=cand_d)
        best = int(np.argmin(cand_d @ w))
        centres.append(x[cand[best]])
        closest = cand_d[best]
    return np.array(centres)


def _lloyd(x: np.ndarray, xw: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Lloyd iterations until the assignment is stable or ``MAX_ITER``.

    Empty clusters keep their previous centre (they are dropped later).

    Returns:
        ``(centres, labels)``: (K, 3) centres and the (N,) assignment they were computed from.
    """
    k = centres.shape[0]
    labels = _assign(x, centres)
    for _ in range(MAX_ITER):
        totals, means = _cluster_sums(xw, labels, k)
        centres = np.where(totals[:, None] > 0, means, centres)
        new_labels = _assign(x, centres)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    return centres, labels


def _kmeans(x: np.ndarray, w: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Weighted k-means on the rows of ``x`` (N, 3) with weights ``w`` (N,). Returns (k', 3)."""
    if k >= x.shape[0]:
        return x.copy()
    rng = np.random.default_rng(seed)
    xx = np.einsum("nc,nc->n", x, x)
    xw = np.column_stack([w, x * w[:, None]])
    centres, _ = _lloyd(x, xw, _kmeanspp(x, w, xx, k, rng))
    return centres


def _finalise_clusters(
    x: np.ndarray, w: np.ndarray, centres: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Assign bins, drop empty clusters and merge near-identical ones until stable.

    Each round assigns every bin to its nearest centre and replaces the centres by the
    weighted means of their bins (one Lloyd step), so ``totals`` are exactly the pixel counts
    of the bins each returned centre summarises.

    Returns:
        ``(centres, totals)``: (K, 3) weighted CIELAB means and (K,) pixel counts, K >= 1, no
        two centres closer than ``MERGE_DELTA_E``.
    """
    xw = np.column_stack([w, x * w[:, None]])
    while True:
        totals, means = _cluster_sums(xw, _assign(x, centres), centres.shape[0])
        keep = totals > 0
        centres, totals = means[keep], totals[keep]
        if centres.shape[0] < 2:
            return centres, totals
        diff = centres[:, None, :] - centres[None, :, :]
        d = np.sqrt(np.einsum("ijc,ijc->ij", diff, diff))
        np.fill_diagonal(d, np.inf)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] >= MERGE_DELTA_E:
            return centres, totals
        merged = (centres[i] * totals[i] + centres[j] * totals[j]) / (totals[i] + totals[j])
        others = [m for m in range(centres.shape[0]) if m not in (i, j)]
        centres = np.vstack([centres[others], merged[None, :]])


# --------------------------------------------------------------------------------------------
# Names and temperature
# --------------------------------------------------------------------------------------------


def _names_for_lab(lab: np.ndarray) -> list[str]:
    """Nearest :data:`COLOR_NAMES` entry by CIEDE2000 for each row of an (N, 3) Lab array."""
    d = deltaE_ciede2000(lab[:, None, :], _NAME_LAB[None, :, :])  # (N, n_names)
    return [_NAME_LIST[i] for i in np.argmin(d, axis=1)]


def _in_ranges(h: float, ranges: tuple[tuple[float, float], ...]) -> bool:
    return any(lo <= h < hi for lo, hi in ranges)


def _temperature(lab: np.ndarray, shares: np.ndarray) -> str:
    """Warm / cool / neutral from palette colours (project heuristic).

    A colour with chroma ``C* = hypot(a*, b*) < NEUTRAL_CHROMA`` (12) is neutral and does not
    vote. Chromatic colours vote with their share: hue ``h = atan2(b*, a*)`` in
    [330, 360) or [0, 100) degrees (reds, oranges, yellows, wood) is warm; [140, 300)
    (greens, cyans, blues, purples) is cool; other hues (yellow-greens, magentas) do not vote.
    The result is ``"neutral"`` if the chromatic share is below ``MIN_CHROMATIC_SHARE`` (0.25)
    or the warm and cool shares differ by less than ``TEMPERATURE_MARGIN`` (0.1); otherwise the
    larger side wins.
    """
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    hue = np.degrees(np.arctan2(lab[:, 2], lab[:, 1])) % 360.0
    chromatic = chroma >= NEUTRAL_CHROMA
    warm = sum(
        float(s)
        for s, h, c in zip(shares, hue, chromatic, strict=True)
        if c and _in_ranges(h, WARM_HUES)
    )
    cool = sum(
        float(s)
        for s, h, c in zip(shares, hue, chromatic, strict=True)
        if c and _in_ranges(h, COOL_HUES)
    )
    if float(shares[chromatic].sum()) < MIN_CHROMATIC_SHARE:
        return "neutral"
    if abs(warm - cool) < TEMPERATURE_MARGIN:
        return "neutral"
    return "warm" if warm > cool else "cool"


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def name_color(rgb: Sequence[float] | np.ndarray) -> str:
    """Name an sRGB colour.

    Args:
        rgb: three sRGB values in 0-255 (ints or floats; tuple, list or array of shape (3,)).

    Returns:
        The key of :data:`COLOR_NAMES` whose reference colour is nearest by CIEDE2000 in CIELAB
        (D65).

    Raises:
        ValueError: ``rgb`` is not three finite values in 0-255.
    """
    arr = _rgb_triplet(rgb)
    lab = rgb2lab(arr[None, :] / 255.0)
    return _names_for_lab(lab)[0]


def extract_palette(
    image: np.ndarray, mask: np.ndarray | None = None, k: int | np.integer = 5, seed: int = 0
) -> Palette:
    """Extract the dominant colours of an image (see the module docstring for the method).

    Args:
        image: (H, W, 3) uint8 sRGB image, H, W >= 1. For RGBA pass ``image[..., :3]`` and use
            the alpha channel as ``mask``.
        mask: optional (H, W) bool array; only pixels where it is True are used.
        k: maximum number of colours, >= 1. Fewer are returned when the image has fewer
            non-empty 4-bit bins than ``k`` or when clusters closer than ``MERGE_DELTA_E`` are
            merged.
        seed: seed for the k-means++ initialisation; equal inputs and seed give equal output.

    Returns:
        A :class:`Palette` whose colours are sorted by share (descending) and whose shares sum
        to 1 (exact pixel fractions at 4-bit bin resolution).

    Raises:
        ValueError: ``image`` is not a uint8 (H, W, 3) array or is empty; ``mask`` is not a bool
            array of shape (H, W) or selects no pixel; ``k`` is not an integer >= 1.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    _validate_inputs(image, mask)
    weights, mean_rgb = _histogram(_pixel_chunks(image, mask), image.shape[0] * image.shape[1])
    n_pixels = int(weights.sum())
    bin_lab = rgb2lab(mean_rgb / 255.0)
    brightness = float(np.clip((bin_lab[:, 0] @ weights) / weights.sum() / 100.0, 0.0, 1.0))

    centres = _kmeans(bin_lab, weights, min(int(k), bin_lab.shape[0]), seed)
    centres, totals = _finalise_clusters(bin_lab, weights, centres)

    # Means of in-gamut colours satisfy b* <= 200 L* / 116 (Z >= 0, a linear constraint), so this
    # clip only removes float noise that would make lab2rgb warn about negative Z.
    safe = centres.copy()
    np.minimum(safe[:, 2], safe[:, 0] * (200.0 / 116.0), out=safe[:, 2])
    rgb = np.rint(np.clip(lab2rgb(safe), 0.0, 1.0) * 255.0).astype(np.int64)
    lab = rgb2lab(rgb / 255.0)
    shares = totals / totals.sum()
    names = _names_for_lab(lab)
    # Sort by share (descending), ties by lightness (descending) for determinism.
    order = np.lexsort((-lab[:, 0], -shares))

    colors = tuple(
        PaletteColor(
            rgb=(int(rgb[i, 0]), int(rgb[i, 1]), int(rgb[i, 2])),
            hex="#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb[i])),
            lab=(float(lab[i, 0]), float(lab[i, 1]), float(lab[i, 2])),
            name=names[i],
            share=float(shares[i]),
        )
        for i in order
    )
    return Palette(
        colors=colors,
        brightness=brightness,
        temperature=_temperature(lab, shares),
        pixel_count=n_pixels,
    )


def palette_delta_e(
    image: np.ndarray,
    palette: Palette | Sequence[Sequence[float]] | np.ndarray,
    mask: np.ndarray | None = None,
) -> float:
    """Mean CIE76 Delta E*ab from each selected pixel to its nearest palette colour.

    This is the fidelity measure for palettes: it converts *every* selected pixel to CIELAB
    (so it is much slower than :func:`extract_palette`). Lower is better; 0 means every pixel
    exactly equals a palette colour.

    Args:
        image: (H, W, 3) uint8 sRGB image.
        palette: a :class:`Palette` (its colours' ``lab`` values are used) or an array-like of
            shape (K, 3) of sRGB colours in 0-255 (floats allowed, e.g. k-means centres;
            values within 0.5 outside the range are clipped).
        mask: optional (H, W) bool array selecting the pixels to measure.

    Returns:
        The mean Delta E*ab (CIE76, Euclidean distance in CIELAB D65) as a float.

    Raises:
        ValueError: invalid image or mask (as for :func:`extract_palette`), or an empty or
            malformed palette.
    """
    pixels = _selected_pixels(image, mask)
    if isinstance(palette, Palette):
        if not palette.colors:
            raise ValueError("palette has no colours")
        ref = np.array([c.lab for c in palette.colors], dtype=np.float64)
    else:
        arr = np.asarray(palette, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
            raise ValueError(f"palette colours must have shape (K, 3), K >= 1, got {arr.shape}")
        if not np.all(np.isfinite(arr)) or np.any(arr < -0.5) or np.any(arr > 255.5):
            raise ValueError("palette sRGB values must be in 0-255")
        # Float centres (e.g. k-means output) may overshoot by rounding error: clip.
        ref = rgb2lab(np.clip(arr, 0.0, 255.0) / 255.0)
    total = 0.0
    for start in range(0, pixels.shape[0], _DELTA_E_CHUNK):  # bounded memory on huge images
        lab = rgb2lab(pixels[start : start + _DELTA_E_CHUNK] / 255.0)
        best = np.full(lab.shape[0], np.inf)
        for colour in ref:
            diff = lab - colour
            np.minimum(best, np.einsum("nc,nc->n", diff, diff), out=best)
        total += float(np.sqrt(best).sum())
    return total / pixels.shape[0]
