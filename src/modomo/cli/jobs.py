"""``modomo jobs``: list, inspect and cancel jobs."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from modomo.cli.app import _fail, _unique_id, jobs_app


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
