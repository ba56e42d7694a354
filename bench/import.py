"""Hugging Face import: scenes per second and the worker's memory, through the real queue.

A dataset of ``--rows`` rows (default 2,000), each a distinct 256x192 JPEG in an ``Image``
column plus a caption and a class label, is built in a temporary folder and saved with
``save_to_disk`` (``--format disk``) or as one Parquet file (``--format parquet``). One worker
on the ``import`` queue (prefork, concurrency 1) imports it through
``modomo.tasks.import_tasks.import_huggingface_dataset`` against Redis and PostgreSQL, with
``HF_HUB_OFFLINE=1``, after a small warm-up import (the worker child imports ``datasets``
once, as a long-lived worker has).

Figures: scenes per second from sending the task to the job record saying completed; the
worker child's resident memory sampled every 50 ms against the job's progress, and its peak
(``VmHWM``). Targets: at least 50 scenes/s on a 2-core machine, and memory flat: the child's
heap (``RssAnon``) when all rows are counted no more than 4 MiB above what it was after the
first 500 (the images are ~10 KiB each: an import that kept the 1,500 rows between would
grow by 15 MiB). The heap is the measure because RSS also counts the pages of memory-mapped
files (``save_to_disk`` Arrow files are memory-mapped): clean page cache the kernel drops
under pressure, and which goes when the import ends; RSS and its peak are printed too.

A Parquet file is read through a ``datasets`` stream, which imports torch where it is
installed (~500 MiB resident, once): run with ``USE_TORCH=0`` to see an import worker
without it.

Needs Redis and PostgreSQL on loopback (``make services``). It creates its own PostgreSQL
database, uses Redis database 12 and a temporary folder, and removes all three when it ends.

Run: ``uv run python bench/import.py [--rows 2000] [--format disk|parquet]``
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from services import drop_services, fresh_services, start_worker

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/12"
WARM_UP_ROWS = 32
SIZE_WH = (256, 192)
TARGET_SCENES_S = 50.0
FLAT_MIB = 4.0
CHECKPOINT = 500


def jpeg(seed: int) -> bytes:
    """A distinct, photo-like (smooth) 256x192 JPEG: random colours at 16x12, upscaled."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(SIZE_WH, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def build_dataset(folder: Path, rows: int, first_seed: int, fmt: str) -> tuple[Path, int]:
    """Save ``rows`` rows as ``fmt``; returns the path and the bytes of images in it."""
    import datasets

    images = [jpeg(first_seed + i) for i in range(rows)]
    table = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": data, "path": f"{i:05d}.jpg"} for i, data in enumerate(images)],
            "caption": [f"room {i}" for i in range(rows)],
            "label": [i % 3 for i in range(rows)],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "caption": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["bedroom", "kitchen", "living_room"]),
            }
        ),
    )
    if fmt == "disk":
        path = folder
        datasets.DatasetDict({"train": table}).save_to_disk(str(path))
    else:
        folder.mkdir(parents=True)
        path = folder / "train.parquet"
        table.to_parquet(str(path))
    return path, sum(len(d) for d in images)


