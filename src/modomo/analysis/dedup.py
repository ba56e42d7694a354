"""Near-duplicate search: Hamming self-joins of 64-bit pHashes, cosine self-joins of embeddings.

Two scenes are *visual near-duplicates* when their 64-bit perceptual hashes
(:mod:`modomo.images.phash`) differ in at most ``r`` bits, and *semantic near-duplicates* when
their embeddings' cosine similarity is at least a threshold. De-duplicating a crawl means
finding every such pair among all scenes (a self-join), grouping pairs into connected
components and keeping one canonical scene per component.

Why this is our own code: the all-pairs Hamming self-join over hundreds of thousands of 64-bit
hashes must not compare all ``n (n - 1) / 2`` pairs (2 * 10^10 at n = 200,000). The standard
answer, multi-index hashing (M. Norouzi, A. Punjani and D. J. Fleet, "Fast Search in Hamming
Space with Multi-Index Hashing", CVPR 2012), is not offered as a vectorised all-pairs
self-join by any maintained Python library: imagehash only computes hashes; faiss's
``IndexBinaryMultiHash`` implements multi-index hashing for per-query range searches, but has
no self-join mode (every pair comes back twice, plus each item itself) and, measured on the
development machine (2 cores, 200,000 uniform hashes, r = 10), its ``range_search`` of all
hashes took 30-50 s against about 1.2 s here. De-duplication is core to the product, so the
join lives here, in plain numpy, tested against a brute-force reference
(:func:`brute_force_hamming_pairs`).

:func:`hamming_pairs` -- multi-index hashing, in short. The 64 bits are split into ``m``
disjoint chunks. If two hashes differ in at most ``r`` bits, at least one chunk differs in at
most ``s = r // m`` bits (pigeonhole: if every chunk differed in ``s + 1`` or more bits, the
total would be at least ``m (s + 1) > r``). So for every chunk a dense table maps each chunk
value to its bucket (the run of hashes with that value in a counting sort); every hash looks
up the buckets of ``value XOR flip`` for every flip mask of weight ``<= s``, and each candidate
is verified on all 64 bits with ``np.bitwise_count``. Everything is vectorised over all hashes
at once, one flip mask at a time; the ragged buckets are expanded with ``np.repeat`` /
``np.cumsum``. Each unordered pair of buckets is visited once per chunk (the hash whose chunk
has a 0 at the flip mask's highest bit does the lookup, and pairs inside one bucket are
enumerated directly), and pairs found through several chunks are de-duplicated at the end.

Choice of ``m`` (:func:`choose_chunks`): ``m`` ranges over ``[3, max(3, r + 1)]`` (chunks are
at most 22 bits wide, so the dense table has at most 4 Mi entries; ``m > r + 1`` only adds
chunks that must be searched exactly) and minimises the estimated cost
``n m F(w, s) (c + n / 2^w)`` with ``w = ceil(64 / m)``, ``s = r // m`` and
``F(w, s) = sum_{k <= s} C(w, k)`` the number of flip masks: ``n m F`` table lookups, each
costing about ``c = 3`` candidate verifications (:data:`LOOKUP_COST`, measured) and yielding
``n / 2^w`` candidates on average for uniformly distributed hashes. At n = 200,000 this picks
m = 4 for r = 10 (16-bit chunks, s = 2, 137 flip masks) and m = 5 for r = 8 (13-bit chunks,
s = 1).

Memory stays bounded: candidates are generated in blocks of at most about a million
(:data:`CANDIDATE_BLOCK`), so the peak is a few tens of MiB beyond the ``O(n)`` per-chunk
arrays and the output, whatever ``n``.

:func:`cosine_pairs` and :func:`nearest` use faiss (HNSW for large sets, exact inner product
otherwise); :func:`duplicate_groups` and :func:`choose_canonical` turn pairs into groups and
one kept item per group. Nothing here touches the database or Celery.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "CANDIDATE_BLOCK",
    "EXACT_COSINE_MAX_N",
    "brute_force_hamming_pairs",
    "choose_canonical",
    "choose_chunks",
    "cosine_pairs",
    "duplicate_groups",
    "hamming_pairs",
    "hex_to_uint64",
    "nearest",
    "uint64_to_hex",
]

#: Largest Hamming threshold accepted. Beyond half the hash length two *unrelated* hashes are
#: more likely than not to match (a random pair differs in 32 bits on average), so the output
#: would approach all ``n^2 / 2`` pairs and an index could prune nothing.
MAX_DISTANCE = 32

#: Widest chunk, in bits: the dense lookup table then has at most 2^22 + 1 entries (16 MiB).
MAX_CHUNK_BITS = 22

#: Cost of one table lookup (and its share of the vectorised bookkeeping) in units of one
#: candidate verification, for :func:`choose_chunks`; measured with numpy 2.4 on x86-64
#: (about 13 ns against 5 ns at n = 200,000).
LOOKUP_COST = 3.0

#: :func:`hamming_pairs` looks chunk values up in a dense table of ``2^w`` entries when
#: ``2^w <= DENSE_TABLE_RATIO * n``, otherwise by binary search among the occupied values (a
#: 22-bit table for a few thousand hashes would cost more to build than it saves).
DENSE_TABLE_RATIO = 16

#: Candidates generated per vectorised step of :func:`hamming_pairs` (bounds peak memory to
#: roughly 30 bytes per candidate, ~32 MiB).
CANDIDATE_BLOCK = 1 << 20

#: Up to this many embeddings :func:`cosine_pairs` searches exactly (``faiss.IndexFlatIP``):
#: the exact all-pairs search costs ``N^2 D`` flops, a fraction of a second here, and building
#: an HNSW graph would cost more than it saves.
EXACT_COSINE_MAX_N = 2048

_HEX_VALUES = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate("0123456789abcdef"):
    _HEX_VALUES[ord(_c)] = _i
    _HEX_VALUES[ord(_c.upper())] = _i
_NIBBLE_SHIFTS = np.arange(60, -1, -4, dtype=np.uint64)


# --------------------------------------------------------------------------------------
# hex <-> uint64


def hex_to_uint64(hashes: Sequence[str]) -> np.ndarray:
    """Parse 64-bit hashes written as 16 hex characters.

    Args:
        hashes: N strings of exactly 16 hex digits (either case), e.g. from
            :func:`modomo.images.phash.phash_hex` or the ``scenes.phash`` column.

    Returns:
        ``(N,)`` ``uint64`` array; the first hex digit holds the most significant bits.

    Raises:
        ValueError: an element is not a string of 16 hex digits (the message names the first
            such index).
    """
    items = list(hashes)
    for index, item in enumerate(items):
        if not isinstance(item, str) or len(item) != 16:
            raise ValueError(f"hash {index} is not a 16-character hex string: {item!r}")
    if not items:
        return np.zeros(0, dtype=np.uint64)
    try:
        raw = "".join(items).encode("ascii")
    except UnicodeEncodeError:
        raw = b""
    digits = _HEX_VALUES[np.frombuffer(raw, dtype=np.uint8)] if raw else None
    if digits is None or digits.size != 16 * len(items) or (digits == 255).any():
        bad = next(
            i
            for i, s in enumerate(items)
            if not s.isascii() or any(ch not in "0123456789abcdefABCDEF" for ch in s)
        )
        raise ValueError(f"hash {bad} is not a 16-character hex string: {items[bad]!r}")
    nibbles = digits.reshape(len(items), 16).astype(np.uint64)
    return np.bitwise_or.reduce(nibbles << _NIBBLE_SHIFTS, axis=1)


def uint64_to_hex(values: np.ndarray | Sequence[int]) -> list[str]:
    """Write 64-bit hashes as 16 lowercase hex characters (the inverse of :func:`hex_to_uint64`).

    Args:
        values: ``(N,)`` ``uint64`` array, or any integers in ``[0, 2^64)``.

    Returns:
        N strings of 16 lowercase hex digits.

    Raises:
        ValueError: ``values`` is not one-dimensional, or holds non-integers or integers
            outside ``[0, 2^64)``.
    """
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"values must be one-dimensional, got shape {values.shape}")
        if values.dtype == np.uint64:
            return [f"{v:016x}" for v in values.tolist()]
        if values.dtype.kind not in "iuO" and values.size:
            raise ValueError(f"values must be integers, got dtype {values.dtype}")
        items = values.tolist()
    else:
        items = list(values)
    try:
        ints = [operator.index(v) for v in items]
    except TypeError as exc:
        raise ValueError(f"values must be a 1-D sequence of integers: {exc}") from None
    if any(v < 0 or v >= 1 << 64 for v in ints):
        raise ValueError("values must lie in [0, 2^64)")
    return [f"{v:016x}" for v in ints]


# --------------------------------------------------------------------------------------
# Hamming self-join


def _check_hashes(hashes: np.ndarray, max_distance: int) -> None:
    if not isinstance(hashes, np.ndarray) or hashes.dtype != np.uint64 or hashes.ndim != 1:
        raise ValueError(
            "hashes must be a one-dimensional uint64 numpy array (see hex_to_uint64), got "
            f"{type(hashes).__name__} {getattr(hashes, 'dtype', '')} "
            f"{getattr(hashes, 'shape', '')}".rstrip()
        )
    if isinstance(max_distance, bool) or not isinstance(max_distance, int | np.integer):
        raise ValueError(f"max_distance must be an int, got {max_distance!r}")
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise ValueError(
            f"max_distance must be in [0, {MAX_DISTANCE}], got {max_distance}: beyond half of "
            "the 64 bits unrelated hashes match more often than not, so nothing is a "
            "near-duplicate"
        )


def _empty_pairs() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.uint8)


def _flip_count(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


def choose_chunks(n: int, max_distance: int) -> int:
    """The number of chunks ``m`` that :func:`hamming_pairs` uses for ``n`` hashes.

    Minimises ``n m F(w, s) (c + n / 2^w)`` over ``m`` in ``[3, max(3, max_distance + 1)]``
    with ``w = ceil(64 / m)``, ``s = max_distance // m``, ``F(w, s) = sum_{k<=s} C(w, k)`` and
    ``c =`` :data:`LOOKUP_COST` (lookups times their own cost plus the expected bucket size
    for uniform hashes, in units of one candidate verification); ties go to the smaller ``m``.

    Args:
        n: Number of hashes (>= 0).
        max_distance: Hamming threshold ``r`` in ``[0, 32]``.

    Returns:
        ``m`` (chunks of ``64 // m`` or ``64 // m + 1`` bits, at most 22).
    """
    best_m, best_cost = 3, math.inf
    for m in range(3, max(3, max_distance + 1) + 1):
        width = -(-64 // m)
        lookups = n * m * _flip_count(width, max_distance // m)
        cost = lookups * (LOOKUP_COST + n / 2**width)
        if cost < best_cost:
            best_m, best_cost = m, cost
    return best_m


def _flip_masks(width: int, radius: int) -> list[int]:
    """All non-zero masks of weight <= radius over ``width`` bits, sorted by highest bit."""
    masks = [
        sum(1 << b for b in bits)
        for weight in range(1, min(radius, width) + 1)
        for bits in itertools.combinations(range(width), weight)
    ]
    return sorted(masks, key=lambda mask: (mask.bit_length(), mask))


def _expand(
    query_hash: np.ndarray,
    start: np.ndarray,
    count: np.ndarray,
    sorted_hashes: np.ndarray,
    r: int,
    steps: np.ndarray,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Compare each query with its candidate run ``sorted_hashes[start:start + count]``.

    Yields ``(query_index, candidate_position, distance)`` for the candidates within ``r``,
    working through the queries in blocks of about :data:`CANDIDATE_BLOCK` candidates.
    ``steps`` is ``np.arange(CANDIDATE_BLOCK)``, allocated once by the caller.
    """
    cum = np.cumsum(count)
    total = int(cum[-1]) if cum.size else 0
    if total == 0:
        return
    if total <= CANDIDATE_BLOCK:
        cuts = [0, count.size]
    else:
        cuts = [0]
        while cuts[-1] < count.size:
            done = int(cum[cuts[-1] - 1]) if cuts[-1] else 0
            nxt = int(np.searchsorted(cum, done + CANDIDATE_BLOCK, side="right"))
            cuts.append(max(nxt, cuts[-1] + 1))
    for lo, hi in itertools.pairwise(cuts):
        cnt = count[lo:hi]
        offset = int(cum[lo - 1]) if lo else 0
        ends = cum[lo:hi] - offset
        size = int(ends[-1])
        if size == 0:
            continue
        # positions[t] = start of t's query + (t - first candidate index of that query)
        positions = np.repeat(start[lo:hi] - (ends - cnt), cnt)
        positions += steps[:size] if size <= steps.size else np.arange(size, dtype=np.int64)
        xor = sorted_hashes[positions]
        xor ^= np.repeat(query_hash[lo:hi], cnt)
        distance = np.bitwise_count(xor)
        hits = np.flatnonzero(distance <= r)
        if hits.size:
            query = lo + np.searchsorted(ends, hits, side="right")
            yield query, positions[hits], distance[hits]


def hamming_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of hashes within a Hamming distance, by multi-index hashing.

    Finds every pair ``i < j`` with ``popcount(hashes[i] ^ hashes[j]) <= max_distance``
    without comparing all pairs (Norouzi, Punjani & Fleet, CVPR 2012; see the module
    docstring for the algorithm and the choice of the number of chunks). The result is
    exact: the same as :func:`brute_force_hamming_pairs`. Identical hashes are pairs at
    distance 0. Runs in one thread.

    Args:
        hashes: ``(N,)`` ``uint64`` array (e.g. from :func:`hex_to_uint64`).
        max_distance: Largest Hamming distance ``r`` that counts as a pair, ``0 <= r <= 32``
            (``Settings.phash_max_distance``, default 10).

    Returns:
        ``(pairs, distances)``: ``(P, 2)`` ``int64`` indices into ``hashes`` with
        ``pairs[:, 0] < pairs[:, 1]``, sorted lexicographically, and ``(P,)`` ``uint8``
        Hamming distances.

    Raises:
        ValueError: ``hashes`` is not a one-dimensional ``uint64`` numpy array;
            ``max_distance`` is not an int in ``[0, 32]`` (above 32 -- half the bits --
            unrelated hashes match more often than not).
    """
    _check_hashes(hashes, max_distance)
    n = int(hashes.size)
    if n < 2:
        return _empty_pairs()
    r = int(max_distance)
    hashes = np.ascontiguousarray(hashes)
    m = choose_chunks(n, r)
    radius = r // m
    widths = [64 // m + (1 if c < 64 % m else 0) for c in range(m)]
    found_keys: np.ndarray = np.zeros(0, dtype=np.int64)
    found_dist: np.ndarray = np.zeros(0, dtype=np.uint8)
    steps = np.arange(min(CANDIDATE_BLOCK, n * (n - 1) // 2), dtype=np.int64)
    shift = 0
    for width in widths:
        keys, dists = _search_chunk(hashes, shift, width, radius, r, steps)
        shift += width
        if keys.size:
            merged = np.concatenate([found_keys, keys])
            found_keys, first = np.unique(merged, return_index=True)
            found_dist = np.concatenate([found_dist, dists])[first]
    pairs = np.empty((found_keys.size, 2), dtype=np.int64)
    np.divmod(found_keys, n, out=(pairs[:, 0], pairs[:, 1]))
    return pairs, found_dist


def _search_chunk(
    hashes: np.ndarray, shift: int, width: int, radius: int, r: int, steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs within ``r`` whose chunk (bits ``shift .. shift + width``) is within ``radius``.

    Returns ``(keys, distances)`` with ``key = i * n + j``, ``i < j``, each pair once.
    """
    n = hashes.size
    values = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    del values
    sorted_hashes = hashes[order]
    # Buckets: runs of equal chunk values in sorted order, bucket b at bucket_start[b] ..
    # bucket_end[b] (a counting sort).
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=change[1:])
    bucket_start = np.flatnonzero(change)
    bucket_end = np.append(bucket_start[1:], n)

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    dists: list[np.ndarray] = []

    # Flip 0: pairs inside one bucket, each position p with the later positions of its bucket.
    positions = np.arange(n, dtype=np.int64)
    after = bucket_end[np.cumsum(change) - 1] - positions - 1
    del change
    for query, candidate, dist in _expand(
        sorted_hashes, positions + 1, after, sorted_hashes, r, steps
    ):
        rows.append(query)
        cols.append(candidate)
        dists.append(dist)
    del after

    masks = _flip_masks(width, radius)
    bucket_values = sorted_values[bucket_start]
    bounds: np.ndarray | None = None
    if masks and (1 << width) <= DENSE_TABLE_RATIO * n:
        # Dense table: the bucket of chunk value v is sorted positions bounds[v] .. bounds[v+1].
        bounds = np.zeros((1 << width) + 1, dtype=np.int32 if n < 2**31 else np.int64)
        bounds[bucket_values + 1] = bucket_end - bucket_start
        np.cumsum(bounds, out=bounds)

    # Other flips: the query is the side whose chunk has a 0 at the mask's highest bit, so each
    # pair of buckets (v, v ^ mask) is visited once.
    top_bit = -1
    query_pos = query_values = query_hashes = positions
    for mask in _flip_masks(width, radius):
        if mask.bit_length() - 1 != top_bit:
            top_bit = mask.bit_length() - 1
            query_pos = np.flatnonzero((sorted_values & (1 << top_bit)) == 0)
            query_values = sorted_values[query_pos]
            query_hashes = sorted_hashes[query_pos]
        target = query_values ^ mask
        if bounds is not None:
            start = bounds[target]
            count = bounds[target + 1] - start
        else:  # sparse: binary search among the occupied chunk values
            found = np.searchsorted(bucket_values, target)
            found[found == bucket_values.size] = 0
            start = bucket_start[found]
            count = np.where(bucket_values[found] == target, bucket_end[found] - start, 0)
        for query, candidate, dist in _expand(query_hashes, start, count, sorted_hashes, r, steps):
            rows.append(query_pos[query])
            cols.append(candidate)
            dists.append(dist)

    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    first = order[np.concatenate(rows)]
    second = order[np.concatenate(cols)]
    keys = np.minimum(first, second) * n + np.maximum(first, second)
    return keys, np.concatenate(dists).astype(np.uint8)


