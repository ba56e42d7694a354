"""Deterministic train/val/test splits: a hash of the scene id, stratified by room type.

Every scene gets a number in [0, 1) from the SHA-256 of its id (:func:`split_fraction`). The
number depends on nothing but the id, so it is the same on every run and every machine, and it
is uniform over scenes, which makes it a fair (seeded-shuffle-like) ordering of the scenes.

Two ways to turn that number into a split are offered:

Exact stratification (:class:`Splitter`)
    Two passes over the scenes. The first pass (:meth:`Splitter.observe`) keeps only one float
    per scene, grouped by room type (the *stratum*; a scene without a room type belongs to the
    stratum ``"unknown"``). :meth:`Splitter.freeze` sorts each stratum's numbers and puts the
    thresholds at the cumulative ratios, so that within every room type the split sizes equal
    the ratios up to rounding (each split within one scene of its exact share). The second
    pass (:meth:`Splitter.assign`) compares a scene's number with its stratum's thresholds.

    Stability: a scene's split depends on the other scenes of its stratum, because the
    thresholds are quantiles of that stratum. Adding scenes moves the thresholds a little, so a
    scene keeps its split across exports of a growing dataset only *approximately*: the scenes
    whose numbers lie between an old and a new threshold change split (few, near the
    boundaries, but not none). Use this when the split sizes per room type matter more than
    the split of a scene never changing (one-off exports, benchmarks).

Pure threshold (:func:`assign_unstratified`)
    A scene is ``train`` when its number is below ``ratios[0]``, ``val`` below
    ``ratios[0] + ratios[1]``, else ``test``. One pass, no state, and stable forever: a scene
    keeps its split however many scenes are added later, so a model trained on an earlier
    export's train split never sees a later export's test scenes. The split sizes match the
    ratios only *in expectation*, per room type too (the number is independent of the room
    type), with binomial noise: a room type with 50 scenes and ratio 0.1 gets 5 ± 2 val scenes.

Memory: the first pass of :class:`Splitter` stores 8 bytes per scene (a C ``double`` in an
:class:`array.array`), 160 KB for 20,000 scenes; :meth:`Splitter.freeze` keeps two floats per
stratum and frees the rest.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Sequence

import numpy as np

from modomo.export.records import SPLITS

__all__ = ["UNKNOWN_STRATUM", "Splitter", "assign_unstratified", "split_fraction"]

UNKNOWN_STRATUM = "unknown"
"""The stratum of a scene whose room type is None."""

_RATIO_TOLERANCE = 1e-6


def split_fraction(scene_id: str) -> float:
    """A number in [0, 1) that depends only on ``scene_id`` (uniform over scene ids).

    The first 8 bytes of the SHA-256 of the UTF-8 id, read as a big-endian unsigned integer
    and divided by 2**64. Only the top 53 bits are used (a float64's precision), so the result
    is exact and strictly below 1.0 (a plain ``n / 2**64`` rounds up to 1.0 for the largest
    ``n``). Stable across runs, processes and machines (unlike :func:`hash`).
    """
    digest = hashlib.sha256(scene_id.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2.0**53


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate ``(train, val, test)`` ratios.

    Raises:
        ValueError: not three finite non-negative numbers summing to 1 (within 1e-6).
    """
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"split ratios must be three numbers, got {ratios!r}") from exc
    if len(values) != 3:
        raise ValueError(f"split ratios must be three numbers (train, val, test), got {ratios!r}")
    if any(not math.isfinite(r) or r < 0 for r in values):
        raise ValueError(f"split ratios must be non-negative, got {ratios!r}")
    if abs(sum(values) - 1.0) > _RATIO_TOLERANCE:
        raise ValueError(f"split ratios must sum to 1, got {ratios!r} (sum {sum(values)!r})")
    return values[0], values[1], values[2]


def _cumulative(ratios: tuple[float, float, float]) -> tuple[float, float]:
    """The train and train+val cut points in [0, 1]; exactly 1.0 where the rest is zero.

    ``ratios`` may sum to 1 only within 1e-6, so a ``(0.8, 0.2, 0.0)`` must not leave a sliver
    for ``test``: a cut point followed only by zero ratios is forced to 1.0.
    """
    train, val, test = ratios
    total = train + val + test
    first = 1.0 if val == 0 and test == 0 else train / total
    second = 1.0 if test == 0 else (train + val) / total
    return first, second


def _stratum(room_type: str | None) -> str:
    return UNKNOWN_STRATUM if room_type is None else room_type


def assign_unstratified(scene_id: str, ratios: Sequence[float]) -> str:
    """The split of a scene by a pure threshold on :func:`split_fraction` (no stratification).

    Stable forever (the split depends on the scene id and the ratios only), stratified by room
    type only in expectation; see the module docstring.

    Args:
        scene_id: the scene's id.
        ratios: ``(train, val, test)``, non-negative, summing to 1.

    Returns:
        ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        ValueError: invalid ratios.
    """
    first, second = _cumulative(_check_ratios(ratios))
    fraction = split_fraction(scene_id)
    if fraction < first:
        return SPLITS[0]
    if fraction < second:
        return SPLITS[1]
    return SPLITS[2]


