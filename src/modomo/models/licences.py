"""The licence of a model's weights, from the weights' own metadata: never guessed from a path.

In order:

1. :data:`KNOWN_LICENCES`, keyed by the exact checkpoint ids Modomo documents (the Hugging
   Face hub ids and Ultralytics weight files of the defaults and their sizes). Each value is
   the licence the checkpoint's publisher states on its model card or release page.
2. The model card shipped with the weights: the ``license`` (and ``license_name``) field of
   the YAML front matter of ``README.md`` in a local weights folder or in the hub snapshot
   ``modomo models pull`` stored (https://huggingface.co/docs/hub/model-cards#model-card-metadata).
3. Otherwise ``"unknown"``: a checkpoint whose licence nobody stated (a fine-tuned or
   random-weight folder, a renamed file) is not given one.

Free of Celery and the database.
"""

from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["KNOWN_LICENCES", "UNKNOWN", "model_licence"]

UNKNOWN = "unknown"

_SAM2 = "Apache-2.0 (SAM 2.1, facebook/sam2 model card)"
_YOLO = "AGPL-3.0 (Ultralytics; an Enterprise licence for closed use)"
KNOWN_LICENCES: dict[str, str] = {
    **{f"facebook/sam2.1-hiera-{size}": _SAM2 for size in ("tiny", "small", "base-plus", "large")},
    **{f"facebook/sam2-hiera-{size}": _SAM2 for size in ("tiny", "small", "base-plus", "large")},
    "depth-anything/Depth-Anything-V2-Small-hf": "Apache-2.0 (Depth Anything V2 Small)",
    "depth-anything/Depth-Anything-V2-Base-hf": "CC-BY-NC-4.0 (Depth Anything V2 Base)",
    "depth-anything/Depth-Anything-V2-Large-hf": "CC-BY-NC-4.0 (Depth Anything V2 Large)",
    "Intel/zoedepth-nyu-kitti": "MIT (ZoeDepth)",
    "Intel/zoedepth-nyu": "MIT (ZoeDepth)",
    "Intel/zoedepth-kitti": "MIT (ZoeDepth)",
    "openai/clip-vit-base-patch32": "MIT (OpenAI CLIP)",
    "openai/clip-vit-base-patch16": "MIT (OpenAI CLIP)",
    "openai/clip-vit-large-patch14": "MIT (OpenAI CLIP)",
    "IDEA-Research/grounding-dino-tiny": "Apache-2.0 (Grounding DINO)",
    "IDEA-Research/grounding-dino-base": "Apache-2.0 (Grounding DINO)",
    "google/owlv2-base-patch16-ensemble": "Apache-2.0 (OWLv2)",
    "google/owlv2-base-patch16": "Apache-2.0 (OWLv2)",
    "google/owlv2-large-patch14-ensemble": "Apache-2.0 (OWLv2)",
    **{
        f"{family}{size}{task}.pt": _YOLO
        for family in ("yolov8", "yolo11")
        for size in "nsmlx"
        for task in ("", "-seg")
    },
    **{f"yoloe-11{size}-seg.pt": _YOLO for size in "sml"},
    **{f"yoloe-v8{size}-seg.pt": _YOLO for size in "sml"},
}
"""Licences of the documented checkpoints, by exact id (hub id or Ultralytics file name)."""


def model_licence(label: str, model_dir: Path | None = None) -> str:
    """The licence of the weights a ``name@version`` label names (see the module docstring).

    Args:
        label: ``name@version`` as recorded with every result (``Weights.label``).
        model_dir: the weight cache (``MODOMO_MODEL_DIR``) holding pulled hub snapshots.

    Returns:
        The licence text, or ``"unknown"``.
    """
    name, _, version = label.rpartition("@")
    name = name or label
    if name in KNOWN_LICENCES:
        return KNOWN_LICENCES[name]
    for card in _model_cards(name, version, model_dir):
        licence = _card_licence(card)
        if licence:
            return licence
    return UNKNOWN


def _model_cards(name: str, version: str, model_dir: Path | None) -> list[Path]:
    """Where the weights' model card may be: in a local folder, or in the hub snapshot."""
    cards = []
    local = Path(name).expanduser()
    if local.is_absolute() or name.startswith("."):
        cards.append(local / "README.md" if local.is_dir() else local.with_name("README.md"))
    elif model_dir is not None and "/" in name and version:
        repo = model_dir / "huggingface" / ("models--" + name.replace("/", "--")) / "snapshots"
        if repo.is_dir():
            cards += [s / "README.md" for s in sorted(repo.glob(f"{version}*")) if s.is_dir()]
    return cards


def _card_licence(card: Path) -> str | None:
    """The ``license`` of a model card's YAML front matter (with its ``license_name`` when
    it is ``other``), or None."""
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("---"):
        return None
    header, _, _ = text[3:].partition("\n---")
    try:
        meta = yaml.safe_load(header)
    except yaml.YAMLError:
        return None
    if not isinstance(meta, dict) or not meta.get("license"):
        return None
    licence = meta["license"]
    licence = ", ".join(map(str, licence)) if isinstance(licence, list) else str(licence)
    if licence == "other" and meta.get("license_name"):
        licence = f"other ({meta['license_name']})"
    return licence
