"""Monitoring and the admin purge against the real server: worker state from the event
stream, queue depths with priority sub-queues, the dashboard with and without workers."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis

from modomo.celery_app import QUEUES
from tests.api.scenes import make_scenes
from tests.support import celery_worker

pytestmark = pytest.mark.services


def depths(client: httpx.Client) -> dict[str, int]:
    answer = client.get("/jobs/celery/queues")
    assert answer.status_code == 200
    return {q["name"]: q["messages"] for q in answer.json()["queues"]}


def test_dashboard_answers_fast_with_no_worker(user: httpx.Client) -> None:
    user.get("/jobs/celery/dashboard")  # first call fills the one-second cache
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        answer = user.get("/jobs/celery/dashboard")
        timings.append(time.perf_counter() - started)
        assert answer.status_code == 200
        time.sleep(0.3)
    body = answer.json()
    assert max(timings) < 0.5, timings
    assert body["workers"] == [] or all(w["status"] == "offline" for w in body["workers"])
    assert body["events"]["connected"] is True
    assert "no worker" in body["events"]["detail"]
    assert {q["name"] for q in body["queues"]} == set(QUEUES)
    assert set(body["jobs"]["counts"]) >= {"pending", "running", "completed", "failed"}
    assert len(body["throughput"]["minutes"]) == 10


def test_purge_empties_only_the_named_queue_and_fails_its_scenes(
    api: str, user: httpx.Client, admin: httpx.Client, tmp_path: Path
) -> None:
    from modomo.celery_app import app
    from modomo.jobs import create_job, dispatch_batches
    from modomo.tasks.color_tasks import process_colors_batch

    assert admin.post("/jobs/celery/purge-queue/color_processing").status_code == 200
    scenes = make_scenes(tmp_path, 6)
    job = create_job("colors", {"test": "purge"})
    dispatch_batches(job, process_colors_batch, scenes, 2)  # 3 batches, no worker running
    app.send_task("modomo.tasks.color_tasks.process_scene_colors", args=["x"], priority=9)
    app.send_task("modomo.tasks.color_tasks.process_scene_colors", args=["y"], queue="maintenance")
    before = depths(user)
    assert before["color_processing"] == 4  # priority sub-queue counted
    sub_queues = [
        k.decode() for k in redis.Redis.from_url(app.conf.broker_url).keys("color_processing*")
    ]
    assert len(sub_queues) == 2, sub_queues  # the plain list and one priority level

    assert user.post("/jobs/celery/purge-queue/color_processing").status_code == 403
    anonymous = httpx.post(f"{api}/jobs/celery/purge-queue/color_processing")
    assert anonymous.status_code == 401
    unknown = admin.post("/jobs/celery/purge-queue/colour_processing")
    assert unknown.status_code == 404 and "no queue named" in unknown.json()["detail"]

    purged = admin.post("/jobs/celery/purge-queue/color_processing")
    assert purged.status_code == 200
    report = purged.json()
    assert report["purged"] == 4
    assert report["tasks"] == {
        "modomo.tasks.color_tasks.process_colors_batch": 3,
        "modomo.tasks.color_tasks.process_scene_colors": 1,
    }
    assert report["jobs"] == [str(job)]
    after = depths(user)
    assert after["color_processing"] == 0
    assert after["maintenance"] == before["maintenance"] == 1
    assert redis.Redis.from_url(app.conf.broker_url).keys("color_processing*") == []

    record = admin.get(f"/jobs/{job}").json()  # the CLI's job: an admin's to see
    assert (record["status"], record["failed"], record["pending"]) == ("failed", 6, 0)
    assert all("purged from queue color_processing" in f["error"] for f in record["failures"])
    assert admin.post("/jobs/celery/purge-queue/maintenance").json()["purged"] == 1


def test_workers_and_queues_from_the_event_stream(user: httpx.Client, tmp_path: Path) -> None:
    with celery_worker(queues="celery,maintenance", concurrency=2) as hostname:
        deadline = time.monotonic() + 20
        while True:
            workers = {w["hostname"]: w for w in user.get("/jobs/celery/workers").json()["workers"]}
            seen = workers.get(hostname)
            if seen and seen["queues"]:
                break
            assert time.monotonic() < deadline, workers
            time.sleep(0.2)
        assert seen["status"] == "online"
        assert seen["queues"] == ["celery", "maintenance"]
        assert (seen["concurrency"], seen["pool"]) == (2, "prefork")
        assert 0 <= seen["heartbeat_age_s"] < 5
        dashboard = user.get("/jobs/celery/dashboard").json()
        assert hostname in {w["hostname"] for w in dashboard["workers"]}
        assert dashboard["events"]["detail"] is None
    deadline = time.monotonic() + 20
    while True:  # a worker that stops says so (worker-offline event)
        workers = {w["hostname"]: w for w in user.get("/jobs/celery/workers").json()["workers"]}
        if workers[hostname]["status"] == "offline":
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
