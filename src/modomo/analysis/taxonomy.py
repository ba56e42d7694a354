"""The interior object taxonomy, and the explicit mapping from detector class names onto it.

Every object Modomo puts into a dataset is labelled with a *category* of this module (a
snake_case name such as ``"sofa"`` or ``"potted_plant"``), and every category belongs to exactly
one *group* (``"seating"``, ``"plants_planters"``, ...). Detectors do not speak this vocabulary:
a COCO-trained YOLO model says ``"couch"``, ``"potted plant"``, ``"mouse"`` or ``"remote"``, and
also knows ``"car"``, ``"person"`` and ``"giraffe"``, which have no place in an interior dataset.
:class:`ClassMap` turns a detector's class ids into taxonomy categories, or drops them.

Why an explicit table rather than substring or fuzzy matching
--------------------------------------------------------------
Matching class names by substring, prefix or string similarity looks convenient and is wrong in
exactly the cases that corrupt a dataset silently: ``"book"`` is a substring of
``"bookshelf"``, ``"car"`` of ``"carpet"`` (so a car would become a rug), ``"cup"`` of
``"cupboard"``, ``"bed"`` of ``"bedding"``, ``"lamp"`` of ``"floor_lamp"``, and ``"mouse"``
says nothing about whether a rodent or a computer mouse is meant. Such mistakes do not raise;
they only show up as wrong labels in a delivered dataset. So the rules here are deliberately
dumb and auditable:

1. a detector name that *is* a category name (as given, or after :func:`normalize_name`) maps to
   that category;
2. otherwise a name listed in :data:`COCO_TO_TAXONOMY` (or in a caller's ``extra`` table) maps
   to the category written there;
3. anything else is dropped. Nothing is ever guessed.

Adding support for a new detector therefore means writing down its names, which is reviewable in
a diff, instead of hoping a heuristic does the right thing.

This module is pure Python (no torch, no workers, no database), so it can be imported anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "CATEGORIES",
    "COCO_DROPPED",
    "COCO_TO_TAXONOMY",
    "GROUPS",
    "PROMPTS",
    "Category",
    "ClassMap",
    "PromptTable",
    "group_of",
    "normalize_name",
]


@dataclass(frozen=True, slots=True)
class Category:
    """One category of the interior taxonomy.

    Attributes:
        name: The category's snake_case name, e.g. ``"potted_plant"``; unique across the taxonomy.
        group: The name of the one group the category belongs to, e.g. ``"plants_planters"``.
    """

    name: str
    group: str


# Group name -> its categories, in a stable order. Each category appears in exactly one group
# (checked when the module is imported, see _build_categories).
GROUPS: dict[str, tuple[str, ...]] = {
    "seating": ("sofa", "armchair", "chair", "office_chair", "stool", "bench", "ottoman"),
    "tables": ("dining_table", "coffee_table", "side_table", "console_table"),
    "storage": ("bookshelf", "cabinet", "dresser", "wardrobe", "shelf", "sideboard"),
    "bedroom": ("bed", "nightstand", "headboard", "crib"),
    "lighting": (
        "lamp",
        "floor_lamp",
        "pendant_light",
        "chandelier",
        "ceiling_light",
        "wall_sconce",
    ),
    "kitchen_appliances": (
        "refrigerator",
        "oven",
        "microwave",
        "toaster",
        "dishwasher",
        "stove",
        "range_hood",
        "kettle",
        "coffee_maker",
    ),
    "bathroom_fixtures": ("toilet", "sink", "bathtub", "shower", "vanity", "towel_rail"),
    "personal_care": ("toothbrush", "hair_dryer"),
    "soft_furnishings": ("rug", "curtain", "cushion", "blanket", "bedding"),
    "wall_decor": ("artwork", "mirror", "clock", "wall_shelf"),
    "decor_accessories": (
        "vase",
        "book",
        "bowl",
        "candle",
        "sculpture",
        "toy",
        "tray",
        "basket",
    ),
    "plants_planters": ("potted_plant", "planter"),
    "entertainment": ("tv", "speaker", "remote_control", "media_console", "game_console"),
    "home_office": (
        "desk",
        "laptop",
        "monitor",
        "keyboard",
        "computer_mouse",
        "printer",
        "phone",
        "scissors",
    ),
    "tableware": ("cup", "mug", "wine_glass", "bottle", "plate", "fork", "knife", "spoon"),
}

_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


def _build_categories(groups: Mapping[str, Sequence[str]]) -> dict[str, Category]:
    """Build the category index from ``groups``, checking names and single membership.

    Raises:
        ValueError: If a group or category name is not snake_case, or a category is listed in
            more than one group (or twice in one).
    """
    categories: dict[str, Category] = {}
    for group, names in groups.items():
        if not _SNAKE_CASE.match(group):
            raise ValueError(f"taxonomy group name {group!r} is not snake_case")
        for name in names:
            if not _SNAKE_CASE.match(name):
                raise ValueError(f"taxonomy category name {name!r} is not snake_case")
            if name in categories:
                raise ValueError(
                    f"taxonomy category {name!r} is listed in group {group!r} and already in "
                    f"group {categories[name].group!r}; every category belongs to exactly one group"
                )
            categories[name] = Category(name=name, group=group)
    return categories


# Category name -> Category, for every category of every group.
CATEGORIES: dict[str, Category] = _build_categories(GROUPS)


def group_of(name: str) -> str:
    """Return the group of the taxonomy category ``name``.

    The name must be an exact category name (see :data:`CATEGORIES`); it is not normalised or
    matched approximately.

    Raises:
        KeyError: If ``name`` is not a category of the taxonomy. The message names the unknown
            value and, if only its spelling differs (case, spaces, hyphens), the category meant.
    """
    try:
        return CATEGORIES[name].group
    except KeyError:
        message = f"unknown taxonomy category {name!r}"
        normalized = normalize_name(name) if isinstance(name, str) else None
        if normalized is not None and normalized in CATEGORIES:
            message += f" (did you mean {normalized!r}?)"
        else:
            message += (
                f"; it is not one of the {len(CATEGORIES)} categories in "
                "modomo.analysis.taxonomy.CATEGORIES"
            )
        raise KeyError(message) from None


def normalize_name(name: str) -> str:
    """Normalise a detector class name for exact comparison with taxonomy names.

    Leading and trailing whitespace is removed, the name is lower-cased, and every run of
    whitespace, hyphens and underscores becomes a single underscore: ``"Potted Plant"`` ->
    ``"potted_plant"``, ``"wine-glass"`` -> ``"wine_glass"``. This only fixes spelling
    conventions; the normalised name must still match a table key or category *exactly*.
    """
    return re.sub(r"[\s\-_]+", "_", name.strip().lower())


# COCO class name (ultralytics spelling) -> taxonomy category name.
#
# Source of the names: the 80 categories of the COCO 2017 detection task (Lin et al. 2014,
# "Microsoft COCO: Common Objects in Context"), exactly as listed, lower-case and with spaces,
# under ``names:`` in ultralytics' ``ultralytics/cfg/datasets/coco.yaml`` (ids 0-79, "person"
# to "toothbrush"), which is what ``YOLO(...).names`` returns for COCO-trained YOLO weights.
#
# Notes on individual entries:
# - COCO's "dining table" is annotated on most tables in a scene, not only dining tables; it is
#   mapped to ``dining_table`` because that is what the class claims, not what it always is.
# - "sink" goes to ``bathroom_fixtures`` although kitchen sinks carry the same COCO label.
# - "mouse" in COCO is the computer mouse (it is in the "electronic" supercategory).
# - "teddy bear" is a soft toy, hence ``toy``; "cell phone" becomes ``phone``.
COCO_TO_TAXONOMY: dict[str, str] = {
    "bench": "bench",
    "bottle": "bottle",
    "wine glass": "wine_glass",
    "cup": "cup",
    "fork": "fork",
    "knife": "knife",
    "spoon": "spoon",
    "bowl": "bowl",
    "chair": "chair",
    "couch": "sofa",
    "potted plant": "potted_plant",
    "bed": "bed",
    "dining table": "dining_table",
    "toilet": "toilet",
    "tv": "tv",
    "laptop": "laptop",
    "mouse": "computer_mouse",
    "remote": "remote_control",
    "keyboard": "keyboard",
    "cell phone": "phone",
    "microwave": "microwave",
    "oven": "oven",
    "toaster": "toaster",
    "sink": "sink",
    "refrigerator": "refrigerator",
    "book": "book",
    "clock": "clock",
    "vase": "vase",
    "scissors": "scissors",
    "teddy bear": "toy",
    "hair drier": "hair_dryer",
    "toothbrush": "toothbrush",
}

# The COCO classes deliberately left out of COCO_TO_TAXONOMY, so dropped by ClassMap: people,
# vehicles and street furniture, animals (pets are not furnishings), carried personal items and
# sports gear, and food. Documentation only: ClassMap drops every name it has no rule for; this
# set just records that leaving these out was a decision, and tests check that the two tables
# together cover all 80 COCO names.
COCO_DROPPED: frozenset[str] = frozenset(
    {
        # people, vehicles, street
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
        # animals
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
        # personal items carried around, sports gear
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
        # food
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
    }
)

# COCO table keyed by normalised name, so "Teddy Bear" or "teddy_bear" find "teddy bear".
_COCO_NORMALIZED: dict[str, str] = {normalize_name(k): v for k, v in COCO_TO_TAXONOMY.items()}


def _check_table(table: Mapping[str, str], what: str) -> dict[str, str]:
    """Return ``table`` keyed by normalised name, checking that every value is a category.

    Raises:
        ValueError: If a value is not a category name, or two keys normalise to the same name
            but map to different categories.
    """
    out: dict[str, str] = {}
    for key, value in table.items():
        if value not in CATEGORIES:
            raise ValueError(
                f"{what} maps {key!r} to {value!r}, which is not a taxonomy category"
                + (
                    f" (did you mean {normalize_name(value)!r}?)"
                    if normalize_name(value) in CATEGORIES
                    else ""
                )
            )
        norm = normalize_name(key)
        if norm in out and out[norm] != value:
            raise ValueError(
                f"{what} has keys that normalise to {norm!r} but map to different categories "
                f"({out[norm]!r} and {value!r})"
            )
        out[norm] = value
    return out


_check_table(COCO_TO_TAXONOMY, "COCO_TO_TAXONOMY")


class ClassMap:
    """The mapping from one detector's class ids to taxonomy categories.

    Build it with :meth:`for_model` from the detector's class names (for ultralytics, the
    ``model.names`` dict). For each class id the rules are, in order:

    1. a name in the caller's ``extra`` table (as given, or normalised) maps where that table
       says; the caller's explicit word wins over every built-in rule;
    2. a name that is a taxonomy category, as given or after :func:`normalize_name`
       (``"Potted Plant"`` -> ``potted_plant``), maps to itself;
    3. a name in :data:`COCO_TO_TAXONOMY` (as given, or normalised) maps where that table says;
    4. any other name is dropped (:meth:`lookup` returns ``None``).

    There is deliberately no substring, prefix or fuzzy matching: ``"book"`` is ``book`` and
    never ``bookshelf``, ``"car"`` is dropped and never becomes ``rug`` via ``"carpet"``, and
    ``"cup"`` never becomes a cupboard. See the module docstring for why.

    ``len(class_map)`` is the number of class ids that map to a category (``len(kept_ids)``).
    """

    __slots__ = ("_by_id", "_dropped", "_names")

    def __init__(self, names: Mapping[int, str], by_id: Mapping[int, Category]) -> None:
        """Store an already-resolved mapping; use :meth:`for_model` to build one from names."""
        self._names: dict[int, str] = dict(names)
        self._by_id: dict[int, Category] = dict(by_id)
        self._dropped: dict[int, str] = {
            i: n for i, n in self._names.items() if i not in self._by_id
        }

    @classmethod
    def for_model(
        cls,
        names: Mapping[int, str] | Sequence[str],
        extra: Mapping[str, str] | None = None,
    ) -> ClassMap:
        """Build the class map of a detector from its class names.

        Args:
            names: The detector's class names, either a mapping from class id to name (as
                ultralytics' ``model.names``) or a sequence whose index is the class id.
            extra: An optional caller-supplied table from detector class name to taxonomy
                category name. Keys are matched as given or normalised; values must be exact
                category names. It takes precedence over the identity and COCO rules.

        Raises:
            TypeError: If ``names`` is a plain string, or an id is not an ``int`` or a name is
                not a ``str``.
            ValueError: If an ``extra`` value is not a taxonomy category, or two ``extra`` keys
                normalise to the same name with different targets.
        """
        if isinstance(names, str | bytes):
            raise TypeError("names must be a mapping of class id to name or a sequence of names")
        items: Mapping[int, str] = names if isinstance(names, Mapping) else dict(enumerate(names))
        extra_norm = _check_table(extra, "extra") if extra else {}

        by_id: dict[int, Category] = {}
        for class_id, name in items.items():
            if not isinstance(class_id, int) or isinstance(class_id, bool):
                raise TypeError(f"class id {class_id!r} is not an int")
            if not isinstance(name, str):
                raise TypeError(f"class name {name!r} (id {class_id}) is not a str")
            target = _resolve(name, extra_norm)
            if target is not None:
                by_id[class_id] = CATEGORIES[target]
        return cls(items, by_id)

    def lookup(self, class_id: int) -> Category | None:
        """Return the category of detector class ``class_id``, or ``None`` if it is dropped.

        An id the detector does not have also gives ``None``.
        """
        return self._by_id.get(class_id)

    @property
    def kept_ids(self) -> frozenset[int]:
        """The class ids that map to a taxonomy category (all others are dropped)."""
        return frozenset(self._by_id)

    @property
    def dropped(self) -> dict[int, str]:
        """The class ids that are dropped, with their detector names (a copy, for logging)."""
        return dict(self._dropped)

    @property
    def names(self) -> dict[int, str]:
        """The detector's class names the map was built from, by class id (a copy)."""
        return dict(self._names)

    def __len__(self) -> int:
        """Return the number of class ids that map to a category."""
        return len(self._by_id)

    def __repr__(self) -> str:
        """Return a short summary: how many classes are kept and dropped."""
        return f"ClassMap(kept={len(self._by_id)}, dropped={len(self._dropped)})"


