"""Scene labels and duplicates: ``modomo classify``, ``dedup``, ``duplicates`` and
``similar``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from modomo.cli.app import (
    CountdownOption,
    ExpiresAtOption,
    ExpiresOption,
    PriorityOption,
    RunAtOption,
    _ensure_database,
    _fail,
    _scene_uuid,
    _timing,
    app,
)
from modomo.cli.process import _print_groups
from modomo.cli.sources import _run_source_job
from modomo.config import get_settings


@app.command()
def classify(
    force: Annotated[
        bool, typer.Option("--force", help="Also the scenes already classified.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many scenes.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = True,
    priority: PriorityOption = "normal",
    run_at: RunAtOption = None,
    countdown: CountdownOption = None,
    expires_at: ExpiresAtOption = None,
    expires: ExpiresOption = None,
) -> None:
    """Classify scenes with CLIP (room type, style, scene type) and store their embeddings."""
    _run_source_job(
        "classify",
        "modomo.tasks.classification_tasks.run_scene_reclassification_job",
        {"limit": limit, "force_reclassify": force},
        wait,
        _timing(priority, run_at, countdown, expires_at, expires),
    )


@app.command()
def dedup(
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = True,
    priority: PriorityOption = "normal",
    run_at: RunAtOption = None,
    countdown: CountdownOption = None,
    expires_at: ExpiresAtOption = None,
    expires: ExpiresOption = None,
) -> None:
    """Find near-duplicate scenes (pHash, embeddings) and rebuild the duplicate groups."""
    _run_source_job(
        "dedup",
        "modomo.tasks.classification_tasks.run_dedup_job",
        {},
        wait,
        _timing(priority, run_at, countdown, expires_at, expires),
    )
    if wait and run_at is None and countdown is None:
        _print_groups()


@app.command()
def duplicates(
    limit: Annotated[int, typer.Option(min=1, help="Groups to show.")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Groups to skip.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the duplicate groups found by the last `modomo dedup`, canonical scene first."""
    from modomo.duplicates import list_groups

    _ensure_database(get_settings())
    if as_json:
        sys.stdout.write(json.dumps(list_groups(limit, offset), indent=2) + "\n")
    else:
        _print_groups(limit, offset)


@app.command()
def similar(
    scene_id: Annotated[str, typer.Argument(help="A scene id.")],
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many scenes.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The scenes whose image embeddings are nearest to this scene's (cosine similarity)."""
    from modomo.catalog import SceneNotFound
    from modomo.console import console
    from modomo.similarity import NoEmbedding, similar_scenes

    sid = _scene_uuid(scene_id)
    _ensure_database(get_settings())
    try:
        found = similar_scenes(sid, k)
    except (SceneNotFound, NoEmbedding) as exc:
        raise _fail(str(exc), code=1) from None
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
        return
    table = Table(
        "scene", "similarity", "image", "room type", "style", title=f"nearest to {scene_id}"
    )
    for item in found:
        table.add_row(
            item["scene_id"],
            f"{item['similarity']:.3f}",
            Path(item["source_key"].removeprefix("file:")).name,
            str(item["room_type"]),
            str(item["style"]),
        )
    console.print(table if found else "no other scene has an embedding yet")
