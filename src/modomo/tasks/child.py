"""The life of a prefork worker child: what it imports when it starts, when it retires, and
that it never outlives its parent.

Celery signals, in the order a child meets them:

- ``celeryd_after_setup`` (the parent, before any fork): note the queues this worker consumes.
- ``worker_process_init`` (the child, before its first task): fresh database connections;
  a watchdog that ends the child when its parent dies (a SIGKILLed parent leaves its
  children running otherwise, and a supervisor that restarts it would run two consumers);
  then the heavy libraries its queues need (:data:`PRELOADS`) are imported. No time limit
  applies there. Imported lazily inside a task instead, the soft time limit can strike
  half-way through ``import datasets`` or ``import transformers``; the half-initialised
  modules stay in ``sys.modules`` and every later task of that child fails ("partially
  initialized module ... circular import") until the child is replaced.
- each task: a soft time limit that strikes while an import is in progress marks the child
  poisoned (that task fails as it would anyway). The child retires when its next task
  arrives, before the task starts (``task_prerun`` raises ``SystemExit``): Celery's parent
  treats that as a lost worker and requeues the untouched task
  (``task_reject_on_worker_lost``) for the replacement child billiard starts. Retiring
  after the poisoned task instead would requeue *that* task whenever it had not stored a
  success, and a task whose import always outlasts the limit would then loop for ever.

Written here rather than taken from a library: billiard recycles children only by task count
or memory, and offers no hook for "this child's interpreter is damaged".
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from celery.signals import celeryd_after_setup, task_prerun, worker_process_init

log = logging.getLogger(__name__)

__all__ = ["PRELOADS", "consumes", "import_in_progress", "preloads_for"]

_AI = (
    "torch",
    "transformers:Sam2Model",
    "transformers:Sam2Processor",
    "transformers:AutoModelForDepthEstimation",
    "transformers:AutoImageProcessor",
    "ultralytics:YOLO",
)
_CLIP = ("torch", "transformers:CLIPModel", "transformers:AutoProcessor", "faiss")

PRELOADS: dict[str, tuple[str, ...]] = {
    "ai_processing": _AI,
    "detection": _AI,
    "classification": _CLIP,
    "import": ("datasets", "datasets.utils.file_utils:xopen"),
}
"""Per queue, what a child consuming it imports when it starts: ``module`` or
``module:attribute`` (the attribute forces the lazy submodules of ``transformers`` and
``datasets`` that the tasks use). Mirrors the lazy imports in :mod:`modomo.models` and
:mod:`modomo.sources.huggingface`."""

_PARENT_POLL_S = 0.5
_EXIT_ORPHANED = 70  # EX_SOFTWARE: the parent is gone, nothing left to report to
_queues: frozenset[str] = frozenset()
_in_child = False
_poisoned: str | None = None


def preloads_for(queues: frozenset[str] | set[str]) -> list[str]:
    """The :data:`PRELOADS` of ``queues``, each once, in a stable order."""
    return list(dict.fromkeys(name for q in sorted(queues) for name in PRELOADS.get(q, ())))


def import_in_progress(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller of it is inside Python's import machinery
    (``importlib._bootstrap``: a module body being executed by an import)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def _preload(names: list[str]) -> None:
    started = time.monotonic()
    done = []
    for name in names:
        module, _, attribute = name.partition(":")
        try:
            loaded = importlib.import_module(module)
            if attribute:
                getattr(loaded, attribute)
            done.append(name)
        except Exception as exc:  # e.g. the ai extra not installed: the task reports it
            log.warning("worker child %d: cannot preload %s: %s", os.getpid(), name, exc)
    log.info(
        "worker child %d ready: preloaded %s in %.1f s",
        os.getpid(),
        ", ".join(done) or "nothing",
        time.monotonic() - started,
    )


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        # reparented: the parent died without stopping us (SIGKILL, OOM killer)
        os._exit(_EXIT_ORPHANED)

    threading.Thread(target=watch, name="modomo-parent-watch", daemon=True).start()


@celeryd_after_setup.connect
def _note_queues(sender: str, instance: Any, **_: Any) -> None:
    global _queues
    queues = instance.app.amqp.queues
    _queues = frozenset(queues.consume_from or queues)


def consumes(queues: tuple[str, ...] | set[str]) -> bool:
    """Whether this worker consumes any of ``queues`` (known once the worker is set up)."""
    return bool(_queues & set(queues))


@worker_process_init.connect
def _child_started(**_: Any) -> None:
    from modomo.config import get_settings
    from modomo.db.session import dispose_engines

    global _in_child
    _in_child = True
    dispose_engines()  # a forked child must not reuse the parent's pooled connections
    _exit_with_parent()
    if get_settings().worker_preload:
        _preload(preloads_for(_queues))


def _watch_soft_limit() -> None:
    """Wrap billiard's soft-time-limit handler (installed after ``worker_process_init``)
    so that a limit striking inside an import poisons the child."""
    current = signal.getsignal(signal.SIGUSR1)
    if not callable(current) or getattr(current, "_modomo", False):
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        global _poisoned
        if import_in_progress(frame):
            _poisoned = "the soft time limit interrupted an import"
        current(signum, frame)

    handler._modomo = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGUSR1, handler)


@task_prerun.connect
def _before_task(task_id: str | None = None, **_: Any) -> None:
    if not _in_child:
        return
    if _poisoned is not None:
        # Retire before this task starts: Celery's parent sees a lost worker and requeues the
        # task (task_reject_on_worker_lost) for a fresh child, which billiard starts.
        log.warning("worker child %d retires before task %s: %s", os.getpid(), task_id, _poisoned)
        raise SystemExit(0)
    # a prefork child runs its tasks in its main thread, where signal handlers may be set
    if threading.current_thread() is threading.main_thread():
        _watch_soft_limit()
