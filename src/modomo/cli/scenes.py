"""``modomo scenes``: scenes and what the pipeline found in them."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Column, Table

from modomo.cli.app import _ensure_database, _unique_id, scenes_app
from modomo.config import get_settings


@scenes_app.command("list")
def scenes_list(
    job: Annotated[str | None, typer.Option("--job", help="Only this job's scenes.")] = None,
    status: Annotated[
        str | None, typer.Option(help="ingested, or failed (an unusable image).")
    ] = None,
    room_type: Annotated[str | None, typer.Option(help="Only this room type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """List scenes, newest first: status, room type, objects found and palette."""
    from modomo.catalog import list_scenes
    from modomo.console import console, palette_text
    from modomo.db.models import Job

    _ensure_database(get_settings())
    job_id = _unique_id(job, Job.id, "job") if job else None
    scenes, total = list_scenes(status=status, room_type=room_type, job_id=job_id, limit=limit)
    if as_json:
        sys.stdout.write(json.dumps({"total": total, "scenes": scenes}, indent=2) + "\n")
        return
    table = Table(
        Column("id", no_wrap=True, min_width=36),
        "input",
        "status",
        "room type",
        "objects",
        "palette",
        title=f"{len(scenes)} of {total} scenes",
    )
    for scene in scenes:
        table.add_row(
            scene["id"],
            scene["source_key"],
            scene["status"],
            scene["room_type"] or "-",
            str(scene["objects"]),
            palette_text(scene["colors"]),
        )
    console.print(table)


@scenes_app.command("show")
def scenes_show(
    scene_id: Annotated[str, typer.Argument(help="A scene id or a unique prefix of it.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Show one scene: palette, classification, depth, detected objects and failures."""
    from modomo.catalog import get_scene
    from modomo.console import console, palette_text
    from modomo.db.models import Scene

    _ensure_database(get_settings())
    record = get_scene(_unique_id(scene_id, Scene.id, "scene"))
    if as_json:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
        return
    summary = Table.grid(padding=(0, 2))
    depth = record["depth_info"] or {}
    labels = record["classification"] or {}
    for label, value in (
        ("scene", record["id"]),
        ("input", record["source_key"]),
        ("size", f"{record['width']}x{record['height']}"),
        ("status", record["status"]),
        ("palette", palette_text(record["colors"])),
        *(
            (name, f"{labels[name]['label']} ({labels[name]['probability']:.2f})")
            for name in ("room_type", "style", "scene_type")
            if isinstance(labels.get(name), dict)
        ),
        ("depth", f"{depth['unit']} {depth['min']:.3g}-{depth['max']:.3g}" if depth else "-"),
        ("reviewed", record["reviewed_at"] or "no (the models' labels)"),
    ):
        summary.add_row(f"[bold]{label}", value)
    console.print(summary)
    objects = Table(
        "category", "confidence", "bbox (x, y, w, h)", "mask px", "depth", "by",
        title=f"{len(record['detected_objects'])} objects",
    )  # fmt: skip
    for obj in record["detected_objects"]:
        objects.add_row(
            obj["category"],
            f"{obj['confidence']:.2f}",
            ", ".join(f"{v:.0f}" for v in obj["bbox"]),
            str(obj["mask_area"] or "-"),
            "-" if obj["depth_median"] is None else f"{obj['depth_median']:.3g}",
            obj["labelled_by"],
        )
    console.print(objects)
    if record["failures"]:
        failures = Table("job", "stage", "reason", title="failures")
        for failure in record["failures"]:
            failures.add_row(failure["job_id"] or "-", failure["stage"], failure["error"])
        console.print(failures)
