"""AI worker host work at camera sizes: where the time goes around the models.

JPEGs of 1280x960, 1920x1440 and 4032x3024 pixels (the sample photos of scikit-image and
scikit-learn, resized, stored rotated with an EXIF orientation tag as phones do) with 5, 30
and 40 objects, through the detection pipeline (detect -> segment -> depth -> colours):

(a) STAND-IN models that return right-shaped outputs at once: N boxes of 0.2-12 % of the
    image, SAM-shaped 256x256 mask logits per box (pasted by the real code), depth at Depth
    Anything's output resolution. This measures the HOST, not the models: decoding, mask
    pasting, RLE, palettes, depth statistics and the depth PNG, per image and by stage, on 1
    and on 2 host processes (``modomo.inference.pipelined`` with ``HostProcesses``, as the
    AI worker runs them).
(b) the repo's TINY random-weight models (``scripts/build_random_models.py``, a detector kept
    to N boxes): time per image at each size, in-process, and queued through Redis +
    PostgreSQL + ``modomo worker --ai`` (one worker, concurrency 1), with the worker child's
    (and its host processes')
    peak RSS over its idle RSS (models loaded) on batches of 8 12-megapixel photos.

Also: the mean CIE76 ΔE between each object's palette from its ``SAMPLE_PIXELS``-pixel sample
and from all its pixels, on the sample photos at 4032x3024 with the stand-in's 40 masks.

Targets (issue 17, ratios in one run on a 2-core machine): stand-in on one host process at
most 150 ms per image at 1920x1440/30 and 400 ms at 4032x3024/40; tiny models 4032x3024/40 at
most 3x 1280x960/5 per image; two host processes at least 1.6x the images/s of one; queued at
least 0.9x in-process; worker child peak RSS at most 1.5 GB above idle; palettes within a
mean ΔE of 1.0.

Each run also prints the CPU time per image of the worker and its host processes, and the
targets the bound a 2-core machine sets: the most two host processes could gain over one
with their CPU time spread evenly over the cores (ceiling), and the least the tiny models'
4032x3024/40 could take (floor: its CPU time over the cores; and its time on the thread that
feeds the models, which the host work runs beside). Torch's thread count is the worker's: the
cores left beside the host processes (``MODOMO_TORCH_THREADS`` 0). With (b), the objects'
boxes' summed area in image areas: the boxes the masks are pasted in (their runs cost the
box's width times the logit rows under it, not its pixels).

Each in-process figure is the median of ``--repeats`` runs (1 and 2 host processes
interleaved), with every run's time beside it.

Run: ``uv run python bench/ai_host.py [--images 8] [--repeats 3] [--parts PARTS]``
(Redis and PostgreSQL on loopback for the queued part: ``make services``).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/13"
SIZES = ((1280, 960, 5), (1920, 1440, 30), (4032, 3024, 40))
STAGE_ORDER = (
    "decode",
    "prepare",
    "detect",
    "segment",
    "depth model",
    "masks",
    "depth",
    "colors",
    "store",
)
MODEL_STAGES = ("detect", "segment", "depth model")
"""The stages on the worker's thread that feeds the models (one torch thread here): with the
host work beside them, a scene takes at least their time."""


# --- inputs -------------------------------------------------------------------------------
def photo_jpegs(width: int, height: int, count: int) -> list[bytes]:
    """``count`` JPEGs (quality 90) of ``width`` x ``height`` once upright: the sample photos
    cropped to the aspect ratio and resized, stored rotated 90 degrees with EXIF orientation
    6 (the decoder turns them back, as for a phone's portrait shots)."""
    from services import sample_photos

    photos = sample_photos()
    out = []
    for index in range(count):
        rgb = photos[index % len(photos)]
        h, w = rgb.shape[:2]
        if w / h > width / height:
            crop_w = int(h * width / height)
            rgb = rgb[:, (w - crop_w) // 2 : (w - crop_w) // 2 + crop_w]
        else:
            crop_h = int(w * height / width)
            rgb = rgb[(h - crop_h) // 2 : (h - crop_h) // 2 + crop_h]
        image = Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height), Image.BICUBIC)
        if index % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # distinct pixels
        if index >= 2 * len(photos):  # more photos than that: distinct files all the same
            image = image.rotate(index // (2 * len(photos)), resample=Image.BICUBIC)
        stored = image.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
        buffer = io.BytesIO()
        stored.save(buffer, "JPEG", quality=90, exif=exif)
        out.append(buffer.getvalue())
    return out


# --- stand-in models ----------------------------------------------------------------------
class _Label:
    label = "stand-in@bench"


class StandInModels:
    """A model registry whose models answer at once with right-shaped outputs (see (a))."""

    device = "cpu"

    def __init__(self, boxes: int) -> None:
        self.boxes = boxes
        self._detector = _Model(weights=_Label(), backend="stand-in", detect=self.detect)
        self._segmenter = _Model(weights=_Label(), segment=self.segment)
        self._depth = _Model(estimate=self.estimate)

    def warm_up(self, stages: Any) -> None:
        pass

    def detector(self) -> Any:
        return self._detector

    def segmenter(self) -> Any:
        return self._segmenter

    def depth(self) -> Any:
        return self._depth

    def detect(self, rgbs: list[np.ndarray]) -> list[Any]:
        import supervision as sv

        from modomo.analysis.taxonomy import CATEGORIES

        names = sorted(CATEGORIES)
        found = []
        for rgb in rgbs:
            height, width = rgb.shape[:2]
            rng = np.random.default_rng(int(rgb[::97, ::89].sum()))
            area = np.exp(rng.uniform(np.log(0.002), np.log(0.12), self.boxes)) * width * height
            aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), self.boxes))
            w = np.minimum(np.sqrt(area * aspect), width - 1)
            h = np.minimum(area / w, height - 1)
            x = rng.uniform(0, width - w)
            y = rng.uniform(0, height - h)
            det = sv.Detections(
                xyxy=np.stack([x, y, x + w, y + h], axis=1).astype(np.float32),
                confidence=rng.uniform(0.3, 0.9, self.boxes).astype(np.float32),
            )
            picked = [names[i] for i in rng.integers(0, len(names), self.boxes)]
            det.data["category"] = np.array(picked, dtype=object)
            det.data["taxonomy_group"] = np.array(
                [CATEGORIES[c].group for c in picked], dtype=object
            )
            found.append(det)
        return found

    def segment(
        self, rgbs: list[np.ndarray], boxes: list[np.ndarray], sizes: list[tuple[int, int]]
    ) -> list[Any]:
        """Per box an ellipse inscribed in it, as 256x256 logits over the image (SAM 2.1's
        mask decoder resolution), pasted by the segmenter's own code."""
        import torch

        from modomo.models.segmenter import masks_from_logits

        out = []
        grid = (torch.arange(256, dtype=torch.float32) + 0.5) / 256
        for rgb, xyxy, (height, width) in zip(rgbs, boxes, sizes, strict=True):
            h, w = rgb.shape[:2]  # the models' copy: prompts in its pixels
            b = torch.from_numpy(np.asarray(xyxy, np.float32))
            cx = (b[:, 0] + b[:, 2]) / 2 / w
            cy = (b[:, 1] + b[:, 3]) / 2 / h
            rx = (b[:, 2] - b[:, 0]) / 2 / w
            ry = (b[:, 3] - b[:, 1]) / 2 / h
            dx = (grid[None, None, :] - cx[:, None, None]) / rx[:, None, None]
            dy = (grid[None, :, None] - cy[:, None, None]) / ry[:, None, None]
            logits = 8 * (1 - dx**2 - dy**2)
            scene = np.asarray(xyxy) * np.array([width / w, height / h] * 2)
            masks = masks_from_logits(logits, scene, (height, width))
            out.append((masks, np.ones(len(xyxy))))
        return out

    def estimate(self, rgbs: list[np.ndarray], sizes: list[tuple[int, int]]) -> list[Any]:
        from modomo.analysis.depth import DepthMap, depth_size

        maps = []
        for rgb, (height, width) in zip(rgbs, sizes, strict=True):
            rows, cols = depth_size(height, width, 518, round(518 * width / height), 1024)
            ramp = np.linspace(0.1, 1.0, rows, dtype=np.float32)[:, None]
            values = np.repeat(ramp, cols, axis=1) + np.float32(0.01) * (rgb[0, 0, 0] % 7)
            maps.append(DepthMap(values, "relative_inverse_depth", "stand-in@bench", height, width))
        return maps


