"""Source jobs: ``modomo scrape houzz`` and ``modomo import hf``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modomo.cli.app import (
    CountdownOption,
    ExpiresAtOption,
    ExpiresOption,
    PriorityOption,
    RunAtOption,
    _ensure_database,
    _fail,
    _timing,
    import_app,
    scrape_app,
)
from modomo.cli.process import _warn_unconsumed
from modomo.config import get_settings

if TYPE_CHECKING:
    from modomo.jobs.scheduling import Timing


def _run_source_job(
    job_type: str, task_name: str, kwargs: dict[str, Any], wait: bool, timing: Timing
) -> None:
    """Create a job, send its start task (or schedule it), and follow it (the CLI side of
    scrape, import, classify and dedup).

    With the embedded default a worker runs in this process for as long as the job does.
    """

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
