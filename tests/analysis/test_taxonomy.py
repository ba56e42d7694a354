"""Tests for modomo.analysis.taxonomy (categories, groups, COCO table, ClassMap)."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import pytest

from modomo.analysis import taxonomy
from modomo.analysis.taxonomy import (
    CATEGORIES,
    COCO_DROPPED,
    COCO_TO_TAXONOMY,
    GROUPS,
    Category,
    ClassMap,
    group_of,
    normalize_name,
)

# The 80 COCO 2017 detection class names, ids 0-79, as in ultralytics/cfg/datasets/coco.yaml.
COCO80: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
COCO_NAMES: dict[int, str] = dict(enumerate(COCO80))

REQUIRED_CATEGORIES = [
    "sofa",
    "chair",
    "bed",
    "dining_table",
    "potted_plant",
    "tv",
    "lamp",
    "book",
    "bookshelf",
    "rug",
    "toilet",
    "sink",
    "refrigerator",
    "oven",
    "microwave",
    "toaster",
    "clock",
    "vase",
    "laptop",
    "keyboard",
    "computer_mouse",
    "remote_control",
    "bench",
    "cup",
    "bowl",
    "bottle",
    "wine_glass",
    "toy",
]


# --- taxonomy --------------------------------------------------------------------------------


def test_coco_list_is_the_standard_80() -> None:
    assert len(COCO80) == 80
    assert len(set(COCO80)) == 80
    assert COCO80[0] == "person" and COCO80[79] == "toothbrush"


def test_every_category_in_exactly_one_group() -> None:
    counts = Counter(name for names in GROUPS.values() for name in names)
    assert counts, "taxonomy is empty"
    assert [name for name, n in counts.items() if n != 1] == []
    assert set(counts) == set(CATEGORIES)
    for group, names in GROUPS.items():
        assert names, f"group {group} is empty"
        for name in names:
            assert CATEGORIES[name] == Category(name=name, group=group)
            assert group_of(name) == group


def test_names_are_snake_case() -> None:
    pattern = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
    for name in [*GROUPS, *CATEGORIES]:
        assert pattern.match(name), name


def test_required_groups_and_categories() -> None:
    for name in REQUIRED_CATEGORIES:
        assert name in CATEGORIES, name
    expected = {
        "sofa": "seating",
        "bench": "seating",
        "dining_table": "tables",
        "bookshelf": "storage",
        "bed": "bedroom",
        "lamp": "lighting",
        "refrigerator": "kitchen_appliances",
        "toilet": "bathroom_fixtures",
        "rug": "soft_furnishings",
        "clock": "wall_decor",
        "book": "decor_accessories",
        "potted_plant": "plants_planters",
        "tv": "entertainment",
        "computer_mouse": "home_office",
        "cup": "tableware",
        "wine_glass": "tableware",
    }
    for name, group in expected.items():
        assert group_of(name) == group, name


def test_category_is_frozen() -> None:
    cat = CATEGORIES["sofa"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cat.name = "couch"  # type: ignore[misc]


def test_group_of_unknown_raises_clear_key_error() -> None:
    with pytest.raises(KeyError, match=r"unknown taxonomy category 'spaceship'"):
        group_of("spaceship")
    with pytest.raises(KeyError, match=r"did you mean 'potted_plant'\?"):
        group_of("Potted Plant")
    # No approximate matching: a prefix of a category is still unknown.
    with pytest.raises(KeyError, match=r"unknown taxonomy category 'book_'"):
        group_of("book_")


def test_build_rejects_duplicate_membership() -> None:
    with pytest.raises(ValueError, match="exactly one group"):
        taxonomy._build_categories({"a": ("x",), "b": ("x",)})
    with pytest.raises(ValueError, match="snake_case"):
        taxonomy._build_categories({"a": ("Not Snake",)})


def test_normalize_name() -> None:
    assert normalize_name("Potted Plant") == "potted_plant"
    assert normalize_name("  wine-glass ") == "wine_glass"
    assert normalize_name("TV") == "tv"
    assert normalize_name("teddy  bear") == "teddy_bear"


# --- COCO table --------------------------------------------------------------------------------


def test_coco_table_values_are_categories() -> None:
    for coco_name, category in COCO_TO_TAXONOMY.items():
        assert category in CATEGORIES, (coco_name, category)


def test_coco_tables_cover_all_80_names_exactly() -> None:
    mapped = set(COCO_TO_TAXONOMY)
    assert mapped.isdisjoint(COCO_DROPPED)
    assert mapped | COCO_DROPPED == set(COCO80)


def test_coco_specific_mappings() -> None:
    expected = {
        "couch": "sofa",
        "potted plant": "potted_plant",
        "dining table": "dining_table",
        "tv": "tv",
        "mouse": "computer_mouse",
        "remote": "remote_control",
        "teddy bear": "toy",
        "book": "book",
        "cup": "cup",
        "wine glass": "wine_glass",
        "chair": "chair",
        "bench": "bench",
    }
    for coco_name, category in expected.items():
        assert COCO_TO_TAXONOMY[coco_name] == category
    for absent in ("person", "car", "dog", "cat", "bird", "traffic light"):
        assert absent not in COCO_TO_TAXONOMY


def test_coco_model_each_class_maps_or_is_dropped() -> None:
    cmap = ClassMap.for_model(COCO_NAMES)
    assert len(cmap) == len(COCO_TO_TAXONOMY)
    assert cmap.kept_ids == frozenset(i for i, n in COCO_NAMES.items() if n in COCO_TO_TAXONOMY)
    for class_id, name in COCO_NAMES.items():
        cat = cmap.lookup(class_id)
        if name in COCO_TO_TAXONOMY:
            assert cat is not None and cat.name == COCO_TO_TAXONOMY[name], name
            assert cat.group == group_of(cat.name)
        else:
            assert name in COCO_DROPPED
            assert cat is None, name
            assert cmap.dropped[class_id] == name
    assert set(cmap.dropped) | cmap.kept_ids == set(COCO_NAMES)


def test_coco_model_as_sequence_matches_mapping() -> None:
    from_seq = ClassMap.for_model(list(COCO80))
    from_map = ClassMap.for_model(COCO_NAMES)
    assert from_seq.kept_ids == from_map.kept_ids
    for i in range(80):
        assert from_seq.lookup(i) == from_map.lookup(i)


# --- no substring / fuzzy matching ---------------------------------------------------------------


def test_book_is_book_not_bookshelf() -> None:
    cmap = ClassMap.for_model(COCO_NAMES)
    cat = cmap.lookup(COCO80.index("book"))
    assert cat == CATEGORIES["book"]
    assert cat is not None and cat.name != "bookshelf"


def test_car_dropped_not_carpet_or_rug() -> None:
    cmap = ClassMap.for_model({0: "car", 1: "Car", 2: "cars", 3: "carpet_ish"})
    assert len(cmap) == 0
    assert cmap.kept_ids == frozenset()
    for i in range(4):
        assert cmap.lookup(i) is None


def test_cup_is_cup_not_cupboard() -> None:
    cmap = ClassMap.for_model(["cup", "cupboard"])
    assert cmap.lookup(0) == CATEGORIES["cup"]
    # "cupboard" is not a category and not in the COCO table: dropped, not matched to "cup".
    assert cmap.lookup(1) is None


def test_no_prefix_or_suffix_matching() -> None:
    cmap = ClassMap.for_model(["bed", "bedding", "lamps", "floor lamp", "tv stand", "sofas"])
    assert cmap.lookup(0) == CATEGORIES["bed"]
    assert cmap.lookup(1) == CATEGORIES["bedding"]
    assert cmap.lookup(2) is None
    assert cmap.lookup(3) == CATEGORIES["floor_lamp"]
    assert cmap.lookup(4) is None
    assert cmap.lookup(5) is None


# --- ClassMap rules ------------------------------------------------------------------------------


def test_identity_mapping_for_taxonomy_names() -> None:
    names = {0: "sofa", 1: "potted_plant", 2: "tv", 3: "lamp"}
    cmap = ClassMap.for_model(names)
    assert len(cmap) == 4
    assert cmap.kept_ids == frozenset({0, 1, 2, 3})
    for class_id, name in names.items():
        assert cmap.lookup(class_id) == CATEGORIES[name]
    assert cmap.dropped == {}


def test_every_category_name_maps_to_itself() -> None:
    names = list(CATEGORIES)
    cmap = ClassMap.for_model(names)
    assert len(cmap) == len(names)
    for i, name in enumerate(names):
        assert cmap.lookup(i) == CATEGORIES[name]


def test_normalisation() -> None:
    cmap = ClassMap.for_model(
        {0: "Potted Plant", 1: "Dining-Table", 2: "TV", 3: "Teddy Bear", 4: "COUCH", 5: "Mouse"}
    )
    assert cmap.lookup(0) == CATEGORIES["potted_plant"]
    assert cmap.lookup(1) == CATEGORIES["dining_table"]
    assert cmap.lookup(2) == CATEGORIES["tv"]
    assert cmap.lookup(3) == CATEGORIES["toy"]
    assert cmap.lookup(4) == CATEGORIES["sofa"]
    assert cmap.lookup(5) == CATEGORIES["computer_mouse"]


def test_unknown_names_dropped() -> None:
    cmap = ClassMap.for_model({0: "person", 1: "spaceship", 2: "sofa", 7: "giraffe"})
    assert cmap.kept_ids == frozenset({2})
    assert len(cmap) == 1
    assert cmap.lookup(0) is None
    assert cmap.lookup(1) is None
    assert cmap.lookup(7) is None
    assert cmap.lookup(99) is None  # an id the model does not have
    assert cmap.dropped == {0: "person", 1: "spaceship", 7: "giraffe"}
    assert cmap.names == {0: "person", 1: "spaceship", 2: "sofa", 7: "giraffe"}
    assert repr(cmap) == "ClassMap(kept=1, dropped=3)"


def test_extra_adds_and_overrides() -> None:
    names = {0: "couch", 1: "carpet", 2: "mouse", 3: "lamp", 4: "dog"}
    cmap = ClassMap.for_model(
        names, extra={"couch": "armchair", "Carpet": "rug", "lamp": "floor_lamp"}
    )
    assert cmap.lookup(0) == CATEGORIES["armchair"]  # extra beats the COCO table
    assert cmap.lookup(1) == CATEGORIES["rug"]  # extra adds a name; keys are normalised
    assert cmap.lookup(2) == CATEGORIES["computer_mouse"]  # COCO table still applies
    assert cmap.lookup(3) == CATEGORIES["floor_lamp"]  # extra beats the identity rule
    assert cmap.lookup(4) is None
    assert cmap.kept_ids == frozenset({0, 1, 2, 3})
    # Without extra, the defaults apply.
    plain = ClassMap.for_model(names)
    assert plain.lookup(0) == CATEGORIES["sofa"]
    assert plain.lookup(1) is None
    assert plain.lookup(3) == CATEGORIES["lamp"]


def test_extra_values_must_be_categories() -> None:
    with pytest.raises(ValueError, match=r"'carpet'.*not a taxonomy category"):
        ClassMap.for_model(["rug"], extra={"floor covering": "carpet"})
    with pytest.raises(ValueError, match=r"did you mean 'potted_plant'"):
        ClassMap.for_model(["plant"], extra={"plant": "Potted Plant"})
    with pytest.raises(ValueError, match="different categories"):
        ClassMap.for_model(["x"], extra={"Couch": "sofa", "couch": "armchair"})


def test_names_type_errors() -> None:
    with pytest.raises(TypeError):
        ClassMap.for_model("sofa")
    with pytest.raises(TypeError):
        ClassMap.for_model({"0": "sofa"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        ClassMap.for_model({0: 3})  # type: ignore[dict-item]


def test_module_is_pure_python() -> None:
    source = taxonomy.__file__
    assert source is not None
    with open(source, encoding="utf-8") as fh:
        text = fh.read()
    for banned in ("torch", "celery", "sqlalchemy", "ultralytics", "numpy"):
        assert not re.search(rf"^\s*(import|from)\s+{banned}\b", text, re.MULTILINE), banned
    assert set(taxonomy.__all__) <= set(dir(taxonomy))
