"""Exporting a dataset: choose the scenes, split them, stream them to a format writer, and
write ``manifest.json``, ``classes.json`` and a dataset card.

What leaves the machine is what a dataset user needs, no more: images are written upright
(:func:`modomo.export.upright.upright_image`), class ids are compact
(:class:`modomo.export.classes.ClassMap`), and no absolute local path is written unless asked
for (``include_paths``): local source keys become ``file:<sha256 prefix>/<file name>`` and
model weights named by a local path are named by their folder or file name. Model licences
come from the weights' own metadata (:mod:`modomo.models.licences`).

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
from modomo.config import get_settings
from modomo.db.models import DetectedObject, ItemStatus, JobScene, Scene, SceneStatus, utcnow
from modomo.db.session import session_scope
from modomo.duplicates import canonical_only
from modomo.export.classes import ClassMap
from modomo.export.records import SPLITS, ExportObject, ExportScene
from modomo.export.splits import Splitter
from modomo.export.upright import upright_image
from modomo.models.licences import model_licence
from modomo.models.weights import ROLES

__all__ = [
    "FORMATS",
    "ExportOptions",
    "chosen_scene_ids",
    "portable_key",
    "portable_label",
    "run_export",
]

FORMATS = ("coco", "yolo", "hf", "label-studio")
CHUNK = 500
"""Scenes per database round trip."""


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how.

    Attributes:
        format: ``coco``, ``yolo``, ``hf`` or ``label-studio`` (tasks for review).
        job_id: only the scenes of this job (its scenes that failed in it are left out).
        room_types / styles / sources / scene_types: keep scenes with one of these values.
        min_confidence: leave out objects below this detector confidence.
        include_failed: keep failed scenes (unusable images are never exported: no file).
        include_duplicates: keep the non-canonical members of duplicate groups.
        ratios: train / val / test shares, summing to 1.
        yolo_task: ``detect`` (boxes) or ``segment`` (polygons) labels for ``yolo``.
        name: the dataset's name in its card.
        classes: ``used`` (the categories that occur, compact ids), ``taxonomy`` (every
            category), the path of a class file, or the categories themselves in id order
            (a tuple; :class:`~modomo.export.classes.ClassMap`).
        include_paths: keep absolute local paths (source keys, model weights, YOLO's
            ``data.yaml`` ``path``) in the export.
        image_url_prefix: ``label-studio``: put before an image's file name to make its URL
            (default: Label Studio's local file serving of the export's ``images/``).
    """

    format: Literal["coco", "yolo", "hf", "label-studio"]
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
    classes: str | tuple[str, ...] = "used"
    include_paths: bool = False
    image_url_prefix: str | None = None
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


def portable_key(key: str) -> str:
    """A source key without the machine's file layout: ``file:/abs/dir/a.jpg`` ->
    ``file:<first 12 hex of its sha256>/a.jpg``; a Hugging Face key of a local dataset folder
    (``hf:/abs/ds:train:3``) likewise; URLs and hub keys unchanged."""
    if key.startswith("file:"):
        path = key[len("file:") :]
        return f"file:{_digest(key)}/{Path(path).name}"
    if key.startswith("hf:/"):
        name, split, index = key[len("hf:") :].rsplit(":", 2)
        return f"hf:{_digest(name)}/{Path(name).name}:{split}:{index}"
    return key


def portable_label(label: str) -> str:
    """A ``name@version`` model label with a local weights path reduced to its last part
    (``/srv/models/sam2@local`` -> ``sam2@local``); hub ids and file names unchanged."""
    name, at, version = label.rpartition("@")
    if at and (name.startswith(("/", "~", ".")) or Path(name).is_absolute()):
        return f"{Path(name).name}@{version}"
    return label


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _class_map(options: ExportOptions) -> ClassMap:
    """The export's classes (see :class:`ExportOptions`).

    Raises:
        ValueError: a bad class file, or a stored category outside the taxonomy.
    """
    if isinstance(options.classes, tuple):
        return ClassMap(options.classes, "list")
    if options.classes == "taxonomy":
        return ClassMap.taxonomy()
    if options.classes != "used":
        return ClassMap.from_file(Path(options.classes))
    chosen = select(Scene.id).where(*_conditions(options))
    query = (
        select(DetectedObject.category)
        .where(
            DetectedObject.scene_id.in_(chosen),
            DetectedObject.confidence >= options.min_confidence,
        )
        .distinct()
    )
    with session_scope() as session:
        return ClassMap.used(session.scalars(query))