def _resolve(name: str, extra_norm: Mapping[str, str]) -> str | None:
    """Return the category name a detector class ``name`` maps to, or ``None`` to drop it.

    Only exact look-ups (of the name as given and of its normalised form) are made.
    """
    norm = normalize_name(name)
    if norm in extra_norm:
        return extra_norm[norm]
    if name in CATEGORIES:
        return name
    if norm in CATEGORIES:
        return norm
    if name in COCO_TO_TAXONOMY:
        return COCO_TO_TAXONOMY[name]
    return _COCO_NORMALIZED.get(norm)


# Category -> the English prompts an open-vocabulary detector (Grounding DINO, OWLv2, YOLOE) is
# given for it. The first is the category's plain name; the others are what the object is
# commonly called in listings and captions. Every prompt belongs to exactly one category
# (checked by PromptTable), so a box found by a prompt has exactly one label: "lamp" is only
# ``lamp``, never ``floor_lamp`` because it is part of "floor lamp".
PROMPTS: dict[str, tuple[str, ...]] = {
    "sofa": ("sofa", "couch", "sectional sofa"),
    "armchair": ("armchair", "accent chair", "lounge chair"),
    "chair": ("chair", "dining chair"),
    "office_chair": ("office chair", "desk chair"),
    "stool": ("stool", "bar stool"),
    "bench": ("bench",),
    "ottoman": ("ottoman", "footstool", "pouf"),
    "dining_table": ("dining table", "kitchen table"),
    "coffee_table": ("coffee table",),
    "side_table": ("side table", "end table"),
    "console_table": ("console table", "hall table"),
    "bookshelf": ("bookshelf", "bookcase"),
    "cabinet": ("cabinet", "cupboard", "kitchen cabinet"),
    "dresser": ("dresser", "chest of drawers"),
    "wardrobe": ("wardrobe", "armoire"),
    "shelf": ("shelf", "shelving unit"),
    "sideboard": ("sideboard", "buffet cabinet", "credenza"),
    "bed": ("bed",),
    "nightstand": ("nightstand", "bedside table"),
    "headboard": ("headboard",),
    "crib": ("crib", "baby cot"),
    "lamp": ("lamp", "table lamp"),
    "floor_lamp": ("floor lamp", "standing lamp"),
    "pendant_light": ("pendant light", "hanging lamp"),
    "chandelier": ("chandelier",),
    "ceiling_light": ("ceiling light", "flush mount light"),
    "wall_sconce": ("wall sconce", "wall light"),
    "refrigerator": ("refrigerator", "fridge"),
    "oven": ("oven", "wall oven"),
    "microwave": ("microwave",),
    "toaster": ("toaster",),
    "dishwasher": ("dishwasher",),
    "stove": ("stove", "cooktop", "range"),
    "range_hood": ("range hood", "extractor hood"),
    "kettle": ("kettle",),
    "coffee_maker": ("coffee maker", "espresso machine"),
    "toilet": ("toilet",),
    "sink": ("sink", "washbasin"),
    "bathtub": ("bathtub", "bath tub"),
    "shower": ("shower", "shower enclosure"),
    "vanity": ("vanity", "bathroom vanity"),
    "towel_rail": ("towel rail", "towel rack", "towel bar"),
    "toothbrush": ("toothbrush",),
    "hair_dryer": ("hair dryer",),
    "rug": ("rug", "carpet"),
    "curtain": ("curtain", "drapes"),
    "cushion": ("cushion", "throw pillow"),
    "blanket": ("blanket", "throw blanket"),
    "bedding": ("bedding", "duvet", "bed sheets"),
    "artwork": ("artwork", "framed picture", "painting", "poster"),
    "mirror": ("mirror",),
    "clock": ("clock", "wall clock"),
    "wall_shelf": ("wall shelf", "floating shelf"),
    "vase": ("vase",),
    "book": ("book",),
    "bowl": ("bowl",),
    "candle": ("candle",),
    "sculpture": ("sculpture", "figurine", "statue"),
    "toy": ("toy", "teddy bear"),
    "tray": ("tray",),
    "basket": ("basket", "wicker basket"),
    "potted_plant": ("potted plant", "houseplant"),
    "planter": ("planter", "plant pot"),
    "tv": ("television", "tv"),
    "speaker": ("speaker", "loudspeaker"),
    "remote_control": ("remote control",),
    "media_console": ("media console", "tv stand"),
    "game_console": ("game console", "video game console"),
    "desk": ("desk", "writing desk"),
    "laptop": ("laptop",),
    "monitor": ("computer monitor", "monitor"),
    "keyboard": ("keyboard",),
    "computer_mouse": ("computer mouse",),
    "printer": ("printer",),
    "phone": ("phone", "mobile phone"),
    "scissors": ("scissors",),
    "cup": ("cup", "teacup"),
    "mug": ("mug", "coffee mug"),
    "wine_glass": ("wine glass",),
    "bottle": ("bottle",),
    "plate": ("plate", "dinner plate"),
    "fork": ("fork",),
    "knife": ("knife",),
    "spoon": ("spoon",),
}


