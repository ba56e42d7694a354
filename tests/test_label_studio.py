"""The review loop against a real Label Studio: export tasks with the models' predictions,
import them into a Label Studio server through its API, change one annotation and accept
another through the API, export the project and bring the review back with
``modomo annotations import``; the reviewed objects replace the model's, survive a later
detection run, and exports carry them. Also the COCO way back.

Label Studio runs from PyPI in its own environment (``scripts/label-studio.sh``), started on
loopback by the test. When it cannot be installed or started here the round trip is skipped
with the reason; once it runs, a broken round trip fails.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import ExifTags, Image
from sqlalchemy import select

from modomo.analysis.masks import decode_rle, encode_rle
from modomo.db.models import DetectedObject, Scene
from modomo.db.session import session_scope
from modomo.export import ExportOptions, run_export
from modomo.jobs import ProgressReporter, create_job
from modomo.sources import ingest
from modomo.sources.inputs import Input
from tests.support import REPO, run_cli

pytestmark = pytest.mark.services

HEIGHT, WIDTH = 120, 200


def _jpeg(rgb: np.ndarray, orientation: int) -> bytes:
    """A JPEG stored sideways with EXIF orientation 6 (or upright with 1)."""
    image = Image.fromarray(rgb)
    if orientation == 6:
        image = image.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


def _scenes(tmp_path: Path, count: int) -> tuple[uuid.UUID, list[uuid.UUID], np.ndarray]:
    """``count`` scenes, each with the model's sofa (with a mask) and lamp (a box only)."""
    sofa = np.zeros((HEIGHT, WIDTH), bool)
    sofa[40:100, 20:120] = True
    rgb = np.full((HEIGHT, WIDTH, 3), 230, np.uint8)
    rgb[sofa] = (200, 40, 40)
    inputs = []
    for index in range(count):
        path = tmp_path / f"review-{uuid.uuid4().hex[:8]}.jpg"
        rgb[0, :16] = np.frombuffer(uuid.uuid4().bytes, np.uint8)[:, None]  # a new image
        path.write_bytes(_jpeg(rgb, 6 if index % 2 else 1))
        inputs.append(Input("folder", str(path)))
    job_id = create_job("detection", {"test": "review"})
    scene_ids = ingest(job_id, inputs).scene_ids
    with session_scope() as session:
        for sid in scene_ids:
            session.add_all(
                [
                    DetectedObject(
                        scene_id=sid,
                        job_id=job_id,
                        bbox=[20.0, 40.0, 100.0, 60.0],
                        category="sofa",
                        taxonomy_group="seating",
                        confidence=0.8,
                        mask_rle=encode_rle(sofa),
                        mask_area=int(sofa.sum()),
                        models={"detector": "yolo11n.pt@ultralytics-8.4.0"},
                    ),
                    DetectedObject(
                        scene_id=sid,
                        job_id=job_id,
                        bbox=[150.0, 10.0, 30.0, 70.0],
                        category="lamp",
                        taxonomy_group="lighting",
                        confidence=0.6,
                        models={"detector": "yolo11n.pt@ultralytics-8.4.0"},
                    ),
                ]
            )
    return job_id, scene_ids, sofa


def _objects(scene_id: uuid.UUID) -> list[DetectedObject]:
    with session_scope() as session:
        rows = session.scalars(
            select(DetectedObject)
            .where(DetectedObject.scene_id == scene_id)
            .order_by(DetectedObject.category)
        )
        objects = list(rows)
        session.expunge_all()
    return objects


