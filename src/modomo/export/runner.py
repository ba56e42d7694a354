"""Exporting a dataset: choose the scenes, split them, stream them to a format writer, and
write ``manifest.json`` (and a dataset card).

Scenes are read from the database in chunks ordered by id (keyset pagination), each chunk's
objects in one query, and images are read from the artifact store one scene at a time as the
writer asks: memory stays flat whatever the number of scenes. The split needs one number per
scene (:class:`modomo.export.splits.Splitter`, a first pass over ids and room types only).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import ColumnElement, select

from modomo.artifacts import artifact_store
from modomo.db.models import DetectedObject, ItemStatus, JobScene, Scene, SceneStatus, utcnow
from modomo.db.session import session_scope
from modomo.duplicates import canonical_only
from modomo.export.records import SPLITS, ExportObject, ExportScene
from modomo.export.splits import Splitter
from modomo.models.weights import ROLES

__all__ = ["FORMATS", "MODEL_LICENCES", "ExportOptions", "chosen_scene_ids", "run_export"]

FORMATS = ("coco", "yolo", "hf")
CHUNK = 500
"""Scenes per database round trip."""

MODEL_LICENCES: dict[str, str] = {
    "grounding-dino": "Apache-2.0 (Grounding DINO)",
    "owlv2": "Apache-2.0 (OWLv2)",
    "yoloe": "AGPL-3.0 (Ultralytics YOLOE)",
    "yolo": "AGPL-3.0 (Ultralytics YOLO)",
    "sam2": "Apache-2.0 (SAM 2.1)",
    "depth-anything-v2-small": "Apache-2.0 (Depth Anything V2 Small)",
    "depth-anything": "CC-BY-NC-4.0 (Depth Anything V2 Base/Large; Small is Apache-2.0)",
    "zoedepth": "MIT (ZoeDepth)",
    "clip": "MIT (OpenAI CLIP)",
}
"""Licences of the default models, by a substring of the weights' name (lower case); the
first match wins, so the more specific names come first."""


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how.

    Attributes:
        format: ``coco``, ``yolo`` or ``hf``.
        job_id: only the scenes of this job (its scenes that failed in it are left out).
        room_types / styles / sources / scene_types: keep scenes with one of these values.
        min_confidence: leave out objects below this detector confidence.
        include_failed: keep failed scenes (unusable images are never exported: no file).
        include_duplicates: keep the non-canonical members of duplicate groups.
        ratios: train / val / test shares, summing to 1.
        yolo_task: ``detect`` (boxes) or ``segment`` (polygons) labels for ``yolo``.
        name: the dataset's name in its card.
    """

    format: Literal["coco", "yolo", "hf"]
    job_id: uuid.UUID | None = None
    room_types: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    scene_types: tuple[str, ...] = ()
    min_confidence: float = 0.0
    include_failed: bool = False
    include_duplicates: bool = False
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    yolo_task: Literal["detect", "segment"] = "detect"
    name: str = "modomo-interiors"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The options as JSON values (the job id as a string)."""
        values = asdict(self)
        values["job_id"] = str(self.job_id) if self.job_id else None
        return values


def _conditions(options: ExportOptions) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Scene.image_key.is_not(None)]
    if not options.include_failed:
        conditions.append(Scene.status != SceneStatus.FAILED)
    if not options.include_duplicates:
        conditions.append(canonical_only())
    for column, values in (
        (Scene.room_type, options.room_types),
        (Scene.style, options.styles),
        (Scene.source, options.sources),
        (Scene.scene_type, options.scene_types),
    ):
        if values:
            conditions.append(column.in_(list(values)))
    if options.job_id is not None:
        in_job = select(JobScene.scene_id).where(JobScene.job_id == options.job_id)
        if not options.include_failed:
            in_job = in_job.where(JobScene.status != ItemStatus.FAILED)
        conditions.append(Scene.id.in_(in_job))
    return conditions


def _pages(query: Any) -> Iterator[list[Any]]:
    """Rows of ``query`` (whose first column is ``Scene.id``) in id order, a chunk at a time."""
    last: uuid.UUID | None = None
    while True:
        page = query if last is None else query.where(Scene.id > last)
        with session_scope() as session:
            rows = list(session.execute(page.order_by(Scene.id).limit(CHUNK)).all())
        if not rows:
            return
        last = getattr(rows[-1][0], "id", rows[-1][0])  # a Scene entity or its id
        yield rows


def chosen_scene_ids(options: ExportOptions, limit: int) -> list[uuid.UUID]:
    """The first ``limit`` scenes the options choose, in export (id) order."""
    query = select(Scene.id).where(*_conditions(options)).order_by(Scene.id).limit(limit)
    with session_scope() as session:
        return list(session.scalars(query))


def _extension(image_key: str) -> str:
    suffix = Path(image_key).suffix.lower()
    return suffix if suffix else ".img"


def _licence(meta: dict[str, Any] | None) -> str | None:
    meta = meta or {}
    value = meta.get("licence") or meta.get("license")
    return str(value) if value else None


def model_licence(name: str) -> str:
    """The licence of a model given its ``name@version`` label ("unknown" if not a default)."""
    lowered = name.lower()
    return next((text for key, text in MODEL_LICENCES.items() if key in lowered), "unknown")


def iter_scenes(
    options: ExportOptions, splitter: Splitter, seen_models: Counter[str]
) -> Iterator[ExportScene]:
    """The chosen scenes as :class:`ExportScene` records with their split, in id order."""
    store = artifact_store()
    for rows in _pages(select(Scene).where(*_conditions(options))):
        scenes = [row[0] for row in rows]
        objects: dict[uuid.UUID, list[ExportObject]] = {s.id: [] for s in scenes}
        models: dict[uuid.UUID, dict[str, str]] = {s.id: {} for s in scenes}
        with session_scope() as session:
            query = select(DetectedObject).where(
                DetectedObject.scene_id.in_(list(objects)),
                DetectedObject.confidence >= options.min_confidence,
            )
            for obj in session.scalars(query.order_by(DetectedObject.scene_id, DetectedObject.id)):
                objects[obj.scene_id].append(
                    ExportObject(
                        id=str(obj.id),
                        bbox=[float(v) for v in obj.bbox],
                        category=obj.category,
                        taxonomy_group=obj.taxonomy_group,
                        confidence=float(obj.confidence),
                        mask_rle=obj.mask_rle,
                        mask_area=obj.mask_area,
                        depth_median=obj.depth_median,
                        depth_min=obj.depth_min,
                        depth_max=obj.depth_max,
                        colors=obj.colors,
                    )
                )
                # model labels only (an object also records its detector backend and prompt)
                models[obj.scene_id].update(
                    (role, label) for role, label in (obj.models or {}).items() if role in ROLES
                )
        for scene in scenes:
            labels = dict(models[scene.id])
            if scene.depth_model:
                labels["depth"] = scene.depth_model
            if scene.embedding_model:
                labels["clip"] = scene.embedding_model
            seen_models.update(labels.values())
            key = scene.image_key
            assert key is not None  # the query asks for stored images only
            yield ExportScene(
                id=str(scene.id),
                split=splitter.assign(str(scene.id), scene.room_type),
                file_name=f"{scene.id}{_extension(key)}",
                width=scene.width or 0,
                height=scene.height or 0,
                source=scene.source,
                source_key=scene.source_key,
                image_url=scene.image_url,
                licence=_licence(scene.meta),
                room_type=scene.room_type,
                style=scene.style,
                scene_type=scene.scene_type,
                colors=scene.colors,
                depth_info=scene.depth_info,
                models=labels,
                objects=objects[scene.id],
                read_image=lambda key=key: store.get_bytes(key),  # type: ignore[misc]
            )


def _splitter(options: ExportOptions) -> Splitter:
    splitter = Splitter(options.ratios)
    for rows in _pages(select(Scene.id, Scene.room_type).where(*_conditions(options))):
        for scene_id, room_type in rows:
            splitter.observe(str(scene_id), room_type)
    splitter.freeze()
    return splitter


class _Tally:
    """Counts, histograms and model versions of what went through the writer."""

    def __init__(self) -> None:
        self.scenes: Counter[str] = Counter()
        self.objects: Counter[str] = Counter()
        self.classes: Counter[str] = Counter()
        self.room_types: Counter[str] = Counter()
        self.models: Counter[str] = Counter()

    def count(self, scenes: Iterator[ExportScene]) -> Iterator[ExportScene]:
        for scene in scenes:
            self.scenes[scene.split] += 1
            self.objects[scene.split] += len(scene.objects)
            self.classes.update(o.category for o in scene.objects)
            self.room_types[scene.room_type or "unknown"] += 1
            yield scene


CHECKSUMS = "checksums.sha256"
"""Per-file digests of an export, in ``sha256sum`` format (``sha256sum -c`` checks them)."""


def _walk(folder: Path) -> Iterator[Path]:
    """Files below ``folder`` in a stable order (sorted per directory), without listing the
    whole tree in memory."""
    with os.scandir(folder) as entries:
        ordered = sorted(entries, key=lambda e: e.name)
    for entry in ordered:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            yield Path(entry.path)


def _write_checksums(out_dir: Path) -> tuple[str, int]:
    """Write :data:`CHECKSUMS` for every file of the export (but the manifest and itself);
    returns the sha256 of that file, the export's own checksum, and the number of files."""
    skipped = {out_dir / "manifest.json", out_dir / CHECKSUMS}
    total = hashlib.sha256()
    count = 0
    with (out_dir / CHECKSUMS).open("w", encoding="utf-8") as listing:
        for path in _walk(out_dir):
            if path in skipped:
                continue
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            line = f"{digest.hexdigest()}  {path.relative_to(out_dir).as_posix()}\n"
            listing.write(line)
            total.update(line.encode())
            count += 1
    return total.hexdigest(), count


