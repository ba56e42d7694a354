"""Monitoring under ``/jobs/celery``: workers, queues, active tasks, the dashboard's data, and
the admin-only purge of one queue.

Worker and task state comes from the API's event monitor (:mod:`modomo.api.monitor`), so
these answers never wait for workers; queue depths and job figures are read from the broker
and the database, the dashboard's share of them at most once a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from modomo.api.auth import AdminUser, CurrentUser
from modomo.api.keys import Principal
from modomo.api.monitor import CeleryMonitor
from modomo.api.ownership import owner_filter
from modomo.celery_app import app as celery_app
from modomo.jobs import stats
from modomo.queues import UnknownQueue, purge_queue, queue_depths

router = APIRouter(prefix="/jobs/celery", tags=["monitoring"])

DASHBOARD_CACHE_S = 1.0
"""The dashboard's database and broker figures are shared by the requests of one second."""


def _monitor(request: Request) -> CeleryMonitor:
    monitor: CeleryMonitor = request.app.state.monitor
    return monitor


def _broker_kind() -> str:
    return "sqlite" if celery_app.conf.broker_url.startswith("sqla+") else "redis"


def _queues() -> list[dict[str, Any]]:
    try:
        depths = queue_depths(celery_app)
    except Exception as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"broker unreachable: {exc}"
        ) from None
    return [{"name": name, "messages": count} for name, count in depths.items()]


def _queues_or_error() -> tuple[list[dict[str, Any]], str | None]:
    try:
        return _queues(), None
    except HTTPException as exc:
        return [], str(exc.detail)


def _tasks_for(monitor: CeleryMonitor, principal: Principal) -> list[dict[str, Any]]:
    """The tasks running now; a user's view leaves out their arguments (other users' job
    ids), an admin's keeps them."""
    tasks = monitor.active_tasks()
    if principal.is_admin:
        return tasks
    return [{k: v for k, v in t.items() if k not in ("args", "kwargs")} for t in tasks]


@router.get("/active-tasks")
def active_tasks(request: Request, principal: CurrentUser) -> dict[str, Any]:
    """Tasks running now, on which worker, for how long (seconds); their arguments for an
    admin only."""
    monitor = _monitor(request)
    return {"events": monitor.events_status(), "tasks": _tasks_for(monitor, principal)}


@router.get("/workers")
def workers(request: Request, _: CurrentUser) -> dict[str, Any]:
    """Every worker seen: queues, concurrency, pool, processed count, heartbeat age."""
    monitor = _monitor(request)
    return {"events": monitor.events_status(), "workers": monitor.workers()}


@router.get("/queues")
def queues(_: CurrentUser) -> dict[str, Any]:
    """Messages waiting in every queue (all priority levels counted)."""
    return {"broker": _broker_kind(), "queues": _queues()}


class _Cache:
    """Values computed at most once a second each, by key: the catalogue's figures (key
    None) and each owner set's job figures."""

    SIZE = 256

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[Any, tuple[float, dict[str, Any]]] = {}

    def get(self, key: Any, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self.lock:
            hit = self.values.get(key)
            if hit is None or time.monotonic() - hit[0] > DASHBOARD_CACHE_S:
                if len(self.values) >= self.SIZE:
                    self.values.clear()
                hit = self.values[key] = (time.monotonic(), compute())
            return hit[1]


_cache = _Cache()


def _catalogue() -> dict[str, Any]:
    recent = stats.recent_scenes()
    for scene in recent:
        scene["preview_url"] = f"/scenes/{scene['id']}/preview.png?max_size=256"
    queue_list, broker_error = _queues_or_error()
    return {
        "queues": queue_list,
        "broker_error": broker_error,
        "throughput": {"minutes": stats.throughput()},
        "recent_scenes": recent,
    }


def _jobs(owners: tuple[str, ...] | None) -> dict[str, Any]:
    return {
        "jobs": {
            "counts": stats.job_status_counts(owners),
            "recent": stats.recent_jobs(owners=owners),
        },
        "failures": stats.recent_failures(owners=owners),
    }


def _slow_part(principal: Principal) -> dict[str, Any]:
    owners = owner_filter(principal)
    return {
        **_cache.get(None, _catalogue),
        **_cache.get(("jobs", owners), lambda: _jobs(owners)),
    }


@router.get("/dashboard")
def dashboard(request: Request, principal: CurrentUser) -> dict[str, Any]:
    """Everything the dashboard page shows: workers, queues, active tasks, job counts by
    status, recent jobs with progress, recent failures with reasons, scenes per minute over
    the last ten minutes, recent scenes with detected objects. A user's job counts, jobs and
    failures are its own jobs' (an admin's, every job's), and its active tasks come without
    their arguments."""
    from datetime import UTC, datetime

    monitor = _monitor(request)
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "broker": _broker_kind(),
        "events": monitor.events_status(),
        "workers": monitor.workers(),
        "active_tasks": _tasks_for(monitor, principal),
        **_slow_part(principal),
    }


@router.post("/purge-queue/{queue_name}")
def purge(queue_name: str, _: AdminUser) -> dict[str, Any]:
    """Remove every message waiting in one queue (and its priority levels). The scenes of
    each removed batch are failed in their job with the reason, so no job waits forever."""
    try:
        report = purge_queue(celery_app, queue_name)
    except UnknownQueue as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    return {
        "queue": report.queue,
        "purged": report.messages,
        "tasks": report.tasks,
        "jobs": report.jobs,
    }
