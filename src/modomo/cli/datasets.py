"""Datasets out and labels back: ``modomo export``, ``annotations import``, ``eval`` and
``preview``.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from modomo.cli.app import _ensure_database, _fail, _scene_uuid, annotations_app, app
from modomo.config import get_settings


def _filters(values: list[str]) -> dict[str, tuple[str, ...]]:
    """``--filter key=value`` options as ExportOptions fields (repeat a key for several)."""
    fields = {"room_type": "room_types", "style": "styles", "source": "sources"}
    fields["scene_type"] = "scene_types"
    chosen: dict[str, list[str]] = {}
    for value in values:
        key, _, wanted = value.partition("=")
        if key not in fields or not wanted:
            raise _fail(
                f"bad --filter {value!r}: use KEY=VALUE with KEY one of {', '.join(fields)}"
            )
        chosen.setdefault(fields[key], []).append(wanted)
    return {name: tuple(items) for name, items in chosen.items()}


@app.command()
def export(
    export_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="coco, yolo, hf (Hugging Face datasets) or label-studio (tasks to review).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    job: Annotated[str | None, typer.Option("--job", help="Only this job's scenes.")] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter", help="KEY=VALUE, KEY one of room_type, style, source, scene_type (repeat)."
        ),
    ] = None,
    min_confidence: Annotated[
        float, typer.Option(min=0, max=1, help="Leave out objects below this confidence.")
    ] = 0.0,
    include_failed: Annotated[bool, typer.Option(help="Keep scenes that failed.")] = False,
    include_duplicates: Annotated[
        bool, typer.Option(help="Keep non-canonical near-duplicates.")
    ] = False,
    splits: Annotated[
        str, typer.Option(help="train,val,test ratios, summing to 1.")
    ] = "0.8,0.1,0.1",
    yolo_task: Annotated[
        str, typer.Option(help="YOLO labels: detect (boxes) or segment (polygons).")
    ] = "detect",
    name: Annotated[str, typer.Option(help="The dataset's name in its card.")] = "modomo-interiors",
    push_to_hub: Annotated[
        str | None, typer.Option(help="Hugging Face repo id to push an hf export to.")
    ] = None,
    sheet: Annotated[
        bool, typer.Option("--sheet", help="Also write contact_sheet.png (first 48 scenes).")
    ] = False,
    classes: Annotated[
        str,
        typer.Option(
            help="Class ids: used (the categories that occur, compact ids), taxonomy (all), "
            "or a file naming the categories to keep (one per line or a JSON list)."
        ),
    ] = "used",
    include_paths: Annotated[
        bool,
        typer.Option(
            "--include-paths",
            help="Keep absolute local paths (source keys, weights, data.yaml path).",
        ),
    ] = False,
    image_url_prefix: Annotated[
        str | None,
        typer.Option(
            help="label-studio: prefix of the tasks' image URLs (default: Label Studio's "
            "local file serving, /data/local-files/?d=images/)."
        ),
    ] = None,
) -> None:
    """Export scenes as a dataset (COCO instance segmentation, YOLO, Hugging Face) or as
    Label Studio tasks for review."""
    from modomo.console import console, progress_bar
    from modomo.export import FORMATS, ExportOptions, run_export

    settings = get_settings()
    if export_format not in FORMATS:
        raise _fail(f"unknown --format {export_format!r}; expected one of {', '.join(FORMATS)}")
    if yolo_task not in ("detect", "segment"):
        raise _fail(f"unknown --yolo-task {yolo_task!r}; expected detect or segment")
    if push_to_hub and export_format != "hf":
        raise _fail("--push-to-hub needs --format hf")
    if classes not in ("used", "taxonomy") and not Path(classes).is_file():
        raise _fail(f"--classes {classes!r}: expected used, taxonomy or a class file")
    if push_to_hub and settings.hf_token is None:
        raise _fail("--push-to-hub needs a Hugging Face token: set MODOMO_HF_TOKEN (or HF_TOKEN)")
    try:
        ratios = tuple(float(part) for part in splits.split(","))
        if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
            raise ValueError
        job_id = uuid.UUID(job) if job else None
    except ValueError:
        raise _fail(
            f"bad --splits {splits!r} (three non-negative numbers summing to 1) or --job {job!r}"
        ) from None
    _ensure_database(settings)
    options = ExportOptions(
        format=export_format,  # type: ignore[arg-type]
        job_id=job_id,
        min_confidence=min_confidence,
        include_failed=include_failed,
        include_duplicates=include_duplicates,
        ratios=ratios,  # type: ignore[arg-type]
        yolo_task=yolo_task,  # type: ignore[arg-type]
        name=name,
        classes=str(Path(classes).resolve()) if classes not in ("used", "taxonomy") else classes,
        include_paths=include_paths,
        image_url_prefix=image_url_prefix,
        **_filters(filters or []),  # type: ignore[arg-type]
    )
    try:
        with progress_bar() as progress:
            bar = progress.add_task(f"export {export_format}", total=None, note="")
            manifest = run_export(options, out, lambda n: progress.update(bar, completed=n))
    except (ValueError, OSError) as exc:  # a bad class file, a missing image, a full disk
        raise _fail(f"export failed: {exc}") from None
    table = Table("split", "scenes", "objects", title=f"{export_format} export in {out}")
    for split, counts in manifest["counts"].items():
        table.add_row(split, str(counts["scenes"]), str(counts["objects"]))
    console.print(table)
    console.print(f"dataset: {out.resolve()}")
    console.print(f"manifest: {out / 'manifest.json'} (checksum {manifest['checksum'][:16]}…)")
    console.print(f"classes: {len(manifest['classes']['names'])} ({classes}), in classes.json")
    if manifest["left_out_objects"]:
        left = sum(manifest["left_out_objects"].values())
        console.print(f"left out: {left} objects of categories not in {Path(classes).name}")
    if sheet and not manifest["total"]["scenes"]:
        console.print("[yellow]no scene matched: no contact sheet written[/]")
    elif sheet:
        console.print(f"contact sheet: {_write_sheet(out, options)}")
    if push_to_hub:
        from modomo.export.hf import push_to_hub as push

        assert settings.hf_token is not None
        push(out, push_to_hub, settings.hf_token.get_secret_value())
        console.print(f"pushed to https://huggingface.co/datasets/{push_to_hub}")


@annotations_app.command("import")
def annotations_import(
    file: Annotated[
        Path, typer.Argument(help="A Label Studio JSON export, or a COCO instances file.")
    ],
) -> None:
    """Store reviewed labels: each reviewed scene's objects are replaced by the people's
    (source human), and later detection runs leave them alone."""
    from modomo.annotations import import_reviews, read_reviews
    from modomo.console import console

    settings = get_settings()
    try:
        reviews, unreviewed = read_reviews(file)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    _ensure_database(settings)
    report = import_reviews(reviews)
    report.unreviewed = unreviewed
    console.print(f"reviewed scenes imported: {report.scenes} ({report.objects} objects)")
    console.print(f"tasks without an annotation (left alone): {report.unreviewed}")
    if report.refused:
        table = Table("review", "refused because", title=f"{len(report.refused)} refused")
        for ref, reason in report.refused[:50]:
            table.add_row(ref, reason)
        console.print(table)
    if report.refused and not report.scenes:
        raise typer.Exit(1)


@app.command("eval")
def evaluate(
    gt: Annotated[
        Path, typer.Option("--gt", help="Ground-truth COCO JSON (images, annotations, categories).")
    ],
    job: Annotated[
        str | None,
        typer.Option(
            "--job", help="The job whose detections to score (default: newest detection job)."
        ),
    ] = None,
    iou: Annotated[
        float, typer.Option(help="IoU threshold of the headline mAP and the per-category AP.")
    ] = 0.5,
    iou_type: Annotated[
        str, typer.Option("--iou-type", help="bbox (boxes) or segm (stored masks).")
    ] = "bbox",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """COCO mAP (pycocotools COCOeval) of a job's stored detections against a ground truth.

    Ground-truth images are matched to the job's scenes by file name, categories to the
    taxonomy by exact name; what did not match is listed."""
    from modomo.console import console
    from modomo.evaluation import EvaluationError, GroundTruthError, evaluate_job

    if iou_type not in ("bbox", "segm"):
        raise _fail(f"unknown --iou-type {iou_type!r}; expected bbox or segm")
    if not 0 < iou <= 1:
        raise _fail(f"--iou {iou}: an IoU threshold is in (0, 1]")
    _ensure_database(get_settings())
    try:
        result = evaluate_job(gt, job, iou=iou, iou_type=iou_type)  # type: ignore[arg-type]
    except GroundTruthError as exc:
        raise _fail(str(exc)) from None
    except EvaluationError as exc:
        raise _fail(str(exc), code=1) from None
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
        return

    def figure(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    images = result.images
    console.print(
        f"job [bold]{result.job_id}[/] ({result.iou_type}): {images['matched']} of "
        f"{images['gt']} ground-truth images matched, {result.detections} detections on them"
    )
    table = Table(
        "gt category",
        "taxonomy",
        "gt objects",
        "detections",
        f"AP@{result.iou:g}",
        title=f"per category, IoU {result.iou:g}",
    )
    for row in result.per_category:
        table.add_row(
            row["gt_name"],
            row["category"] or "[yellow]unmapped[/]",
            str(row["gt_objects"]),
            str(row["detections"]),
            figure(row["ap"]),
        )
    console.print(table)
    stats = result.stats
    console.print(
        f"[bold]mAP@{result.iou:g} {figure(result.map_at_iou)}[/]   AP@[.5:.95] "
        f"{figure(stats['ap'])}   AP50 {figure(stats['ap50'])}   AP75 {figure(stats['ap75'])}"
    )
    notes = [
        ("unmapped gt categories (not scored)", result.unmapped_categories),
        ("never predicted", result.never_predicted),
        (
            "detected, not in the ground truth (not scored)",
            [f"{name} ({n})" for name, n in result.unscored_detections.items()],
        ),
    ]
    for label, names in notes:
        if names:
            console.print(f"{label}: {', '.join(names)}")
    left_out = {k: v for k, v in images.items() if k not in ("gt", "matched", "job_scenes") and v}
    if left_out:
        reasons = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in left_out.items())
        examples = ", ".join(result.unmatched_examples[:3])
        console.print(
            f"ground-truth images left out: {reasons}" + (f" (e.g. {examples})" if examples else "")
        )


SHEET_SCENES = 48


def _scene_preview(scene_id: uuid.UUID, max_size: int | None) -> bytes:
    """A scene's stored image with its objects drawn, as PNG bytes."""
    from modomo.artifacts import artifact_store
    from modomo.catalog import scene_image_key
    from modomo.images import load_image
    from modomo.preview import render_preview

    key, objects = scene_image_key(scene_id)
    if key is None:
        raise LookupError(f"scene {scene_id} has no stored image")
    image = load_image(artifact_store().get_bytes(key), max_pixels=get_settings().max_image_pixels)
    return render_preview(image.rgb, objects, max_size=max_size)


def _write_sheet(out: Path, options: Any) -> Path:
    """A contact sheet of the first exported scenes (in the export's order)."""
    from modomo.export.runner import chosen_scene_ids
    from modomo.preview import contact_sheet

    previews = [_scene_preview(sid, 256) for sid in chosen_scene_ids(options, SHEET_SCENES)]
    target = out / "contact_sheet.png"
    target.write_bytes(contact_sheet(previews))
    return target


@app.command()
def preview(
    scene_id: Annotated[str, typer.Argument(help="A scene id.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    max_size: Annotated[
        int, typer.Option(min=0, help="Longest side in pixels (0: the image's own size).")
    ] = 1024,
) -> None:
    """Draw a scene's detected objects (masks, boxes, labels) over its image, as a PNG."""
    from modomo.catalog import SceneNotFound
    from modomo.console import console
    from modomo.images import ImageError

    sid = _scene_uuid(scene_id)
    _ensure_database(get_settings())
    try:
        data = _scene_preview(sid, max_size or None)
    except (SceneNotFound, LookupError, FileNotFoundError, ImageError) as exc:
        raise _fail(str(exc), code=1) from None
    out.write_bytes(data)
    console.print(f"wrote {out}")
