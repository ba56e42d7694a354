"""The original Modomo guide's API usage against the real server (issue 19): job fields as
query parameters (``POST /process/colors?limit=100``, ``POST /detect/process?image_url=...``),
body and query together, unknown parameters refused; and ``job_data`` in
``GET /jobs/{id}/celery-status`` with the guide's field names."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.scenes import make_scenes
from tests.support import celery_worker

pytestmark = pytest.mark.services

PUBLIC_IMAGE = "https://93.184.215.14/room.jpg"  # an address literal: no DNS, never fetched


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


def job_count(client: httpx.Client) -> int:
    return int(client.get("/jobs", params={"limit": 1}).json()["total"])


def test_colors_limit_in_the_query_limits_the_job(
    user: httpx.Client, worker: str, tmp_path: Path
) -> None:
    make_scenes(tmp_path, 4)  # at least 4 scenes without a palette
    answer = user.post("/process/colors?limit=2")
    assert answer.status_code == 202, answer.text
    job = follow(user, answer.json()["job_id"])
    assert job["params"]["limit"] == 2
    assert (job["status"], job["total"], job["processed"]) == ("completed", 2, 2), job

    data = user.get(f"/jobs/{job['id']}/celery-status").json()["job_data"]
    assert data["job_id"] == job["id"] and data["job_type"] == "colors"
    assert (data["status"], data["error_message"], data["progress"]) == ("completed", None, 100)
    assert (data["total_items"], data["processed_items"], data["failed_items"]) == (2, 2, 0)
    assert data["created_at"] == job["created_at"] and data["updated_at"] == job["updated_at"]
    assert data["completed_at"] == job["finished_at"] is not None


@pytest.mark.parametrize(
    ("path", "body", "job_type", "params"),
    [
        ("/classify/reclassify?limit=100", None, "classify", {"limit": 100}),
        ("/classify/reclassify?limit=7&force_reclassify=true", {}, "classify", {"limit": 7}),
        ("/scraper/start?limit=50", None, "scrape", {"limit": 50}),
        (
            "/scraper/start?limit=5&room_types=kitchen,bedroom",
            {},
            "scrape",
            {"limit": 5, "room_types": ["kitchen", "bedroom"]},
        ),
        (
            "/scraper/start?room_types=kitchen&room_types=bathroom",
            {"limit": 3},
            "scrape",
            {"limit": 3, "room_types": ["kitchen", "bathroom"]},
        ),
        (
            f"/detect/process?image_url={PUBLIC_IMAGE}",
            None,
            "detection",
            {"image_url": PUBLIC_IMAGE},
        ),
        (
            f"/detect/process?image_url={PUBLIC_IMAGE}&stages=detect&stages=segment",
            {},
            "detection",
            {"image_url": PUBLIC_IMAGE, "stages": ["detect", "segment"]},
        ),
        (
            "/import/huggingface-dataset?dataset=owner/rooms&limit=3",
            None,
            "import",
            {"dataset": "owner/rooms", "limit": 3, "offset": 0},
        ),
        ("/process/colors?limit=100&priority=low", {}, "colors", {"limit": 100}),
    ],
)
def test_job_fields_in_the_query_as_the_guide_writes_them(
    user: httpx.Client, path: str, body: dict | None, job_type: str, params: dict
) -> None:
    answer = user.post(path) if body is None else user.post(path, json=body)
    assert answer.status_code == 202, answer.text
    job = user.get(answer.json()["status_url"]).json()
    assert job["type"] == job_type
    assert {k: job["params"].get(k) for k in params} == params, job["params"]
    if "force_reclassify" in path:
        assert job["params"]["force_reclassify"] is True
    if "priority=low" in path:
        assert job["priority"] == "low"
    # nothing runs these here: cancel, so a worker later in the session finds them cancelled
    assert user.post(f"/jobs/{job['id']}/cancel").json()["status"] in ("cancelled", "completed")


def test_query_forms_of_dedup_export_and_retry(user: httpx.Client) -> None:
    dedup = user.post("/dedup?priority=urgent&countdown=3600")
    assert dedup.status_code == 202, dedup.text
    assert dedup.json()["status"] == "scheduled"
    assert user.get(dedup.json()["status_url"]).json()["priority"] == "urgent"
    user.post(f"/jobs/{dedup.json()['job_id']}/cancel")

    export = user.post("/exports?format=yolo&ratios=0.7,0.2,0.1&countdown=3600", json={})
    assert export.status_code == 202, export.text
    params = user.get(export.json()["status_url"]).json()["params"]
    assert (params["format"], params["ratios"]) == ("yolo", [0.7, 0.2, 0.1])
    user.post(f"/jobs/{export.json()['job_id']}/cancel")
    bad_ratios = user.post("/exports?format=yolo&ratios=0.7,0.2")
    assert bad_ratios.status_code == 422
    assert bad_ratios.json()["detail"][0]["loc"] == ["query", "ratios"]

    # retry validates its query too (409 here only because the job has no failed scene)
    retried = user.post(f"/jobs/{dedup.json()['job_id']}/retry?priority=asap")
    assert retried.status_code == 422 and retried.json()["detail"][0]["loc"] == [
        "query",
        "priority",
    ]
    assert user.post(f"/jobs/{dedup.json()['job_id']}/retry?priority=high").status_code == 409


def test_body_and_query_must_agree(user: httpx.Client) -> None:
    agreed = user.post("/scraper/start?limit=5&room_types=kitchen", json={"limit": 5})
    assert agreed.status_code == 202, agreed.text
    assert user.get(agreed.json()["status_url"]).json()["params"]["limit"] == 5
    user.post(f"/jobs/{agreed.json()['job_id']}/cancel")
    same_list = user.post(
        "/scraper/start?room_types=kitchen,bedroom&countdown=3600",
        json={"room_types": ["kitchen", "bedroom"]},
    )
    assert same_list.status_code == 202, same_list.text
    user.post(f"/jobs/{same_list.json()['job_id']}/cancel")

    before = job_count(user)
    for path, body in [
        ("/process/colors?limit=2", {"limit": 3}),
        ("/scraper/start?room_types=kitchen", {"room_types": ["bedroom"]}),
        (f"/detect/process?image_url={PUBLIC_IMAGE}", {"image_url": PUBLIC_IMAGE + "?x"}),
    ]:
        answer = user.post(path, json=body)
        assert answer.status_code == 422, answer.text
        (error,) = answer.json()["detail"]
        field = next(iter(body))
        assert error["loc"] == ["query", field]
        assert field in error["msg"] and "different values" in error["msg"]
    assert job_count(user) == before  # no job was created


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/process/colors?limits=2", None, ["query", "limits"]),
        ("/process/colors?limit=2&verbose=1", {}, ["query", "verbose"]),
        (f"/detect/process?image_url={PUBLIC_IMAGE}&wait=true", None, ["query", "wait"]),
        ("/scraper/start?room_type=kitchen", None, ["query", "room_type"]),
        ("/classify/reclassify?force=true", None, ["query", "force"]),
        ("/dedup?limit=5", None, ["query", "limit"]),
        ("/process/colors?limit=0", None, ["query", "limit"]),
        ("/process/colors?limit=many", {}, ["query", "limit"]),
        ("/process/colors?limit=1&limit=2", None, ["query", "limit"]),
        ("/scraper/start?limit=1000000000", None, ["query", "limit"]),
        ("/scraper/start?room_types=attic", None, ["query", "room_types", 0]),
        ("/detect/process?image_url=http://127.0.0.1/x.jpg", None, ["query", "image_url"]),
        ("/detect/process?image_url=file:///etc/passwd", None, ["query", "image_url"]),
        ("/detect/process?stages=paint", None, ["query", "stages", 0]),
        ("/process/colors?limit=2", {"bogus": 1}, ["body", "bogus"]),
        ("/process/colors", {"limit": 0}, ["body", "limit"]),
    ],
)
def test_unknown_and_invalid_query_parameters_are_422_naming_them(
    user: httpx.Client, path: str, body: dict | None, loc: list
) -> None:
    answer = user.post(path) if body is None else user.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert loc in [error["loc"] for error in answer.json()["detail"]], answer.json()
    if loc[1] in ("limits", "verbose", "wait", "room_type", "force"):
        assert f"unknown query parameter '{loc[1]}'" in answer.json()["detail"][0]["msg"]


def test_detect_without_image_or_scenes_in_either_place_is_422(user: httpx.Client) -> None:
    for answer in (user.post("/detect/process"), user.post("/detect/process", json={})):
        assert answer.status_code == 422
        assert "exactly one of image_url or scene_ids" in answer.text


def test_credentials_are_checked_before_the_body_is_read(api: str) -> None:
    answer = httpx.post(
        f"{api}/process/colors?limit=2",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 401


def test_a_body_that_is_not_a_json_object_is_422(user: httpx.Client) -> None:
    for content, content_type in [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"limit": 2}', "text/plain"),
    ]:
        answer = user.post(
            "/process/colors", content=content, headers={"Content-Type": content_type}
        )
        assert answer.status_code == 422, (content, answer.text)
        assert answer.json()["detail"][0]["loc"][0] == "body"
    null = user.post(
        "/process/colors?limit=1&countdown=3600",
        content=b"null",
        headers={"Content-Type": "application/json"},
    )
    assert null.status_code == 202, null.text
    user.post(f"/jobs/{null.json()['job_id']}/cancel")


def test_openapi_documents_the_query_parameters(user: httpx.Client) -> None:
    paths = user.get("/openapi.json").json()["paths"]
    colors = paths["/process/colors"]["post"]
    assert {p["name"]: p["in"] for p in colors["parameters"]}["limit"] == "query"
    body = colors["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["limit"]["anyOf"][0]["minimum"] == 1
    detect = {p["name"]: p for p in paths["/detect/process"]["post"]["parameters"]}
    assert detect["image_url"]["schema"]["type"] == "string"
    assert detect["scene_ids"]["schema"]["type"] == "array"
    retry = {p["name"]: p["in"] for p in paths["/jobs/{job_id}/retry"]["post"]["parameters"]}
    assert retry == {"job_id": "path", "priority": "query"}


def test_celery_status_job_data_carries_the_failure_reason_of_a_failed_job(
    user: httpx.Client, user_owner: str, admin: httpx.Client, worker: str, tmp_path: Path
) -> None:
    from sqlalchemy import update

    from modomo.artifacts import artifact_store
    from modomo.db.models import Scene, SceneStatus
    from modomo.db.session import session_scope
    from modomo.jobs import create_job, dispatch_batches
    from modomo.tasks.color_tasks import process_colors_batch

    # every scene of this job fails (its image is gone): the job fails because of them
    scenes = make_scenes(tmp_path, 2)
    with session_scope() as session:
        keys = [session.get(Scene, s).image_key for s in scenes]
    for key in keys:
        artifact_store().delete(key)
    job_id = create_job("colors", {"test": True}, created_by=user_owner)
    dispatch_batches(job_id, process_colors_batch, scenes, 8)
    job = follow(user, str(job_id))
    assert (job["status"], job["failed"], job["error"]) == ("failed", 2, None), job
    answer = user.get(f"/jobs/{job_id}/celery-status")
    assert answer.status_code == 200
    data = answer.json()["job_data"]
    assert (data["status"], data["failed_items"], data["total_items"]) == ("failed", 2, 2)
    assert data["error_message"].startswith("2 of 2 scenes failed: ")
    # each reason names its scene's image, so here two reasons of one scene each
    assert data["error_message"].count("colors: missing input: artifact not found") == 2
    assert data["completed_at"] is not None
    # no scene without its image left behind for the catalogue-wide jobs of later tests
    with session_scope() as session:
        session.execute(update(Scene).where(Scene.id.in_(scenes)).values(status=SceneStatus.FAILED))

    # a job that failed with a reason of its own: its start task purged by an admin
    answer = user.post(f"/detect/process?image_url={PUBLIC_IMAGE}&priority=low")
    assert answer.status_code == 202, answer.text
    detect_id = answer.json()["job_id"]
    pending = user.get(f"/jobs/{detect_id}/celery-status").json()
    assert pending["job_data"]["status"] == "pending"
    assert pending["job_data"]["error_message"] is None
    assert pending["job_data"]["completed_at"] is None
    assert admin.post("/jobs/celery/purge-queue/detection").status_code == 200
    data = user.get(f"/jobs/{detect_id}/celery-status").json()["job_data"]
    assert data["status"] == "failed", data
    assert "purged from queue detection" in data["error_message"]
    assert data["error_message"] == user.get(f"/jobs/{detect_id}").json()["error"]
