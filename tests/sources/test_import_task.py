"""The Hugging Face import through a real worker on the ``import`` queue, Redis and PostgreSQL.

Datasets are built here (``save_to_disk`` and Parquet) and loaded by path with
``HF_HUB_OFFLINE=1``; URL rows are served on loopback. No network, no models: the child
detection job's batches are checked in the ``ai_processing`` queue, then purged.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import select, update

from modomo.artifacts import artifact_store
from modomo.db.models import JobScene, Scene
from modomo.db.session import session_scope
from modomo.jobs import create_job, describe_job
from tests.support import celery_worker, encode, noise_image, wait_for_job

pytestmark = pytest.mark.services

datasets = pytest.importorskip("datasets")

BATCH_SIZE = 3


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("import-worker")
    with celery_worker(
        queues="import",
        log_path=folder / "worker.log",
        MODOMO_IMPORT_ROOTS=str(tmp_path_factory.getbasetemp()),  # every test's tmp_path
        HF_HUB_OFFLINE="1",
        HF_HOME=str(folder / "hf-home"),
        MODOMO_ALLOW_PRIVATE_URLS="1",
        MODOMO_CRAWL_CHUNK_SIZE="4",
        MODOMO_BATCH_SIZE=str(BATCH_SIZE),
    ) as hostname:
        yield hostname


def image_bytes(tag: str, index: int) -> bytes:
    fmt = "JPEG" if index % 2 else "PNG"
    return encode(noise_image(f"{tag}-{index}"), fmt)


def image_table(tag: str, rows: int) -> Any:
    """``rows`` distinct images in an ``Image`` column, with a caption, a class label and a
    room type (images unique to ``tag``: scenes are deduplicated by content)."""
    return datasets.Dataset.from_dict(
        {
            "image": [{"bytes": image_bytes(tag, i), "path": None} for i in range(rows)],
            "caption": [f"{tag} {i}" for i in range(rows)],
            "label": [i % 2 for i in range(rows)],
            "room_type": ["kitchen"] * rows,
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "caption": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["day", "night"]),
                "room_type": datasets.Value("string"),
            }
        ),
    )


def run_import(dataset: Path | str, **kwargs: Any) -> tuple[str, dict]:
    from modomo.tasks.import_tasks import import_huggingface_dataset

    params = {"dataset": str(dataset), **kwargs}
    job_id = str(create_job("import", params))
    import_huggingface_dataset.apply_async(kwargs={"job_id": job_id, **params})
    return job_id, wait_for_job(job_id, timeout_s=60)


def scenes_under(dataset: Path | str) -> dict[str, Scene]:
    """Scenes whose key belongs to ``dataset``, by key."""
    with session_scope() as session:
        found = session.scalars(select(Scene).where(Scene.source_key.like(f"hf:{dataset}:%")))
        scenes = {}
        for scene in found:
            session.expunge(scene)
            scenes[scene.source_key] = scene
        return scenes


def job_scene_keys(job_id: str) -> set[str]:
    with session_scope() as session:
        return set(
            session.scalars(
                select(Scene.source_key)
                .join(JobScene, JobScene.scene_id == Scene.id)
                .where(JobScene.job_id == uuid.UUID(job_id))
            )
        )


def test_the_task_is_routed_to_the_import_queue() -> None:
    from modomo.celery_app import app

    app.loader.import_default_modules()  # what a worker registers: every TASK_MODULES task
    name = "modomo.tasks.import_tasks.import_huggingface_dataset"
    assert name in app.tasks
    assert app.amqp.router.route({}, name)["queue"].name == "import"


def test_saved_dataset_slice_with_metadata_and_original_bytes(worker: str, tmp_path: Path) -> None:
    path = tmp_path / "rooms"
    datasets.DatasetDict({"train": image_table("saved", 12)}).save_to_disk(str(path))
    job_id, job = run_import(path, split="train", offset=2, limit=7)
    assert job["status"] == "completed", job
    assert (job["total"], job["processed"], job["failed"]) == (7, 7, 0)
    assert job["params"]["next_index"] == 9 and "source_open" not in job["params"]
    scenes = scenes_under(path)
    assert sorted(scenes) == sorted(f"hf:{path}:train:{i}" for i in range(2, 9))
    scene = scenes[f"hf:{path}:train:5"]
    assert scene.source == "hf" and scene.room_type == "kitchen"
    assert scene.meta["fields"] == {"caption": "saved 5", "label": "night", "room_type": "kitchen"}
    assert (scene.meta["dataset"], scene.meta["split"], scene.meta["index"]) == (
        str(path),
        "train",
        5,
    )
    # stored as given: same bytes, same hash
    stored = artifact_store().get_bytes(scene.image_key or "")
    assert stored == image_bytes("saved", 5)
    assert scene.sha256 == hashlib.sha256(stored).hexdigest()


def test_parquet_reimport_skips_what_exists(worker: str, tmp_path: Path) -> None:
    path = tmp_path / "rooms.parquet"
    image_table("parquet", 10).to_parquet(str(path))
    first_id, first = run_import(path, offset=0, limit=6)
    assert (first["status"], first["processed"], first["failed"]) == ("completed", 6, 0)

    again_id, again = run_import(path, offset=3, limit=100)  # rows 3-5 exist, 6-9 are new
    assert again["status"] == "completed", again
    assert (again["processed"], again["failed"], again["params"]["skipped"]) == (4, 0, 3)
    assert job_scene_keys(again_id) == {f"hf:{path}:train:{i}" for i in range(6, 10)}
    assert len(scenes_under(path)) == 10

    _, same = run_import(path, offset=0, limit=10)  # nothing new: the job adds nothing
    assert (same["status"], same["total"], same["processed"]) == ("completed", 0, 0)
    assert same["params"]["skipped"] == 10 and len(scenes_under(path)) == 10


def test_url_column_on_loopback_failures_have_reasons(
    worker: str, tmp_path: Path, httpserver: HTTPServer
) -> None:
    for index in range(4):
        httpserver.expect_request(f"/img/{index}.png").respond_with_data(
            image_bytes("url", index), content_type="image/png"
        )
    httpserver.expect_request("/img/missing.png").respond_with_data(b"gone", status=404)
    httpserver.expect_request("/img/page.html").respond_with_data(
        b"<html>log in</html>", content_type="text/html"
    )
    urls = [httpserver.url_for(f"/img/{i}.png") for i in range(4)]
    urls += [httpserver.url_for("/img/missing.png"), httpserver.url_for("/img/page.html"), None]
    table = datasets.Dataset.from_dict(
        {"image_url": urls, "caption": [f"u{i}" for i in range(len(urls))]}
    )
    path = tmp_path / "urls"
    table.save_to_disk(str(path))
    job_id, job = run_import(path, limit=100)
    assert job["status"] == "completed", job
    assert (job["total"], job["processed"], job["failed"]) == (7, 4, 3)
    reasons = {f["source_key"].rsplit(":", 1)[1]: f["error"] for f in job["failures"]}
    assert set(reasons) == {"4", "5", "6"}
    assert reasons["4"].startswith("HTTP 404")
    assert "not an image" in reasons["5"]
    assert "has no image in column 'image_url'" in reasons["6"]
    scene = scenes_under(path)[f"hf:{path}:train:2"]
    assert scene.image_url == urls[2] and scene.meta["fields"] == {"caption": "u2"}


def test_refused_datasets_fail_up_front_with_the_reason(worker: str, tmp_path: Path) -> None:
    path = tmp_path / "captions"
    path.mkdir()
    datasets.Dataset.from_dict({"caption": ["a", "b"], "score": [1, 2]}).to_parquet(
        str(path / "train.parquet")
    )
    _, job = run_import(path)
    assert job["status"] == "failed"
    assert job["error"].endswith("; columns: caption, score"), job
    assert job["error"].startswith("no image column")
    assert job["total"] == 0 and "source_open" not in job["params"]

    _, hub = run_import("nobody/nothing-here")
    assert hub["status"] == "failed"
    assert "OfflineModeIsEnabled" in hub["error"] or "offline" in hub["error"].lower(), hub


def test_builder_names_and_paths_outside_the_roots_fail_their_job(
    worker: str, tmp_path: Path
) -> None:
    """Task messages the API would refuse (a builder name reads the worker's own files; a
    path outside MODOMO_IMPORT_ROOTS) fail their job with a one-line reason, reading
    nothing."""
    outside = Path(tempfile.mkdtemp(prefix="modomo-outside-"))
    try:
        image_table("outside", 3).save_to_disk(str(outside / "rooms"))
        (tmp_path / "link").symlink_to(outside / "rooms")
        for dataset, reason in [
            ("parquet", "'parquet' is a datasets builder name"),
            ("imagefolder", "'imagefolder' is a datasets builder name"),
            ("csv", "'csv' is a datasets builder name"),
            (str(outside / "rooms"), "not under an import root"),
            (str(tmp_path / "link"), "leads out of the import roots"),
            (f"{tmp_path}/../../{outside.name}", "not under an import root"),
            ("rooms", "not a Hugging Face dataset id"),
        ]:
            _, job = run_import(dataset)
            assert job["status"] == "failed", (dataset, job)
            assert reason in job["error"] and "\n" not in job["error"], (dataset, job["error"])
            assert (job["total"], job["processed"]) == (0, 0)
            assert not scenes_under(dataset)
        assert not scenes_under(outside / "rooms")
    finally:
        shutil.rmtree(outside)


def test_a_resumed_task_starts_at_the_saved_cursor(worker: str, tmp_path: Path) -> None:
    from modomo.tasks.import_tasks import import_huggingface_dataset

    path = tmp_path / "resume"
    image_table("resume", 10).save_to_disk(str(path))
    params = {"dataset": str(path), "offset": 0, "limit": 8}
    # what a task that died after its first chunk of 4 rows leaves behind
    job_id = str(create_job("import", {**params, "next_index": 4}))
    import_huggingface_dataset.apply_async(kwargs={"job_id": job_id, **params})
    job = wait_for_job(job_id, timeout_s=60)
    assert (job["status"], job["processed"], job["params"]["next_index"]) == ("completed", 4, 8)
    assert sorted(scenes_under(path)) == sorted(f"hf:{path}:train:{i}" for i in range(4, 8))


def test_include_detection_sends_the_slice_to_a_child_job(worker: str, tmp_path: Path) -> None:
    from modomo.celery_app import app
    from modomo.queues import purge_queue

    path = tmp_path / "detect"
    image_table("detect", 12).save_to_disk(str(path))
    run_import(path, offset=0, limit=4)  # rows 0-3 imported before, without detection
    done_key = f"hf:{path}:train:1"
    with session_scope() as session:  # row 1 went through detection since: not sent again
        session.execute(
            update(Scene).where(Scene.source_key == done_key).values(depth_key="depth/x.png")
        )

    job_id, job = run_import(path, offset=0, limit=10, include_detection=True)
    assert job["status"] == "completed", job
    assert (job["processed"], job["params"]["skipped"]) == (6, 4)
    child_id = job["params"]["detection_job_id"]
    child = describe_job(child_id)
    assert child["parent_id"] == job_id and child["type"] == "detection"
    assert child["params"]["parent"] == job_id and child["params"]["stages"] is None
    expected = {f"hf:{path}:train:{i}" for i in range(10)} - {done_key}
    assert job_scene_keys(child_id) == expected
    assert child["total"] == 9 and child["status"] == "running"
    assert len(child["celery_task_ids"]) == 3  # 9 scenes in batches of 3

    # The batches wait in ai_processing (no AI worker here): take them out, which fails
    # their scenes with the reason, so the child job ends.
    report = purge_queue(app, "ai_processing")
    assert child_id in report.jobs
    assert report.tasks.get("modomo.tasks.detection_tasks.process_scenes_batch", 0) >= 3
    child = wait_for_job(child_id, timeout_s=10)
    assert (child["status"], child["failed"]) == ("failed", 9)