def iter_scenes(
    options: ExportOptions,
    splitter: Splitter,
    seen_models: Counter[tuple[str, str]],
    classes: ClassMap | None = None,
    left_out: Counter[str] | None = None,
) -> Iterator[ExportScene]:
    """The chosen scenes as :class:`ExportScene` records with their split, in id order.

    Args:
        options: what to export.
        splitter: the frozen split assignment.
        seen_models: counts ``(role, name@version)`` of the models of the scenes yielded
            (labels as stored, local paths included, to find their licences).
        classes: objects of other categories are left out (and counted in ``left_out`` by
            category); None keeps all.
        left_out: see ``classes``.
    """
    store = artifact_store()
    portable = (lambda value: value) if options.include_paths else portable_label
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
                if classes is not None and obj.category not in classes:
                    if left_out is not None:
                        left_out[obj.category] += 1
                    continue
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
                        labelled_by=obj.source,
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
            seen_models.update(labels.items())
            key = scene.image_key
            assert key is not None  # the query asks for stored images only
            yield ExportScene(
                id=str(scene.id),
                split=splitter.assign(str(scene.id), scene.room_type),
                file_name=f"{scene.id}{_extension(key)}",
                width=scene.width or 0,
                height=scene.height or 0,
                source=scene.source,
                source_key=(
                    scene.source_key if options.include_paths else portable_key(scene.source_key)
                ),
                image_url=scene.image_url,
                licence=_licence(scene.meta),
                room_type=scene.room_type,
                style=scene.style,
                scene_type=scene.scene_type,
                colors=scene.colors,
                depth_info=scene.depth_info,
                models={role: portable(label) for role, label in labels.items()},
                objects=objects[scene.id],
                reviewed=scene.reviewed_at is not None,
                read_image=lambda key=key: upright_image(store.get_bytes(key)),  # type: ignore[misc]
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
        self.models: Counter[tuple[str, str]] = Counter()
        self.left_out: Counter[str] = Counter()
        self.reviewed: Counter[str] = Counter()  # reviewed "scenes" and their "objects"
        self.sources: Counter[str] = Counter()

    def count(self, scenes: Iterator[ExportScene]) -> Iterator[ExportScene]:
        for scene in scenes:
            self.scenes[scene.split] += 1
            self.objects[scene.split] += len(scene.objects)
            self.classes.update(o.category for o in scene.objects)
            self.room_types[scene.room_type or "unknown"] += 1
            self.sources[scene.source] += 1
            if scene.reviewed:
                self.reviewed["scenes"] += 1
                self.reviewed["objects"] += len(scene.objects)
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
        histogram, the classes in id order (also ``classes.json``) and the objects left out
        by a class file, options, models (role, ``name@version``, licence), the number of
        files, and ``checksum``: the sha256 of ``checksums.sha256``, which lists every file's
        sha256 (``sha256sum -c checksums.sha256`` checks an export).

    Raises:
        ValueError: an unknown format, bad split ratios or a bad class file.
        FileNotFoundError: a scene's stored image is missing.
    """
    from modomo.export.card import dataset_card

    if options.format not in FORMATS:
        raise ValueError(f"unknown export format {options.format!r}; expected one of {FORMATS}")
    classes = _class_map(options)
    out_dir.mkdir(parents=True, exist_ok=True)
    splitter = _splitter(options)
    tally = _Tally()

    def scenes() -> Iterator[ExportScene]:
        chosen = iter_scenes(options, splitter, tally.models, classes, tally.left_out)
        for position, scene in enumerate(tally.count(chosen), 1):
            if progress is not None:
                progress(position)
            yield scene

    writer: Any
    if options.format == "coco":
        from modomo.export.coco import CocoWriter

        writer = CocoWriter(out_dir, overwrite=True, classes=classes)
    elif options.format == "yolo":
        from modomo.export.yolo import YoloWriter

        writer = YoloWriter(
            out_dir,
            task=options.yolo_task,
            overwrite=True,
            classes=classes,
            include_path=options.include_paths,
        )
    elif options.format == "hf":
        from modomo.export.hf import HfWriter

        writer = HfWriter(out_dir, overwrite=True, classes=classes)
    else:
        from modomo.export.label_studio import DEFAULT_IMAGE_URL_PREFIX, LabelStudioWriter

        writer = LabelStudioWriter(
            out_dir,
            image_url_prefix=options.image_url_prefix or DEFAULT_IMAGE_URL_PREFIX,
            overwrite=True,
        )
    for scene in scenes():
        writer.add(scene)
    written = writer.close()

    model_dir = get_settings().model_dir
    models = [
        {
            "role": role,
            "model": label if options.include_paths else portable_label(label),
            "licence": model_licence(label, model_dir),
        }
        for role, label in sorted(tally.models)
    ]
    by_role: dict[str, list[dict[str, str]]] = {}
    for model in models:
        by_role.setdefault(model["role"], []).append(model)
    shown = options.to_json()
    if not options.include_paths and isinstance(options.classes, str):
        shown["classes"] = classes.how  # a class file by its name only
    (out_dir / "classes.json").write_text(json.dumps(classes.to_json(), indent=2), "utf-8")
    counts = {
        split: {"scenes": tally.scenes[split], "objects": tally.objects[split]} for split in SPLITS
    }
    card = dataset_card(
        name=options.name,
        counts=counts,
        class_histogram=dict(tally.classes.most_common()),
        room_types=dict(tally.room_types.most_common()),
        models={role: ", ".join(m["model"] for m in group) for role, group in by_role.items()},
        licences={
            role: "; ".join(dict.fromkeys(m["licence"] for m in group))
            for role, group in by_role.items()
        },
        options=shown,
        formats=options.format,
        sources=dict(tally.sources.most_common()),
        classes=classes,
        reviewed=(tally.reviewed["scenes"], tally.reviewed["objects"]),
    )
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    checksum, files = _write_checksums(out_dir)
    manifest = {
        "format": options.format,
        "created_at": utcnow().isoformat(),
        "options": shown,
        "counts": counts,
        "total": {"scenes": sum(tally.scenes.values()), "objects": sum(tally.objects.values())},
        "written": written,
        "class_histogram": dict(tally.classes.most_common()),
        "classes": classes.to_json(),
        "left_out_objects": dict(tally.left_out.most_common()),
        "reviewed": {"scenes": tally.reviewed["scenes"], "objects": tally.reviewed["objects"]},
        "room_types": dict(tally.room_types.most_common()),
        "models": models,
        "files": files,
        "checksums": CHECKSUMS,
        "checksum": checksum,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest
