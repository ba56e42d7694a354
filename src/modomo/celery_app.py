"""The Celery application: queues, routes, reliability settings and worker signals.

Start a worker with ``modomo worker`` or, as the original scraper did, from the repository
root with ``celery -A celery_app worker --loglevel=info`` (a worker with no ``-Q`` consumes
every queue below).

Reliability choices (Celery's "Optimizing" and "Tasks" guides):

- JSON only, on the wire and in results: no pickle.
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task whose worker dies is redelivered;
  every stage is idempotent per scene and the job ledger counts each scene once, so a
  redelivery never duplicates work or counts.
- ``worker_prefetch_multiplier = 1``: long batches are not hoarded by one worker.
- Soft and hard time limits; children recycled after N tasks or M KiB of resident memory.
- Job priorities (urgent, high, normal, low) as message priorities 0/3/6/9, each its own
  Redis list (``priority_steps``); a worker takes the most urgent waiting message first.
- On Redis, ``visibility_timeout`` longer than the hard time limit (broker, result backend and
  app settings), or Redis would hand a still-running task to a second worker.
"""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.signals import before_task_publish, worker_init
from celery.worker.consumer import Consumer
from kombu import Queue

from modomo.config import Settings, get_settings
from modomo.db.models import Priority

__all__ = [
    "QUEUES",
    "TASK_MODULES",
    "NoGossipConsumer",
    "app",
    "beat_schedule",
    "make_celery",
    "task_queue",
]

QUEUES: tuple[str, ...] = (
    "celery",
    "ai_processing",
    "detection",
    "scraping",
    "import",
    "color_processing",
    "classification",
    "maintenance",
)
"""Every queue Modomo uses; ``celery`` is the default."""

TASK_ROUTES: dict[str, dict[str, str]] = {
    "modomo.tasks.color_tasks.*": {"queue": "color_processing"},
    "modomo.tasks.detection_tasks.run_detection_pipeline": {"queue": "detection"},
    "modomo.tasks.detection_tasks.*": {"queue": "ai_processing"},
    "modomo.tasks.classification_tasks.*": {"queue": "classification"},
    "modomo.tasks.scraping_tasks.*": {"queue": "scraping"},
    "modomo.tasks.import_tasks.*": {"queue": "import"},
    "modomo.tasks.maintenance_tasks.*": {"queue": "maintenance"},
    "modomo.tasks.export_tasks.*": {"queue": "celery"},
}
"""Routes by task module: each domain's tasks go to that domain's queue."""

TASK_MODULES: tuple[str, ...] = (
    "modomo.tasks.color_tasks",
    "modomo.tasks.detection_tasks",
    "modomo.tasks.classification_tasks",
    "modomo.tasks.scraping_tasks",
    "modomo.tasks.import_tasks",
    "modomo.tasks.export_tasks",
    "modomo.tasks.maintenance_tasks",
)
"""Modules whose tasks every worker registers."""


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """What ``modomo beat`` runs: the stale-job reaper, the health check, the daily artifact
    cleanup, and Celery's own ``celery.backend_cleanup`` when results live in a database
    (Redis expires them by itself)."""
    schedule: dict[str, dict[str, Any]] = {
        "scheduler-tick": {
            "task": "modomo.tasks.maintenance_tasks.scheduler_tick",
            "schedule": float(settings.scheduler_tick),
            # a tick that waited longer than the interval is superseded by the next one
            "options": {"expires": float(settings.scheduler_tick), "priority": 0},
        },
        "reap-stale-jobs": {
            "task": "modomo.tasks.maintenance_tasks.reap_stale_jobs",
            "schedule": float(settings.reaper_interval),
        },
        "health-check": {
            "task": "modomo.tasks.maintenance_tasks.health_check",
            "schedule": float(settings.health_check_interval),
            "options": {"expires": float(settings.health_check_interval)},
        },
        "cleanup-artifacts": {
            "task": "modomo.tasks.maintenance_tasks.cleanup_artifacts",
            "schedule": crontab(minute=0, hour=settings.cleanup_hour),
        },
    }
    if settings.result_backend.startswith("db+"):
        schedule["backend-cleanup"] = {
            "task": "celery.backend_cleanup",
            "schedule": crontab(minute=30, hour=settings.cleanup_hour),
            "options": {"queue": "maintenance"},
        }
    return schedule


def task_queue(name: str) -> str:
    """The queue a task named ``name`` is sent to: the first of :data:`TASK_ROUTES` it
    matches, else ``celery``."""
    from celery.app.routes import MapRoute

    route = MapRoute(TASK_ROUTES)(name) or {}
    return str(route.get("queue") or "celery")


class QueueRateLimits:
    """Celery task annotation giving every Modomo task routed to a queue that queue's
    ``rate_limit`` (``MODOMO_QUEUE_RATE_LIMITS``; Celery applies it per worker).

    A task's queue is its own ``queue`` option, else the first of :data:`TASK_ROUTES` its
    name matches (glob patterns by module), else the default ``celery``. Celery asks
    :meth:`annotate` once per task when the app binds it (``task_annotations``).

    Raises:
        ConfigError: a queue that is not one of :data:`QUEUES`.
    """

    def __init__(self, limits: dict[str, str]) -> None:
        from modomo.config import ConfigError

        unknown = sorted(set(limits) - set(QUEUES))
        if unknown:
            raise ConfigError(
                f"invalid settings: MODOMO_QUEUE_RATE_LIMITS names unknown queue(s) "
                f"{', '.join(unknown)}; the queues are {', '.join(QUEUES)}"
            )
        self.limits = dict(limits)

    def queue_of(self, name: str, own_queue: str | None = None) -> str:
        """The queue a task named ``name`` is sent to."""
        return own_queue or task_queue(name)

    def annotate(self, task: Any) -> dict[str, str] | None:
        if not str(task.name).startswith("modomo."):
            return None  # Celery's own tasks keep their settings
        rate = self.limits.get(self.queue_of(task.name, getattr(task, "queue", None)))
        return {"rate_limit": rate} if rate else None


class NoGossipConsumer(Consumer):
    """The worker's consumer without Celery's Gossip bootstep: ``--without-gossip`` as a
    setting (``worker_consumer``), so it also holds for ``celery -A celery_app worker`` typed
    as the original guide has it.

    Modomo uses no gossip (no elections, no worker-to-worker clock sync): revokes, inspect
    and Flower go through remote control and events, and heartbeats come from the Heart step.
    And on Celery 5.7.0 Gossip logs ``Error on restarting Gossip: AttributeError("'NoneType'
    object has no attribute 'connection_errors'")`` after a broker outage: the consumer sets
    ``self.connection = None`` before restarting its steps (celery PR #10242), and Gossip's
    ``_close`` calls ``ignore_errors(c.connection, ...)``, which reads
    ``None.connection_errors`` when closing its channel on the dead connection raises.
    """

    gossip = None  # the ``election`` control command reads ``consumer.gossip``

    class Blueprint(Consumer.Blueprint):
        default_steps = [
            step
            for step in Consumer.Blueprint.default_steps
            if step != "celery.worker.consumer.gossip:Gossip"
        ]


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis+socket://", "sentinel://"))


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from Modomo's :class:`~modomo.config.Settings`."""
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": "celery",
        "task_routes": TASK_ROUTES,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        # task events feed the API's monitor and Flower (worker heartbeats are on anyway)
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_prefetch_multiplier": 1,
        "worker_consumer": "modomo.celery_app:NoGossipConsumer",
        # A message without a priority would be served first on Redis (0 is the highest
        # there): everything not sent for a job of another priority is "normal".
        "task_default_priority": Priority.MESSAGE[Priority.NORMAL],
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "worker_max_tasks_per_child": settings.worker_max_tasks_per_child,
        "worker_max_memory_per_child": settings.worker_max_memory_per_child_kb,
        # a child that loads models before its first task needs longer than the default 4 s
        "worker_proc_alive_timeout": settings.worker_proc_alive_timeout,
        "result_expires": settings.result_expires,
        "result_extended": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": beat_schedule(settings),
        # `celery -A celery_app beat` would write celerybeat-schedule.* into the working
        # directory (the repository root): keep it with the rest of Modomo's data
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
        # per-queue task rate limits (MODOMO_QUEUE_RATE_LIMITS), per worker
        "task_annotations": (
            [QueueRateLimits(settings.queue_rate_limits)] if settings.queue_rate_limits else None
        ),
    }
    # TLS to Redis (rediss://, e.g. a managed Redis): verify the server's certificate unless
    # the URL says otherwise (?ssl_cert_reqs=...), as Celery insists on a choice.
    if settings.broker_url.startswith("rediss://") and "ssl_cert_reqs" not in settings.broker_url:
        config["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if (
        settings.result_backend.startswith("rediss://")
        and "ssl_cert_reqs" not in settings.result_backend
    ):
        config["redis_backend_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if _is_redis(settings.broker_url):
        config["broker_transport_options"] = {
            "visibility_timeout": settings.redis_visibility_timeout,
            "queue_order_strategy": "priority",
            # one Redis list per job priority (urgent 0, high 3, normal 6, low 9); workers,
            # queue depths and Flower all read the same steps
            "priority_steps": list(Priority.STEPS),
            # A message delivered at the instant the connection broke (Redis restarted) stays
            # in the unacked set until it is older than the visibility timeout; kombu sweeps
            # for those every interval x throttle seconds (10 x 10 by default): sweep every
            # 10 s so it comes back within the visibility timeout + 10 s.
            "unacked_restore_throttle": 1,
        }
    if _is_redis(settings.result_backend):
        config["result_backend_transport_options"] = {
            "visibility_timeout": settings.redis_visibility_timeout
        }
        config["visibility_timeout"] = settings.redis_visibility_timeout
    return config


def make_celery(settings: Settings | None = None, *, set_as_current: bool = True) -> Celery:
    """Build the Celery app for ``settings`` (default: the process's settings).

    Args:
        settings: the settings to configure from.
        set_as_current: make it Celery's current app (False for a second, side app).
    """
    settings = settings or get_settings()
    try:  # the embedded broker and beat's schedule file live there
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        if settings.embedded:
            raise
    celery = Celery("modomo", include=list(TASK_MODULES), set_as_current=set_as_current)
    celery.conf.update(celery_config(settings))
    return celery


app = make_celery()


# the worker child's life (imports, retirement, the parent watchdog): its own signals
from modomo.tasks import child as _child  # noqa: E402, F401


@worker_init.connect
def _say_what_settings_do_not_do(**_: Any) -> None:
    # also for `celery -A celery_app worker`, which does not go through the modomo CLI
    import logging

    for note in get_settings().warnings():
        logging.getLogger("modomo").warning(note)


@before_task_publish.connect
def _limits_are_the_workers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    # Celery copies the *sender's* task_time_limit/task_soft_time_limit into every message's
    # "timelimit" header, and a worker obeys the header over its own configuration. The API or
    # CLI would then impose its limits on workers configured differently (and bypass the
    # worker's check that the visibility timeout outlasts its hard limit). Sent as None, the
    # worker's own MODOMO_TASK_*TIME_LIMIT govern every task it runs.
    if headers is not None and "timelimit" in headers:
        headers["timelimit"] = (None, None)