def _reviewed_at(scene_id: uuid.UUID) -> Any:
    with session_scope() as session:
        return session.scalar(select(Scene.reviewed_at).where(Scene.id == scene_id))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# --- a real Label Studio ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A Label Studio server on loopback: ``(base URL, API token)``."""
    try:
        installed = subprocess.run(
            ["bash", "scripts/label-studio.sh"],
            cwd=REPO,
            env={**os.environ, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"Label Studio could not be installed here: {exc}")
    if installed.returncode != 0:
        pytest.skip(f"Label Studio could not be installed here: {installed.stderr[-500:]}")
    executable = installed.stdout.strip().splitlines()[-1]
    home = tmp_path_factory.mktemp("label-studio")
    port, token = _free_port(), secrets.token_hex(20)
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [
            executable,
            "start",
            "--no-browser",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(home / "data"),
            "--username",
            "reviewer@example.com",
            "--password",
            secrets.token_hex(12),
            "--user-token",
            token,
            "--enable-legacy-api-token",
        ],  # fmt: skip
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(home),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # the first start migrates its database
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                tail = (home / "server.log").read_text()[-800:]
                pytest.skip(f"Label Studio did not start here: {tail}")
            time.sleep(1)
        yield url, token
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()


def test_review_round_trip_through_label_studio(
    label_studio: tuple[str, str], tmp_path: Path
) -> None:
    url, token = label_studio
    job_id, (changed, accepted, untouched), sofa = _scenes(tmp_path, 3)
    manifest = run_export(ExportOptions(format="label-studio", job_id=job_id), tmp_path / "ls")
    assert manifest["total"] == {"scenes": 3, "objects": 6}
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    config = (tmp_path / "ls" / "label_config.xml").read_text()
    for task in tasks:
        [prediction] = task["predictions"]
        assert prediction["model_version"] == "yolo11n.pt@ultralytics-8.4.0"
        assert {r["type"] for r in prediction["result"]} == {"polygonlabels", "rectanglelabels"}
        assert all((r["original_width"], r["original_height"]) == (WIDTH, HEIGHT)
                   for r in prediction["result"])  # fmt: skip

    with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}) as client:
        project = client.post("/api/projects", json={"title": "modomo", "label_config": config})
        assert project.status_code == 201, project.text
        pid = project.json()["id"]
        imported = client.post(f"/api/projects/{pid}/import", json=tasks)
        assert imported.status_code == 201 and imported.json()["task_count"] == 3, imported.text
        listed = client.get("/api/tasks", params={"project": pid, "fields": "all"}).json()
        by_scene = {t["data"]["scene_id"]: t for t in listed.get("tasks", listed)}
        assert set(by_scene) == {str(changed), str(accepted), str(untouched)}

        # one annotation changed: the sofa is an armchair, the lamp was a false positive
        task = by_scene[str(changed)]
        predictions = client.get("/api/predictions", params={"task": task["id"]}).json()
        [prediction] = predictions
        result = [r for r in prediction["result"] if r["type"] == "polygonlabels"]
        result[0]["value"]["polygonlabels"] = ["armchair"]
        created = client.post(f"/api/tasks/{task['id']}/annotations", json={"result": result})
        assert created.status_code == 201, created.text
        # one accepted as predicted
        task = by_scene[str(accepted)]
        [prediction] = client.get("/api/predictions", params={"task": task["id"]}).json()
        created = client.post(
            f"/api/tasks/{task['id']}/annotations", json={"result": prediction["result"]}
        )
        assert created.status_code == 201, created.text

        exported = client.get(
            f"/api/projects/{pid}/export",
            params={"exportType": "JSON", "download_all_tasks": "true"},
        )
        assert exported.status_code == 200, exported.text
    export_file = tmp_path / "project-export.json"
    export_file.write_bytes(exported.content)

    done = run_cli("annotations", "import", str(export_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reviewed scenes imported: 2 (3 objects)" in done.stdout
    assert "(left alone): 1" in done.stdout

    [armchair] = _objects(changed)
    assert (armchair.category, armchair.source, armchair.confidence) == ("armchair", "human", 1.0)
    assert _iou(decode_rle(armchair.mask_rle), sofa) > 0.95  # polygon there and back
    lamp, kept_sofa = _objects(accepted)
    assert (lamp.category, lamp.source, lamp.mask_rle) == ("lamp", "human", None)
    np.testing.assert_allclose(lamp.bbox, [150, 10, 30, 70], atol=0.01)
    assert kept_sofa.source == "human" and _iou(decode_rle(kept_sofa.mask_rle), sofa) > 0.95
    assert {o.source for o in _objects(untouched)} == {"model"}
    assert _reviewed_at(changed) and _reviewed_at(accepted) and not _reviewed_at(untouched)

    # a later detection run replaces the unreviewed scene's objects, never the reviewed ones
    model_row = {
        "bbox": [1.0, 1.0, 10.0, 10.0],
        "category": "chair",
        "taxonomy_group": "seating",
        "confidence": 0.5,
        "models": {"detector": "yolo11n.pt@ultralytics-8.4.0"},
    }
    with ProgressReporter(job_id, "detect", interval=0) as reporter:
        for sid in (changed, untouched):
            reporter.succeeded(sid, None, [dict(model_row)])
    assert [(o.category, o.source) for o in _objects(changed)] == [("armchair", "human")]
    assert [(o.category, o.source) for o in _objects(untouched)] == [("chair", "model")]

    # exports carry the people's labels and count them
    again = run_export(ExportOptions(format="coco", job_id=job_id), tmp_path / "coco")
    assert again["reviewed"] == {"scenes": 2, "objects": 3}
    assert "Human-reviewed: 2 scenes, 3 objects." in (tmp_path / "coco" / "README.md").read_text()
    coco = {}
    for split in ("train", "val", "test"):
        data = json.loads(
            (tmp_path / "coco" / "annotations" / f"instances_{split}.json").read_text()
        )
        coco.update({a["modomo_object_id"]: a for a in data["annotations"]})
    assert coco[str(armchair.id)]["modomo_labelled_by"] == "human"


def test_coco_review_comes_back(tmp_path: Path) -> None:
    job_id, (first, second), sofa = _scenes(tmp_path, 2)
    run_export(ExportOptions(format="coco", job_id=job_id, ratios=(1, 0, 0)), tmp_path / "coco")
    path = tmp_path / "coco" / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    ids = {c["name"]: c["id"] for c in data["categories"]}
    first_image = next(i["id"] for i in data["images"] if i["modomo_scene_id"] == str(first))
    # the reviewer relabels the first scene's lamp a chair and drops the second scene's lamp
    for annotation in list(data["annotations"]):
        if annotation["category_id"] == ids["lamp"]:
            if annotation["image_id"] == first_image:
                annotation["category_id"] = len(data["categories"]) + 1
            else:
                data["annotations"].remove(annotation)
    data["categories"].append({"id": len(data["categories"]) + 1, "name": "chair"})
    path.write_text(json.dumps(data))

    done = run_cli("annotations", "import", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reviewed scenes imported: 2 (3 objects)" in done.stdout
    assert [(o.category, o.source) for o in _objects(first)] == [
        ("chair", "human"),
        ("sofa", "human"),
    ]
    [kept] = _objects(second)
    assert kept.category == "sofa" and np.array_equal(decode_rle(kept.mask_rle), sofa)

    data["categories"][-1]["name"] = "throne"
    path.write_text(json.dumps(data))
    refused = run_cli("annotations", "import", str(path))
    assert refused.returncode == 0 and "throne" in refused.stdout  # the other scene went in
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    failed = run_cli("annotations", "import", str(bad))
    assert failed.returncode == 2 and "neither a Label Studio" in failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr
