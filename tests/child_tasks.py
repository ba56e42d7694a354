"""Tasks for tests/test_worker_child.py only: a worker started with ``-I tests.child_tasks``
registers them. They report which pool child ran them."""

from __future__ import annotations

import importlib
import os
import time

from modomo.celery_app import app


@app.task(name="tests.child_tasks.pid")
def pid() -> int:
    """The pid of the pool child that ran this task."""
    return os.getpid()


@app.task(name="tests.child_tasks.import_module")
def import_module(name: str) -> int:
    """Import ``name`` (see tests/slow_import.py), then return the child's pid."""
    importlib.import_module(name)
    return os.getpid()


@app.task(name="tests.child_tasks.sleep")
def sleep(seconds: float) -> int:
    """Sleep outside any import, then return the child's pid."""
    time.sleep(seconds)
    return os.getpid()
