"""The long-running processes: ``modomo worker`` (general or ``--ai``), ``api``, ``flower``
and ``beat``, and ``modomo queues``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from modomo.cli.app import AI_QUEUES, GENERAL_QUEUES, _ensure_database, _fail, _one_line, app
from modomo.config import get_settings


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
