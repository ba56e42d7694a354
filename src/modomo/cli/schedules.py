"""``modomo schedules``: recurring jobs (cron), fired by ``modomo beat``."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from modomo.cli.app import PriorityOption, _ensure_database, _fail, schedules_app
from modomo.config import get_settings


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
