"""The root ``modomo`` Typer app and its command groups, and what the commands share: the
job options (priority, run time, expiry) and the one-line failure.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.engine import make_url

from modomo.config import Settings

if TYPE_CHECKING:
    from modomo.jobs.scheduling import Timing


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


def _scene_uuid(text: str) -> uuid.UUID:
    """A scene id given on the command line; a one-line error when it is not a uuid."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise _fail(f"{text!r} is not a scene id (a uuid)") from None


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


def _one_line(exc: BaseException) -> str:
    """``exc`` as one line of text (SQLAlchemy's own message, not its SQL and links)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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
