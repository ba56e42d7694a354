"""Dataset export: seconds and peak memory per format as the number of scenes grows.

Builds a catalogue of synthetic scenes on the embedded default (a SQLite database and a local
artifact store in a temporary folder): each scene a distinct 160x120 PNG with ``--objects``
detected objects (default 10: a box, a COCO RLE mask, a category of the taxonomy, depth
statistics). Then, at ``--sizes`` scenes (default 5,000 and 20,000; the catalogue grows
between them), exports it in each format (``coco``, ``yolo`` with segmentation polygons,
``hf``), each export in a fresh ``modomo export`` subprocess, and reports its wall time and
the subprocess's peak resident memory (``ru_maxrss`` of the child).

Targets: peak RSS under 500 MB, and growing less than 10% from the smallest to the largest
size (an export that held the dataset in memory would grow with it).

Run: ``uv run python bench/export.py [--sizes 5000,20000] [--objects 10]``
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FORMATS = (("coco", []), ("yolo", ["--yolo-task", "segment"]), ("hf", []))
TARGET_PEAK_MB = 500.0
TARGET_GROWTH = 0.10
SIZE_WH = (160, 120)
INSERT_CHUNK = 1000


def _image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(SIZE_WH, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _objects(rng: np.random.Generator, count: int) -> list[dict]:
    from modomo.analysis.masks import encode_rle
    from modomo.analysis.taxonomy import CATEGORIES

    names = sorted(CATEGORIES)
    width, height = SIZE_WH
    rows = []
    for _ in range(count):
        w, h = (int(v) for v in rng.integers(8, 60, size=2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        mask = np.zeros((height, width), bool)
        mask[y : y + h, x : x + w] = True
        category = CATEGORIES[names[int(rng.integers(len(names)))]]
        rows.append(
            {
                "bbox": [float(x), float(y), float(w), float(h)],
                "category": category.name,
                "taxonomy_group": category.group,
                "confidence": float(rng.uniform(0.3, 1.0)),
                "mask_rle": encode_rle(mask),
                "mask_area": int(w * h),
                "depth_median": float(rng.uniform(0.5, 5)),
                "depth_min": 0.5,
                "depth_max": 5.0,
                "models": {"detector": "yolo11n.pt@bench", "segmenter": "sam2.1-hiera-tiny@bench"},
            }
        )
    return rows


def grow_catalogue(start: int, stop: int, objects: int) -> None:
    """Add scenes ``start`` .. ``stop - 1`` (images in the artifact store, rows in the DB)."""
    import hashlib

    from sqlalchemy import insert

    from modomo.artifacts import artifact_store
    from modomo.db.models import DetectedObject, Scene, utcnow
    from modomo.db.session import session_scope
    from modomo.images import image_key

    store = artifact_store()
    rng = np.random.default_rng(start)
    rooms = ["living_room", "bedroom", "kitchen", "bathroom", "dining_room"]
    for chunk in range(start, stop, INSERT_CHUNK):
        scenes, rows = [], []
        for index in range(chunk, min(chunk + INSERT_CHUNK, stop)):
            data = _image(index)
            sha = hashlib.sha256(data).hexdigest()
            key = store.put_bytes(image_key(sha, "PNG"), data)
            sid = uuid.uuid4()
            now = utcnow()
            scenes.append(
                {
                    "id": sid,
                    "source": "folder",
                    "source_key": f"bench:{index}",
                    "image_key": key,
                    "sha256": sha,
                    "width": SIZE_WH[0],
                    "height": SIZE_WH[1],
                    "room_type": rooms[index % len(rooms)],
                    "status": "ingested",
                    "meta": {},
                    "created_at": now,
                    "updated_at": now,
                }
            )
            for obj in _objects(rng, objects):
                rows.append({**obj, "id": uuid.uuid4(), "scene_id": sid, "created_at": now})
        with session_scope() as session:
            session.execute(insert(Scene), scenes)
            session.execute(insert(DetectedObject), rows)


def export_once(fmt: str, extra: list[str], out: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run one ``modomo export`` subprocess; returns (seconds, its peak RSS in MB).

    ``os.wait4`` returns the resource usage of that one child, so each export's peak is its
    own (``RUSAGE_CHILDREN`` would report the largest child so far).
    """
    argv = [sys.executable, "-m", "modomo.cli", "export", "--format", fmt, "--out", str(out)]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([*argv, *extra], cwd=REPO, env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if process.returncode:
            log.seek(0)
            raise RuntimeError(f"export {fmt} failed:\n{log.read().decode(errors='replace')}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000")
    parser.add_argument("--objects", type=int, default=10)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    work = Path(tempfile.mkdtemp(prefix="modomo-bench-export-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODOMO_", "REDIS", "CELERY"))}
    env.update({"MODOMO_DATA_DIR": str(work / "data"), "COLUMNS": "120"})
    os.environ.update(env)
    for name in [k for k in os.environ if k.startswith(("REDIS", "CELERY", "DATABASE_URL"))]:
        del os.environ[name]
    from modomo.config import get_settings
    from modomo.db.migrate import upgrade

    get_settings.cache_clear()
    upgrade()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; SQLite + local artifacts in {work}"
    )
    print(f"scenes: {SIZE_WH[0]}x{SIZE_WH[1]} PNG, {args.objects} objects each (box + RLE mask)")
    results: dict[str, dict[int, tuple[float, float]]] = {fmt: {} for fmt, _ in FORMATS}
    built = 0
    try:
        for size in sizes:
            started = time.perf_counter()
            grow_catalogue(built, size, args.objects)
            built = size
            print(f"catalogue: {size:,} scenes ({time.perf_counter() - started:.0f} s to build)")
            for fmt, extra in FORMATS:
                out = work / f"{fmt}-{size}"
                results[fmt][size] = export_once(fmt, extra, out, env)
                shutil.rmtree(out)
                seconds, peak = results[fmt][size]
                print(f"  {fmt:5s} {size:>7,} scenes: {seconds:7.1f} s, peak RSS {peak:6.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"{'format':6s} "
        + " ".join(f"{f'{s:,} s':>10s} {'peak MB':>8s}" for s in sizes)
        + "  growth"
    )
    verdicts = []
    for fmt, _ in FORMATS:
        row = results[fmt]
        growth = row[sizes[-1]][1] / row[sizes[0]][1] - 1
        peak = max(p for _, p in row.values())
        cells = " ".join(f"{row[s][0]:10.1f} {row[s][1]:8.0f}" for s in sizes)
        print(f"{fmt:6s} {cells}  {growth:+.1%}")
        verdicts.append((fmt, peak, growth))
    for fmt, peak, growth in verdicts:
        met = peak < TARGET_PEAK_MB and growth < TARGET_GROWTH
        print(
            f"{fmt}: peak {peak:.0f} MB (target < {TARGET_PEAK_MB:.0f}), growth "
            f"{growth:+.1%} (target < {TARGET_GROWTH:.0%}) -> {'met' if met else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