class _Model:
    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


# --- in-process runs ----------------------------------------------------------------------
def run_in_process(
    pipeline: Any, jpegs: list[bytes], hosts: int, batch: int, *, processes: bool = True
) -> dict[str, Any]:
    """Decode, infer and finish ``jpegs`` through ``modomo.inference.pipelined`` on ``hosts``
    host processes (as the AI worker does; two threads each to wait on them) or, without
    ``processes``, ``hosts`` host threads; the stages' seconds land in ``pipeline.clock``."""
    from modomo.inference import HostProcesses, StageClock, pipelined
    from modomo.inference.host import single_threaded_libraries
    from modomo.models.device import reserve_host_cores, set_torch_threads

    pipeline.clock = clock = StageClock()
    pipeline.hosts = host_processes = HostProcesses(hosts) if processes else None
    reserve_host_cores(hosts)  # torch's threads leave the host work its cores, as in the worker
    set_torch_threads(0)
    threads = 2 * hosts if processes else hosts

    def load(index: int) -> Any:
        return pipeline.decode(jpegs[index], max_pixels=200_000_000)

    def infer(images: list[Any], _items: list[int]) -> Any:
        return pipeline.infer(images)

    def finish(_index: int, image: Any, inferred: Any) -> Any:
        return pipeline.finish(image, inferred)

    chunks = [list(range(i, min(i + batch, len(jpegs)))) for i in range(0, len(jpegs), batch)]
    single_threaded_libraries()  # as the worker's host pool does
    failed = objects = 0
    coverage = 0.0
    try:
        if host_processes is not None:  # started and imported, as in a warm worker
            host_processes.load(jpegs[0], max_pixels=200_000_000, input_side=pipeline.input_side)
            host_processes.new_session()
            clock.seconds.clear()
        with ThreadPoolExecutor(threads, thread_name_prefix="bench-host") as pool:
            cpu_started = tree_cpu_seconds()
            started = time.perf_counter()
            for outcome in pipelined(chunks, load, infer, finish, pool):
                if outcome.error is not None:
                    failed += 1
                    print(f"  scene {outcome.item} failed: {outcome.error!r}")
                else:
                    objects += len(outcome.result.objects)
                    coverage += box_coverage(outcome.result.objects)
            seconds = time.perf_counter() - started
            cpu = tree_cpu_seconds() - cpu_started
    finally:
        if host_processes is not None:
            host_processes.close()
        pipeline.hosts = None
    n = len(jpegs)
    return {
        "ms_per_image": 1000 * seconds / n,
        "images_per_s": n / seconds,
        "cpu_ms_per_image": 1000 * cpu / n,
        "stages": {k: 1000 * v / n for k, v in clock.seconds.items()},
        "failed": failed,
        "objects": objects,
        "coverage": coverage / max(1, n - failed),
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median time per image (the machine is shared: single runs wander), with
    ``spread``, every run's ms per image."""
    ordered = sorted(runs, key=lambda run: run["ms_per_image"])
    spread = "/".join(f"{run['ms_per_image']:.0f}" for run in ordered)
    return {**ordered[len(ordered) // 2], "spread": f"{spread} ms"}


def box_coverage(rows: list[dict[str, Any]]) -> float:
    """The summed area of a scene's object boxes over the image's (masks are pasted, encoded
    and sampled over the boxes: their cost follows it)."""
    if not rows or rows[0]["mask_rle"] is None:
        return 0.0
    height, width = rows[0]["mask_rle"]["size"]
    return sum(row["bbox"][2] * row["bbox"][3] for row in rows) / (height * width)


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and its live children (the
    host processes): what the run costs the machine, whatever its cores."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for process in (me, *me.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        total += times.user + times.system
    return total


def stage_line(stages: dict[str, float]) -> str:
    return ", ".join(f"{k} {stages[k]:.0f}" for k in STAGE_ORDER if k in stages)


# --- palettes: sampled vs every pixel -----------------------------------------------------------
def palette_delta_e(boxes: int, photos: int) -> dict[str, tuple[float, float]]:
    """Per way of sampling, over objects: the mean share-weighted CIE76 ΔE from each colour
    of the sampled palette to the nearest colour of the all-pixel palette, and the mean rise
    of the palette's fidelity error (``palette_delta_e`` over all the object's pixels).

    Ways: ``sampled`` (``SAMPLE_PIXELS`` of the object's pixels), and ``pipeline`` (those
    pixels looked up in the half-size DCT-scaled decode the AI worker makes of a 12-megapixel
    JPEG, as it does).
    """
    from modomo.analysis.colors import extract_palette
    from modomo.analysis.colors import palette_delta_e as fidelity
    from modomo.images import load_image
    from modomo.inference import INPUT_SIDE, SAMPLE_PIXELS
    from modomo.inference.pipeline import DEPTH_SHORT_SIDE

    models = StandInModels(boxes)
    matched: dict[str, list[float]] = {"sampled": [], "pipeline": []}
    cost: dict[str, list[float]] = {"sampled": [], "pipeline": []}
    for data in photo_jpegs(4032, 3024, photos):
        rgb = load_image(data, max_pixels=200_000_000).rgb
        reduced = load_image(data, max_pixels=200_000_000, reduced=(INPUT_SIDE, DEPTH_SHORT_SIDE))
        r = reduced.reduction
        det = models.detect([rgb])[0]
        masks, _ = models.segment([rgb], [det.xyxy], [rgb.shape[:2]])[0]
        for i, pending in enumerate(masks):
            mask = pending.paste()
            if not mask.area:
                continue
            rows, cols = mask.sample(SAMPLE_PIXELS, seed=i)
            crop = rgb[mask.y : mask.y + mask.shape[0], mask.x : mask.x + mask.shape[1]]
            inside = np.ascontiguousarray(mask.crop)
            full = extract_palette(np.ascontiguousarray(crop), inside)
            full_lab = np.array([c.lab for c in full.colors])
            ways = {
                "sampled": rgb[rows, cols],
                "pipeline": reduced.rgb[rows // r, cols // r],
            }
            for way, pixels in ways.items():
                palette = extract_palette(pixels[None])
                distance = [
                    c.share * np.min(np.linalg.norm(full_lab - np.array(c.lab), axis=1))
                    for c in palette.colors
                ]
                matched[way].append(sum(distance))
                cost[way].append(fidelity(crop, palette, inside) - fidelity(crop, full, inside))
    return {
        way: (float(np.mean(matched[way])), float(np.mean(cost[way])), len(matched[way]))
        for way in matched
    }


# --- queued -------------------------------------------------------------------------------
def queued_run(jpegs: list[bytes], env: dict[str, str], work: Path, batch: int) -> dict[str, Any]:
    """The same images as a detection job through one ``modomo worker --ai`` (Redis +
    PostgreSQL): seconds from dispatch to the job's end, and the worker child's idle and
    peak RSS."""
    from services import drop_services, fresh_services, spawn_ai_worker

    from modomo.artifacts import artifact_store
    from modomo.config import get_settings

    database, services_work = fresh_services(REDIS_URL)
    os.environ.update(env)
    # these services' settings (which the Celery app reads too) and artifact store
    get_settings.cache_clear()
    artifact_store.cache_clear()
    worker = None
    try:
        from modomo.celery_app import app
        from modomo.db.migrate import upgrade
        from modomo.jobs import create_job, describe_job, dispatch_batches
        from modomo.sources import expand_sources, ingest
        from modomo.tasks.detection_tasks import process_scenes_batch

        Path(os.environ["MODOMO_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        upgrade()
        folder = work / f"queued-{time.monotonic_ns()}"
        folder.mkdir()
        for i, data in enumerate(jpegs):
            (folder / f"photo-{i:03d}.jpg").write_bytes(data)
        job_id = create_job("detection", {"bench": "ai_host"})
        report = ingest(job_id, expand_sources([str(folder)]))
        assert len(report.scene_ids) == len(jpegs), report.failed
        worker, hostname = spawn_ai_worker()
        deadline = time.monotonic() + 600
        while not app.control.ping(destination=[hostname], timeout=1):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the AI worker did not start")
        child = _warm_child(worker.pid)
        idle = tree_rss_mib(child)
        sampler = _PeakRss(worker.pid)
        started = time.perf_counter()
        dispatch_batches(job_id, process_scenes_batch, report.scene_ids, batch)
        _wait_final(job_id)
        seconds = time.perf_counter() - started
        peak = sampler.stop()
        job = describe_job(job_id)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(60)
        drop_services(database, REDIS_URL, services_work)
    return {
        "images_per_s": len(jpegs) / seconds,
        "ms_per_image": 1000 * seconds / len(jpegs),
        "idle_mib": idle,
        "peak_mib": peak,
        "status": job["status"],
        "processed": job["processed"],
        "failed": job["failed"],
        "failures": [f.get("error") for f in job.get("failures") or []][:3],
    }


def _warm_child(pid: int) -> Any:
    """The worker's child once its models are loaded and its host processes started (their
    RSS steady for 3 s)."""
    import psutil

    deadline = time.monotonic() + 600
    last, steady_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        children = psutil.Process(pid).children()
        if children:
            rss = tree_rss_mib(children[0]) * 2**20
            if abs(rss - last) > 4 * 2**20:
                last, steady_since = rss, time.monotonic()
            elif time.monotonic() - steady_since > 3:
                return children[0]
        time.sleep(0.5)
    raise SystemExit("the AI worker's child did not settle")


def tree_rss_mib(process: Any) -> float:
    """RSS of a worker child and its host processes together, MiB."""
    import psutil

    total = process.memory_info().rss
    for host in process.children(recursive=True):
        try:
            total += host.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


class _PeakRss:
    """The largest RSS of a worker's children with their host processes, sampled every 0.1 s
    on a thread (a child the worker replaces takes its peak with it, so /proc's VmHWM at the
    end would miss it)."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.1):
            try:
                for child in psutil.Process(self.pid).children():
                    self.peak = max(self.peak, tree_rss_mib(child))
            except psutil.Error:
                continue

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self._stop.set()
        self._thread.join()
        return self.peak


def _wait_final(job_id: Any, timeout_s: float = 1800) -> None:
    from modomo.db.models import JobStatus
    from modomo.jobs import describe_job

    deadline = time.monotonic() + timeout_s
    while describe_job(job_id)["status"] not in JobStatus.FINAL:
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} did not finish in {timeout_s} s")
        time.sleep(0.2)


# --- main ---------------------------------------------------------------------------------
def ceiling(wall_ms: float, cpu_ms: float, cores: int) -> float:
    """The most a run of ``cpu_ms`` CPU per image could gain over one of ``wall_ms`` per image
    on ``cores`` cores: its CPU work spread evenly over all of them, nothing waiting."""
    return wall_ms / (cpu_ms / cores)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images per size and run")
    parser.add_argument("--batch", type=int, default=4, help="images per model batch")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per in-process figure (the median is kept)"
    )
    parser.add_argument("--palette-photos", type=int, default=8)
    parser.add_argument(
        "--parts",
        default="standin,tiny,queued,memory,palettes",
        help="comma-separated: standin (a), tiny (b), queued (b, needs tiny), memory, palettes",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    import torch

    from modomo.inference import STAGES, DetectionPipeline

    cores = len(os.sched_getaffinity(0))
    print(
        f"machine: {platform.machine()}, {cores} usable CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}; load average "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
    )
    jpegs = {(w, h, n): photo_jpegs(w, h, args.images) for w, h, n in SIZES}
    print(
        f"inputs: {args.images} JPEGs per size (sample photos, EXIF-rotated), model batches "
        f"of {args.batch}"
    )

    print("\n(a) STAND-IN models (right-shaped outputs at once): this measures the host")
    print("    ms per image by stage (summed over threads), then wall ms per image, images/s")
    standin: dict[tuple[int, int, int], dict[int, dict[str, Any]]] = {}
    for key, data in jpegs.items() if "standin" in parts else ():
        runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for _ in range(args.repeats):  # interleaved: a busy spell of the machine hits both
            for threads in (1, 2):
                pipeline = DetectionPipeline(StandInModels(key[2]), STAGES, batch_size=args.batch)
                run_in_process(pipeline, data[:2], threads, args.batch)  # warm caches
                runs[threads].append(run_in_process(pipeline, data, threads, args.batch))
        standin[key] = {threads: median_run(found) for threads, found in runs.items()}
        for threads, result in standin[key].items():
            print(
                f"  {key[0]}x{key[1]}/{key[2]:>2} objects, {threads} host process(es): "
                f"{result['ms_per_image']:7.0f} ms/image {result['images_per_s']:6.2f} images/s"
                f" (CPU {result['cpu_ms_per_image']:.0f} ms/image; runs {result['spread']})"
                f"  [{stage_line(result['stages'])}]"
            )

    print("\n(b) TINY random-weight models, in-process (host processes: cores - 1)")
    work = Path(tempfile.mkdtemp(prefix="modomo-ai-host-"))
    from ai_pipeline import _script, relabelled_detector

    models = _script("build_random_models").build(work / "models", "tiny")  # type: ignore[attr-defined]
    detector = relabelled_detector(models["yolo"], work / "models" / "yolo-taxonomy.pt")
    from modomo.config import load_settings
    from modomo.inference import default_host_threads
    from modomo.models.registry import ModelRegistry

    base_env = {
        "MODOMO_DETECTOR_WEIGHTS": str(detector),
        "MODOMO_SEGMENTER_WEIGHTS": str(models["sam2"]),
        "MODOMO_DEPTH_WEIGHTS": str(models["depth_anything"]),
        "MODOMO_DEPTH_FALLBACK_WEIGHTS": str(models["zoedepth"]),
        "MODOMO_DETECTOR_THRESHOLD": "0.000001",
        "MODOMO_DEVICE": "cpu",
    }
    tiny: dict[tuple[int, int, int], dict[str, Any]] = {}
    host_threads = default_host_threads()
    for key, data in jpegs.items() if "tiny" in parts else ():
        settings = load_settings(
            data_dir=work / "data",
            device="cpu",
            detector_weights=str(detector),
            segmenter_weights=str(models["sam2"]),
            depth_weights=str(models["depth_anything"]),
            depth_fallback_weights=str(models["zoedepth"]),
            detector_threshold=1e-6,
            detector_max_detections=key[2],
        )
        registry = ModelRegistry(settings)
        pipeline = DetectionPipeline(registry, STAGES, batch_size=args.batch)
        pipeline.load()
        run_in_process(pipeline, data[:2], host_threads, args.batch)
        tiny[key] = result = median_run(
            [run_in_process(pipeline, data, host_threads, args.batch) for _ in range(args.repeats)]
        )
        print(
            f"  {key[0]}x{key[1]}/{key[2]:>2} objects: {result['ms_per_image']:7.0f} ms/image "
            f"{result['images_per_s']:6.2f} images/s (CPU {result['cpu_ms_per_image']:.0f} "
            f"ms/image; runs {result['spread']}), {result['objects'] / len(data):.0f} "
            f"objects/image covering {result['coverage']:.1f} images  "
            f"[{stage_line(result['stages'])}]"
        )

    queued: dict[str, Any] = {}
    if "queued" in parts and tiny:
        print("\n    queued: Redis + PostgreSQL + modomo worker --ai (concurrency 1)")
        key = (1920, 1440, 30)
        env = {
            **base_env,
            "MODOMO_DETECTOR_MAX_DETECTIONS": str(key[2]),
            "MODOMO_AI_BATCH_SIZE": str(args.batch),
            "MODOMO_BATCH_SIZE": "16",
        }
        queued["throughput"] = q = queued_run(
            photo_jpegs(key[0], key[1], 2 * args.images), env, work, 16
        )
        print(
            f"  {key[0]}x{key[1]}/{key[2]}: {q['ms_per_image']:7.0f} ms/image "
            f"{q['images_per_s']:6.2f} images/s ({q['status']}, {q['processed']} processed, "
            f"{q['failed']} failed) vs in-process {tiny[key]['images_per_s']:.2f} images/s"
        )
    if "memory" in parts:
        print(
            "\n    memory: the worker child and its host processes on batches of 8 12-megapixel"
            " photos"
        )
        big = (4032, 3024, 40)
        env = {
            **base_env,
            "MODOMO_DETECTOR_MAX_DETECTIONS": str(big[2]),
            "MODOMO_AI_BATCH_SIZE": "8",
            "MODOMO_BATCH_SIZE": "16",
        }
        queued["memory"] = m = queued_run(photo_jpegs(4032, 3024, 16), env, work, 16)
        print(
            f"  {big[0]}x{big[1]}/{big[2]}, batches of 8: child + hosts idle (models loaded) "
            f"{m['idle_mib']:.0f} MiB, peak {m['peak_mib']:.0f} MiB "
            f"(+{m['peak_mib'] - m['idle_mib']:.0f} MiB); {m['status']}, {m['processed']} "
            f"processed {m['failures'] or ''}"
        )

    from modomo.inference import SAMPLE_PIXELS

    palettes = {}
    if "palettes" in parts:
        palettes = palette_delta_e(40, args.palette_photos)
        print(
            "\npalettes vs all pixels' palettes (sample photos at 4032x3024, the stand-in's "
            "masks; ΔE: each sampled colour to the nearest full colour, share-weighted)"
        )
        labels = {
            "sampled": f"{SAMPLE_PIXELS} sampled pixels",
            "pipeline": f"{SAMPLE_PIXELS} sampled pixels of the half-size decode (the worker's)",
        }
        for way, (matched, cost, objects) in palettes.items():
            print(
                f"  {labels[way]}: mean ΔE {matched:.2f} over {objects} objects; fidelity cost "
                f"{cost:+.3f} ΔE"
            )

    print("\ntargets")
    mid, big, small = (1920, 1440, 30), (4032, 3024, 40), (1280, 960, 5)
    if standin:
        a_mid, a_big = standin[mid][1]["ms_per_image"], standin[big][1]["ms_per_image"]
        print(f"  stand-in 1920x1440/30, 1 process: {a_mid:.0f} ms <= 150: {verdict(a_mid <= 150)}")
        print(f"  stand-in 4032x3024/40, 1 process: {a_big:.0f} ms <= 400: {verdict(a_big <= 400)}")
        for key in SIZES:
            one, two = standin[key][1], standin[key][2]
            gain = two["images_per_s"] / one["images_per_s"]
            print(
                f"  stand-in {key[0]}x{key[1]}/{key[2]} two processes over one: {gain:.2f}x "
                f">= 1.6: {verdict(gain >= 1.6)} (ceiling on {cores} cores: "
                f"{ceiling(one['ms_per_image'], two['cpu_ms_per_image'], cores):.2f}x)"
            )
    if tiny:
        growth = tiny[big]["ms_per_image"] / tiny[small]["ms_per_image"]
        floor = tiny[big]["cpu_ms_per_image"] / cores / tiny[small]["ms_per_image"]
        models = sum(tiny[big]["stages"].get(stage, 0.0) for stage in MODEL_STAGES)
        print(
            f"  tiny models 4032x3024/40 over 1280x960/5: {growth:.2f}x <= 3: "
            f"{verdict(growth <= 3)} (floor on {cores} cores: {floor:.2f}x; the models' "
            f"thread alone: {models / tiny[small]['ms_per_image']:.2f}x)"
        )
    if "throughput" in queued:
        ratio = queued["throughput"]["images_per_s"] / tiny[mid]["images_per_s"]
        print(
            f"  queued over in-process (1920x1440/30): {ratio:.2f} >= 0.9: {verdict(ratio >= 0.9)}"
        )
    if "memory" in queued:
        rise = queued["memory"]["peak_mib"] - queued["memory"]["idle_mib"]
        print(
            f"  worker child + host processes, peak over idle: {rise:.0f} MiB <= 1536: "
            f"{verdict(rise <= 1536)}"
        )
    if palettes:
        delta = palettes["pipeline"][0]
        print(f"  palettes (the worker's) mean ΔE {delta:.2f} <= 1.0: {verdict(delta <= 1.0)}")


if __name__ == "__main__":
    main()
