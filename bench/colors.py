"""Benchmark: modomo.analysis.colors.extract_palette vs the original scraper's palette method.

Usage::

    uv run python bench/colors.py [--repeat 5] [--k 5] [--limit N] [--per-image]

Images are real photographs shipped inside installed packages (nothing is copied into the
repo): every png/jpg/gif/tif file in the directory of ``skimage.data`` plus
``sklearn/datasets/images/*.jpg``. Each file is decoded once with Pillow (first frame, converted
to RGB; files that fail to open are skipped) and the same arrays are fed to both methods, so
decoding is not timed.

* **Speed**: for each repeat, the wall time (``time.perf_counter``) of one pass over all images
  is measured per method, the two methods alternating within each repeat so that both see the
  same machine conditions; images/second = number of images / *median* pass time. Both run in
  this one process; scikit-learn's KMeans uses its default (OpenMP) threads, ours is
  single-threaded numpy.
* **Fidelity**: mean CIE76 Delta E*ab from every full-resolution pixel to its nearest palette
  colour (:func:`modomo.analysis.colors.palette_delta_e`, used for both methods), averaged over
  images (lower is better); also per image: on how many images ours is at least as faithful
  and the median / range of the per-image ratio.

The baseline, :func:`baseline_palette`, reproduces the original Modomo scraper: drop
near-black and near-white pixels, sample 10,000 of the rest (numpy seed 42), run
``sklearn.cluster.KMeans(n_clusters=5, n_init=10, random_state=42)`` in RGB; palette = cluster
centres, shares = label counts / sample size. When fewer than 5 pixels survive the filter (e.g.
a black-and-white test chart) it falls back to all pixels so that it can still answer.

It is a report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import skimage.data
import sklearn.datasets
from PIL import Image
from sklearn.cluster import KMeans

from modomo.analysis.colors import Palette, extract_palette, palette_delta_e

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff"}


def load_images(limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Decode the packaged photographs to (H, W, 3) uint8 RGB arrays."""
    skimage_dir = Path(os.path.dirname(skimage.data.__file__))
    sklearn_dir = Path(os.path.dirname(sklearn.datasets.__file__)) / "images"
    paths = sorted(p for p in skimage_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    paths += sorted(sklearn_dir.glob("*.jpg"))
    images: list[tuple[str, np.ndarray]] = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im.seek(0)
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Exception as exc:  # skip anything Pillow cannot read
            print(f"skipped {path.name}: {exc}")
            continue
        images.append((path.name, np.ascontiguousarray(rgb)))
    return images[:limit] if limit else images


def baseline_palette(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original scraper's palette: RGB k-means on 10k sampled mid-tone pixels.

    Args:
        rgb: (H, W, 3) uint8 image.

    Returns:
        ``(centres, shares)``: (5, 3) float RGB cluster centres (0-255) and (5,) shares.
    """
    pixels = rgb.reshape(-1, 3)
    near_black = np.all(pixels < 20, axis=1)
    near_white = np.all(pixels > 235, axis=1)
    kept = pixels[~(near_black | near_white)]
    if kept.shape[0] < 5:
        kept = pixels
    rng = np.random.default_rng(42)
    n = min(10_000, kept.shape[0])
    sample = kept[rng.choice(kept.shape[0], size=n, replace=False)].astype(np.float64)
    km = KMeans(n_clusters=5, n_init=10, random_state=42).fit(sample)
    shares = np.bincount(km.labels_, minlength=5) / n
    return km.cluster_centers_, shares


def ours_palette(rgb: np.ndarray, k: int) -> Palette:
    return extract_palette(rgb, k=k, seed=0)


def time_interleaved(
    methods: dict[str, Callable[[np.ndarray], object]], images: list[np.ndarray], repeat: int
) -> tuple[dict[str, list[float]], dict[str, list[object]]]:
    """Time one pass over all images per method, alternating methods within each repeat.

    Interleaving makes both methods see the same machine conditions (this matters on shared
    or throttled CPUs). Returns per-method pass times (seconds) and the last pass's outputs.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    outputs: dict[str, list[object]] = {}
    for _ in range(repeat):
        for name, fn in methods.items():
            start = time.perf_counter()
            outputs[name] = [fn(img) for img in images]
            times[name].append(time.perf_counter() - start)
    return times, outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per method")
    parser.add_argument("--k", type=int, default=5, help="palette size for our method")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--per-image", action="store_true", help="print per-image Delta E")
    args = parser.parse_args(argv)

    named = load_images(args.limit)
    names = [n for n, _ in named]
    images = [img for _, img in named]
    n_px = sum(img.shape[0] * img.shape[1] for img in images)
    print(f"images: {len(images)} ({n_px / 1e6:.1f} Mpx total)")
    print(
        f"machine: {platform.processor() or platform.machine()} | os.cpu_count={os.cpu_count()}"
        f" | {platform.system()} {platform.release()} | python {platform.python_version()}"
    )

    # Warm up both (imports, allocator, OpenMP pools) on one image.
    ours_palette(images[0], args.k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        baseline_palette(images[0])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        times, outputs = time_interleaved(
            {"ours": lambda im: ours_palette(im, args.k), "baseline": baseline_palette},
            images,
            args.repeat,
        )
    n_warn = len(caught)
    ours_times, base_times = times["ours"], times["baseline"]
    ours_out = cast(list[Palette], outputs["ours"])
    base_out = cast(list[tuple[np.ndarray, np.ndarray]], outputs["baseline"])

    ours_de = [palette_delta_e(img, pal) for img, pal in zip(images, ours_out, strict=True)]
    base_de = [
        palette_delta_e(img, centres) for img, (centres, _) in zip(images, base_out, strict=True)
    ]

    if args.per_image:
        print(f"\n{'image':<28} {'px':>9} {'ours dE':>8} {'base dE':>8}")
        for name, img, a, b in zip(names, images, ours_de, base_de, strict=True):
            print(f"{name:<28} {img.shape[0] * img.shape[1]:>9} {a:>8.2f} {b:>8.2f}")

    ours_ips = len(images) / statistics.median(ours_times)
    base_ips = len(images) / statistics.median(base_times)
    ours_mean = float(np.mean(ours_de))
    base_mean = float(np.mean(base_de))
    print(
        f"\ntiming: median of {args.repeat} interleaved passes over all images"
        " (decoding excluded; one process; baseline KMeans uses its default threads)"
    )
    print(f"{'method':<34} {'images/s':>10} {'pass min-max (ms)':>18} {'mean dE76':>10}")
    for label, ips, ts, de in (
        (f"ours (lab-kmeans-v1, k={args.k})", ours_ips, ours_times, ours_mean),
        ("baseline (sklearn KMeans, 10k px)", base_ips, base_times, base_mean),
    ):
        spread = f"{min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f}"
        print(f"{label:<34} {ips:>10.1f} {spread:>18} {de:>10.2f}")
    print(f"speedup: {ours_ips / base_ips:.1f}x (target >= 10x)")
    print(f"ΔE ours/baseline: {ours_mean / base_mean:.2f} (target <= 1.00)")
    ratios = np.array(ours_de) / np.maximum(np.array(base_de), 1e-9)
    wins = int(np.sum(np.array(ours_de) <= np.array(base_de)))
    print(
        f"per image: ours ΔE <= baseline on {wins}/{len(images)}; ΔE ratio median "
        f"{np.median(ratios):.2f}, range {ratios.min():.2f}-{ratios.max():.2f}"
    )
    if n_warn:
        print(
            f"(baseline KMeans warned {n_warn // args.repeat} times per pass: images with fewer"
            " distinct colours than 5)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
