"""Worker and task state for the API, kept live from Celery's event stream (as Flower does).

A background thread holds an event receiver on the broker and feeds every worker and task
event into a ``celery.events.state.State``; requests only read that state, so they never wait
on a broadcast ``inspect()``. What events do not carry (a worker's queues, pool and
concurrency) is asked of each worker once, by a second thread, with an ``inspect`` addressed
to that worker alone, and refreshed every minute.

Workers send worker events (heartbeats every 2 s) by default and task events because the
Celery config sets ``worker_send_task_events``. The embedded SQLite broker cannot broadcast
(kombu's SQLAlchemy transport has no fanout exchange), so there the monitor reports that
events are unavailable instead of showing nothing as if no worker ran.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery
from celery.events.state import State

__all__ = ["CeleryMonitor"]

log = logging.getLogger(__name__)

INFO_REFRESH_S = 60.0
"""Seconds between refreshes of a worker's queues, pool and concurrency."""

OFFLINE_FORGET_S = 600.0
"""An offline worker is dropped from the answers after this many seconds."""


class CeleryMonitor:
    """Live worker and task state from the broker's event stream.

    Args:
        celery: the Celery app whose broker to listen on.
        max_tasks: tasks remembered (oldest forgotten first).
    """

    def __init__(self, celery: Celery, max_tasks: int = 10_000) -> None:
        self.celery = celery
        self.state = State(max_tasks_in_memory=max_tasks, max_workers_in_memory=200)
        self.connected = False
        self.detail: str | None = "not started"
        self._info: dict[str, dict[str, Any]] = {}
        self._info_lock = threading.Lock()
        self._stop = threading.Event()
        self._receiver: Any = None
        self._threads: list[threading.Thread] = []
        transport = celery.connection_for_read().transport
        self.enabled = bool(getattr(transport.Channel, "supports_fanout", True))
        if not self.enabled:
            self.detail = (
                "worker events are unavailable on the embedded SQLite broker; "
                "configure Redis (REDIS_URL) to see workers and active tasks"
            )

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the event and worker-info threads (no-op when events are unavailable)."""
        if not self.enabled or self._threads:
            return
        for target, name in ((self._listen, "events"), (self._refresh_info, "worker-info")):
            thread = threading.Thread(target=target, name=f"modomo-monitor-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads (they exit within about a second)."""
        self._stop.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        for thread in self._threads:
            thread.join(timeout=3)
        self._threads.clear()

    def _listen(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with self.celery.connection_for_read() as connection:
                    self._receiver = self.celery.events.Receiver(
                        connection, handlers={"*": self.state.event}
                    )
                    self.connected, self.detail, delay = True, None, 0.5
                    # wakeup: ask every worker for a heartbeat now, not in up to 2 s
                    self._receiver.capture(limit=None, timeout=None, wakeup=True)
            except Exception as exc:
                if self._stop.is_set():
                    break
                self.connected = False
                self.detail = f"event stream lost: {type(exc).__name__}: {exc}"
                log.warning("celery event receiver: %s; reconnecting in %.1f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self.connected = False

    def _refresh_info(self) -> None:
        while not self._stop.wait(1.0):
            for hostname, worker in self._snapshot(self.state.workers):
                if not worker.alive:
                    continue
                with self._info_lock:
                    fetched = self._info.get(hostname, {}).get("fetched", 0.0)
                if time.monotonic() - fetched < INFO_REFRESH_S:
                    continue
                try:
                    info = self._ask(hostname)
                except Exception as exc:  # the next round asks again
                    log.info("could not ask worker %s for its details: %s", hostname, exc)
                    continue
                with self._info_lock:
                    self._info[hostname] = info

    def _ask(self, hostname: str) -> dict[str, Any]:
        inspect = self.celery.control.inspect(destination=[hostname], timeout=1.0)
        stats = (inspect.stats() or {}).get(hostname) or {}
        queues = (inspect.active_queues() or {}).get(hostname) or []
        pool = stats.get("pool") or {}
        implementation = str(pool.get("implementation", ""))
        return {
            "fetched": time.monotonic() if stats else 0.0,
            "queues": sorted(q["name"] for q in queues if "name" in q),
            "concurrency": pool.get("max-concurrency"),
            # "celery.concurrency.prefork:TaskPool" -> "prefork"
            "pool": implementation.split(":")[0].rsplit(".", 1)[-1] or None,
            "pid": stats.get("pid"),
        }

    # --- answers ---------------------------------------------------------------------------
    def _snapshot(self, mapping: Any) -> list[tuple[str, Any]]:
        # The receiver thread mutates the state under its lock; copy under the same lock.
        return self.state.freeze_while(lambda: list(mapping.items()), clear_after=False)  # type: ignore[no-any-return]

    def workers(self) -> list[dict[str, Any]]:
        """Every known worker: hostname, status (online/offline), queues, concurrency, pool,
        processed and active task counts, heartbeat age in seconds, its current tasks."""
        now = time.time()
        running = self.active_tasks(now)
        answer = []
        for hostname, worker in sorted(self._snapshot(self.state.workers)):
            # heartbeats hold receive times; an offline event empties them, so fall back to
            # the time the last event (worker-offline) was received
            beat = worker.heartbeats[-1] if worker.heartbeats else None
            beat = beat or getattr(worker, "local_received", None)
            age = round(now - beat, 2) if beat else None
            if not worker.alive and (age is None or age > OFFLINE_FORGET_S):
                continue
            with self._info_lock:
                info = dict(self._info.get(hostname, {}))
            answer.append(
                {
                    "hostname": hostname,
                    "status": "online" if worker.alive else "offline",
                    "queues": info.get("queues", []),
                    "concurrency": info.get("concurrency"),
                    "pool": info.get("pool"),
                    "processed": worker.processed or 0,
                    "active": worker.active or 0,
                    "heartbeat_age_s": age,
                    "loadavg": worker.loadavg,
                    "software": f"{worker.sw_ident} {worker.sw_ver}" if worker.sw_ver else None,
                    "current_tasks": [t for t in running if t["worker"] == hostname],
                }
            )
        return answer

    def active_tasks(self, now: float | None = None) -> list[dict[str, Any]]:
        """Tasks started and not yet finished, longest-running first."""
        now = now or time.time()
        tasks = []
        for task_id, task in self._snapshot(self.state.tasks):
            if task.state != "STARTED":
                continue
            tasks.append(
                {
                    "id": task_id,
                    "name": task.name,
                    "worker": task.worker.hostname if task.worker else None,
                    "args": task.args,
                    "kwargs": task.kwargs,
                    "started_at": task.started,
                    "runtime_s": round(now - task.started, 2) if task.started else None,
                }
            )
        return sorted(tasks, key=lambda t: t["started_at"] or now)

    def events_status(self) -> dict[str, Any]:
        """Whether the event stream is available and connected, and why not."""
        alive = sum(1 for _, w in self._snapshot(self.state.workers) if w.alive)
        detail = self.detail
        if self.enabled and self.connected and not alive:
            detail = "connected; no worker has sent a heartbeat"
        return {"enabled": self.enabled, "connected": self.connected, "detail": detail}
