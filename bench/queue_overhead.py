"""Queue overhead: a colour job through Redis + PostgreSQL + one Celery worker vs a plain loop.

Both sides do the same analysis on the same images: read the stored image, decode it,
extract its palette. The queued side also pays for what the queue adds: messages through
Redis, the prefork hand-off, the job ledger and progress writes in PostgreSQL, and storing
each palette. The figure is ``queued time / direct time`` (target: at most 1.15), measured in
one run, plus the job-record writes per second.

Images: 300 distinct photographs made from the sample photos shipped inside scikit-image and
scikit-learn (random crops and mirror images, JPEG quality 90), read from where those
packages are installed.

Needs Redis and PostgreSQL on loopback (``make services``). It creates its own PostgreSQL
database and uses Redis database 13, and removes both when it ends.

Run: ``uv run python bench/queue_overhead.py [--images 300] [--batch-size 16]``
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image
from services import drop_services, fresh_services, sample_photos, start_worker

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/13"


def make_images(count: int, folder: Path) -> list[Path]:
    """``count`` distinct JPEGs: random crops (70-100 % of each side) and mirror images."""
    rng = np.random.default_rng(7)
    photos = sample_photos()
    paths = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        h = int(height * rng.uniform(0.7, 1.0))
        w = int(width * rng.uniform(0.7, 1.0))
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        crop = photo[y : y + h, x : x + w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(crop)).save(buffer, "JPEG", quality=90)
        path = folder / f"bench-{index:04d}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


WARM_UP = 16


def wait_until_final(job_id: object) -> None:
    """Poll the job's status lightly (one indexed SELECT every 20 ms, not to steal the CPU)."""
    from sqlalchemy import select

    from modomo.db.models import Job, JobStatus
    from modomo.db.session import get_engine

    with get_engine().connect() as connection:
        while connection.execute(select(Job.status).where(Job.id == job_id)).scalar() not in (
            JobStatus.FINAL
        ):
            connection.rollback()
            time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="scenes per task (default: MODOMO_BATCH_SIZE, 16)",
    )
    args = parser.parse_args()

    database, work = fresh_services(REDIS_URL)
    worker = None
    try:
        from modomo.celery_app import app
        from modomo.config import get_settings
        from modomo.db.migrate import upgrade
        from modomo.db.session import get_engine
        from modomo.jobs import create_job, describe_job, dispatch_batches
        from modomo.sources import expand_sources, ingest
        from modomo.tasks.color_tasks import process_colors_batch, scene_palette

        upgrade()
        batch_size = args.batch_size or get_settings().batch_size
        photos = work / "photos"
        photos.mkdir()
        make_images(args.images + WARM_UP, photos)
        paths = sorted(str(p) for p in photos.iterdir())
        warm_job = create_job("colors", {"bench": "warm-up"})
        warm = ingest(warm_job, expand_sources(paths[:WARM_UP]))
        job_id = create_job("colors", {"bench": "queue_overhead"})
        report = ingest(job_id, expand_sources(paths[WARM_UP:]))
        assert len(report.scene_ids) == args.images, report.failed
        from sqlalchemy import select

        from modomo.db.models import Scene
        from modomo.db.session import session_scope

        with session_scope() as session:
            keys = list(
                session.scalars(select(Scene.image_key).where(Scene.id.in_(report.scene_ids)))
            )

        worker, hostname = start_worker("color_processing")

        # Both sides warm up first (imports, connections, caches), so that the figures are
        # those of a long-lived worker: a warm-up job through the worker, a warm-up call here.
        dispatch_batches(warm_job, process_colors_batch, warm.scene_ids, batch_size)
        wait_until_final(warm_job)
        scene_palette(keys[0])

        # Direct: the same analysis in a loop in this process.
        start = time.perf_counter()
        for key in keys:
            scene_palette(key)
        direct_s = time.perf_counter() - start

        # The same loop with the worker's prefetching (decode the next image in a thread):
        # queued / this is what the queue itself costs.
        from modomo.batching import prefetch
        from modomo.tasks.color_tasks import load_scene_image, palette_json

        start = time.perf_counter()
        for _, loaded in prefetch(keys, load_scene_image):
            palette_json(loaded.result())
        prefetch_s = time.perf_counter() - start

        # Queued: from submission to the job record saying completed.
        start = time.perf_counter()
        task_ids = dispatch_batches(job_id, process_colors_batch, report.scene_ids, batch_size)
        wait_until_final(job_id)
        queued_s = time.perf_counter() - start
        job = describe_job(job_id)
        writes = sum(app.AsyncResult(t).get(timeout=30)["writes"] for t in task_ids)
        get_engine().dispose()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        drop_services(database, REDIS_URL, work)

    ratio = queued_s / direct_s
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"images: {args.images} distinct JPEGs from the scikit-image/scikit-learn sample photos")
    print(
        f"job: {job['status']}, {job['processed']} processed, {job['failed']} failed, "
        f"{len(task_ids)} batches of {batch_size}"
    )
    print(
        f"direct loop (decode + palette):       {direct_s:7.2f} s  "
        f"{args.images / direct_s:7.1f} images/s"
    )
    print(
        f"direct loop, prefetching like worker: {prefetch_s:7.2f} s  "
        f"{args.images / prefetch_s:7.1f} images/s"
    )
    print(
        f"queued (Redis + PostgreSQL + worker): {queued_s:7.2f} s  "
        f"{args.images / queued_s:7.1f} images/s"
    )
    print(f"job-record writes: {writes} in {queued_s:.2f} s = {writes / queued_s:.1f} writes/s")
    print(f"queue cost alone (queued / prefetching loop): {queued_s / prefetch_s:.3f}")
    print(
        f"ratio queued/direct: {ratio:.3f} (target <= 1.15) -> "
        f"{'met' if ratio <= 1.15 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
