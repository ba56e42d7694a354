"""The in-process worker of the embedded default.

With no broker configured, ``modomo process`` runs a Celery worker in a thread of its own
process (broker and results in SQLite files), so the one command works with nothing else
running. It is a real Celery worker consuming the real queues through the real transport;
only the pool differs (threads instead of forked children).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery

from modomo.celery_app import QUEUES

__all__ = ["embedded_worker"]


@contextmanager
def embedded_worker(
    app: Celery, queues: tuple[str, ...] = QUEUES, concurrency: int | None = None
) -> Iterator[None]:
    """Run a Celery worker in a background thread for the duration of the ``with`` block.

    Args:
        app: the Celery app.
        queues: queues to consume (default: all of Modomo's).
        concurrency: worker threads (default: the CPU count).

    Raises:
        RuntimeError: the worker did not become ready within 60 seconds.
    """
    ready = threading.Event()
    worker = app.WorkController(
        hostname=f"embedded-{os.getpid()}@{socket.gethostname()}",
        pool_cls="threads",
        concurrency=concurrency or os.cpu_count() or 2,
        queues=list(queues),
        loglevel="WARNING",
        ready_callback=lambda _consumer: ready.set(),
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    thread = threading.Thread(target=worker.start, name="modomo-embedded-worker", daemon=True)
    thread.start()
    if not ready.wait(60):
        worker.stop(in_sighandler=False)
        raise RuntimeError("the embedded Celery worker did not start within 60 s")
    try:
        yield
    finally:
        worker.stop(in_sighandler=False)
        thread.join(timeout=30)
