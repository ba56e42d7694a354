"""The classes of an export: which taxonomy categories get an id, and which id.

``modomo export --classes``:

* ``used`` (default): the categories that occur among the exported objects, in the
  taxonomy's order, ids ``0..N-1`` (COCO ``1..N``). A detector trained on the export has no
  class it never sees, and ``ultralytics val`` scores every class it has.
* ``taxonomy``: every taxonomy category in the taxonomy's order, so ids are the same in every
  export whichever categories occur.
* a file: the categories to keep, in the order given (one per line, ``#`` comments; or a JSON
  list of names). Objects of other categories are left out of the export and counted.

The mapping is written into every export (COCO ``categories``, YOLO ``data.yaml`` ``names``,
the Hugging Face ``ClassLabel``, and ``classes.json`` / the card for all three).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modomo.analysis.taxonomy import CATEGORIES

__all__ = ["ClassMap"]


@dataclass(frozen=True)
class ClassMap:
    """Category names in id order.

    Attributes:
        names: the categories; a category's 0-based id is its position (COCO id = id + 1).
        how: ``used``, ``taxonomy`` or the class file's name (for the card and manifest).
    """

    names: tuple[str, ...]
    how: str = "taxonomy"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = [name for name in self.names if name not in CATEGORIES]
        if unknown:
            raise ValueError(f"not taxonomy categories: {', '.join(map(repr, unknown))}")
        if len(set(self.names)) != len(self.names):
            raise ValueError("a category is listed twice")
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(self.names)})

    @classmethod
    def taxonomy(cls) -> ClassMap:
        """Every taxonomy category, in the taxonomy's order."""
        return cls(tuple(CATEGORIES), "taxonomy")

    @classmethod
    def used(cls, categories: Iterable[str]) -> ClassMap:
        """The given categories in the taxonomy's order (unknown names raise ValueError)."""
        present = set(categories)
        unknown = sorted(present - set(CATEGORIES))
        if unknown:
            raise ValueError(f"not taxonomy categories: {', '.join(map(repr, unknown))}")
        return cls(tuple(name for name in CATEGORIES if name in present), "used")

    @classmethod
    def from_file(cls, path: Path) -> ClassMap:
        """Categories from a file: one per line (blank lines and ``#`` comments skipped) or a
        JSON list of names, in the order given.

        Raises:
            ValueError: unreadable file, no category, a name outside the taxonomy, or one
                listed twice.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the class file {path}: {exc}") from None
        names: Any
        if text.lstrip().startswith("["):
            try:
                names = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"class file {path} is not a JSON list: {exc}") from None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"class file {path} must list category names (strings)")
        else:
            names = [
                line.split("#", 1)[0].strip()
                for line in text.splitlines()
                if line.split("#", 1)[0].strip()
            ]
        if not names:
            raise ValueError(f"class file {path} names no category")
        try:
            return cls(tuple(names), path.name)
        except ValueError as exc:
            raise ValueError(f"class file {path}: {exc}") from None

    def __contains__(self, category: object) -> bool:
        return category in self._index

    def __len__(self) -> int:
        return len(self.names)

    def index(self, category: str) -> int:
        """The 0-based id of a category (YOLO class, ``ClassLabel`` id; COCO id - 1).

        Raises:
            ValueError: the category has no id in this export (or is not in the taxonomy).
        """
        try:
            return self._index[category]
        except KeyError:
            where = "the export's classes" if category in CATEGORIES else "the taxonomy"
            raise ValueError(f"category {category!r} is not in {where}") from None

    def coco_categories(self) -> list[dict[str, Any]]:
        """COCO ``categories``: ``{"id": 1.., "name", "supercategory": group}``."""
        return [
            {"id": i + 1, "name": name, "supercategory": CATEGORIES[name].group}
            for i, name in enumerate(self.names)
        ]

    def to_json(self) -> dict[str, Any]:
        """``{"classes": how, "names": [...]}``, written as ``classes.json``."""
        return {"classes": self.how, "names": list(self.names)}
