"""Deterministic, stratified train/val/test splits (:mod:`modomo.export.splits`)."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from modomo.export.splits import Splitter, assign_unstratified, split_fraction

ROOMS = ("living_room", "bedroom", "kitchen", None)


def _scenes(count: int) -> list[tuple[str, str | None]]:
    # uneven strata (and one for room type None) so that rounding is exercised
    return [(f"scene-{i:05d}", ROOMS[(i * 7) % 5 % 4]) for i in range(count)]


def _run(
    scenes: list[tuple[str, str | None]], ratios: tuple[float, float, float]
) -> dict[str, str]:
    splitter = Splitter(ratios)
    for scene_id, room in scenes:
        splitter.observe(scene_id, room)
    splitter.freeze()
    return {scene_id: splitter.assign(scene_id, room) for scene_id, room in scenes}


def test_split_fraction_is_the_sha256_prefix_in_unit_interval() -> None:
    value = split_fraction("scene-1")
    expected = int.from_bytes(hashlib.sha256(b"scene-1").digest()[:8], "big") / 2**64
    assert value == pytest.approx(expected, abs=2**-52)
    fractions = [split_fraction(f"s{i}") for i in range(2000)]
    assert all(0.0 <= f < 1.0 for f in fractions)
    assert 0.45 < sum(fractions) / len(fractions) < 0.55


def test_same_inputs_give_same_splits_across_runs() -> None:
    scenes = _scenes(600)
    first = _run(scenes, (0.8, 0.1, 0.1))
    second = _run(list(reversed(scenes)), (0.8, 0.1, 0.1))  # order does not matter either
    assert first == second
    assert set(first.values()) == {"train", "val", "test"}


def test_each_room_type_matches_the_ratios_within_one_scene() -> None:
    scenes = _scenes(1000)
    ratios = (0.8, 0.1, 0.1)
    splits = _run(scenes, ratios)
    per_stratum: dict[str | None, Counter[str]] = {}
    for scene_id, room in scenes:
        per_stratum.setdefault(room, Counter())[splits[scene_id]] += 1
    assert len(per_stratum) == 4
    for counts in per_stratum.values():
        size = sum(counts.values())
        for split, ratio in zip(("train", "val", "test"), ratios, strict=True):
            assert abs(counts[split] - size * ratio) <= 1, (counts, size)


def test_freeze_reports_the_counts_and_none_is_unknown() -> None:
    splitter = Splitter((0.5, 0.25, 0.25))
    for i in range(8):
        splitter.observe(f"x{i}", None)
    counts = splitter.freeze()
    assert counts == {"unknown": {"train": 4, "val": 2, "test": 2}}
    assert splitter.frozen
    assigned = Counter(splitter.assign(f"x{i}", None) for i in range(8))
    assert assigned == Counter({"train": 4, "val": 2, "test": 2})


def test_all_train() -> None:
    splits = _run(_scenes(300), (1.0, 0.0, 0.0))
    assert set(splits.values()) == {"train"}
    assert {assign_unstratified(f"s{i}", (1, 0, 0)) for i in range(300)} == {"train"}


def test_zero_test_ratio_never_gives_test_even_when_sum_is_slightly_off() -> None:
    ratios = (0.8, 0.2 - 5e-7, 0.0)
    splits = _run(_scenes(500), ratios)
    assert "test" not in splits.values()
    assert "test" not in {assign_unstratified(f"s{i}", ratios) for i in range(2000)}


@pytest.mark.parametrize(
    "ratios",
    [(0.8, 0.1), (0.8, 0.1, 0.2), (1.2, -0.1, -0.1), (0.5, 0.5, float("nan")), ("a", 0, 1)],
)
def test_invalid_ratios_are_rejected_by_name(ratios: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="ratios"):
        Splitter(ratios)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ratios"):
        assign_unstratified("s", ratios)


def test_ratio_sum_tolerance() -> None:
    Splitter((0.8, 0.1, 0.1 + 5e-7))
    with pytest.raises(ValueError):
        Splitter((0.8, 0.1, 0.1 + 1e-5))


def test_pass_order_is_enforced() -> None:
    splitter = Splitter((0.8, 0.1, 0.1))
    with pytest.raises(RuntimeError):
        splitter.assign("s", None)
    splitter.observe("s", None)
    splitter.freeze()
    with pytest.raises(RuntimeError):
        splitter.observe("t", None)
    with pytest.raises(RuntimeError):
        splitter.freeze()


def test_unobserved_scenes_and_room_types_still_get_a_split() -> None:
    splitter = Splitter((0.8, 0.1, 0.1))
    for scene_id, room in _scenes(400):
        splitter.observe(scene_id, room)
    splitter.freeze()
    late = Counter(splitter.assign(f"late-{i}", "kitchen") for i in range(2000))
    assert 0.75 < late["train"] / 2000 < 0.85
    # a room type never observed falls back to the unstratified threshold
    assert splitter.assign("z", "garage") == assign_unstratified("z", (0.8, 0.1, 0.1))


def test_unstratified_is_stable_and_roughly_proportional() -> None:
    ids = [f"scene-{i}" for i in range(5000)]
    first = [assign_unstratified(i, (0.7, 0.2, 0.1)) for i in ids]
    assert first == [assign_unstratified(i, (0.7, 0.2, 0.1)) for i in ids]
    counts = Counter(first)
    assert abs(counts["train"] / 5000 - 0.7) < 0.03
    assert abs(counts["val"] / 5000 - 0.2) < 0.03
    # adding scenes never moves an existing one
    assert first[:100] == [assign_unstratified(i, (0.7, 0.2, 0.1)) for i in ids[:100]]