class PromptTable:
    """Text prompts for an open-vocabulary detector, each mapped back to exactly one category.

    A detector answers "which prompt found this box"; the table answers "which category is
    that prompt", by the prompt's identity (its position), never by comparing strings, so
    "lamp" inside "floor lamp" cannot relabel anything.

    Args:
        overrides: ``{category: [prompt, ...]}`` replacing those categories' prompts in
            :data:`PROMPTS` (the others keep theirs); an empty list leaves a category
            unprompted (never detected).

    Attributes:
        prompts: every prompt, lower-case with single spaces, in taxonomy order.
        categories: the category of each prompt (same length).

    Raises:
        ValueError: an override names an unknown category, a prompt is not a non-empty
            string, or one prompt is given to two categories.
    """

    __slots__ = ("categories", "prompts")

    def __init__(self, overrides: Mapping[str, Sequence[str]] | None = None) -> None:
        overrides = dict(overrides or {})
        for name in overrides:
            if name not in CATEGORIES:
                group_of(name)  # raises the KeyError naming it (and a near spelling)
        owner: dict[str, str] = {}
        self.prompts: list[str] = []
        self.categories: list[str] = []
        for name in CATEGORIES:
            given = overrides.get(name, PROMPTS[name])
            if isinstance(given, str):
                raise ValueError(f"prompts for {name!r} must be a list of strings, got {given!r}")
            for prompt in given:
                if not isinstance(prompt, str) or not prompt.strip():
                    raise ValueError(f"prompt {prompt!r} for {name!r} is not a non-empty string")
                text = " ".join(prompt.lower().split())
                if owner.get(text, name) != name:
                    raise ValueError(
                        f"prompt {text!r} is given to both {owner[text]!r} and {name!r}; "
                        "each prompt must name exactly one category"
                    )
                if text not in owner:
                    owner[text] = name
                    self.prompts.append(text)
                    self.categories.append(name)

    def __len__(self) -> int:
        """The number of prompts."""
        return len(self.prompts)

    def category(self, index: int) -> Category:
        """The category of prompt ``index``."""
        return CATEGORIES[self.categories[index]]

    @property
    def prompted(self) -> frozenset[str]:
        """The categories with at least one prompt."""
        return frozenset(self.categories)


def _check_prompts() -> None:
    missing = sorted(set(CATEGORIES) - set(PROMPTS))
    unknown = sorted(set(PROMPTS) - set(CATEGORIES))
    if missing or unknown:
        raise ValueError(f"PROMPTS lacks {missing} and names unknown {unknown}")
    PromptTable()  # one category per prompt


_check_prompts()
