"""Overlap loading with computing: a batch's next inputs are read and decoded in a background
thread while the current one is analysed.

Decoding (Pillow) and most NumPy work release the GIL, so on a machine with two or more cores
a worker at concurrency 1 keeps one core decoding and one computing. This is the same idea as
a PyTorch ``DataLoader`` with prefetching, for batches of a few dozen scenes, without the
dependency; it is ours because it is part of the batching this product is about.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")
R = TypeVar("R")


def prefetch(
    items: Iterable[T], load: Callable[[T], R], depth: int = 2
) -> Generator[tuple[T, Future[R]], None, None]:
    """Yield ``(item, future of load(item))`` in order, loading up to ``depth`` items ahead.

    ``future.result()`` returns the loaded value or raises what ``load`` raised, so a bad
    input fails alone. Closing the iterator early (``break``) cancels the loads not started.

    Args:
        items: inputs, in order.
        load: reads one input (e.g. bytes from the artifact store, decoded).
        depth: loads in flight ahead of the consumer (>= 1).
    """
    pending: list[tuple[T, Future[R]]] = []
    source = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        try:
            for item in source:
                pending.append((item, pool.submit(load, item)))
                if len(pending) > depth:
                    yield pending.pop(0)
            while pending:
                yield pending.pop(0)
        finally:
            for _, future in pending:
                future.cancel()