def run_export(
    options: ExportOptions,
    out_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Export the chosen scenes to ``out_dir`` in ``options.format`` and write its manifest.

    Args:
        options: what to export (see :class:`ExportOptions`).
        out_dir: the folder to write (created; files already there are overwritten).
        progress: called with the number of scenes written so far.

    Returns:
        The manifest (also written as ``out_dir/manifest.json``): counts per split, class
        histogram, options, model versions with licences, the number of files, and
        ``checksum``: the sha256 of ``checksums.sha256``, which lists every file's sha256
        (``sha256sum -c checksums.sha256`` checks an export).

    Raises:
        ValueError: an unknown format or bad split ratios.
        FileNotFoundError: a scene's stored image is missing.
    """
    from modomo.export.card import dataset_card

    if options.format not in FORMATS:
        raise ValueError(f"unknown export format {options.format!r}; expected one of {FORMATS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    splitter = _splitter(options)
    tally = _Tally()

    def scenes() -> Iterator[ExportScene]:
        for position, scene in enumerate(
            tally.count(iter_scenes(options, splitter, tally.models)), 1
        ):
            if progress is not None:
                progress(position)
            yield scene

    writer: Any
    if options.format == "coco":
        from modomo.export.coco import CocoWriter

        writer = CocoWriter(out_dir, overwrite=True)
    elif options.format == "yolo":
        from modomo.export.yolo import YoloWriter

        writer = YoloWriter(out_dir, task=options.yolo_task, overwrite=True)
    else:
        from modomo.export.hf import HfWriter

        writer = HfWriter(out_dir, overwrite=True)
    for scene in scenes():
        writer.add(scene)
    written = writer.close()

    models = {name: model_licence(name) for name in sorted(tally.models)}
    counts = {
        split: {"scenes": tally.scenes[split], "objects": tally.objects[split]} for split in SPLITS
    }
    card = dataset_card(
        name=options.name,
        counts=counts,
        class_histogram=dict(tally.classes.most_common()),
        room_types=dict(tally.room_types.most_common()),
        models={name: name for name in models},
        licences=models,
        options=options.to_json(),
        formats=options.format,
    )
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    checksum, files = _write_checksums(out_dir)
    manifest = {
        "format": options.format,
        "created_at": utcnow().isoformat(),
        "options": options.to_json(),
        "counts": counts,
        "total": {"scenes": sum(tally.scenes.values()), "objects": sum(tally.objects.values())},
        "written": written,
        "class_histogram": dict(tally.classes.most_common()),
        "room_types": dict(tally.room_types.most_common()),
        "models": models,
        "files": files,
        "checksums": CHECKSUMS,
        "checksum": checksum,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest
