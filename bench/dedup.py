"""Benchmark: the pHash near-duplicate self-join, multi-index hashing vs brute force.

Usage::

    uv run python bench/dedup.py [--n 200000] [--pairs 1000] [--threshold 10]
                                 [--sample 20000] [--repeat 3] [--seed 0]

Data: ``--n`` random 64-bit hashes (numpy ``default_rng(seed)``, uniform), in which
``--pairs`` disjoint pairs are planted: the second hash of each pair is replaced by the first
with ``d`` random bits flipped, ``d`` uniform in ``1..threshold``. Uniform hashes are the
favourable case for hashing (buckets are even); real pHashes are less uniform.

* **Index**: :func:`modomo.analysis.dedup.hamming_pairs` at ``--threshold`` (default: the
  ``Settings.phash_max_distance`` default, 10) on the first ``n`` hashes for n = 20,000,
  50,000, 100,000 and the full set: median wall time (``time.perf_counter``) of ``--repeat``
  runs. One thread (numpy).
* **Memory**: the first call on the full set runs under ``tracemalloc`` (numpy reports its
  array allocations to it), giving the peak of memory allocated during the call above what
  was allocated before it; also ``ru_maxrss`` of this process before and after that call
  (the first heavy work of the process, so the delta is what the call added to the high
  water mark). Timed runs are separate, without tracemalloc.
* **Recall**: the fraction of planted pairs the index returns (target 1.0; the algorithm is
  exact, so anything else is a bug).
* **Brute force**: :func:`modomo.analysis.dedup.brute_force_hamming_pairs` (vectorised numpy
  XOR + popcount over the upper triangle in row blocks) on a random ``--sample`` of the hashes,
  median of ``--repeat`` runs; its time is extrapolated to each n by the number of pairs,
  ``n (n - 1) / 2``, which is what it computes (its cost per pair is flat; one run at 2.5x the
  sample checks that). On that sample the index must return exactly the brute-force pairs.
* **Speed-up** = extrapolated brute-force time / index time (target >= 10x at 200,000).

It is a report, not a test: it always exits 0. About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from modomo.analysis.dedup import (
    brute_force_hamming_pairs,
    choose_chunks,
    hamming_pairs,
)
from modomo.config import Settings

DEFAULT_THRESHOLD = int(Settings.model_fields["phash_max_distance"].default)
SIZES = (20_000, 50_000, 100_000, 200_000)


def make_hashes(n: int, pairs: int, threshold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes (n,) uint64, planted (pairs, 2) int64 with i < j)``."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    chosen = rng.choice(n, size=2 * pairs, replace=False).reshape(pairs, 2)
    chosen.sort(axis=1)
    for first, second in chosen:
        flips = rng.choice(64, size=int(rng.integers(1, threshold + 1)), replace=False)
        mask = sum(1 << int(b) for b in flips)
        hashes[second] = np.uint64(int(hashes[first]) ^ mask)
    return hashes, chosen.astype(np.int64)


def median_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times = []
    result: object = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="hashes in the full set")
    parser.add_argument("--pairs", type=int, default=1000, help="planted near-duplicate pairs")
    parser.add_argument(
        "--threshold", type=int, default=DEFAULT_THRESHOLD, help="Hamming threshold r"
    )
    parser.add_argument("--sample", type=int, default=20_000, help="brute-force sample size")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (median)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    r = args.threshold

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, numpy {np.__version__}; "
        f"load average at start {load:.2f}"
    )
    hashes, planted = make_hashes(args.n, args.pairs, r, args.seed)
    print(
        f"data: {args.n:,} uniform random 64-bit hashes (seed {args.seed}) with "
        f"{args.pairs:,} planted pairs at distance 1..{r}; threshold r = {r}"
    )

    # Memory: the first heavy call of the process, under tracemalloc.
    rss_before = maxrss_mib()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    found, _dists = hamming_pairs(hashes, r)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = maxrss_mib()
    keys = found[:, 0] * args.n + found[:, 1]
    recall = float(np.isin(planted[:, 0] * args.n + planted[:, 1], keys).mean())
    m = choose_chunks(args.n, r)
    print(
        f"index at n = {args.n:,}: m = {m} chunks of {64 // m}-{-(-64 // m)} bits, radius "
        f"{r // m} per chunk; {len(found):,} pairs found; recall of planted pairs {recall:.4f} "
        f"(target 1.0)"
    )
    print(
        f"peak memory of the call: tracemalloc {(peak - base) / 2**20:.1f} MiB "
        f"(input {hashes.nbytes / 2**20:.1f} MiB); ru_maxrss {rss_before:.0f} -> "
        f"{rss_after:.0f} MiB (+{rss_after - rss_before:.0f} MiB)"
    )

    # Brute force on a sample, and agreement with the index there.
    rng = np.random.default_rng(args.seed + 1)
    sample = hashes[np.sort(rng.choice(args.n, size=min(args.sample, args.n), replace=False))]
    ns = sample.size
    brute_time, brute_result = median_time(
        lambda: brute_force_hamming_pairs(sample, r), args.repeat
    )
    brute_pairs, brute_dists = brute_result  # type: ignore[misc]
    index_pairs, index_dists = hamming_pairs(sample, r)
    same = np.array_equal(index_pairs, brute_pairs) and np.array_equal(index_dists, brute_dists)
    per_pair_ns = brute_time / (ns * (ns - 1) / 2) * 1e9
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    brute_force_hamming_pairs(sample, r)
    _current, brute_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"brute force on a {ns:,} sample: {brute_time:.3f} s ({per_pair_ns:.2f} ns per pair, "
        f"peak {(brute_peak - base) / 2**20:.1f} MiB); index == brute force on the sample: "
        f"{'yes' if same else 'NO'} ({len(brute_pairs):,} pairs)"
    )

    check_n = min(args.n, int(2.5 * ns))
    if check_n > ns:  # is the brute force's cost per pair flat? (one run)
        check_time, _ = median_time(lambda: brute_force_hamming_pairs(hashes[:check_n], r), 1)
        check_est = brute_time * (check_n * (check_n - 1)) / (ns * (ns - 1))
        print(
            f"extrapolation check: brute force on the first {check_n:,} hashes measured "
            f"{check_time:.2f} s, extrapolated {check_est:.2f} s (ratio "
            f"{check_time / check_est:.2f})"
        )

    print(f"\ntiming: median of {args.repeat} runs; brute force extrapolated from {ns:,}")
    print(f"{'n':>9} {'pairs found':>12} {'index s':>9} {'brute s (extrap.)':>18} {'speed-up':>9}")
    sizes = sorted({s for s in SIZES if s <= args.n} | {args.n})
    speedup = float("nan")
    for n in sizes:
        subset = hashes[:n]
        index_time, result = median_time(lambda s=subset: hamming_pairs(s, r), args.repeat)
        pairs_found = len(result[0])  # type: ignore[index]
        brute_est = brute_time * (n * (n - 1)) / (ns * (ns - 1))
        speedup = brute_est / index_time
        print(f"{n:>9,} {pairs_found:>12,} {index_time:>9.3f} {brute_est:>18.1f} {speedup:>8.1f}x")
    print(
        f"speed-up at n = {sizes[-1]:,}: {speedup:.1f}x (target >= 10x) -> "
        f"{'met' if speedup >= 10 else 'NOT met'}"
    )
    print(f"recall: {recall:.4f} (target 1.0) -> {'met' if recall == 1.0 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
