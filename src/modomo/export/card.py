"""The dataset card: a Hugging Face Hub ``README.md`` describing an export.

Format: a Hub dataset card (https://huggingface.co/docs/hub/datasets-cards), Markdown with a
YAML front matter block (between ``---`` lines) holding the card metadata
(https://huggingface.co/docs/hub/datasets-cards#dataset-card-metadata): ``license``,
``task_categories``, ``pretty_name``, ``tags``, ``size_categories`` and ``configs``, whose
``data_files`` point each split at ``data/{split}-*.parquet`` (the shards
:mod:`modomo.export.hf` writes; https://huggingface.co/docs/hub/datasets-manual-configuration).
The YAML is written with ``yaml.safe_dump`` so it always parses.

By default the card assumes it sits in the export's folder, next to ``data/`` (the Hugging
Face export, the root of a Hub repository), ``annotations/`` (COCO) or ``data.yaml`` (YOLO);
``format_dirs`` names other folders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from modomo.export.classes import ClassMap
from modomo.export.records import SPLITS

__all__ = ["dataset_card"]

_TASK_CATEGORIES = ["object-detection", "image-segmentation"]
_DEFAULT_FORMAT_DIRS = {"coco": ".", "yolo": ".", "hf": "."}


def _cell(value: object) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _split_counts(counts: Mapping[str, Any]) -> dict[str, tuple[int, int | None]]:
    """``{split: (images, annotations or None)}`` from ints or mappings with ``images`` (or
    ``scenes``) and ``annotations`` (or ``objects``)."""
    result: dict[str, tuple[int, int | None]] = {}
    for split, value in counts.items():
        if isinstance(value, Mapping):
            images = value.get("images", value.get("scenes", 0))
            annotations = value.get("annotations", value.get("objects"))
            result[split] = (int(images), None if annotations is None else int(annotations))
        else:
            result[split] = (int(value), None)
    return result


def _size_category(total: int) -> str:
    """The Hub's ``size_categories`` bucket for ``total`` rows."""
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if total < limit:
            return label
    return "n>10M"


def _prefix(directory: str) -> str:
    """``"."`` -> ``""``, ``"coco"`` -> ``"coco/"``: a folder as a path prefix."""
    return "" if directory in ("", ".", "./") else directory.rstrip("/") + "/"


def _format_names(formats: str) -> list[str]:
    """``"coco, yolo-segment hf"`` -> ``["coco", "yolo-segment", "hf"]``."""
    return [name for name in formats.replace(",", " ").split() if name]


def _how_to_load(names: list[str], dirs: Mapping[str, str], first_split: str) -> list[str]:
    lines = ["## How to load", ""]
    hf_prefix = _prefix(dirs.get("hf", "."))
    coco_prefix = _prefix(dirs.get("coco", "."))
    yolo_prefix = _prefix(dirs.get("yolo", "."))
    wants_all = not names
    if wants_all or any(name.startswith("hf") for name in names):
        lines += [
            "With 🤗 Datasets, from a local copy of the export:",
            "",
            "```python",
            "from datasets import load_dataset, load_from_disk",
            "",
            f'ds = load_from_disk("{hf_prefix}dataset")  # a DatasetDict',
            "# or the Parquet shards (the files the Hub serves):",
            'ds = load_dataset("parquet", data_files={',
            *(f'    "{split}": "{hf_prefix}data/{split}-*.parquet",' for split in SPLITS),
            "})",
            f'scene = ds["{first_split}"][0]',
            'scene["image"]  # PIL image',
            'names = ds["train"].features["objects"].feature["category"].names',
            "```",
            "",
            'From the Hub: `load_dataset("<user>/<repo>")`. Masks are COCO RLE: '
            '`pycocotools.mask.decode({"size": o["mask_size"], "counts": '
            'o["mask_rle"].encode()})`.',
            "",
        ]
    if wants_all or any(name.startswith("coco") for name in names):
        lines += [
            "With pycocotools (COCO instance segmentation):",
            "",
            "```python",
            "from pycocotools.coco import COCO",
            "",
            f'coco = COCO("{coco_prefix}annotations/instances_{first_split}.json")',
            "ann = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]",
            "mask = coco.annToMask(ann)  # images: " + f"{coco_prefix}images/{first_split}/",
            "```",
            "",
        ]
    if wants_all or any(name.startswith("yolo") for name in names):
        lines += [
            "With Ultralytics (YOLO labels, `data.yaml`):",
            "",
            "```python",
            "from ultralytics import YOLO",
            "",
            'model = YOLO("yolo11n-seg.pt")  # or yolo11n.pt for a detection export',
            f'model.train(data="{yolo_prefix}data.yaml", epochs=100)',
            "```",
            "",
            "`data.yaml` has no `path`: Ultralytics takes its folder as the dataset root.",
            "",
        ]
    if any(name.startswith("label-studio") for name in names):
        lines += [
            "With Label Studio (review the models' labels): create a project with "
            "`label_config.xml` as its labelling config, import `tasks.json` (the models' "
            "labels arrive as predictions), serve `images/` (local file serving with "
            "`LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT` set to this folder), review, export the "
            "project as JSON and bring the review back:",
            "",
            "```sh",
            "modomo annotations import project-export.json",
            "```",
            "",
        ]
    return lines


