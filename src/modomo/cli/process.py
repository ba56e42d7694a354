"""``modomo process SOURCE...``, the main job: ingest images, run the chosen pipeline through
Celery (palettes by default; ``--pipeline detect,segment,depth,colors`` or ``full`` for the
detection pipeline on the AI queues), follow the job's progress, print the results. With
nothing configured it runs a worker in-process; with a broker configured it submits and
follows while workers elsewhere do the work.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import select

from modomo.cli.app import (
    AI_QUEUES,
    PriorityOption,
    _ensure_database,
    _fail,
    _one_line,
    _redacted,
    _timing,
    app,
)
from modomo.config import Settings, get_settings


@app.command()
def process(
    sources: Annotated[
        list[str],
        typer.Argument(help="Image folders, image files, http(s) image URLs, or .txt URL lists."),
    ],
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Scenes per task (default MODOMO_BATCH_SIZE).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = True,
    show: Annotated[int, typer.Option(min=0, help="Palettes to print at the end.")] = 30,
    pipeline: Annotated[
        str,
        typer.Option(
            help="Stages: colors (scene palettes), a comma-separated subset of "
            "detect,segment,depth,colors,classify,dedup, full (the detection pipeline), or "
            "auto (every stage whose weights are in the local cache). classify and dedup run "
            "as follow-on jobs on the ingested scenes."
        ),
    ] = "colors",
    priority: PriorityOption = "normal",
) -> None:
    """Ingest images and run a pipeline on them (scene palettes by default) as one job.

    The images are ingested by this command, so it takes ``--priority`` but no start time:
    schedule work with the other commands, the API or ``modomo schedules``."""
    from modomo.celery_app import app as celery_app
    from modomo.console import console, progress_bar
    from modomo.embedded import embedded_worker
    from modomo.jobs import create_job, dispatch_batches, finish_if_done
    from modomo.sources import expand_sources, ingest
    from modomo.sources.inputs import SourceError
    from modomo.tasks.classification_tasks import classify_scenes_batch, run_dedup_job
    from modomo.tasks.color_tasks import process_colors_batch
    from modomo.tasks.detection_tasks import process_scenes_batch

    settings = get_settings()
    timing = _timing(priority)
    try:
        stages = _pipeline_stages(pipeline, settings)
        inputs = expand_sources(sources)
    except (SourceError, ValueError) as exc:
        raise _fail(str(exc)) from None
    _ensure_database(settings)
    if settings.embedded and not wait:
        raise _fail(
            "--no-wait needs a broker (CELERY_BROKER_URL / REDIS_URL): "
            "the embedded worker lives only as long as this command"
        )
    # One job per kind of work, in order: the first ingests, the others follow on its scenes.
    ai = tuple(s for s in stages if s not in FOLLOW_ON)
    kinds = ([("colors" if ai == ("colors",) else "detection")] if ai else []) + [
        s for s in FOLLOW_ON if s in stages
    ]
    if len(kinds) > 1 and not wait:
        raise _fail(
            f"--no-wait runs one job, and --pipeline {pipeline} needs {len(kinds)} in turn "
            f"({', '.join(kinds)}); follow them, or run `modomo classify` / `modomo dedup` later"
        )
    job_id = create_job(
        kinds[0],
        {"sources": sources, "inputs": len(inputs), "stages": list(stages)},
        priority=timing.priority,
    )
    console.print(f"job [bold]{job_id}[/] ({kinds[0]}): {len(inputs)} inputs")
    size = batch_size or settings.batch_size
    jobs: list[Any] = []
    # jobs whose work ends with this command: until their batches are queued, or all of them
    # with the embedded worker, which lives in this process
    ours = [job_id]
    from modomo.celery_app import task_queue

    worker = embedded_worker(celery_app) if settings.embedded else contextlib.nullcontext()
    try:
        with worker:
            with progress_bar() as progress:
                bar = progress.add_task("ingest", total=len(inputs), note="")
                report = ingest(
                    job_id, inputs, lambda done, _: progress.update(bar, completed=done)
                )
            note = f"{len(report.scene_ids)} scenes"
            if report.duplicates:
                note += f" ({report.duplicates} already known or repeated)"
            console.print(f"ingested {note}, {len(report.failed)} failed at ingest")
            if report.failed:
                console.print(f"[red]error:[/] {_ingest_failures(report.failed)}")
            for position, kind in enumerate(kinds):
                if position:
                    job_id = create_job(
                        kind, {"stages": [kind]}, parent_id=jobs[0].id, priority=timing.priority
                    )
                    ours.append(job_id)
                    scope = (
                        "over the whole catalogue (new scenes grouped with every known one)"
                        if kind == "dedup"
                        else "on the same scenes"
                    )
                    console.print(f"job [bold]{job_id}[/] ({kind}) {scope}")
                task: Any = None
                if kind == "dedup":
                    from modomo.db.models import Priority

                    run_dedup_job.apply_async(
                        kwargs={"job_id": str(job_id)}, priority=Priority.MESSAGE[timing.priority]
                    )
                else:
                    task, options = {
                        "colors": (process_colors_batch, {}),
                        "detection": (process_scenes_batch, {"stages": list(ai)}),
                        "classify": (classify_scenes_batch, {}),
                    }[kind]
                    dispatch_batches(job_id, task, report.scene_ids, size, **options)
                    if not report.scene_ids:
                        finish_if_done(job_id)
                if not settings.embedded:
                    ours.remove(job_id)  # queued: workers carry it on without this command
                    sent = run_dedup_job if kind == "dedup" else task
                    _warn_unconsumed(celery_app, [task_queue(sent.name)])
                if not wait:
                    console.print(f"submitted; follow with `modomo jobs show {job_id}`")
                    return
                from modomo.console import follow_job

                jobs.append(follow_job(job_id))
    except BaseException as exc:
        _abandon(ours, exc)
        raise
    _print_summary(jobs[0].id, report.scene_ids[:show], settings)
    if "detection" in kinds:
        _print_objects(report.scene_ids, jobs[kinds.index("detection")].processed)
    if "classify" in kinds:
        _print_classes(report.scene_ids)
    if "dedup" in kinds:
        _print_groups()
    if any(job.status != "completed" for job in jobs):
        raise typer.Exit(1)


def _warn_unconsumed(celery_app: Any, queues: list[str]) -> None:
    """Say which of ``queues`` no running worker consumes (the job would wait for one
    silently), with the command that starts one."""
    from modomo.console import console
    from modomo.queues import listening

    try:
        consumed = listening(celery_app)
    except Exception:  # the broker is unreachable: submitting already said so
        return
    for queue in dict.fromkeys(q for q in queues if q not in consumed):
        command = (
            "modomo worker --ai" if queue in AI_QUEUES.split(",") else f"modomo worker -Q {queue}"
        )
        console.print(
            f"[yellow]warning:[/] no worker is listening on the [bold]{queue}[/] queue: the "
            f"job waits until one does (start one with `{command}`)"
        )


def _ingest_failures(failed: list[tuple[Any, str]]) -> str:
    """One line for the inputs that failed at ingest: how many, and the commonest reason."""
    from collections import Counter

    reason, times = Counter(reason for _, reason in failed).most_common(1)[0]
    others = "" if times == len(failed) else f"; {len(failed) - times} for other reasons"
    return f"{len(failed)} input(s) failed at ingest: {reason} ({times}x){others}"


def _abandon(job_ids: list[Any], exc: BaseException) -> None:
    """End the jobs this command leaves unfinished as it stops on ``exc``: failed, with the
    reason, never pending (best effort: the database may be what failed)."""
    from modomo.jobs import abandon_job

    clean = (isinstance(exc, SystemExit) and exc.code in (0, None)) or (
        isinstance(exc, typer.Exit) and exc.exit_code == 0
    )
    if clean:
        return
    why = "interrupted" if isinstance(exc, KeyboardInterrupt) else _one_line(exc)
    for job_id in job_ids:
        try:
            abandon_job(job_id, stage="ingest", reason=f"modomo process stopped: {why}")
        except Exception as error:
            sys.stderr.write(f"modomo: job {job_id} not ended: {_one_line(error)}\n")


FOLLOW_ON = ("classify", "dedup")
"""Pipeline stages that run as their own jobs after the first (see ``modomo process``)."""


def _yoloe_embeddings(weights: Any, settings: Settings) -> None:
    """Raise MissingWeightsError when YOLOE's prompt embeddings are not cached."""
    from modomo.analysis.taxonomy import PromptTable
    from modomo.models.detectors.yoloe import cached_embeddings

    cached_embeddings(weights, PromptTable(settings.detector_prompts))


