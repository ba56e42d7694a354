"""A worker child's life (modomo.tasks.child): a soft time limit inside an import retires the
child before it serves another task; a child never outlives its killed parent; children
import their queues' libraries when they start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from modomo.tasks.child import PRELOADS, import_in_progress, preloads_for
from tests.support import REPO, celery_worker, stop, wait_for_children, worker_env

pytestmark = pytest.mark.services

LIMITS = {"MODOMO_TASK_SOFT_TIME_LIMIT": "1", "MODOMO_TASK_TIME_LIMIT": "60"}


def _run(name: str, *args: object) -> object:
    from modomo.celery_app import app

    return app.send_task(f"tests.child_tasks.{name}", args=args, queue="celery")


def test_a_soft_limit_inside_an_import_retires_the_child(tmp_path: Path) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    log = tmp_path / "worker.log"
    with celery_worker(queues="celery", include="tests.child_tasks", log_path=log, **LIMITS):
        first = _run("pid").get(timeout=60)
        with pytest.raises(SoftTimeLimitExceeded):
            _run("import_module", "tests.slow_import").get(timeout=60)
        # the next task is not served by the poisoned child: it is requeued for a fresh one
        second = _run("pid").get(timeout=120)
        assert second != first
        # a soft limit outside an import does not retire the child
        with pytest.raises(SoftTimeLimitExceeded):
            _run("sleep", 5).get(timeout=60)
        assert _run("pid").get(timeout=60) == second
    text = log.read_text()
    assert f"worker child {first} retires before task" in text
    assert "the soft time limit interrupted an import" in text
    assert text.count("retires before task") == 1


def test_children_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "modomo.celery_app", "worker", "-Q", "celery"]
    argv += ["-c", "2", "--without-mingle", "--without-gossip", "-l", "INFO", "-n", "orphan@x"]
    with log.open("wb") as out:
        parent = subprocess.Popen(argv, cwd=REPO, env=worker_env(), stdout=out, stderr=out)
    try:
        wait_for_children(parent, log, 2)
        children = psutil.Process(parent.pid).children()
        assert len(children) == 2
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        gone, alive = psutil.wait_procs(children, timeout=5)
        assert alive == [], f"children alive 5 s after their parent's SIGKILL: {alive}"
    finally:
        if parent.poll() is None:
            stop(parent)


def test_children_import_what_their_queues_need(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with celery_worker(queues="import,celery", log_path=log):
        pass
    assert "ready: preloaded datasets, datasets.utils.file_utils:xopen in" in log.read_text()
    assert preloads_for({"celery", "color_processing"}) == []
    assert preloads_for({"detection", "ai_processing"}) == list(PRELOADS["detection"])
    assert "torch" in preloads_for({"classification", "detection"})


def test_import_in_progress_sees_the_import_machinery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "modomo_frame_probe.py").write_text("import sys\nSEEN = sys._getframe()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import modomo_frame_probe  # type: ignore[import-not-found]

        assert import_in_progress(modomo_frame_probe.SEEN) is True
    finally:
        sys.modules.pop("modomo_frame_probe", None)
    assert import_in_progress(sys._getframe()) is False