_PROVENANCE = {
    "hf": "Hugging Face rows: the columns `source` (the collector), `source_key` (the item's "
    "id there), `image_url`, `licence` (as the source stated it, or null) and `models` (the "
    "model versions that produced the row's labels).",
    "coco": "COCO: each entry of `images` has `modomo_source`, `modomo_source_key`, "
    "`modomo_image_url` and, where the source stated a licence, `license` (an id into "
    "`licenses`); the model versions are in `manifest.json` (`models`).",
    "yolo": "YOLO: label files carry classes and geometry only; `provenance.jsonl` has one "
    "line per image with `file`, `scene_id`, `source`, `source_key`, `image_url`, `licence`, "
    "`models` and `reviewed`.",
    "label-studio": "Label Studio: each task's `data` has `scene_id`, `source`, `source_key`, "
    "`image_url` and `licence`; its prediction's `model_version` names the detector.",
}


def _provenance(names: list[str]) -> list[str]:
    """Where each format of the export keeps each image's provenance."""
    wanted = [key for key in _PROVENANCE if not names or any(n.startswith(key) for n in names)]
    lines = [f"- {_PROVENANCE[key]}" for key in wanted]
    return lines + [
        "",
        "Local source keys are written as `file:<sha256 prefix>/<file name>` (no path of the "
        "machine that built the export). The images keep their own licences: check each "
        "image's licence before redistributing it. Images are written upright (EXIF "
        "orientation applied, the tag removed).",
    ]


