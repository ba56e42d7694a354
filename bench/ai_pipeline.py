"""AI pipeline throughput: detect -> segment -> depth -> colours through Celery vs a loop.

Three ways to run the same models on the same images (N synthetic interior scenes, 512x512):

- queued: a detection job through the broker, the job database and one AI worker
  (``modomo worker --ai --warmup``, prefork, concurrency 1), timed from dispatch to the job
  record saying completed; results stored (objects, RLE masks, depth PNGs);
- (a) direct: the same :class:`modomo.inference.DetectionPipeline` called in a loop in this
  process on the same batches (decode included, nothing stored);
- (b) the original Modomo scraper's pattern: one call per image that builds its models every
  time (measured on a few images, in-process, so without any queue cost: a generous baseline).

Targets: queued >= 0.85 x (a) and >= 20 x (b). Also reported: the AI worker's peak RSS and,
on CUDA, its GPU memory (nvidia-smi) and absolute images per second.

Weights: built from configs with random weights (``scripts/build_random_models.py``; ``--size
real`` is the compute of the default checkpoints: yolo11n, SAM 2.1 Hiera-tiny, Depth Anything
V2 Small), because weights cannot be downloaded on these machines. A random detector ranks one
class first everywhere, so its 80 classes are renamed after taxonomy categories (every box is
kept), and it runs at threshold 1e-6 with at most ``--boxes`` boxes per image: SAM decodes that
many prompts per image, as on a furnished room.

Detectors (``--detector``): ``yolo`` (yolo11n, its classes renamed as below), ``grounding-dino``
(grounding-dino-tiny's architecture, every taxonomy prompt: 150 prompts in captions under its
256-token limit, one forward pass per caption), ``owlv2`` (owlv2-base-patch16's architecture,
every prompt a query embedded once) or ``yoloe`` (YOLOE-11s, the prompts'
embeddings computed first by a stand-in text encoder, as ``models pull`` caches them). The
detector alone is timed first (``--detector-only`` stops there).

Backends: ``redis-pg`` (Redis DB 13 and a throw-away PostgreSQL database on loopback, as in
production) or ``sqlite`` (the embedded SQLite broker and database, for machines without
Redis/PostgreSQL).

Run: ``uv run python bench/ai_pipeline.py [--images 64] [--size tiny|real] [--backend redis-pg]
[--detector yolo|grounding-dino|owlv2|yoloe]``
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from services import spawn_ai_worker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/13"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _script(name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_images(count: int, folder: Path) -> list[str]:
    """``count`` synthetic interior scenes as PNG files (the fixture detector's generator)."""
    import io

    import numpy as np
    from PIL import Image

    make_scene = _script("train_fixture_detector").make_scene  # type: ignore[attr-defined]
    rng = np.random.default_rng(11)
    paths = []
    for index in range(count):
        rgb, _, _ = make_scene(rng, 512)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, "PNG")
        path = folder / f"scene-{index:04d}.png"
        path.write_bytes(buffer.getvalue())
        paths.append(str(path))
    return paths


def relabelled_detector(weights: Path, out: Path) -> Path:
    """The random YOLO checkpoint with its classes named after taxonomy categories."""
    from ultralytics import YOLO

    from modomo.analysis.taxonomy import CATEGORIES

    model = YOLO(str(weights), task="detect")
    categories = sorted(CATEGORIES)
    model.model.names = {i: categories[i % len(categories)] for i in model.model.names}
    model.save(out)
    return out


def detector_weights(backend: str, models: dict[str, Path], work: Path) -> Path:
    """The detector's weights for ``backend``; for YOLOE, its prompt embeddings computed and
    cached beside them first (the stand-in text encoder placed where ``models pull`` puts
    MobileCLIP's)."""
    if backend == "yolo":
        return relabelled_detector(models["yolo"], work / "models" / "yolo-taxonomy.pt")
    if backend in ("grounding-dino", "owlv2"):
        return models[backend.replace("-", "_")]
    import shutil

    from modomo.analysis.taxonomy import PromptTable
    from modomo.models import Weights
    from modomo.models.detectors import embed_prompts

    cache = work / "model-cache"
    (cache / "ultralytics").mkdir(parents=True, exist_ok=True)
    shutil.copy(models["yoloe_text_encoder"], cache / "ultralytics" / "mobileclip_blt.ts")
    weights = models["yoloe"]
    embed_prompts(Weights("detector", str(weights), weights, "local"), PromptTable(), cache)
    return weights


