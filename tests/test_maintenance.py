"""Maintenance through real services: the stale-job reaper recovers a job whose worker was
killed (SIGKILL mid-batch), fails what it cannot re-send, the cleanup deletes only old
unreferenced artifacts, the health check, and beat's schedule."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from modomo import maintenance
from modomo.artifacts import artifact_store
from modomo.celery_app import app, beat_schedule, celery_config
from modomo.config import load_settings
from modomo.db.models import Job, Scene
from modomo.db.session import session_scope
from modomo.jobs import create_job, describe_job, dispatch_batches, open_source
from tests.api.scenes import make_large_scenes
from tests.support import REPO, celery_worker, wait_for_job, worker_env

pytestmark = pytest.mark.services


def _kill_worker(hostname: str) -> None:
    """SIGKILL a worker's parent and pool children (as a machine dying would)."""
    stats = app.control.inspect([hostname], timeout=5).stats() or {}
    pid = stats[hostname]["pid"]
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    for child in children.stdout.split():
        os.kill(int(child), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def test_reaper_recovers_a_job_whose_worker_was_killed(tmp_path: Path) -> None:
    from modomo.tasks.color_tasks import process_colors_batch

    scenes = make_large_scenes(tmp_path, 12, (600, 800))
    job_id = create_job("colors", {"test": "reaper"})
    with celery_worker(queues="color_processing") as doomed:
        dispatch_batches(job_id, process_colors_batch, scenes, 2)
        deadline = time.monotonic() + 60
        while describe_job(job_id)["processed"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        _kill_worker(doomed)
    stalled = describe_job(job_id)
    assert stalled["status"] == "running" and stalled["pending"] > 0

    time.sleep(1.1)
    handled = maintenance.reap_stale_jobs(stale_after_s=1, max_reaps=3)
    assert {"job_id": str(job_id), "action": "resent", "scenes": stalled["pending"]} in handled
    with celery_worker(queues="color_processing"):
        job = wait_for_job(job_id, timeout_s=120)
    assert (job["status"], job["processed"], job["failed"], job["total"]) == (
        "completed",
        12,
        0,
        12,
    )
    assert job["params"]["reaped"] == 1
    with session_scope() as session:
        colours = session.scalar(
            select(func.count()).where(Scene.id.in_(scenes), Scene.colors.is_not(None))
        )
    assert colours == 12


def test_reaper_resends_a_start_task_purged_from_the_queue(tmp_path: Path) -> None:
    """`celery -A celery_app purge -f` (the original guide's troubleshooting step) drops a
    job's start task: the reaper sends it again, and the job runs; past the reap limit it
    fails with the reason instead of staying pending."""
    from modomo.jobs.scheduling import JOB_TASKS, submit_job

    make_large_scenes(tmp_path, 2, (60, 80))
    purged = [submit_job("colors", JOB_TASKS["colors"], {"limit": 2}).job_id for _ in range(2)]
    purge = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "celery_app", "purge", "-f"],
        cwd=REPO,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # (and whatever an earlier test left in the shared queues)
    purged_count = re.search(r"Purged (\d+) messages", purge.stdout)
    assert purge.returncode == 0 and purged_count and int(purged_count.group(1)) >= 2, purge
    time.sleep(1.1)
    handled = maintenance.reap_stale_jobs(stale_after_s=1, max_reaps=1)
    for job_id in purged:
        assert {"job_id": str(job_id), "action": "resent", "scenes": 0} in handled
    with celery_worker(queues="celery,color_processing"):
        first = wait_for_job(purged[0], timeout_s=120)
    assert first["status"] == "completed" and first["params"]["reaped"] == 1
    # reaped once already and still pending (the purge again): failed with the reason
    lost = submit_job("colors", JOB_TASKS["colors"], {"limit": 2}).job_id
    subprocess.run(purge.args, cwd=REPO, env=worker_env(), capture_output=True, timeout=60)
    time.sleep(1.1)
    handled = maintenance.reap_stale_jobs(stale_after_s=1, max_reaps=0)
    assert {"job_id": str(lost), "action": "failed", "scenes": 0} in handled
    job = describe_job(lost)
    assert job["status"] == "failed"
    assert "it never started: its start task was lost" in job["error"]


def test_reaper_fails_what_it_cannot_resend() -> None:
    crawl = create_job("scrape", {"test": "reaper"})
    open_source(crawl)  # a crawl whose worker vanished while it held the job open
    time.sleep(1.1)
    handled = maintenance.reap_stale_jobs(stale_after_s=1)
    assert {"job_id": str(crawl), "action": "failed", "scenes": 0} in handled
    job = describe_job(crawl)
    assert job["status"] == "failed" and "no progress" in job["error"]
    assert "not re-sent scene by scene" in job["error"]
    # a fresh job is left alone
    fresh = create_job("colors", {})
    assert str(fresh) not in {h["job_id"] for h in maintenance.reap_stale_jobs(stale_after_s=60)}
    with session_scope() as session:
        assert session.get(Job, fresh).status == "pending"  # type: ignore[union-attr]


def test_cleanup_deletes_only_old_unreferenced_artifacts(tmp_path: Path) -> None:
    store = artifact_store()
    (scene,) = make_large_scenes(tmp_path, 1, (32, 32))
    with session_scope() as session:
        kept_key = session.get(Scene, scene).image_key  # type: ignore[union-attr]
    tag = uuid.uuid4().hex
    orphan = store.put_bytes(f"images/zz/{tag}-orphan.png", b"x")
    young = store.put_bytes(f"images/zz/{tag}-young.png", b"x")
    old_export = store.put_bytes(f"exports/{tag}.zip", b"x")
    two_days_ago = time.time() - 2 * 86400
    for key in (orphan, old_export, kept_key):
        os.utime(store.url(key), (two_days_ago, two_days_ago))
    result = maintenance.cleanup_artifacts(grace_s=86400, export_retention_s=86400)
    assert result["deleted"] >= 1 and result["exports_deleted"] >= 1
    assert not store.exists(orphan) and not store.exists(old_export)
    assert store.exists(young) and store.exists(kept_key)  # young, or referenced by a scene
    store.delete(young)


def test_health_check_reports_each_service() -> None:
    report = maintenance.health_check()
    assert report == {
        "ok": True,
        "checks": dict.fromkeys(("database", "broker", "artifacts"), "ok"),
        "seconds": report["seconds"],
    }


def test_beat_schedule_names_only_registered_tasks(tmp_path: Path) -> None:
    app.loader.import_default_modules()
    settings = load_settings(data_dir=tmp_path, result_backend=f"db+sqlite:///{tmp_path}/r.db")
    schedule = beat_schedule(settings)
    assert {"reap-stale-jobs", "health-check", "cleanup-artifacts", "backend-cleanup"} <= set(
        schedule
    )
    assert all(entry["task"] in app.tasks for entry in schedule.values()), schedule
    redis_only = beat_schedule(load_settings(data_dir=tmp_path, redis_url="redis://x:6379/0"))
    assert "backend-cleanup" not in redis_only  # Redis expires results itself


def test_rediss_urls_verify_certificates(tmp_path: Path) -> None:
    import ssl

    config = celery_config(
        load_settings(data_dir=tmp_path, redis_url="rediss://:secret@redis.example:6380/0")
    )
    assert config["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert config["redis_backend_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    explicit = celery_config(
        load_settings(data_dir=tmp_path, redis_url="rediss://redis.example/0?ssl_cert_reqs=none")
    )
    assert "broker_use_ssl" not in explicit


def _run_beat(argv: list[str], log: Path, ready: Any, cwd: Path = REPO, **env: str) -> None:
    """Run beat (``argv`` after ``python -m``) until ``ready()`` holds (60 s at most), then
    stop it; its output goes to ``log``."""
    with log.open("wb") as out:
        beat = subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=cwd,
            env=worker_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not ready():
                assert beat.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            beat.terminate()
            beat.wait(20)


def test_celery_beat_keeps_its_schedule_in_the_data_dir(tmp_path: Path) -> None:
    """`celery -A celery_app beat`, as the original guide runs it, writes nothing into the
    working directory: its schedule file is DATA_DIR/celerybeat-schedule."""
    data_dir, cwd = tmp_path / "data", tmp_path / "cwd"
    cwd.mkdir()
    log = tmp_path / "beat.log"
    _run_beat(
        ["celery", "-A", "celery_app", "beat", "-l", "INFO"],
        log,
        lambda: list(data_dir.glob("celerybeat-schedule*")),
        cwd=cwd,
        MODOMO_DATA_DIR=str(data_dir),
        PYTHONPATH=str(REPO),
    )
    assert list(cwd.iterdir()) == []
    assert str(data_dir / "celerybeat-schedule") in log.read_text()
    from modomo.queues import purge_queue

    purge_queue(app, "maintenance")  # what it sent: nobody consumes them in this test


def test_modomo_beat_sends_the_scheduled_tasks(tmp_path: Path) -> None:
    log = tmp_path / "beat.log"
    _run_beat(
        ["modomo.cli", "beat", "--schedule-file", str(tmp_path / "s")],
        log,
        lambda: "health-check" in log.read_text() and "reap-stale-jobs" in log.read_text(),
        MODOMO_HEALTH_CHECK_INTERVAL="1",
        MODOMO_REAPER_INTERVAL="1",
    )
    from modomo.queues import purge_queue

    purge_queue(app, "maintenance")  # nobody consumes them in this test