def dataset_card(
    *,
    name: str,
    counts: Mapping[str, Any],
    class_histogram: Mapping[str, int],
    room_types: Mapping[str, int],
    models: Mapping[str, str],
    licences: Mapping[str, str],
    options: Mapping[str, Any],
    formats: str,
    license_id: str = "other",
    sources: Mapping[str, int] | None = None,
    format_dirs: Mapping[str, str] | None = None,
    classes: ClassMap | None = None,
    reviewed: tuple[int, int] = (0, 0),
) -> str:
    """The export's ``README.md``: YAML front matter for the Hub, then Markdown sections.

    Args:
        name: the dataset's human-readable name (``pretty_name`` and the title).
        counts: per split, an image count or a mapping with ``images`` (or ``scenes``) and
            ``annotations`` (or ``objects``), e.g. what the writers' ``close()`` return.
            Splits with no image get no ``configs`` entry.
        class_histogram: ``{category: number of objects}`` (shown sorted by count).
        room_types: ``{room type: number of scenes}`` (``unknown`` included as given).
        models: ``{role: "name@version"}`` of the models that produced the labels.
        licences: ``{role: licence text}``: the licence of each model's weights or of the
            images (e.g. ``{"detector": "AGPL-3.0", "images": "per image, see licence"}``);
            a role in ``models`` without an entry is shown as "not stated".
        options: the export's options (ratios, formats, filters...), shown as JSON.
        formats: the formats in the export, comma or space separated (``"hf"``,
            ``"coco, yolo-segment, hf"``); the "How to load" section shows the matching
            snippets (all of them when empty), and the front matter's ``configs`` (Parquet
            ``data_files``) is written only when ``hf`` is among them (or none is named).
            Unknown names are listed as given.
        license_id: the Hub ``license`` identifier for the front matter (``"other"`` by
            default, with ``license_name: mixed-per-image``: images keep their sources'
            licences, listed per row).
        sources: optional ``{source: number of scenes}`` for the provenance section.
        format_dirs: folders of the formats relative to the card, used in the snippets and
            the ``configs`` paths; default ``"."`` for each (the export's files next to the
            card, e.g. ``{"coco": "coco"}`` when the COCO files are in ``coco/``).
        classes: the export's class ids, listed in a "Class ids" section (none without).
        reviewed: scenes and objects whose labels people reviewed (``modomo annotations
            import``); the rest are the models' labels.

    Returns:
        The card's text (ends with a newline).
    """
    dirs = {**_DEFAULT_FORMAT_DIRS, **(format_dirs or {})}
    per_split = _split_counts(counts)
    ordered_splits = [s for s in SPLITS if s in per_split] + [
        s for s in per_split if s not in SPLITS
    ]
    non_empty = [s for s in ordered_splits if per_split[s][0] > 0]
    total_images = sum(images for images, _ in per_split.values())
    annotation_counts = [a for _, a in per_split.values() if a is not None]
    total_annotations = sum(annotation_counts) if annotation_counts else None
    hf_prefix = _prefix(dirs.get("hf", "."))
    format_names = _format_names(formats)
    has_parquet = not format_names or any(f.startswith("hf") for f in format_names)

    front_matter: dict[str, Any] = {"license": license_id}
    if license_id == "other":
        front_matter["license_name"] = "mixed-per-image"
    front_matter |= {
        "pretty_name": name,
        "task_categories": list(_TASK_CATEGORIES),
        "tags": ["interior-design", "instance-segmentation", "machine-generated-labels", "modomo"],
        "size_categories": [_size_category(total_images)],
    }
    if has_parquet:
        front_matter["configs"] = [
            {
                "config_name": "default",
                "data_files": [
                    {"split": split, "path": f"{hf_prefix}data/{split}-*.parquet"}
                    for split in non_empty
                ],
            }
        ]
    lines = ["---", yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True).rstrip()]
    lines += ["---", "", f"# {name}", ""]

    lines += [
        "## Summary",
        "",
        f"{total_images:,} interior photographs"
        + (f" with {total_annotations:,} labelled objects" if total_annotations is not None else "")
        + f" over {sum(1 for v in class_histogram.values() if v > 0)} object categories, "
        "split into train / validation / test deterministically by a hash of the scene id "
        "(see the export options). Boxes, masks, room type, style, colours and depth "
        "statistics were produced automatically by the models listed below"
        + (
            f"; the objects of {reviewed[0]:,} scenes ({reviewed[1]:,} objects) were reviewed "
            "and corrected by people (`labelled_by: human`)."
            if reviewed[0]
            else " (no human review)."
        ),
        "",
        f"Human-reviewed: {reviewed[0]:,} scenes, {reviewed[1]:,} objects.",
        "",
        "Formats in this export: " + (", ".join(f"`{f}`" for f in format_names) or "not stated"),
        "",
        "## Counts",
        "",
        "| split | images | objects |",
        "| --- | ---: | ---: |",
    ]
    for split in ordered_splits:
        images, annotations = per_split[split]
        objects = "" if annotations is None else f"{annotations:,}"
        lines.append(f"| {_cell(split)} | {images:,} | {objects} |")
    lines.append(
        f"| **total** | **{total_images:,}** | "
        + ("" if total_annotations is None else f"**{total_annotations:,}**")
        + " |"
    )

    lines += ["", "## Classes", "", "| category | objects |", "| --- | ---: |"]
    for category, count in sorted(class_histogram.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {_cell(category)} | {count:,} |")

    if classes is not None:
        lines += [
            "",
            "## Class ids",
            "",
            f"Classes: `{_cell(classes.how)}` ({len(classes)}; also in `classes.json`). "
            "YOLO class and `ClassLabel` ids count from 0, COCO category ids from 1.",
            "",
            "| id | COCO id | category |",
            "| ---: | ---: | --- |",
        ]
        lines += [f"| {i} | {i + 1} | {_cell(name)} |" for i, name in enumerate(classes.names)]

    lines += ["", "## Room types", "", "| room type | scenes |", "| --- | ---: |"]
    for room, count in sorted(room_types.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {_cell(room)} | {count:,} |")

    lines += [
        "",
        "## Models",
        "",
        "The labels were produced by these models (role, model and version, licence):",
        "",
        "| role | model | licence |",
        "| --- | --- | --- |",
    ]
    for role in sorted(models):
        licence = licences.get(role, "not stated")
        lines.append(f"| {_cell(role)} | `{_cell(models[role])}` | {_cell(licence)} |")
    extra_licences = sorted(set(licences) - set(models))
    if extra_licences:
        lines += ["", "Other licences:", ""]
        lines += [f"- **{_cell(role)}**: {_cell(licences[role])}" for role in extra_licences]

    lines += [""] + _how_to_load(format_names, dirs, non_empty[0] if non_empty else "train")

    lines += ["## Provenance", "", *_provenance(format_names), ""]
    if sources:
        lines += ["| source | scenes |", "| --- | ---: |"]
        for source, count in sorted(sources.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"| {_cell(source)} | {count:,} |")
        lines.append("")

    lines += [
        "## Export options",
        "",
        "```json",
        json.dumps(options, indent=2, sort_keys=True, default=str, ensure_ascii=False),
        "```",
        "",
    ]
    return "\n".join(lines)