def _pipeline_stages(text: str, settings: Settings) -> tuple[str, ...]:
    """The stages ``--pipeline`` asks for; ``auto`` drops (and names) those without weights.

    Raises:
        ValueError: an unknown stage, or an inconsistent set (see
            :func:`modomo.inference.parse_stages`).
    """
    from modomo.console import console
    from modomo.inference import STAGES, parse_stages
    from modomo.models import MissingWeightsError, resolve

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - {*STAGES, *FOLLOW_ON, "full", "auto"})
    if unknown or not names:
        raise ValueError(
            f"unknown pipeline stage(s) {unknown or names}: use a comma-separated subset of "
            f"{','.join((*STAGES, *FOLLOW_ON))}, full or auto"
        )
    if names != ["auto"]:
        rest = [n for n in names if n not in FOLLOW_ON]
        return (parse_stages(rest) if rest else ()) + tuple(s for s in FOLLOW_ON if s in names)
    needs = {
        "detect": [("detector", settings.detector_weights)],
        "segment": [("segmenter", settings.segmenter_weights)],
        "depth": [
            ("depth", settings.depth_weights),
            ("depth_fallback", settings.depth_fallback_weights),
        ],
        "classify": [("clip", settings.clip_weights)],
    }
    chosen = []
    for stage in (*STAGES, *FOLLOW_ON):
        candidates = [(r, w) for r, w in needs.get(stage, []) if w]
        missing = []
        for role, weights in candidates:
            try:
                found = resolve(role, weights, settings.model_cache)
                if role == "detector" and settings.detector == "yoloe":
                    _yoloe_embeddings(found, settings)
                break
            except (MissingWeightsError, ValueError):
                missing.append(role)
        else:
            if candidates:
                console.print(
                    f"[yellow]skipping the {stage} stage[/]: no {' or '.join(missing)} "
                    f"weights in {settings.model_cache}; fetch them with "
                    f"`modomo models pull {missing[0]}`"
                )
                continue
        if stage == "segment" and "detect" not in chosen:
            continue
        chosen.append(stage)
    return tuple(chosen)


