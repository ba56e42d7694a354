"""The Celery app: routes by task module, reliability settings, the root-level shim."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from modomo.celery_app import QUEUES, TASK_ROUTES, app, celery_config, make_celery
from modomo.config import load_settings
from tests.support import REPO, stop, wait_for_children, worker_env

EXPECTED_QUEUE = {
    "modomo.tasks.color_tasks.process_colors_batch": "color_processing",
    "modomo.tasks.color_tasks.run_color_processing_job": "color_processing",
    "modomo.tasks.color_tasks.process_scene_colors": "color_processing",
    "modomo.tasks.detection_tasks.run_detection_pipeline": "detection",
    "modomo.tasks.detection_tasks.process_scenes_batch": "ai_processing",
    "modomo.tasks.detection_tasks.reprocess_scene_objects": "ai_processing",
    "modomo.tasks.classification_tasks.classify_scenes_batch": "classification",
    "modomo.tasks.classification_tasks.run_scene_reclassification_job": "classification",
    "modomo.tasks.classification_tasks.classify_single_scene": "classification",
    "modomo.tasks.classification_tasks.run_dedup_job": "classification",
    "modomo.tasks.scraping_tasks.run_scraping_job": "scraping",
    "modomo.tasks.import_tasks.import_huggingface_dataset": "import",
    "modomo.tasks.export_tasks.run_export_job": "celery",
    "modomo.tasks.maintenance_tasks.reap_stale_jobs": "maintenance",
    "modomo.tasks.maintenance_tasks.cleanup_artifacts": "maintenance",
    "modomo.tasks.maintenance_tasks.health_check": "maintenance",
    "modomo.tasks.maintenance_tasks.scheduler_tick": "maintenance",
}


def test_every_modomo_task_has_an_expected_queue() -> None:
    app.loader.import_default_modules()
    names = {name for name in app.tasks if name.startswith("modomo.")}
    assert names == set(EXPECTED_QUEUE)


@pytest.mark.parametrize(("task", "queue"), sorted(EXPECTED_QUEUE.items()))
def test_router_sends_each_task_to_its_queue(task: str, queue: str) -> None:
    assert app.amqp.router.route({}, task)["queue"].name == queue


def test_routes_only_name_known_queues() -> None:
    assert {route["queue"] for route in TASK_ROUTES.values()} <= set(QUEUES)


def test_reliability_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")
    config = celery_config(load_settings())
    assert config["task_serializer"] == config["result_serializer"] == "json"
    assert config["accept_content"] == ["json"]
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert config["task_soft_time_limit"] < config["task_time_limit"]
    for options in (config["broker_transport_options"], config["result_backend_transport_options"]):
        assert options["visibility_timeout"] > config["task_time_limit"]
    assert config["visibility_timeout"] > config["task_time_limit"]
    assert config["broker_transport_options"]["queue_order_strategy"] == "priority"
    assert config["worker_max_tasks_per_child"] > 0 and config["worker_max_memory_per_child"] > 0
    assert config["result_expires"] > 0


@pytest.mark.services
def test_sent_tasks_land_in_their_queue_in_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send each task through a real Redis broker (its own database, no worker) and look."""
    monkeypatch.setenv("MODOMO_TASK_SOFT_TIME_LIMIT", "50")
    monkeypatch.setenv("MODOMO_TASK_TIME_LIMIT", "60")
    url = "redis://127.0.0.1:6379/14"
    client = redis.Redis.from_url(url)
    client.flushdb()
    monkeypatch.setenv("REDIS_URL", url)
    sender = make_celery(load_settings(), set_as_current=False)
    try:
        for task, queue in EXPECTED_QUEUE.items():
            before = client.llen(queue)
            sender.send_task(task, args=(str(uuid.uuid4()), []))
            assert client.llen(queue) == before + 1, f"{task} did not land in {queue}"
            # the worker's own time limits govern, not the sender's configuration
            headers = json.loads(client.lindex(queue, 0))["headers"]
            assert headers["timelimit"] == [None, None], headers
    finally:
        client.flushdb()
        client.close()


@pytest.mark.services
def test_original_celery_command_starts_a_worker(tmp_path: Path) -> None:
    """`celery -A celery_app worker` from the repository root, as the original scraper ran it:
    every queue, its child importing what they all need before it is ready."""
    hostname = f"shim-{uuid.uuid4().hex[:8]}@localhost"
    log = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--loglevel=info"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "-n", hostname, "-c", "1"],
            cwd=REPO,
            env=worker_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        replies = []
        while not replies and time.monotonic() < deadline and process.poll() is None:
            replies = app.control.ping(destination=[hostname], timeout=0.5)
        assert replies, "the worker started by `celery -A celery_app worker` never answered"
        queues = app.control.inspect(destination=[hostname], timeout=2).active_queues()
        assert {q["name"] for q in queues[hostname]} == set(QUEUES)
        # a warm shutdown waits for a child still importing: let it finish first
        wait_for_children(process, log, 1)
        assert all(name in log.read_text() for name in ("torch", "ultralytics", "datasets"))
    finally:
        stop(process)


def test_workers_run_without_gossip() -> None:
    """``worker_consumer`` drops Celery's Gossip step for every worker, however started."""
    from celery.worker.consumer import Consumer

    from modomo.celery_app import NoGossipConsumer

    gossip = "celery.worker.consumer.gossip:Gossip"
    assert app.conf.worker_consumer == "modomo.celery_app:NoGossipConsumer"
    assert gossip in Consumer.Blueprint.default_steps
    assert gossip not in NoGossipConsumer.Blueprint.default_steps
    steps = NoGossipConsumer.Blueprint.default_steps
    assert len(steps) == len(Consumer.Blueprint.default_steps) - 1
