"""The ``modomo`` command line (Typer + Rich).

``modomo process SOURCE...`` is the main job: ingest images, compute their palettes through
Celery, follow the job's progress, print the results. With nothing configured it runs a
worker in-process; with a broker configured it submits and follows while workers elsewhere
do the work.
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.engine import make_url

from modomo.config import ConfigError, Settings, get_settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="modomo",
    help="Turn interior photographs into ML training datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="List, inspect and cancel jobs.", no_args_is_help=True)
db_app = typer.Typer(help="The job and dataset database.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(db_app, name="db")

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
) -> None:
    """Ingest images and compute their colour palettes as one job."""
    from modomo.celery_app import app as celery_app
    from modomo.console import console, progress_bar
    from modomo.embedded import embedded_worker
    from modomo.jobs import create_job, dispatch_batches, finish_if_done
    from modomo.sources import expand_sources, ingest
    from modomo.sources.inputs import SourceError
    from modomo.tasks.color_tasks import process_colors_batch

    settings = get_settings()
    try:
        inputs = expand_sources(sources)
    except SourceError as exc:
        raise _fail(str(exc)) from None
    _ensure_database(settings)
    if settings.embedded and not wait:
        raise _fail(
            "--no-wait needs a broker (CELERY_BROKER_URL / REDIS_URL): "
            "the embedded worker lives only as long as this command"
        )
    job_id = create_job("colors", {"sources": sources, "inputs": len(inputs), "stages": ["colors"]})
    console.print(f"job [bold]{job_id}[/]: {len(inputs)} inputs")
    worker = embedded_worker(celery_app) if settings.embedded else contextlib.nullcontext()
    with worker:
        with progress_bar() as progress:
            bar = progress.add_task("ingest", total=len(inputs), note="")
            report = ingest(job_id, inputs, lambda done, _: progress.update(bar, completed=done))
        dispatch_batches(
            job_id, process_colors_batch, report.scene_ids, batch_size or settings.batch_size
        )
        if not report.scene_ids:
            finish_if_done(job_id)
        note = f"{len(report.scene_ids)} scenes"
        if report.duplicates:
            note += f" ({report.duplicates} already known or repeated)"
        console.print(f"ingested {note}, {len(report.failed)} failed at ingest")
        if not wait:
            console.print(f"submitted; follow with `modomo jobs show {job_id}`")
            return
        from modomo.console import follow_job

        job = follow_job(job_id)
    _print_summary(job_id, report.scene_ids[:show], settings)
    if job.status != "completed":
        raise typer.Exit(1)


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
    loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "INFO",
    hostname: Annotated[str | None, typer.Option("-n", "--hostname")] = None,
) -> None:
    """Start a Celery worker (general queues by default)."""
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


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """List jobs, newest first."""
    from modomo.console import console, job_table
    from modomo.jobs import list_jobs

    console.print(job_table(list_jobs(status=status, job_type=job_type, limit=limit)))


@jobs_app.command("show")
def jobs_show(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Show a job's record and its failures."""
    from modomo.console import console, failures_table, job_table
    from modomo.jobs import JobNotFound, describe_job

    try:
        job = describe_job(job_id)
    except JobNotFound as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        sys.stdout.write(json.dumps(job, indent=2) + "\n")
        return
    console.print(job_table([job]))
    if job["failures"]:
        console.print(failures_table(job["failures"]))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a job: queued batches are revoked, running ones stop at the next scene."""
    from modomo.console import console
    from modomo.jobs import JobNotFound, cancel_job

    try:
        status = cancel_job(job_id)
    except JobNotFound as exc:
        raise _fail(str(exc), 1) from None
    console.print(f"job {job_id}: {status}")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the schema migrations."""
    from modomo.console import console
    from modomo.db.migrate import current_revision, upgrade

    upgrade(revision=revision)
    console.print(f"{_redacted(get_settings().database_url)} at revision {current_revision()}")


@db_app.command("sql")
def db_sql() -> None:
    """Print the schema as PostgreSQL DDL (what supabase/migrations/ holds)."""
    from modomo.db.migrate import offline_sql

    sys.stdout.write(offline_sql())


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision."""
    from modomo.console import console
    from modomo.db.migrate import current_revision

    console.print(current_revision() or "no schema (run `modomo db upgrade`)")


def main() -> None:
    """Console-script entry point: settings errors end with a message, not a traceback."""
    try:
        get_settings()
    except ConfigError as exc:
        sys.stderr.write(f"modomo: {exc}\n")
        raise SystemExit(2) from None
    app()


if __name__ == "__main__":
    main()