def _print_objects(scene_ids: list[uuid.UUID], processed: int) -> None:
    """The detected objects of ``scene_ids`` by category; ``processed``: the detection job's
    processed scenes (none: every scene failed, which is not "no objects")."""
    from sqlalchemy import func

    from modomo.console import console
    from modomo.db.models import DetectedObject
    from modomo.db.session import session_scope

    with session_scope() as session:
        rows = session.execute(
            select(
                DetectedObject.taxonomy_group,
                DetectedObject.category,
                func.count(),
                func.avg(DetectedObject.confidence),
            )
            .where(DetectedObject.scene_id.in_(scene_ids))
            .group_by(DetectedObject.taxonomy_group, DetectedObject.category)
            .order_by(func.count().desc())
        ).all()
    table = Table("group", "category", "objects", "mean conf", title="detected objects")
    for group, category, count, confidence in rows:
        table.add_row(group, category, str(count), f"{confidence:.2f}")
    if rows:
        console.print(table)
    elif processed:
        console.print(f"no objects detected in the {processed} processed scenes")
    else:
        console.print("[red]no scene was processed[/]: every scene failed (reasons above)")


def _print_classes(scene_ids: list[uuid.UUID]) -> None:
    from modomo.console import console
    from modomo.db.models import Scene
    from modomo.db.session import session_scope

    with session_scope() as session:
        rows = session.execute(
            select(Scene.source_key, Scene.classification).where(
                Scene.id.in_(scene_ids), Scene.classification.is_not(None)
            )
        ).all()
    table = Table("image", "room type", "style", "scene type", title="classification")
    for key, classification in rows[:30]:
        cells = [
            f"{classification[a]['label']} ({classification[a]['probability']:.2f})"
            for a in ("room_type", "style", "scene_type")
        ]
        table.add_row(Path(key.removeprefix("file:")).name, *cells)
    console.print(table if rows else "no scene classified")


def _print_groups(limit: int = 20, offset: int = 0) -> None:
    from modomo.console import console
    from modomo.duplicates import group_count, list_groups

    groups = list_groups(limit, offset)
    table = Table("group", "method", "scenes", "canonical", "duplicates", title="duplicate groups")
    for group in groups:
        names = [Path(s["source_key"].removeprefix("file:")).name for s in group["scenes"]]
        table.add_row(
            group["id"][:8], group["method"], str(group["size"]), names[0], ", ".join(names[1:])
        )
    total = group_count()
    console.print(table if groups else "no near-duplicate scenes")
    if total > offset + len(groups):
        console.print(
            f"… {total - offset - len(groups)} more groups: "
            f"`modomo duplicates --offset {offset + len(groups)}`"
        )


def _print_summary(job_id: uuid.UUID, scene_ids: list[uuid.UUID], settings: Settings) -> None:
    from modomo.console import console, failures_table, palette_text
    from modomo.db.models import Scene
    from modomo.db.session import session_scope
    from modomo.jobs import describe_job

    job = describe_job(job_id)
    if scene_ids:
        with session_scope() as session:
            rows = session.execute(
                select(Scene.id, Scene.source_key, Scene.width, Scene.height, Scene.colors).where(
                    Scene.id.in_(scene_ids)
                )
            ).all()
        by_id = {row[0]: row for row in rows}
        table = Table(
            "image", "size", "palette", "bright", "temp", title="palettes", title_justify="left"
        )
        for sid in scene_ids:
            _, key, width, height, colors = by_id[sid]
            if not colors:
                continue
            table.add_row(
                Path(key.removeprefix("file:")).name,
                f"{width}x{height}",
                palette_text(colors),
                f"{colors['brightness']:.2f}",
                colors["temperature"],
            )
        console.print(table)
    if job["failures"]:
        console.print(failures_table(job["failures"]))
    summary = Table.grid(padding=(0, 2))
    for label, value in [
        ("job", f"{job['id']} ({job['status']})"),
        ("scenes", f"{job['total']} total, {job['processed']} processed, {job['failed']} failed"),
        ("database", _redacted(settings.database_url)),
        ("artifacts", settings.artifact_url),
        ("details", f"modomo jobs show {job['id']}"),
    ]:
        summary.add_row(f"[bold]{label}", value)
    console.print(summary)
