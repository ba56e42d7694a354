"""Monitoring under ``/jobs/celery``: workers, queues, active tasks, the dashboard's data, and
the admin-only purge of one queue.

Worker and task state comes from the API's event monitor (:mod:`modomo.api.monitor`), so
these answers never wait for workers; queue depths and job figures are read from the broker
and the database, the dashboard's share of them at most once a second.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from modomo.api.auth import AdminUser, CurrentUser
from modomo.api.monitor import CeleryMonitor
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


@router.get("/active-tasks")
def active_tasks(request: Request, _: CurrentUser) -> dict[str, Any]:
    """Tasks running now, on which worker, for how long (seconds)."""
    monitor = _monitor(request)
    return {"events": monitor.events_status(), "tasks": monitor.active_tasks()}


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
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: dict[str, Any] | None = None
        self.at = 0.0


_cache = _Cache()


def _slow_part() -> dict[str, Any]:
    with _cache.lock:
        if _cache.value is None or time.monotonic() - _cache.at > DASHBOARD_CACHE_S:
            recent = stats.recent_scenes()
            for scene in recent:
                scene["preview_url"] = f"/scenes/{scene['id']}/preview.png?max_size=256"
            queue_list, broker_error = _queues_or_error()
            _cache.value = {
                "queues": queue_list,
                "broker_error": broker_error,
                "jobs": {"counts": stats.job_status_counts(), "recent": stats.recent_jobs()},
                "failures": stats.recent_failures(),
                "throughput": {"minutes": stats.throughput()},
                "recent_scenes": recent,
            }
            _cache.at = time.monotonic()
        return _cache.value


@router.get("/dashboard")
def dashboard(request: Request, _: CurrentUser) -> dict[str, Any]:
    """Everything the dashboard page shows: workers, queues, active tasks, job counts by
    status, recent jobs with progress, recent failures with reasons, scenes per minute over
    the last ten minutes, recent scenes with detected objects."""
    from datetime import UTC, datetime

    monitor = _monitor(request)
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "broker": _broker_kind(),
        "events": monitor.events_status(),
        "workers": monitor.workers(),
        "active_tasks": monitor.active_tasks(),
        **_slow_part(),
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
