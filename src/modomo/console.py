"""Rich rendering for the CLI: the live job progress bar, palettes and job summaries."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from rich.text import Text
from sqlalchemy.exc import OperationalError

from modomo.db.models import Job, JobStatus
from modomo.db.session import session_scope
from modomo.jobs.accounting import stage_counts

if TYPE_CHECKING:
    from modomo.queues import PriorityLists

__all__ = [
    "follow_job",
    "palette_text",
    "job_table",
    "failures_table",
    "console",
    "stage_note",
    "priority_lists_table",
]

console = Console(highlight=False)

STATUS_STYLE = {
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "yellow",
    JobStatus.RUNNING: "cyan",
    JobStatus.PENDING: "dim",
}


def progress_bar() -> Progress:
    """The bar used for ingest and for following a job."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
    )


def stage_note(stages: dict[str, dict[str, int]], total: int | None = None) -> str:
    """A job's per-stage counts in one line of Rich markup, in the order given, e.g.
    ``detect 12/40 · segment 11 · depth 11 [red](1 failed)[/]``.

    Args:
        stages: ``{stage: {"processed": n, "failed": m}}`` (see
            :func:`modomo.jobs.accounting.stage_counts`).
        total: the job's total scenes, shown after the first stage's count when given.
    """
    parts = []
    for index, (stage, counts) in enumerate(stages.items()):
        text = f"{stage} {counts.get('processed', 0)}"
        if index == 0 and total:
            text += f"/{total}"
        if counts.get("failed"):
            text += f" [red]({counts['failed']} failed)[/]"
        parts.append(text)
    return " · ".join(parts)


DB_RETRY_MAX_S = 2.0
"""Longest wait between two reads of the job while the database is unreachable."""


def follow_job(job_id: uuid.UUID, poll_s: float = 0.25) -> Job:
    """Show a live progress bar fed from the job record until the job is final.

    The bar's note carries the job's status and its per-stage counts (:func:`stage_note`),
    e.g. ``running  detect 12/40 · segment 11 · depth 11 (1 failed)``.

    While the database is unreachable (a restart, a network cut) the bar says so and the read
    is retried with backoff (up to :data:`DB_RETRY_MAX_S` apart) until it answers again: the
    workers retry their own writes, so the job goes on and the bar picks it up.

    Returns:
        The job row in its final state.
    """
    with progress_bar() as progress:
        bar = progress.add_task("job", total=None, note="")
        backoff = poll_s
        while True:
            try:
                with session_scope() as session:
                    job = session.get(Job, job_id)
                    stages = stage_counts(session, job_id) if job is not None else {}
            except OperationalError:
                progress.update(bar, note="[yellow]database unreachable, retrying[/]")
                time.sleep(backoff)
                backoff = min(backoff * 2, DB_RETRY_MAX_S)
                continue
            backoff = poll_s
            assert job is not None, f"job {job_id} vanished"
            note = f"[{STATUS_STYLE.get(job.status, '')}]{job.status}[/]"
            if stages:
                # each failure shows at its stage; together they are the job's failed count
                note += f"  {stage_note(stages, job.total)}"
            elif job.failed:
                note += f"  [red]{job.failed} failed[/]"
            progress.update(
                bar,
                total=job.total or None,
                completed=job.processed + job.failed,
                description=job.message or job.type,
                note=note,
            )
            if job.status in JobStatus.FINAL:
                return job
            time.sleep(poll_s)


def palette_text(colors: dict[str, Any] | None) -> Text:
    """A palette as colour swatches with names and shares."""
    text = Text()
    if not colors:
        return text
    for color in colors.get("palette", []):
        text.append("  ", style=f"on {color['hex']}")
        text.append(f" {color['name']} {color['share'] * 100:.0f}%  ")
    return text


def job_table(jobs: list[dict[str, Any]]) -> Table:
    """Jobs as a table (records from :func:`modomo.jobs.job_record`)."""
    table = Table(
        Column("id", no_wrap=True, min_width=36),  # whole: it is what the other commands take
        "type",
        "status",
        "done",
        "failed",
        "total",
        "created",
        "message",
    )
    for job in jobs:
        table.add_row(
            job["id"],
            job["type"],
            Text(job["status"], style=STATUS_STYLE.get(job["status"], "")),
            str(job["processed"]),
            str(job["failed"]),
            str(job["total"]),
            (job["created_at"] or "")[:19],
            job["message"] or "",
        )
    return table


def failures_table(failures: list[dict[str, Any]]) -> Table:
    """Scene failures of a job, with their reasons: one row per distinct (stage, reason),
    with how many scenes share it (a missing weight fails every scene the same way)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for failure in failures:
        key = (str(failure["stage"]), str(failure["error"]))
        groups.setdefault(key, []).append(str(failure.get("input") or failure["source_key"]))
    table = Table("input", "scenes", "stage", "reason", title="failed scenes", title_justify="left")
    for (stage, reason), inputs in groups.items():
        shown = inputs[0] if len(inputs) == 1 else f"{inputs[0]} and {len(inputs) - 1} more"
        table.add_row(shown, str(len(inputs)), stage, reason)
    return table


def priority_lists_table(report: PriorityLists) -> Table:
    """Each queue's Redis priority sub-lists with their waiting messages, and a total per
    queue; the list names as typed after ``redis-cli -n DB llen``."""
    table = Table(
        "queue",
        "priority",
        "redis list",
        Column("waiting", justify="right"),
        title=f"waiting messages per priority list (redis-cli -n {report.db} llen LIST)",
        title_justify="left",
    )
    for queue in report.queues:
        for item in queue.lists:
            level = f"{item.priority} {item.level}".rstrip()
            waiting = Text(str(item.waiting), style="" if item.waiting else "dim")
            table.add_row(queue.queue, level, Text(item.redis_cli), waiting)
        table.add_row(
            Text(queue.queue, style="bold"),
            "total",
            "",
            Text(str(queue.total), style="bold"),
            end_section=True,
        )
    return table
