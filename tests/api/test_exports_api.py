"""``POST /exports``, ``GET /exports/{id}`` and its download on a real server with a worker on
the ``celery`` queue: the archive holds the dataset and its manifest."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.scenes import make_scenes
from tests.support import celery_worker


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with celery_worker(queues="celery", log_path=log) as hostname:
        yield hostname


def test_export_job_and_download(admin: httpx.Client, worker: str, tmp_path: Path) -> None:
    # the scenes' ingest job is the CLI's: an admin's to export (a user's export of it is 404)
    user = admin
    scenes = make_scenes(tmp_path, 4)
    from sqlalchemy import select

    from modomo.db.models import JobScene
    from modomo.db.session import session_scope

    with session_scope() as session:
        job_id = session.scalar(select(JobScene.job_id).where(JobScene.scene_id == scenes[0]))
    answer = user.post("/exports", json={"format": "coco", "job_id": str(job_id)})
    assert answer.status_code == 202, answer.text
    export_id = answer.json()["job_id"]
    assert user.get(f"/exports/{export_id}/download").status_code in (409, 200)
    deadline = time.monotonic() + 120
    while (record := user.get(f"/exports/{export_id}").json())["status"] != "completed":
        assert record["status"] in ("pending", "running") and time.monotonic() < deadline, record
        time.sleep(0.2)
    assert record["download_url"] == f"/exports/{export_id}/download"
    assert record["result"]["total"]["scenes"] == 4

    download = user.get(record["download_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
    assert "annotations/instances_train.json" in names and "README.md" in names
    assert manifest["checksum"] == record["result"]["checksum"]
    assert sum(1 for n in names if n.startswith("images/")) == 4

    # tasks for review in Label Studio, through the same job
    answer = user.post("/exports", json={"format": "label-studio", "job_id": str(job_id)})
    assert answer.status_code == 202, answer.text
    export_id = answer.json()["job_id"]
    deadline = time.monotonic() + 120
    while (record := user.get(f"/exports/{export_id}").json())["status"] != "completed":
        assert record["status"] in ("pending", "running") and time.monotonic() < deadline, record
        time.sleep(0.2)
    with zipfile.ZipFile(io.BytesIO(user.get(record["download_url"]).content)) as archive:
        tasks = json.loads(archive.read("tasks.json"))
        assert b"<RectangleLabels" in archive.read("label_config.xml")
    assert len(tasks) == 4 and all("scene_id" in task["data"] for task in tasks)


def test_export_requests_are_validated(user: httpx.Client) -> None:
    bad = user.post("/exports", json={"format": "csv"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "format"]
    ratios = user.post("/exports", json={"format": "coco", "ratios": [0.5, 0.5, 0.5]})
    assert ratios.status_code == 422 and ratios.json()["detail"][0]["loc"][:2] == ["body", "ratios"]
    classes = user.post("/exports", json={"format": "coco", "classes": ["sofa", "throne"]})
    assert classes.status_code == 422 and "throne" in classes.text
    assert classes.json()["detail"][0]["loc"][:2] == ["body", "classes"]
    unknown = uuid.uuid4()
    assert user.get(f"/exports/{unknown}").status_code == 404
    assert user.get(f"/exports/{unknown}/download").status_code == 404
