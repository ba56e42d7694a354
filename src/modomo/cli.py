"""The ``modomo`` command line (Typer + Rich).

``modomo process SOURCE...`` is the main job: ingest images, run the chosen pipeline through
Celery (palettes by default; ``--pipeline detect,segment,depth,colors`` or ``full`` for the
detection pipeline on the AI queues), follow the job's progress, print the results. With
nothing configured it runs a worker in-process; with a broker configured it submits and
follows while workers elsewhere do the work.
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table
from sqlalchemy import select
from sqlalchemy.engine import make_url

from modomo.config import ConfigError, Settings, get_settings

if TYPE_CHECKING:
    from modomo.jobs.scheduling import Timing

__all__ = ["app", "main"]

app = typer.Typer(
    name="modomo",
    help="Turn interior photographs into ML training datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="List, inspect and cancel jobs.", no_args_is_help=True)
scenes_app = typer.Typer(
    help="Scenes and what the pipeline found in them (palette, objects, labels, failures).",
    no_args_is_help=True,
)
db_app = typer.Typer(help="The job and dataset database.", no_args_is_help=True)
models_app = typer.Typer(help="Model weights in the local cache.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed in the database).", no_args_is_help=True)
scrape_app = typer.Typer(help="Crawl image galleries into scenes.", no_args_is_help=True)
import_app = typer.Typer(help="Import datasets as scenes.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(scenes_app, name="scenes")
app.add_typer(scrape_app, name="scrape")
app.add_typer(import_app, name="import")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
schedules_app = typer.Typer(
    help="Recurring jobs (cron), fired by `modomo beat`.", no_args_is_help=True
)
app.add_typer(schedules_app, name="schedules")
annotations_app = typer.Typer(
    help="People's reviewed labels (Label Studio, COCO) back into the catalogue.",
    no_args_is_help=True,
)
app.add_typer(annotations_app, name="annotations")

# Job options shared by the job-creating commands (see modomo.jobs.scheduling).
PriorityOption = Annotated[
    str, typer.Option(help="Job priority: urgent, high, normal or low (urgent runs first).")
]
RunAtOption = Annotated[
    str | None,
    typer.Option(
        "--run-at", help="Start at this time: ISO 8601 with a zone, e.g. 2026-11-22T02:00:00Z."
    ),
]
CountdownOption = Annotated[float | None, typer.Option(min=0, help="Start in this many seconds.")]
ExpiresAtOption = Annotated[
    str | None,
    typer.Option("--expires-at", help="Expire the job if it has not started by this time."),
]
ExpiresOption = Annotated[
    float | None,
    typer.Option(
        min=0,
        help="Expire the job if it has not started this many seconds after its run time "
        "(--run-at/--countdown; else from now).",
    ),
]


def _when(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise _fail(f"{name}: not an ISO 8601 time: {text!r}") from None


def _timing(
    priority: str = "normal",
    run_at: str | None = None,
    countdown: float | None = None,
    expires_at: str | None = None,
    expires: float | None = None,
) -> Timing:
    """The job options of a command as a :class:`~modomo.jobs.scheduling.Timing`."""
    from modomo.jobs.scheduling import Timing

    try:
        return Timing.resolve(
            priority.lower(),
            _when("--run-at", run_at),
            countdown,
            _when("--expires-at", expires_at),
            expires,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None


GENERAL_QUEUES = "celery,color_processing,classification,maintenance"
AI_QUEUES = "ai_processing,detection"


def _fail(message: str, code: int = 2) -> typer.Exit:
    from modomo.console import console

    console.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _ensure_database(settings: Settings) -> None:
    """Migrate the embedded SQLite database; insist on a migrated one elsewhere."""
    from modomo.db.migrate import current_revision, upgrade

    if make_url(settings.database_url).get_backend_name() == "sqlite":
        upgrade()
    elif current_revision() is None:
        raise _fail(
            f"the database {_redacted(settings.database_url)} has no Modomo schema; "
            "run `modomo db upgrade` first"
        )


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


def _one_line(exc: BaseException) -> str:
    """``exc`` as one line of text (SQLAlchemy's own message, not its SQL and links)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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


@app.command()
def worker(
    queues: Annotated[
        str | None, typer.Option("-Q", "--queues", help="Comma-separated queues to consume.")
    ] = None,
    concurrency: Annotated[int | None, typer.Option("-c", "--concurrency", min=1)] = None,
    ai: Annotated[
        bool, typer.Option("--ai", help=f"An AI worker: {AI_QUEUES}, concurrency 1.")
    ] = False,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, threads, solo.")] = "prefork",
    warmup: Annotated[
        bool,
        typer.Option(help="AI worker: load the models when a child starts (MODOMO_AI_WARMUP)."),
    ] = False,
    loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "INFO",
    hostname: Annotated[str | None, typer.Option("-n", "--hostname")] = None,
) -> None:
    """Start a Celery worker (general queues by default; ``--ai`` for the AI queues).

    One AI worker per GPU: pick the GPU with ``CUDA_VISIBLE_DEVICES`` (each worker then sees
    it as ``cuda``), e.g. ``CUDA_VISIBLE_DEVICES=1 modomo worker --ai -n ai1@%h``.
    """
    import os

    if warmup:
        os.environ["MODOMO_AI_WARMUP"] = "1"
        get_settings.cache_clear()
    consumed = (queues or (AI_QUEUES if ai else GENERAL_QUEUES)).split(",")
    if get_settings().ai_warmup and set(consumed) & set(AI_QUEUES.split(",")):
        _check_ai_weights()
    from modomo.celery_app import app as celery_app

    argv = [
        "worker",
        "-Q",
        queues or (AI_QUEUES if ai else GENERAL_QUEUES),
        "--pool",
        pool,
        "--loglevel",
        loglevel,
    ]
    if concurrency or ai:
        argv += ["--concurrency", str(concurrency or 1)]
    if hostname:
        argv += ["--hostname", hostname]
    celery_app.worker_main(argv)


def _check_ai_weights() -> None:
    """Refuse to start a warming-up AI worker whose weights are not all there (the child's
    warm-up would fail and every task with it): one line naming the weight and the command
    that fetches it."""
    from modomo.models.weights import MissingWeightsError, resolve

    settings = get_settings()
    wanted = [
        ("detector", settings.detector_weights),
        ("segmenter", settings.segmenter_weights),
        ("depth", settings.depth_weights),
    ]
    if settings.depth_fallback_weights:
        wanted.append(("depth_fallback", settings.depth_fallback_weights))
    for role, name in wanted:
        try:
            resolve(role, name, settings.model_cache)
        except (MissingWeightsError, ValueError) as exc:
            raise _fail(f"not starting the AI worker: {_one_line(exc)}") from None


@app.command()
def api(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default MODOMO_API_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default MODOMO_API_PORT, 8000).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API with uvicorn: /docs, /dashboard, jobs, scenes, monitoring."""
    import ipaddress

    import uvicorn

    from modomo.console import console

    settings = get_settings()
    host = host or settings.api_host
    if settings.auth_disabled:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise _fail(
                f"MODOMO_AUTH_DISABLED is set: refusing to bind to {host}; "
                "without auth the API serves loopback only (use 127.0.0.1)"
            )
        console.print("[yellow]auth is disabled[/] (MODOMO_AUTH_DISABLED): loopback only")
    _ensure_database(settings)
    port = port or settings.api_port
    console.print(f"API on http://{host}:{port}  (docs /docs, dashboard /dashboard)")
    uvicorn.run(
        "modomo.api:app",
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level == "DEBUG",
        # the app answers 431 past MODOMO_API_MAX_HEADER_BYTES (modomo.api.guard); with the
        # h11 parser uvicorn also stops buffering a request head past it (plus the request
        # line). httptools, uvicorn's default where installed, has no such limit.
        h11_max_incomplete_event_size=settings.api_max_header_bytes + 8192,
    )


@app.command()
def flower(
    port: Annotated[int | None, typer.Option(min=1, max=65535)] = None,
    address: Annotated[
        str | None, typer.Option(help="Address to bind (default 127.0.0.1).")
    ] = None,
) -> None:
    """Start Flower with basic auth (MODOMO_FLOWER_USER / MODOMO_FLOWER_PASSWORD) on the
    workers' broker, with their transport options, so its queue lengths are right. The same
    options as `celery -A celery_app flower` gets from the repository's flowerconfig.py."""
    import os

    from flower.options import options as flower_settings

    from modomo.celery_app import app as celery_app
    from modomo.flower_config import NoFlowerPassword, flower_options

    try:
        options = flower_options()
    except NoFlowerPassword as exc:
        raise _fail(str(exc)) from None
    # Given to Flower directly rather than as FLOWER_BASIC_AUTH or --basic-auth: out of `ps`,
    # and not split at commas (Flower splits both forms of a multiple option there). A
    # FLOWER_BASIC_AUTH of the environment would replace it: Modomo's settings win.
    os.environ.pop("FLOWER_BASIC_AUTH", None)
    flower_settings.basic_auth = options.basic_auth
    celery_app.start(
        ["flower", f"--port={port or options.port}", f"--address={address or options.address}"]
    )


@app.command()
def beat(
    schedule_file: Annotated[
        Path | None,
        typer.Option(help="Where beat keeps its last-run times (default DATA_DIR/celerybeat)."),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run Celery beat (run one): the scheduler tick (scheduled, expiring and recurring jobs),
    the stale-job reaper, health checks and the daily cleanup."""
    from modomo.celery_app import app as celery_app

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    target = schedule_file or settings.data_dir / "celerybeat-schedule"
    celery_app.start(["beat", f"--schedule={target}", f"--loglevel={loglevel}"])


@app.command()
def queues(
    names: Annotated[
        list[str] | None, typer.Argument(help="Queues to show (default: all).", metavar="QUEUE")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Messages waiting in each queue's Redis priority lists, with a total per queue.

    kombu keeps priority 0 in the list named after the queue and the other priorities in
    lists named QUEUE\\x06\\x16PRIORITY, so `redis-cli llen QUEUE` alone shows only the most
    urgent ones. Only for a Redis broker.
    """
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    from modomo.celery_app import app as celery_app
    from modomo.console import console, priority_lists_table
    from modomo.queues import QUEUES, NotRedisBroker, UnknownQueue, priority_lists

    try:
        report = priority_lists(celery_app, names or QUEUES)
    except UnknownQueue as exc:
        raise _fail(str(exc)) from None
    except NotRedisBroker as exc:
        note = f"modomo queues does not apply: {exc}"
        if as_json:
            sys.stdout.write(json.dumps({"redis": False, "message": note}) + "\n")
        else:
            console.print(note, soft_wrap=True)
        return
    except (OperationalError, RedisError, OSError) as exc:
        raise _fail(f"cannot read the broker: {_one_line(exc)}", 1) from None
    if as_json:
        sys.stdout.write(json.dumps({"redis": True, **report.as_json()}, indent=2) + "\n")
        return
    console.print(priority_lists_table(report))


def _run_source_job(
    job_type: str, task_name: str, kwargs: dict[str, Any], wait: bool, timing: Timing
) -> None:
    """Create a job, send its start task (or schedule it), and follow it (the CLI side of
    scrape, import, classify and dedup).

    With the embedded default a worker runs in this process for as long as the job does.
    """
    import contextlib

    from modomo.celery_app import app as celery_app
    from modomo.console import console, failures_table, follow_job, job_table
    from modomo.embedded import embedded_worker
    from modomo.jobs import describe_job
    from modomo.jobs.scheduling import BrokerUnavailable, TaskMissing, submit_job

    settings = get_settings()
    _ensure_database(settings)
    if settings.embedded and not wait:
        raise _fail(
            "--no-wait needs a broker (CELERY_BROKER_URL / REDIS_URL): "
            "the embedded worker lives only as long as this command"
        )
    if settings.embedded and timing.run_at is not None:
        raise _fail(
            "--run-at/--countdown need a broker and `modomo beat` (the scheduler tick); "
            "the embedded worker lives only as long as this command"
        )
    worker = embedded_worker(celery_app) if settings.embedded else contextlib.nullcontext()
    with worker:
        try:
            submitted = submit_job(job_type, task_name, kwargs, timing=timing)
        except (TaskMissing, BrokerUnavailable) as exc:
            raise _fail(str(exc), 1) from None
        job_id = submitted.job_id
        console.print(f"job [bold]{job_id}[/] ({job_type}, {timing.priority} priority)")
        if not settings.embedded:
            from modomo.celery_app import task_queue

            wanted = [task_queue(task_name)]
            if kwargs.get("include_detection"):
                wanted.append("ai_processing")
            _warn_unconsumed(celery_app, wanted)
        if timing.run_at is not None:
            console.print(
                f"scheduled for {timing.run_at.isoformat()}; "
                f"follow with `modomo jobs show {job_id}`"
            )
            return
        if not wait:
            console.print(f"submitted; follow with `modomo jobs show {job_id}`")
            return
        job = follow_job(job_id)
    record = describe_job(job_id)
    console.print(job_table([record]))
    if record["failures"]:
        console.print(failures_table(record["failures"]))
    child = (record["params"] or {}).get("detection_job_id")
    if child:
        console.print(f"detection job for the imported scenes: [bold]{child}[/]")
    if job.status != "completed":
        raise typer.Exit(1)


@scrape_app.command("houzz")
def scrape_houzz(
    room_type: Annotated[
        list[str] | None,
        typer.Option(
            "--room-type",
            help="Room galleries to crawl (repeat; default all): living-room, bedroom, "
            "kitchen, bathroom, dining-room, home-office, kids-room, outdoor.",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            min=1, max=100_000, help="Photos to take in (stored or failed; known ones are skipped)."
        ),
    ] = 100,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = True,
    priority: PriorityOption = "normal",
    run_at: RunAtOption = None,
    countdown: CountdownOption = None,
    expires_at: ExpiresAtOption = None,
    expires: ExpiresOption = None,
) -> None:
    """Crawl Houzz room galleries (robots.txt obeyed, MODOMO_CRAWL_RATE_PER_HOST) into scenes."""
    from modomo.sources.houzz import ROOM_TYPES

    unknown = sorted(set(room_type or []) - set(ROOM_TYPES))
    if unknown:
        raise _fail(f"unknown room type(s) {unknown}; choose from {', '.join(ROOM_TYPES)}")
    _run_source_job(
        "scrape",
        "modomo.tasks.scraping_tasks.run_scraping_job",
        {"limit": limit, "room_types": list(room_type or ROOM_TYPES)},
        wait,
        _timing(priority, run_at, countdown, expires_at, expires),
    )


@import_app.command("hf")
def import_hf(
    dataset: Annotated[str, typer.Argument(help="A Hugging Face hub id or a local dataset path.")],
    split: Annotated[str, typer.Option(help="Dataset split.")] = "train",
    offset: Annotated[int, typer.Option(min=0, help="Rows to skip first.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=10_000_000, help="Rows to import.")] = 100,
    with_detection: Annotated[
        bool, typer.Option("--with-detection", help="Then detect objects in the imported scenes.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = True,
    priority: PriorityOption = "normal",
    run_at: RunAtOption = None,
    countdown: CountdownOption = None,
    expires_at: ExpiresAtOption = None,
    expires: ExpiresOption = None,
) -> None:
    """Import rows of a Hugging Face dataset (hub id owner/name, or a save_to_disk folder or
    Parquet/CSV/JSON files under MODOMO_IMPORT_ROOTS) as scenes."""
    from modomo.sources.huggingface import DatasetError, check_dataset

    local = Path(dataset).expanduser()
    if local.exists():  # workers may run elsewhere: send an absolute path
        dataset = str(local.resolve())
    try:  # the workers check it again, with their own MODOMO_IMPORT_ROOTS
        check_dataset(dataset, get_settings().import_roots)
    except DatasetError as exc:
        hint = (
            "; to import a local dataset, set MODOMO_IMPORT_ROOTS to a folder holding it "
            "(here and on the import workers)"
            if local.exists()
            else ""
        )
        raise _fail(f"{exc}{hint}") from None
    _run_source_job(
        "import",
        "modomo.tasks.import_tasks.import_huggingface_dataset",
        {
            "dataset": dataset,
            "split": split,
            "offset": offset,
            "limit": limit,
            "include_detection": with_detection,
        },
        wait,
        _timing(priority, run_at, countdown, expires_at, expires),
    )


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

    try:
        sid = uuid.UUID(scene_id)
    except ValueError:
        raise _fail(f"{scene_id!r} is not a scene id (a uuid)") from None
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

    try:
        sid = uuid.UUID(scene_id)
    except ValueError:
        raise _fail(f"{scene_id!r} is not a scene id (a uuid)") from None
    _ensure_database(get_settings())
    try:
        data = _scene_preview(sid, max_size or None)
    except (SceneNotFound, LookupError, FileNotFoundError, ImageError) as exc:
        raise _fail(str(exc), code=1) from None
    out.write_bytes(data)
    console.print(f"wrote {out}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what uses the key.")],
    role: Annotated[str, typer.Option(help="user or admin.")] = "user",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the key.")] = False,
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from modomo.api.keys import create_key
    from modomo.console import console

    _ensure_database(get_settings())
    try:
        record, key = create_key(name, role)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if quiet:
        sys.stdout.write(key + "\n")
        return
    console.print(f"key [bold]{record['name']}[/] ({record['role']}), id {record['id']}:")
    sys.stdout.write(key + "\n")
    console.print("[dim]store it now: it is not shown again[/]")


@keys_app.command("list")
def keys_list(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List API keys (names, prefixes, roles; never the keys)."""
    from modomo.api.keys import list_keys
    from modomo.console import console

    table = Table("id", "name", "prefix", "role", "created", "last used", "revoked")
    for key in list_keys(include_revoked=include_revoked):
        table.add_row(
            key["id"],
            key["name"],
            key["prefix"],
            key["role"],
            key["created_at"][:19],
            (key["last_used_at"] or "-")[:19],
            (key["revoked_at"] or "-")[:19],
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(id_or_prefix: Annotated[str, typer.Argument(help="Key id or prefix.")]) -> None:
    """Revoke an API key: it stops working at once."""
    from modomo.api.keys import KeyNotFound, revoke_key
    from modomo.console import console

    try:
        record = revoke_key(id_or_prefix)
    except KeyNotFound as exc:
        raise _fail(str(exc), 1) from None
    console.print(f"revoked key {record['name']} ({record['prefix']}…)")


@schedules_app.command("add")
def schedules_add(
    name: Annotated[str, typer.Argument(help="A unique name.")],
    cron: Annotated[str, typer.Option(help="Five cron fields, e.g. '0 2 * * *' (02:00 daily).")],
    job_type: Annotated[
        str,
        typer.Option("--job", help="scrape, import, colors, detection, classify, dedup or export."),
    ],
    params: Annotated[
        str, typer.Option(help="The job's request fields as JSON, as POSTed for that job.")
    ] = "{}",
    timezone: Annotated[str, typer.Option(help="IANA time zone the cron is read in.")] = "UTC",
    priority: PriorityOption = "normal",
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
) -> None:
    """Add a recurring job: each time CRON matches (in TIMEZONE) `modomo beat` creates one."""
    from pydantic import ValidationError

    from modomo.api.schemas import ScheduleRequest
    from modomo.console import console
    from modomo.jobs.schedules import ScheduleError, add_schedule

    _ensure_database(get_settings())
    try:
        request = ScheduleRequest.model_validate(
            {
                "name": name,
                "cron": cron,
                "timezone": timezone,
                "job_type": job_type,
                "params": json.loads(params),
                "priority": priority.lower(),
                "enabled": not disabled,
            }
        )
        record = add_schedule(
            request.name,
            request.cron,
            request.job_type,
            request.task_kwargs(),
            timezone=request.timezone,
            priority=request.priority,
            enabled=request.enabled,
        )
    except json.JSONDecodeError as exc:
        raise _fail(f"--params: not JSON: {exc}") from None
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise _fail(where) from None
    except ScheduleError as exc:
        raise _fail(str(exc)) from None
    console.print(f"schedule {record['name']}: next run {record['next_run_at'] or '- (disabled)'}")


@schedules_app.command("list")
def schedules_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """List the schedules with their last and next run (UTC)."""
    from modomo.console import console
    from modomo.jobs.schedules import list_schedules

    _ensure_database(get_settings())
    records = list_schedules()
    if as_json:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
        return
    table = Table("name", "cron", "zone", "job", "priority", "enabled", "last run", "next run")
    for r in records:
        table.add_row(
            r["name"],
            r["cron"],
            r["timezone"],
            r["job_type"],
            r["priority"],
            "yes" if r["enabled"] else "no",
            r["last_run_at"] or "-",
            r["next_run_at"] or "-",
        )
    console.print(table)


def _schedule_enabled(key: str, enabled: bool) -> None:
    from modomo.console import console
    from modomo.jobs.schedules import ScheduleNotFound, set_enabled

    _ensure_database(get_settings())
    try:
        record = set_enabled(key, enabled)
    except ScheduleNotFound as exc:
        raise _fail(str(exc), 1) from None
    state = "enabled" if enabled else "disabled"
    console.print(f"schedule {record['name']}: {state}, next run {record['next_run_at'] or '-'}")


@schedules_app.command("enable")
def schedules_enable(key: Annotated[str, typer.Argument(help="Schedule name or id.")]) -> None:
    """Enable a schedule (its next run is computed from now)."""
    _schedule_enabled(key, True)


@schedules_app.command("disable")
def schedules_disable(key: Annotated[str, typer.Argument(help="Schedule name or id.")]) -> None:
    """Disable a schedule: the tick no longer fires it."""
    _schedule_enabled(key, False)


@schedules_app.command("remove")
def schedules_remove(key: Annotated[str, typer.Argument(help="Schedule name or id.")]) -> None:
    """Delete a schedule (the jobs it created stay)."""
    from modomo.console import console
    from modomo.jobs.schedules import ScheduleNotFound, remove_schedule

    _ensure_database(get_settings())
    try:
        remove_schedule(key)
    except ScheduleNotFound as exc:
        raise _fail(str(exc), 1) from None
    console.print(f"schedule {key}: removed")


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """List jobs, newest first (whole ids: every command that takes one also takes a unique
    prefix)."""
    from modomo.console import console, job_table
    from modomo.jobs import list_jobs

    jobs = list_jobs(status=status, job_type=job_type, limit=limit)
    if as_json:
        sys.stdout.write(json.dumps(jobs, indent=2) + "\n")
        return
    console.print(job_table(jobs))


def _unique_id(text: str, column: Any, what: str) -> uuid.UUID:
    """The id ``text`` names: a whole uuid, or a prefix of exactly one (at least 4 hex
    digits, dashes as printed or not).

    Raises:
        typer.Exit: no such id, or a prefix several ids share (one line).
    """
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    prefix = text.lower().replace("-", "")
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise _fail(f"{what} {text!r}: give its id or at least 4 hex digits of it", 1)
    from sqlalchemy import String, cast, func

    from modomo.db.session import session_scope

    # the id's hex digits whatever the backend stores (PostgreSQL uuid text has dashes,
    # SQLite 32 hex characters): one indexed-column query, at most two rows back
    digits = func.replace(cast(column, String), "-", "")
    with session_scope() as session:
        matches = list(session.scalars(select(column).where(digits.like(f"{prefix}%")).limit(2)))
    if not matches:
        raise _fail(f"no {what} id starts with {text!r}", 1)
    if len(matches) > 1:
        raise _fail(f"several {what}s start with {text!r}; give more of the id", 1)
    return uuid.UUID(str(matches[0]))


@jobs_app.command("show")
def jobs_show(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Show a job's record and its failures (JOB_ID: the id or a unique prefix of it)."""
    from modomo.console import console, failures_table, job_table
    from modomo.db.models import Job
    from modomo.jobs import JobNotFound, describe_job

    try:
        job = describe_job(_unique_id(job_id, Job.id, "job"))
    except JobNotFound as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        sys.stdout.write(json.dumps(job, indent=2) + "\n")
        return
    console.print(job_table([job]))
    if job["failures"]:
        console.print(failures_table(job["failures"]))


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


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a job: queued batches are revoked, running ones stop at the next scene."""
    from modomo.console import console
    from modomo.db.models import Job
    from modomo.jobs import JobNotFound, cancel_job

    try:
        status = cancel_job(_unique_id(job_id, Job.id, "job"))
    except JobNotFound as exc:
        raise _fail(str(exc), 1) from None
    console.print(f"job {job_id}: {status}")


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


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the schema migrations."""
    from modomo.console import console
    from modomo.db.migrate import current_revision, upgrade

    upgrade(revision=revision)
    console.print(f"{_redacted(get_settings().database_url)} at revision {current_revision()}")


@db_app.command("sql")
def db_sql(
    revision: Annotated[
        str, typer.Argument(help="A revision or a FROM:TO range (one supabase migration).")
    ] = "head",
) -> None:
    """Print migrations as PostgreSQL DDL (what supabase/migrations/ holds)."""
    from modomo.db.migrate import offline_sql

    sys.stdout.write(offline_sql(revision=revision))


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision."""
    from modomo.console import console
    from modomo.db.migrate import current_revision

    console.print(current_revision() or "no schema (run `modomo db upgrade`)")


def _create_embedded_database(settings: Settings) -> None:
    """Create and migrate the embedded SQLite database the first time a command runs on a
    fresh data directory (``modomo jobs list`` then shows an empty list, not a missing
    table). A cheap look with ``sqlite3`` first: Alembic takes seconds to start."""
    import sqlite3
    from contextlib import closing

    url = make_url(settings.database_url)
    words = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    if (
        url.get_backend_name() != "sqlite"
        or not url.database
        or url.database == ":memory:"
        or not words
        or words[0] in ("db", "models")
        or {"--help", "-h"} & set(sys.argv[1:])
    ):
        return
    path = Path(url.database)
    if path.exists():
        try:
            with closing(sqlite3.connect(path)) as connection:
                found = connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
                ).fetchone()
        except sqlite3.Error:  # unreadable (a full disk…): the command itself says so, in one line
            return
        if found:
            return
    from modomo.db.migrate import upgrade

    path.parent.mkdir(parents=True, exist_ok=True)
    upgrade()


def main() -> None:
    """Console-script entry point: settings errors, a database that cannot be used and a
    filesystem that fails (a full disk) end with one line and exit status 2, not a
    traceback."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    try:
        settings = get_settings()
    except ConfigError as exc:
        sys.stderr.write(f"modomo: {exc}\n")
        raise SystemExit(2) from None
    for note in settings.warnings():
        sys.stderr.write(f"modomo: warning: {note}\n")
    try:
        _create_embedded_database(settings)
        app()
    except (DBAPIError, SQLAlchemyError) as exc:
        url = make_url(settings.database_url)
        where = url.database if url.get_backend_name() == "sqlite" else _redacted(str(url))
        sys.stderr.write(f"modomo: cannot use the database {where}: {_one_line(exc)}\n")
        raise SystemExit(2) from None
    except OSError as exc:
        target = f": {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"modomo: {exc.strerror or _one_line(exc)}{target}\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
