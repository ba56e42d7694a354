"""``modomo models``: model weights in the local cache."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from modomo.cli.app import _fail, models_app
from modomo.cli.process import _yoloe_embeddings
from modomo.config import get_settings


@models_app.command("list")
def models_list() -> None:
    """Show each model role, its configured weights and whether they are in the local cache."""
    from modomo.console import console
    from modomo.models import ROLES, MissingWeightsError, resolve

    settings = get_settings()
    table = Table("role", "weights", "status", title=f"models ({settings.model_cache})")
    missing = False
    for role in ROLES:
        name = getattr(settings, f"{role}_weights")
        if not name:
            table.add_row(role, "-", "disabled")
            continue
        try:
            weights = resolve(role, name, settings.model_cache)
            if role == "detector" and settings.detector == "yoloe":
                _yoloe_embeddings(weights, settings)
            table.add_row(role, name, f"[green]ready[/] {weights.path}")
        except (MissingWeightsError, ValueError) as exc:
            fetch = (
                f"`modomo models pull {role}`"
                if isinstance(exc, MissingWeightsError)
                else "fix the weights setting"
            )
            table.add_row(role, name, f"[red]missing[/]: {fetch}")
            missing = True
    console.print(table)
    if missing:
        console.print("fetch every missing weight at once with `modomo models pull`")


@models_app.command("pull")
def models_pull(
    roles: Annotated[
        list[str] | None,
        typer.Argument(help="detector, segmenter, depth, depth_fallback, clip (default: all)."),
    ] = None,
) -> None:
    """Download model weights into the local cache (MODOMO_MODEL_DIR), for offline workers."""
    from modomo.console import console
    from modomo.models import ROLES, pull

    settings = get_settings()
    unknown = sorted(set(roles or []) - set(ROLES))
    if unknown:
        raise _fail(f"unknown model role(s) {unknown}; expected some of {sorted(ROLES)}")
    failed = False
    for role in roles or list(ROLES):
        name = getattr(settings, f"{role}_weights")
        if not name:
            continue
        try:
            weights = pull(role, name, settings.model_cache)
            if role == "detector" and settings.detector == "yoloe":
                from modomo.analysis.taxonomy import PromptTable
                from modomo.models.detectors import embed_prompts

                prompts = PromptTable(settings.detector_prompts)
                cached = embed_prompts(weights, prompts, settings.model_cache)
                console.print(f"[green]{role}[/]: {len(prompts)} prompts embedded in {cached}")
        except (RuntimeError, ValueError) as exc:
            console.print(f"[red]{role}[/]: {exc}")
            failed = True
            continue
        console.print(f"[green]{role}[/]: {weights.label} in {weights.path}")
    if failed:
        raise typer.Exit(1)
