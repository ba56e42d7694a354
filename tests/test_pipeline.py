"""End to end: colour jobs through real Celery workers, Redis and PostgreSQL."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from modomo.db.models import JobScene, Scene
from modomo.db.session import session_scope
from modomo.jobs import create_job, dispatch_batches
from modomo.sources import expand_sources, ingest
from tests.support import celery_worker, encode, noise_image, wait_for_job, write_unique_images

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> str:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with celery_worker("celery,color_processing", concurrency=2, log_path=log) as hostname:
        yield hostname


def run_colors_job(sources: list[str], batch_size: int = 8) -> tuple[uuid.UUID, list[str], dict]:
    """Ingest ``sources``, fan the scenes out to the colour queue, wait for the job."""
    from modomo.tasks.color_tasks import process_colors_batch

    job_id = create_job("colors", {"sources": sources})
    report = ingest(job_id, expand_sources(sources))
    task_ids = dispatch_batches(job_id, process_colors_batch, report.scene_ids, batch_size)
    return job_id, task_ids, wait_for_job(job_id)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_job_of_60_images_completes_with_exact_counts(worker: str, tmp_path: Path) -> None:
    write_unique_images(tmp_path / "photos", 60)
    job_id, task_ids, job = run_colors_job([str(tmp_path / "photos")])
    assert job["status"] == "completed", job
    assert (job["total"], job["processed"], job["failed"], job["pending"]) == (60, 60, 0, 0)
    assert job["progress"] == 100.0
    assert len(task_ids) == 8  # ceil(60 / 8) batches
    with session_scope() as session:
        palettes = session.scalars(
            select(Scene.colors)
            .join(JobScene, JobScene.scene_id == Scene.id)
            .where(JobScene.job_id == job_id)
        ).all()
    assert len(palettes) == 60
    for colors in palettes:
        assert colors is not None
        assert abs(sum(c["share"] for c in colors["palette"]) - 1) < 1e-3


def test_duplicate_images_are_stored_once(worker: str, tmp_path: Path, data_dir: Path) -> None:
    data = encode(noise_image(f"dup-{uuid.uuid4()}"))
    for name in ("a.png", "b.png", "nested/c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    job_id, _, job = run_colors_job([str(tmp_path)])
    assert (job["status"], job["total"], job["processed"]) == ("completed", 1, 1)
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    with session_scope() as session:
        assert session.scalar(select(func.count()).where(Scene.sha256 == sha)) == 1
    stored = list((data_dir / "artifacts").rglob(f"{sha}.*"))
    assert len(stored) == 1


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def image_server(tmp_path: Path):
    """A loopback HTTP server serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bad_inputs_fail_alone_and_the_worker_lives_on(
    worker: str, tmp_path: Path, image_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modomo.celery_app import app
    from modomo.config import get_settings

    monkeypatch.setattr(get_settings(), "allow_private_urls", True)
    monkeypatch.setattr(get_settings(), "max_image_pixels", 20_000_000)
    folder = tmp_path / "in"
    good = write_unique_images(folder, 5)
    jpeg = encode(noise_image(f"trunc-{uuid.uuid4()}", (256, 256)), "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "not-an-image.jpg").write_bytes(b"<html><body>hello</body></html>")
    (folder / "empty.png").write_bytes(b"")
    # 6000 x 6000 = 36 MP > 20 MP limit, a few kB on disk.
    import io

    from PIL import Image

    bomb = io.BytesIO()
    Image.new("L", (6000, 6000)).save(bomb, "PNG")
    (folder / "bomb.png").write_bytes(bomb.getvalue())
    www, base = image_server
    (www / "ok.png").write_bytes(encode(noise_image(f"url-{uuid.uuid4()}")))
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{base}/ok.png\n{base}/missing.png\nhttp://127.0.0.1:{closed_port()}/x.jpg\n")

    job_id, _, job = run_colors_job([str(folder), str(urls)])

    assert job["status"] == "completed", job
    assert (job["total"], job["processed"], job["failed"]) == (12, 6, 6)
    reasons = {Path(f["source_key"]).name: (f["stage"], f["error"]) for f in job["failures"]}
    assert set(reasons) == {
        "truncated.jpg",
        "not-an-image.jpg",
        "empty.png",
        "bomb.png",
        "missing.png",
        "x.jpg",
    }
    assert reasons["truncated.jpg"][0] == "colors"  # passed the header check, failed decoding
    assert (
        "truncated" in reasons["truncated.jpg"][1].lower()
        or "corrupt" in reasons["truncated.jpg"][1].lower()
    )
    assert (
        reasons["not-an-image.jpg"][0] == "ingest"
        and "not an image" in reasons["not-an-image.jpg"][1]
    )
    assert "0 bytes" in reasons["empty.png"][1]
    assert "20000000" in reasons["bomb.png"][1].replace(",", "")
    assert "404" in reasons["missing.png"][1]
    assert "refused" in reasons["x.jpg"][1].lower() or "connect" in reasons["x.jpg"][1].lower()
    # The worker survived: it answers and runs another job.
    assert app.control.ping(destination=[worker], timeout=2)
    write_unique_images(tmp_path / "again", 3)
    _, _, again = run_colors_job([str(tmp_path / "again")])
    assert (again["status"], again["processed"]) == ("completed", 3)
    assert good  # the five good files were among the processed


def test_private_urls_are_refused_by_default(worker: str, tmp_path: Path, image_server) -> None:
    www, base = image_server
    (www / "ok.png").write_bytes(encode(noise_image(f"private-{uuid.uuid4()}")))
    _, _, job = run_colors_job([f"{base}/ok.png"])
    assert (job["status"], job["failed"]) == ("failed", 1)
    assert "loopback" in job["failures"][0]["error"]


def test_progress_is_published_and_writes_are_throttled(worker: str, tmp_path: Path) -> None:
    from modomo.tasks.color_tasks import process_colors_batch

    write_unique_images(tmp_path / "big", 120)
    job_id = create_job("colors", {})
    report = ingest(job_id, expand_sources([str(tmp_path / "big")]))
    started = time.monotonic()
    (task_id,) = dispatch_batches(job_id, process_colors_batch, report.scene_ids, 120)
    seen = []
    from modomo.celery_app import app

    result = app.AsyncResult(task_id)
    while not result.ready() and time.monotonic() - started < 120:
        if result.state == "PROGRESS":
            seen.append(dict(result.info))
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    job = wait_for_job(job_id)
    assert (job["status"], job["processed"]) == ("completed", 120)
    outcome = result.get(timeout=10)
    # At most 2 writes a second of this job (0.5 s interval), plus the final write.
    assert outcome["writes"] <= 2 * elapsed + 2, (outcome, elapsed)
    assert outcome["writes"] >= 2
    assert seen, "no PROGRESS state was observed"
    for meta in seen:
        assert set(meta) >= {"current", "total", "progress", "message"}
        assert meta["total"] == 120 and 0 < meta["current"] <= 120
        assert meta["progress"] == pytest.approx(100 * meta["current"] / 120, abs=0.01)


def test_color_processing_job_covers_scenes_without_colours(worker: str, tmp_path: Path) -> None:
    from modomo.celery_app import app
    from modomo.tasks.color_tasks import process_scene_colors, run_color_processing_job

    write_unique_images(tmp_path / "new", 6)
    holder = create_job("import", {})  # ingest only: these scenes get no colours yet
    report = ingest(holder, expand_sources([str(tmp_path / "new")]))
    single, rest = report.scene_ids[0], report.scene_ids[1:]

    colors = app.AsyncResult(process_scene_colors.delay(str(single)).id).get(timeout=60)
    assert abs(sum(c["share"] for c in colors["palette"]) - 1) < 1e-3

    job_id = create_job("colors", {"limit": None})
    run_color_processing_job.delay(str(job_id), None)
    job = wait_for_job(job_id)
    assert job["status"] == "completed" and job["processed"] == job["total"] >= len(rest)
    with session_scope() as session:
        missing = session.scalar(
            select(func.count()).where(Scene.id.in_(report.scene_ids), Scene.colors.is_(None))
        )
    assert missing == 0


def test_limit_bounds_a_color_processing_job(worker: str, tmp_path: Path) -> None:
    from modomo.tasks.color_tasks import run_color_processing_job

    write_unique_images(tmp_path / "more", 5)
    ingest(create_job("import", {}), expand_sources([str(tmp_path / "more")]))
    job_id = create_job("colors", {"limit": 2})
    run_color_processing_job.delay(str(job_id), 2)
    job = wait_for_job(job_id)
    assert (job["status"], job["total"], job["processed"]) == ("completed", 2, 2)
