"""Job endpoints against the real server and a real general worker: submit, follow, list,
Celery's view, cancel mid-run, retry the failed scenes, and every 4xx path."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.scenes import make_large_scenes, make_scenes
from tests.support import celery_worker

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with celery_worker(queues="celery,color_processing", log_path=log) as hostname:
        yield hostname


def follow(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
        time.sleep(0.2)


def scene_colors(client: httpx.Client, scene_id: uuid.UUID) -> dict | None:
    answer = client.get(f"/scenes/{scene_id}")
    assert answer.status_code == 200
    return answer.json()["colors"]


def dispatch_colors(scene_ids: list[uuid.UUID], batch_size: int, created_by: str) -> uuid.UUID:
    """A colours job over exactly these scenes, as `modomo process` submits one, owned by
    ``created_by`` (a user sees its own jobs only)."""
    from modomo.jobs import create_job, dispatch_batches
    from modomo.tasks.color_tasks import process_colors_batch

    job = create_job("colors", {"test": True}, created_by=created_by)
    dispatch_batches(job, process_colors_batch, scene_ids, batch_size)
    return job


def test_colors_job_submitted_followed_and_described(
    user: httpx.Client, worker: str, tmp_path: Path
) -> None:
    scenes = make_scenes(tmp_path, 5)
    answer = user.post("/process/colors", json={"limit": 100_000})
    assert answer.status_code == 202
    accepted = answer.json()
    assert accepted["status"] == "pending"
    assert accepted["status_url"] == f"/jobs/{accepted['job_id']}"
    job = follow(user, accepted["job_id"])
    assert job["status"] == "completed", job
    assert job["total"] >= 5 and job["processed"] == job["total"] and job["failed"] == 0
    assert all(scene_colors(user, sid)["palette"] for sid in scenes)

    celery = user.get(f"/jobs/{accepted['job_id']}/celery-status").json()
    assert celery["job"]["id"] == accepted["job_id"]
    assert celery["celery"]["task"]["task_id"] == accepted["task_id"]
    assert celery["celery"]["task"]["state"] == "SUCCESS"
    assert celery["celery"]["task"]["meta"]["scenes"] == job["total"]
    batches = celery["celery"]["batches"]
    assert batches["total"] == celery["celery"]["task"]["meta"]["batches"]
    assert batches["states"] == {"SUCCESS": batches["shown"]}


def test_jobs_list_filters_and_pages(user: httpx.Client) -> None:
    for _ in range(3):
        assert user.post("/process/colors", json={"limit": 1}).status_code == 202
    first = user.get("/jobs", params={"type": "colors", "limit": 2}).json()
    second = user.get("/jobs", params={"type": "colors", "limit": 2, "offset": 2}).json()
    assert len(first["items"]) == 2 and first["total"] >= 3
    assert {j["id"] for j in first["items"]}.isdisjoint({j["id"] for j in second["items"]})
    assert all(j["type"] == "colors" for j in first["items"] + second["items"])
    completed = user.get("/jobs", params={"status": "completed"}).json()
    assert all(j["status"] == "completed" for j in completed["items"])
    bad = user.get("/jobs", params={"status": "sleeping"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "status"]
    assert user.get("/jobs", params={"limit": 10_000}).status_code == 422


def test_cancel_stops_a_running_job_within_one_batch(
    user: httpx.Client, user_owner: str, worker: str, tmp_path: Path
) -> None:
    batch_size = 2
    scenes = make_large_scenes(tmp_path, 40, (600, 800))
    job_id = str(dispatch_colors(scenes, batch_size, user_owner))
    deadline = time.monotonic() + 60
    while (job := user.get(f"/jobs/{job_id}").json())["processed"] < batch_size:
        assert time.monotonic() < deadline and job["status"] != "completed", job
        time.sleep(0.05)

    # Task events reach the API's receiver asynchronously: give the next batch's
    # task-started event a moment to arrive.
    def running_here(tasks: list[dict]) -> bool:
        return any(
            t["name"].endswith("process_colors_batch") and t["worker"] == worker for t in tasks
        )

    deadline = time.monotonic() + 10
    while not running_here(active := user.get("/jobs/celery/active-tasks").json()["tasks"]):
        assert time.monotonic() < deadline, active
        time.sleep(0.1)
    cancelled = user.post(f"/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200
    at_cancel = cancelled.json()
    assert at_cancel["status"] == "cancelled"
    time.sleep(4)
    job = user.get(f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    assert job["processed"] + job["failed"] <= at_cancel["processed"] + at_cancel["failed"] + (
        batch_size
    )
    assert job["pending"] > 0 and job["processed"] + job["failed"] + job["pending"] == 40
    time.sleep(1)
    assert user.get(f"/jobs/{job_id}").json()["processed"] == job["processed"]  # stopped
    assert user.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"


def test_retry_sends_only_the_failed_scenes(
    user: httpx.Client, user_owner: str, worker: str, tmp_path: Path, data_dir: Path
) -> None:
    from modomo.artifacts import artifact_store
    from modomo.db.models import Scene
    from modomo.db.session import session_scope

    scenes = make_scenes(tmp_path, 3)
    with session_scope() as session:
        key = session.get(Scene, scenes[1]).image_key
    store = artifact_store()
    original = store.get_bytes(key)
    store.delete(key)  # this scene's image is now missing: it fails with the reason
    job_id = str(dispatch_colors(scenes, 8, user_owner))
    job = follow(user, job_id)
    assert (job["status"], job["processed"], job["failed"]) == ("completed", 2, 1)
    assert job["failures"][0]["scene_id"] == str(scenes[1])
    assert "missing" in job["failures"][0]["error"]

    store.put_bytes(key, original)
    assert user.post(f"/jobs/{job_id}/retry", json={"priority": "asap"}).status_code == 422
    answer = user.post(f"/jobs/{job_id}/retry", json={"priority": "urgent"})
    assert answer.status_code == 202
    child = follow(user, answer.json()["job_id"])
    assert child["parent_id"] == job_id
    assert (job["priority"], child["priority"]) == ("normal", "urgent")
    assert (child["status"], child["total"], child["processed"]) == ("completed", 1, 1)
    assert scene_colors(user, scenes[1]) is not None

    nothing = user.post(f"/jobs/{child['id']}/retry")
    assert nothing.status_code == 409 and "no failed scenes" in nothing.json()["detail"]


def test_retry_of_an_active_job_is_409(user: httpx.Client, user_owner: str, tmp_path: Path) -> None:
    scenes = make_scenes(tmp_path, 1)
    from modomo.jobs import create_job, dispatch_batches

    job = create_job("colors", {}, created_by=user_owner)
    # a batch task nobody consumes: the job stays pending
    from modomo.tasks.detection_tasks import process_scenes_batch

    dispatch_batches(job, process_scenes_batch.s().set(queue="nobody"), scenes, 1)
    answer = user.post(f"/jobs/{job}/retry")
    assert answer.status_code == 409 and "pending" in answer.json()["detail"]


def test_detect_accepts_scene_ids_and_image_urls_then_cancel_revokes(
    user: httpx.Client, tmp_path: Path
) -> None:
    scenes = make_scenes(tmp_path, 2)
    answer = user.post(
        "/detect/process", json={"scene_ids": [str(s) for s in scenes], "stages": ["detect"]}
    )
    assert answer.status_code == 202
    job = user.get(answer.json()["status_url"]).json()
    assert job["type"] == "detection" and job["status"] == "pending"
    assert job["params"] == {"stages": ["detect"], "scene_ids": [str(s) for s in scenes]}
    assert job["celery_task_ids"] == [answer.json()["task_id"]]
    cancelled = user.post(f"/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"

    by_url = user.post("/detect/process", json={"image_url": "https://93.184.215.14/room.jpg"})
    assert by_url.status_code == 202
    user.post(f"/jobs/{by_url.json()['job_id']}/cancel")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/process/colors", {"limit": 0}, "limit"),
        ("/process/colors", {"limit": "many"}, "limit"),
        ("/process/colors", {"bogus": 1}, "bogus"),
        ("/detect/process", {}, None),
        ("/detect/process", {"image_url": "https://a.example/x.jpg", "scene_ids": []}, None),
        ("/detect/process", {"image_url": "http://127.0.0.1/x.jpg"}, "image_url"),
        ("/detect/process", {"image_url": "http://169.254.169.254/latest"}, "image_url"),
        ("/detect/process", {"image_url": "file:///etc/passwd"}, "image_url"),
        ("/detect/process", {"scene_ids": [str(uuid.uuid4())]}, "scene_ids"),
        ("/detect/process", {"scene_ids": ["not-a-uuid"]}, "scene_ids"),
        ("/detect/process", {"scene_ids": [str(uuid.uuid4())] * 1001}, "scene_ids"),
        ("/detect/process", {"scene_ids": [str(uuid.uuid4())], "stages": ["paint"]}, "stages"),
        ("/scraper/start", {"room_types": ["attic"]}, "room_types"),
        ("/scraper/start", {"room_types": []}, "room_types"),
        ("/scraper/start", {"limit": 10**9}, "limit"),
        ("/import/huggingface-dataset", {"dataset": "../../etc"}, "dataset"),
        ("/import/huggingface-dataset", {"dataset": "a/b", "offset": -1}, "offset"),
        ("/classify/reclassify", {"force_reclassify": "perhaps"}, "force_reclassify"),
    ],
)
def test_bad_fields_are_422_naming_the_field(
    user: httpx.Client, path: str, body: dict, field: str | None
) -> None:
    answer = user.post(path, json=body)
    assert answer.status_code == 422, answer.text
    if field is not None:
        assert any(field in error["loc"] for error in answer.json()["detail"]), answer.json()


@pytest.mark.parametrize(
    ("path", "body", "job_type", "params"),
    [
        (
            "/scraper/start",
            {"room_types": ["kitchen"], "limit": 5},
            "scrape",
            {"limit": 5, "room_types": ["kitchen"]},
        ),
        (
            "/import/huggingface-dataset",
            {"dataset": "owner/rooms", "limit": 3},
            "import",
            {
                "dataset": "owner/rooms",
                "split": "train",
                "offset": 0,
                "limit": 3,
                "include_detection": False,
            },
        ),
    ],
)
def test_source_endpoints_enqueue_their_task(
    user: httpx.Client, path: str, body: dict, job_type: str, params: dict
) -> None:
    answer = user.post(path, json=body)
    assert answer.status_code == 202, answer.text
    job = user.get(answer.json()["status_url"]).json()
    assert (job["type"], job["status"], job["params"]) == (job_type, "pending", params)
    # no network here: cancel, so a source worker later in the session finds it cancelled
    assert user.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"


def test_unknown_ids_are_404_and_malformed_ones_422(user: httpx.Client) -> None:
    missing = uuid.uuid4()
    for method, path in [
        ("GET", f"/jobs/{missing}"),
        ("GET", f"/jobs/{missing}/celery-status"),
        ("POST", f"/jobs/{missing}/cancel"),
        ("POST", f"/jobs/{missing}/retry"),
        ("GET", f"/scenes/{missing}"),
        ("GET", f"/scenes/{missing}/preview.png"),
    ]:
        answer = user.request(method, path)
        assert answer.status_code == 404, (method, path, answer.text)
        assert str(missing) in answer.json()["detail"]
    bad = user.get("/jobs/not-a-uuid")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["path", "job_id"]