def status_kib(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile`` of a process, in KiB (Linux /proc)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in {"VmRSS", "VmHWM", "RssAnon", "RssFile"}:
            values[name] = int(rest.split()[0])
    return values


def loaded_torch(pid: int) -> bool:
    """Whether a process has torch's shared library mapped (``datasets`` streams import torch
    when it is installed, unless ``USE_TORCH=0``)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def worker_child(parent: int) -> int:
    """The prefork child of the worker (the process that runs the tasks)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise SystemExit("the worker has no child process")


class Sampler(threading.Thread):
    """Samples the child's memory every 50 ms until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append((time.perf_counter(), status_kib(self.pid)))
            self.stopped.wait(0.05)


def run_job(dataset: Path, rows: int, progress: list[tuple[float, int]] | None = None) -> dict:
    """Send one import and poll its record (one indexed SELECT every 20 ms) until final."""
    from sqlalchemy import select

    from modomo.db.models import Job, JobStatus
    from modomo.db.session import get_engine
    from modomo.jobs import create_job, describe_job
    from modomo.tasks.import_tasks import import_huggingface_dataset

    params = {"dataset": str(dataset), "split": "train", "offset": 0, "limit": rows}
    job_id = create_job("import", params)
    import_huggingface_dataset.apply_async(kwargs={"job_id": str(job_id), **params})
    with get_engine().connect() as connection:
        while True:
            status, processed, failed = connection.execute(
                select(Job.status, Job.processed, Job.failed).where(Job.id == job_id)
            ).one()
            connection.rollback()
            if progress is not None:
                progress.append((time.perf_counter(), processed + failed))
            if status in JobStatus.FINAL:
                break
            time.sleep(0.02)
    return describe_job(job_id)


def rss_when(samples: list, progress: list, scenes: int, key: str) -> tuple[int, float]:
    """The child's ``key`` memory (KiB) at the first moment ``scenes`` scenes were counted."""
    moment = next(t for t, done in progress if done >= scenes)
    return min(samples, key=lambda s: abs(s[0] - moment))[1][key], moment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--format", choices=["disk", "parquet"], default="disk")
    args = parser.parse_args()
    if args.rows <= CHECKPOINT:
        raise SystemExit(f"--rows must be more than {CHECKPOINT}")

    database, work = fresh_services(REDIS_URL)
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_HOME": str(work / "hf-home")})
    worker = None
    try:
        from modomo.config import get_settings
        from modomo.db.migrate import upgrade
        from modomo.db.session import get_engine

        upgrade()
        warm_path, _ = build_dataset(work / "warm", WARM_UP_ROWS, 10**6, args.format)
        path, image_bytes = build_dataset(work / "rooms", args.rows, 0, args.format)

        worker, hostname = start_worker("import")
        child = worker_child(worker.pid)

        start = time.perf_counter()
        warm = run_job(warm_path, WARM_UP_ROWS)
        warm_s = time.perf_counter() - start
        before = status_kib(child)

        sampler = Sampler(child)
        sampler.start()
        progress: list[tuple[float, int]] = []
        start = time.perf_counter()
        job = run_job(path, args.rows, progress)
        elapsed = time.perf_counter() - start
        sampler.stopped.set()
        sampler.join()
        after = status_kib(child)
        torch_in_child = loaded_torch(child)
        if worker_child(worker.pid) != child:
            raise SystemExit("the worker child was replaced during the run; figures void")
        chunk = get_settings().crawl_chunk_size
        get_engine().dispose()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        drop_services(database, REDIS_URL, work)

    samples = sampler.samples
    rss_500, t_500 = rss_when(samples, progress, CHECKPOINT, "VmRSS")
    anon_500, _ = rss_when(samples, progress, CHECKPOINT, "RssAnon")
    rss_end, _ = rss_when(samples, progress, args.rows, "VmRSS")
    anon_end, _ = rss_when(samples, progress, args.rows, "RssAnon")
    peak_run = max(s["VmRSS"] for _, s in samples)
    rate = args.rows / elapsed
    late_rate = (args.rows - CHECKPOINT) / (progress[-1][0] - t_500)
    growth_mib = (rss_end - rss_500) / 1024
    heap_growth_mib = (anon_end - anon_500) / 1024
    mib = 1024

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(
        f"dataset: {args.rows} rows, distinct {SIZE_WH[0]}x{SIZE_WH[1]} JPEGs "
        f"({image_bytes / args.rows / 1024:.1f} KiB each, {image_bytes / mib / mib:.1f} MiB "
        f"in all) + caption + class label, {args.format} "
        f"({'save_to_disk' if args.format == 'disk' else 'one Parquet file'}), HF_HUB_OFFLINE=1"
    )
    print(
        f"worker: -Q import -c 1 (prefork), Redis db 12 + PostgreSQL on loopback; "
        f"{chunk} rows per chunk"
    )
    print(
        f"warm-up: {WARM_UP_ROWS} rows, job {warm['status']} in {warm_s:.2f} s "
        f"(the child's first import loads datasets)"
    )
    print(
        f"job: {job['status']}, {job['processed']} processed, {job['failed']} failed, "
        f"total {job['total']}"
    )
    print(
        f"import: {elapsed:7.2f} s  {rate:7.1f} scenes/s  "
        f"(after row {CHECKPOINT}: {late_rate:.1f}/s)"
    )
    print(
        f"worker child RSS: before {before['VmRSS'] / mib:.1f} MiB, "
        f"at {CHECKPOINT} rows {rss_500 / mib:.1f} MiB, "
        f"at {args.rows} rows {rss_end / mib:.1f} MiB "
        f"(growth {growth_mib:+.1f} MiB), peak during the run {peak_run / mib:.1f} MiB, "
        f"VmHWM {after['VmHWM'] / mib:.1f} MiB, idle after the job {after['VmRSS'] / mib:.1f} MiB"
    )
    print(
        f"worker child RssAnon (heap): at {CHECKPOINT} rows {anon_500 / mib:.1f} MiB, "
        f"at {args.rows} rows {anon_end / mib:.1f} MiB "
        f"(growth {heap_growth_mib:+.1f} MiB); RssFile at the end "
        f"{after['RssFile'] / mib:.1f} MiB"
    )
    print(
        f"torch loaded in the worker child: {'yes' if torch_in_child else 'no'} "
        f"(USE_TORCH={os.environ.get('USE_TORCH', 'unset')})"
    )
    print(
        f"scenes/s: {rate:.1f} (target >= {TARGET_SCENES_S:g}) -> "
        f"{'met' if rate >= TARGET_SCENES_S else 'NOT met'}"
    )
    print(
        f"memory flat: heap growth {CHECKPOINT} -> {args.rows} rows {heap_growth_mib:+.1f} MiB "
        f"(target <= {FLAT_MIB:g} MiB) -> {'met' if heap_growth_mib <= FLAT_MIB else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