def wait_until_final(job_id: object, timeout_s: float = 1200) -> None:
    from sqlalchemy import select

    from modomo.db.models import Job, JobStatus
    from modomo.db.session import get_engine

    deadline = time.perf_counter() + timeout_s
    with get_engine().connect() as connection:
        while connection.execute(select(Job.status).where(Job.id == job_id)).scalar() not in (
            JobStatus.FINAL
        ):
            connection.rollback()
            if time.perf_counter() > deadline:
                raise SystemExit(f"job {job_id} did not finish in {timeout_s} s")
            time.sleep(0.05)


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of ``pid`` and its children, the largest, in MiB."""
    import psutil

    peaks = []
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except (FileNotFoundError, psutil.NoSuchProcess):
            continue
    return max(peaks, default=0.0)


def gpu_memory_mib(pids: set[int]) -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    used = [
        float(line.split(",")[1].split()[0])
        for line in out.splitlines()
        if line.strip() and int(line.split(",")[0]) in pids
    ]
    return max(used, default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", choices=("tiny", "real"), default="real")
    parser.add_argument("--backend", choices=("redis-pg", "sqlite"), default="redis-pg")
    parser.add_argument("--boxes", type=int, default=8, help="detections per image")
    parser.add_argument("--ai-batch-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16, help="scenes per task")
    parser.add_argument("--baseline-images", type=int, default=4, help="images for (b)")
    parser.add_argument(
        "--detector", choices=("yolo", "grounding-dino", "owlv2", "yoloe"), default="yolo"
    )
    parser.add_argument(
        "--detector-only", action="store_true", help="time the detector alone, then stop"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="modomo-ai-bench-"))
    models = _script("build_random_models").build(work / "models", args.size)  # type: ignore[attr-defined]
    detector = detector_weights(args.detector, models, work)
    env = {
        "MODOMO_DATA_DIR": str(work / "data"),
        "MODOMO_DETECTOR": args.detector,
        "MODOMO_DETECTOR_WEIGHTS": str(detector),
        "MODOMO_SEGMENTER_WEIGHTS": str(models["sam2"]),
        "MODOMO_DEPTH_WEIGHTS": str(models["depth_anything"]),
        "MODOMO_DEPTH_FALLBACK_WEIGHTS": str(models["zoedepth"]),
        "MODOMO_DETECTOR_THRESHOLD": "0.000001",
        "MODOMO_DETECTOR_MAX_DETECTIONS": str(args.boxes),
        "MODOMO_AI_BATCH_SIZE": str(args.ai_batch_size),
        "MODOMO_BATCH_SIZE": str(args.batch_size),
    }
    database = None
    if args.backend == "redis-pg":
        import psycopg
        import redis

        database = f"modomo_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        redis.Redis.from_url(REDIS_URL).flushdb()
        env["MODOMO_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        env["REDIS_URL"] = REDIS_URL
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.update(env)
    worker = None
    try:
        from sqlalchemy import select

        from modomo.celery_app import app
        from modomo.config import get_settings
        from modomo.db.migrate import upgrade
        from modomo.db.models import Scene
        from modomo.db.session import session_scope
        from modomo.images import load_image
        from modomo.inference import STAGES, DetectionPipeline
        from modomo.jobs import create_job, describe_job, dispatch_batches
        from modomo.models.registry import ModelRegistry
        from modomo.sources import expand_sources, ingest
        from modomo.tasks.detection_tasks import process_scenes_batch

        settings = get_settings()
        (work / "data").mkdir(parents=True, exist_ok=True)
        upgrade()
        photos = work / "photos"
        photos.mkdir()
        paths = make_images(args.images + args.ai_batch_size, photos)
        warm_job = create_job("detection", {"bench": "warm-up"})
        warm = ingest(warm_job, expand_sources(paths[: args.ai_batch_size]))
        job_id = create_job("detection", {"bench": "ai_pipeline"})
        report = ingest(job_id, expand_sources(paths[args.ai_batch_size :]))
        assert len(report.scene_ids) == args.images, report.failed
        with session_scope() as session:
            key_of = dict(
                session.execute(
                    select(Scene.id, Scene.image_key).where(Scene.id.in_(report.scene_ids))
                ).all()
            )
        from modomo.artifacts import artifact_store

        blobs = [artifact_store().get_bytes(key_of[sid]) for sid in report.scene_ids]

        def decode(data: bytes):  # noqa: ANN202
            return load_image(data, max_pixels=settings.max_image_pixels)

        # (a) direct: the same pipeline, same batches, in this process (after a warm-up).
        registry = ModelRegistry(settings)
        pipeline = DetectionPipeline(
            registry, STAGES, batch_size=args.ai_batch_size, palette_size=settings.palette_size
        )
        pipeline.load()
        pipeline.run([decode(b) for b in blobs[: args.ai_batch_size]])
        sync = _sync(registry.device)
        sync()
        # the detector alone, on the models' copies of the scenes
        views = [pipeline.prepare(decode(b)).view for b in blobs]
        start = time.perf_counter()
        for i in range(0, len(views), args.ai_batch_size):
            registry.detector().detect(views[i : i + args.ai_batch_size])
        sync()
        detector_s = time.perf_counter() - start
        print(
            f"detector alone ({args.detector}, {args.size}): {detector_s:8.2f} s "
            f"{len(views) / detector_s:8.2f} images/s",
            flush=True,
        )
        if args.detector_only:
            return
        start = time.perf_counter()
        objects = 0
        for i in range(0, len(blobs), args.batch_size):
            results = pipeline.run([decode(b) for b in blobs[i : i + args.batch_size]])
            objects += sum(len(r.objects) for r in results if not isinstance(r, BaseException))
        sync()
        direct_s = time.perf_counter() - start

        # (b) the original pattern: models built for every image.
        start = time.perf_counter()
        for data in blobs[: args.baseline_images]:
            fresh = ModelRegistry(settings)
            DetectionPipeline(fresh, STAGES, batch_size=1).run([decode(data)])
            del fresh
        sync()
        baseline_s = (time.perf_counter() - start) / args.baseline_images * args.images
        del registry, pipeline
        gc.collect()
        _empty(settings.device)

        # queued: one AI worker, warmed up, then the timed job.
        worker, hostname = spawn_ai_worker()
        # Broadcast ping needs Redis; on SQLite the warm-up job itself shows the worker is up.
        while args.backend == "redis-pg" and not app.control.ping(
            destination=[hostname], timeout=1
        ):
            if worker.poll() is not None:
                raise SystemExit("the AI worker did not start")
        dispatch_batches(warm_job, process_scenes_batch, warm.scene_ids, args.batch_size)
        wait_until_final(warm_job)
        start = time.perf_counter()
        dispatch_batches(job_id, process_scenes_batch, report.scene_ids, args.batch_size)
        wait_until_final(job_id)
        queued_s = time.perf_counter() - start
        job = describe_job(job_id)
        rss = peak_rss_mib(worker.pid)
        import psutil

        pids = {worker.pid, *(p.pid for p in psutil.Process(worker.pid).children(recursive=True))}
        gpu = gpu_memory_mib(pids) if registry_device_is_cuda(settings.device) else None
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(60)
        if database is not None:
            import psycopg
            import redis

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            redis.Redis.from_url(REDIS_URL).flushdb()

    device = _device_name(settings.device)
    n = args.images
    print(
        f"device: {device}; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    print(
        f"models: random weights, {args.size} architectures, detector {args.detector}; "
        f"{args.boxes} boxes per image; backend {args.backend}"
    )
    print(
        f"images: {n} synthetic 512x512 scenes; tasks of {args.batch_size} scenes, "
        f"model batches of {args.ai_batch_size}"
    )
    print(
        f"job: {job['status']}, {job['processed']} processed, {job['failed']} failed; "
        f"{objects} objects in the direct run"
    )
    print(f"(a) direct loop, models loaded once: {direct_s:8.2f} s  {n / direct_s:8.2f} images/s")
    print(
        f"(b) models built per image:          {baseline_s:8.2f} s  {n / baseline_s:8.2f} "
        f"images/s (from {args.baseline_images} images)"
    )
    print(f"queued through Celery + worker:      {queued_s:8.2f} s  {n / queued_s:8.2f} images/s")
    print(f"AI worker peak RSS: {rss:.0f} MiB" + (f"; GPU memory: {gpu:.0f} MiB" if gpu else ""))
    ratio_a, ratio_b = direct_s / queued_s, baseline_s / queued_s
    print(
        f"queued / (a): {ratio_a:.3f} (target >= 0.85) -> {'met' if ratio_a >= 0.85 else 'NOT met'}"
    )
    print(
        f"queued / (b): {ratio_b:.1f}x (target >= 20x) -> {'met' if ratio_b >= 20 else 'NOT met'}"
    )


def registry_device_is_cuda(name: str) -> bool:
    from modomo.models.device import resolve_device

    return resolve_device(name).startswith("cuda")


def _device_name(name: str) -> str:
    import torch

    from modomo.models.device import resolve_device

    device = resolve_device(name)
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name()})"
    return device


def _sync(device: str):  # noqa: ANN202
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _empty(name: str) -> None:
    from modomo.models.device import empty_cache, resolve_device

    empty_cache(resolve_device(name))


if __name__ == "__main__":
    main()