class Splitter:
    """Exact per-room-type stratified splits in two passes with flat memory.

    Usage::

        splitter = Splitter((0.8, 0.1, 0.1))
        for scene_id, room_type in first_pass:
            splitter.observe(scene_id, room_type)
        splitter.freeze()
        for scene_id, room_type in second_pass:
            split = splitter.assign(scene_id, room_type)

    Within a room type with ``n`` observed scenes, ``train`` gets the ``round(n * r_train)``
    scenes with the lowest :func:`split_fraction`, ``val`` the next
    ``round(n * (r_train + r_val)) - round(n * r_train)``, ``test`` the rest, so every split is
    within one scene of its exact share. Room type None is the stratum ``"unknown"``.

    A scene is not required to have been observed: :meth:`assign` compares its number with the
    thresholds of its room type (an unobserved room type falls back to
    :func:`assign_unstratified`), so scenes added between the passes are split approximately.
    Observing the same scene id twice counts it twice. See the module docstring for how stable a
    scene's split is as the dataset grows.

    Args:
        ratios: ``(train, val, test)``: three non-negative numbers summing to 1 (within 1e-6).

    Raises:
        ValueError: invalid ratios (the message names them).
    """

    def __init__(self, ratios: tuple[float, float, float]) -> None:
        self.ratios = _check_ratios(ratios)
        self._cuts = _cumulative(self.ratios)
        self._fractions: dict[str, array[float]] = {}
        self._thresholds: dict[str, tuple[float, float]] | None = None

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` has run (then :meth:`assign` works and :meth:`observe` fails)."""
        return self._thresholds is not None

    def observe(self, scene_id: str, room_type: str | None) -> None:
        """First pass: record a scene (8 bytes kept per scene).

        Raises:
            RuntimeError: after :meth:`freeze`.
        """
        if self._thresholds is not None:
            raise RuntimeError("Splitter.observe() after freeze(): start a new Splitter")
        stratum = _stratum(room_type)
        fractions = self._fractions.get(stratum)
        if fractions is None:
            fractions = self._fractions[stratum] = array("d")
        fractions.append(split_fraction(scene_id))

    def freeze(self) -> dict[str, dict[str, int]]:
        """End the first pass: compute each stratum's thresholds and free the observed numbers.

        Returns:
            ``{stratum: {split: count}}``: how many of the observed scenes each split gets.

        Raises:
            RuntimeError: called twice.
        """
        if self._thresholds is not None:
            raise RuntimeError("Splitter.freeze() called twice")
        thresholds: dict[str, tuple[float, float]] = {}
        counts: dict[str, dict[str, int]] = {}
        for stratum, fractions in self._fractions.items():
            values = np.sort(np.frombuffer(fractions, dtype=np.float64))
            n = len(values)
            # round half up, not Python's round-half-even, so the counts do not depend on
            # the parity of a tie
            cut_train = min(n, math.floor(n * self._cuts[0] + 0.5))
            cut_val = min(n, max(cut_train, math.floor(n * self._cuts[1] + 0.5)))
            thresholds[stratum] = (
                _threshold(values, cut_train),
                _threshold(values, cut_val),
            )
            counts[stratum] = {
                SPLITS[0]: cut_train,
                SPLITS[1]: cut_val - cut_train,
                SPLITS[2]: n - cut_val,
            }
        self._thresholds = thresholds
        self._fractions = {}
        return counts

    def assign(self, scene_id: str, room_type: str | None) -> str:
        """Second pass: the split of a scene, ``"train"``, ``"val"`` or ``"test"``.

        Raises:
            RuntimeError: before :meth:`freeze`.
        """
        if self._thresholds is None:
            raise RuntimeError("Splitter.assign() before freeze(): observe all scenes first")
        thresholds = self._thresholds.get(_stratum(room_type))
        if thresholds is None:
            return assign_unstratified(scene_id, self.ratios)
        fraction = split_fraction(scene_id)
        if fraction < thresholds[0]:
            return SPLITS[0]
        if fraction < thresholds[1]:
            return SPLITS[1]
        return SPLITS[2]


def _threshold(sorted_values: np.ndarray, cut: int) -> float:
    """A number that the first ``cut`` sorted values are below and the others are not.

    The midpoint between the last value in and the first value out, so scenes not observed in
    the first pass are split at the stratum's empirical quantile; 0.0 when ``cut`` is 0 and 1.0
    when it is the whole stratum (every fraction is in [0, 1)).
    """
    n = len(sorted_values)
    if cut <= 0:
        return 0.0
    if cut >= n:
        return 1.0
    low, high = float(sorted_values[cut - 1]), float(sorted_values[cut])
    middle = (low + high) / 2.0
    # equal neighbours (two scenes with the same id) cannot be separated; keep "below" strict
    return middle if middle > low else high