def brute_force_hamming_pairs(
    hashes: np.ndarray, max_distance: int, *, block: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs within a Hamming distance, by comparing every pair (the reference).

    Vectorised numpy: rows of the upper triangle are XORed against all later hashes in blocks
    of about ``block`` pairs, popcounted with ``np.bitwise_count`` and thresholded. Costs
    ``n (n - 1) / 2`` comparisons; use :func:`hamming_pairs` except to check it.

    Args:
        hashes: ``(N,)`` ``uint64`` array.
        max_distance: Largest Hamming distance that counts as a pair, ``0 <= r <= 32``.
        block: Pairs compared per vectorised step (memory: ~10 bytes per pair).

    Returns:
        ``(pairs, distances)`` exactly as :func:`hamming_pairs`: ``(P, 2)`` ``int64`` with
        ``i < j`` sorted lexicographically, and ``(P,)`` ``uint8``.

    Raises:
        ValueError: as :func:`hamming_pairs`.
    """
    _check_hashes(hashes, max_distance)
    n = int(hashes.size)
    if n < 2:
        return _empty_pairs()
    r = int(max_distance)
    rows_per_block = max(1, block // n)
    xor_buf = np.empty((rows_per_block, n), dtype=np.uint64)
    count_buf = np.empty((rows_per_block, n), dtype=np.uint8)
    hit_buf = np.empty((rows_per_block, n), dtype=bool)
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    dists: list[np.ndarray] = []
    for lo in range(0, n - 1, rows_per_block):
        hi = min(lo + rows_per_block, n - 1)
        cols = n - lo - 1  # compare rows lo..hi-1 with hashes lo+1..n-1
        xor = xor_buf[: hi - lo, :cols]
        counts = count_buf[: hi - lo, :cols]
        hit = hit_buf[: hi - lo, :cols]
        np.bitwise_xor(hashes[lo:hi, None], hashes[None, lo + 1 :], out=xor)
        np.bitwise_count(xor, out=counts)
        np.less_equal(counts, r, out=hit)
        row, col = np.nonzero(hit)
        keep = col >= row  # j = lo + 1 + col > i = lo + row
        row, col = row[keep], col[keep]
        firsts.append(lo + row.astype(np.int64))
        seconds.append(lo + 1 + col.astype(np.int64))
        dists.append(counts[row, col])
    pairs = np.stack([np.concatenate(firsts), np.concatenate(seconds)], axis=1)
    return pairs, np.concatenate(dists).astype(np.uint8)


# --------------------------------------------------------------------------------------
# cosine similarity


def _normalised(embeddings: Any, name: str) -> np.ndarray:
    """``(N, D)`` float32 C-contiguous copy with unit rows (zero rows stay zero)."""
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, D) with D >= 1, got {array.shape}")
    if array.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    out = np.array(array, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(out.astype(np.float64), axis=1)
    nonzero = norms > 0
    out[nonzero] /= norms[nonzero, None].astype(np.float32)
    return out


def cosine_pairs(
    embeddings: np.ndarray,
    min_similarity: float,
    *,
    k: int = 10,
    exact: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of embeddings with cosine similarity at least ``min_similarity``.

    Each embedding's ``k`` nearest neighbours (by inner product of the L2-normalised rows) are
    searched and the pairs at or above the threshold kept. Up to
    :data:`EXACT_COSINE_MAX_N` embeddings the search is exact (``faiss.IndexFlatIP``); above,
    approximate with an HNSW graph (``faiss.IndexHNSWFlat(D, 32, METRIC_INNER_PRODUCT)``,
    efConstruction 80, efSearch 64; Malkov & Yashunin, "Efficient and robust approximate
    nearest neighbor search using Hierarchical Navigable Small World graphs", TPAMI 2018), so
    a rare true pair may be missed. Only ``k`` neighbours per item are looked at: in a group
    of more than ``k + 1`` mutual near-duplicates not every pair is reported, but each item is
    linked to ``k`` others, which keeps the group connected for :func:`duplicate_groups`.
    faiss uses all cores (OpenMP).

    Args:
        embeddings: ``(N, D)`` array, normally float32 and L2-normalised; rows are normalised
            again here (all-zero rows stay zero and match nothing above similarity 0).
        min_similarity: Threshold in ``[-1, 1]`` (``Settings.semantic_min_similarity``).
        k: Neighbours searched per embedding, >= 1.
        exact: Force the exact (``True``) or HNSW (``False``) search; ``None`` chooses by N.

    Returns:
        ``(pairs, similarities)``: ``(P, 2)`` ``int64`` with ``i < j``, sorted
        lexicographically, and ``(P,)`` ``float32`` cosine similarities (the float64 dot
        product of the normalised float32 rows, rounded to float32). Empty when N < 2.

    Raises:
        ValueError: ``embeddings`` is not a finite numeric ``(N, D)`` array; ``min_similarity``
            is outside ``[-1, 1]``; ``k`` < 1.
    """
    import faiss  # lazy: ~0.3 s to import, and only this half of the module needs it

    vectors = _normalised(embeddings, "embeddings")
    if not -1.0 <= float(min_similarity) <= 1.0:
        raise ValueError(f"min_similarity must be in [-1, 1], got {min_similarity!r}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    n, dim = vectors.shape
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    neighbours = min(int(k) + 1, n)
    if exact is None:
        exact = n <= EXACT_COSINE_MAX_N
    index: Any
    if exact:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(64, neighbours)
    index.add(vectors)

    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    slack = float(min_similarity) - 1e-4  # faiss's float32 sums vs our float64 check below
    for lo in range(0, n, 65536):
        hi = min(lo + 65536, n)
        sims, ids = index.search(vectors[lo:hi], neighbours)
        rows = np.arange(lo, hi, dtype=np.int64)[:, None]
        keep = (ids >= 0) & (ids != rows) & (sims >= slack)
        row_idx, col_idx = np.nonzero(keep)
        a = rows[row_idx, 0]
        b = ids[row_idx, col_idx].astype(np.int64)
        firsts.append(np.minimum(a, b))
        seconds.append(np.maximum(a, b))
    keys = np.unique(np.concatenate(firsts) * n + np.concatenate(seconds))
    first, second = np.divmod(keys, n)
    similarity = np.einsum(
        "ij,ij->i", vectors[first].astype(np.float64), vectors[second].astype(np.float64)
    ).astype(np.float32)
    kept = similarity >= np.float32(min_similarity)
    pairs = np.stack([first[kept], second[kept]], axis=1).astype(np.int64)
    return pairs, similarity[kept]


def nearest(embeddings: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` most similar embeddings to each query, by cosine similarity.

    Brute-force inner product of L2-normalised vectors (``faiss.IndexFlatIP``), for "similar
    scenes" look-ups. A query that is itself among ``embeddings`` finds itself first.

    Args:
        embeddings: ``(N, D)`` numeric array (rows are L2-normalised here).
        query: ``(D,)`` or ``(Q, D)`` numeric array (normalised here).
        k: Neighbours wanted, >= 1; at most N are returned.

    Returns:
        ``(indices, similarities)``: ``int64`` indices into ``embeddings`` and ``float32``
        cosine similarities, most similar first, of shape ``(min(k, N),)`` for a 1-D query or
        ``(Q, min(k, N))`` for a 2-D one.

    Raises:
        ValueError: non-finite or non-numeric input, mismatched ``D``, or ``k`` < 1.
    """
    import faiss

    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    vectors = _normalised(embeddings, "embeddings")
    query_array = np.asarray(query)
    single = query_array.ndim == 1
    queries = _normalised(query_array[None, :] if single else query_array, "query")
    if queries.shape[1] != vectors.shape[1]:
        raise ValueError(
            f"query has dimension {queries.shape[1]}, embeddings have {vectors.shape[1]}"
        )
    kk = min(int(k), vectors.shape[0])
    if kk == 0:
        indices = np.zeros((queries.shape[0], 0), dtype=np.int64)
        sims = np.zeros((queries.shape[0], 0), dtype=np.float32)
    else:
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        sims, ids = index.search(queries, kk)
        indices = ids.astype(np.int64)
        sims = sims.astype(np.float32)
    return (indices[0], sims[0]) if single else (indices, sims)


# --------------------------------------------------------------------------------------
# groups


def duplicate_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of the near-duplicate graph.

    Args:
        n: Number of items (>= 0).
        pairs: ``(P, 2)`` integer array of item indices in ``[0, n)`` (any order; self-pairs
            and repeats are harmless), e.g. from :func:`hamming_pairs`.

    Returns:
        ``(n,)`` ``int64`` component label per item, numbered ``0, 1, ...`` in order of each
        component's lowest index (item 0 is always in component 0); an item without pairs
        is a component of its own.

    Raises:
        ValueError: ``n`` < 0, ``pairs`` not ``(P, 2)`` integers, or an index outside
            ``[0, n)``.

    Uses ``scipy.sparse.csgraph.connected_components`` on a symmetric sparse graph.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    edges = np.asarray(pairs)
    if edges.size == 0:
        edges = edges.reshape(0, 2)
    if edges.ndim != 2 or edges.shape[1] != 2 or edges.dtype.kind not in "iu":
        raise ValueError(f"pairs must be a (P, 2) integer array, got {edges.dtype} {edges.shape}")
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        raise ValueError(f"pair indices must lie in [0, {n})")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    a = edges[:, 0].astype(np.int64)
    b = edges[:, 1].astype(np.int64)
    graph = coo_matrix(
        (np.ones(2 * a.size, dtype=np.int8), (np.concatenate([a, b]), np.concatenate([b, a]))),
        shape=(n, n),
    ).tocsr()
    _count, labels = connected_components(graph, directed=False)
    # Renumber by first appearance so labels do not depend on scipy's traversal order.
    _unique, first_seen, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first_seen.size, dtype=np.int64)
    rank[np.argsort(first_seen, kind="stable")] = np.arange(first_seen.size, dtype=np.int64)
    return rank[inverse.reshape(-1)]


def choose_canonical(labels: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The item each item is a duplicate of: its group's highest-scoring member.

    Args:
        labels: ``(N,)`` integer group label per item (e.g. from :func:`duplicate_groups`;
            any integers, equal label = same group).
        score: ``(N,)`` real score per item, higher is better (e.g. pixel count); NaN is
            not allowed.

    Returns:
        ``(N,)`` ``int64``: for each item, the index of its group's canonical item, the one
        with the highest score, ties broken by the lowest index. Canonical items map to
        themselves (``result[i] == i``).

    Raises:
        ValueError: shapes differ or are not 1-D, labels are not integers, or the score is
            not real-valued or contains NaN.
    """
    label_array = np.asarray(labels)
    score_array = np.asarray(score)
    if label_array.ndim != 1 or score_array.shape != label_array.shape:
        raise ValueError(
            f"labels and score must be 1-D of equal length, got {label_array.shape} and "
            f"{score_array.shape}"
        )
    if label_array.size and label_array.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {label_array.dtype}")
    if score_array.size and score_array.dtype.kind not in "iufb":
        raise ValueError(f"score must be real numbers, got dtype {score_array.dtype}")
    if score_array.dtype.kind == "f" and np.isnan(score_array).any():
        raise ValueError("score contains NaN")
    n = label_array.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _unique, group = np.unique(label_array, return_inverse=True)
    group = group.reshape(-1)
    index = np.arange(n, dtype=np.int64)
    # Sort by group, then score ascending, then index descending: each group's last entry is
    # its highest score, lowest index among ties.
    order = np.lexsort((-index, score_array, group))
    last = np.flatnonzero(np.r_[group[order][1:] != group[order][:-1], True])
    canonical = np.empty(_unique.size, dtype=np.int64)
    canonical[group[order][last]] = order[last]
    return canonical[group]
