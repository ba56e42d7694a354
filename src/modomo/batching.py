"""Overlap loading with computing: a batch's next inputs are read and decoded in a background
thread while the current one is analysed.

Decoding (Pillow) and most NumPy work release the GIL, so on a machine with two or more cores
a worker at concurrency 1 keeps one core decoding and one computing. This is the same idea as
a PyTorch ``DataLoader`` with prefetching, for batches of a few dozen scenes, without the
dependency; it is ours because it is part of the batching this product is about.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["is_interrupt", "map_with_backoff", "never_isolate", "prefetch"]

T = TypeVar("T")
R = TypeVar("R")

_INTERRUPTS: tuple[type[BaseException], ...] = ()


def never_isolate(*types: type[BaseException]) -> None:
    """Declare exception types that interrupt a whole batch instead of failing one item.

    Celery's ``SoftTimeLimitExceeded`` is an ``Exception`` raised by a signal handler
    wherever the task happens to be: :func:`map_with_backoff` must not treat it as that
    batch's (or image's) error and retry the halves, or the task would run on until the hard
    limit kills it. The task layer registers it here (this module stays free of Celery).
    """
    global _INTERRUPTS
    _INTERRUPTS = tuple(dict.fromkeys((*_INTERRUPTS, *types)))


def is_interrupt(exc: BaseException) -> bool:
    """True for an exception registered with :func:`never_isolate` (re-raise it)."""
    return isinstance(exc, _INTERRUPTS)


def prefetch(
    items: Iterable[T], load: Callable[[T], R], depth: int = 2
) -> Generator[tuple[T, Future[R]], None, None]:
    """Yield ``(item, future of load(item))`` in order, loading up to ``depth`` items ahead.

    ``future.result()`` returns the loaded value or raises what ``load`` raised, so a bad
    input fails alone. Closing the iterator early (``break``, an exception) cancels the loads
    not started and does not wait for the one in progress.

    Args:
        items: inputs, in order.
        load: reads one input (e.g. bytes from the artifact store, decoded).
        depth: loads in flight ahead of the consumer (>= 1).
    """
    pending: list[tuple[T, Future[R]]] = []
    source = iter(items)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
    try:
        for item in source:
            pending.append((item, pool.submit(load, item)))
            if len(pending) > depth:
                yield pending.pop(0)
        while pending:
            yield pending.pop(0)
    finally:
        # Do not wait for a load in progress: after a soft time limit the task must stop
        # now, not when a stalled read returns (the thread finishes it in the background).
        pool.shutdown(wait=False, cancel_futures=True)


def map_with_backoff(
    items: Sequence[T],
    run: Callable[[Sequence[T]], Sequence[R]],
    *,
    is_oom: Callable[[BaseException], bool],
    after_oom: Callable[[], None] = lambda: None,
) -> tuple[list[R | BaseException], int]:
    """Run a batched model call, halving the batch on out-of-memory errors.

    ``run(batch)`` returns one result per item. When it raises an out-of-memory error the
    batch is split in halves and each half retried (after ``after_oom``, e.g. emptying the
    CUDA cache); any other error also splits the batch, so one bad item is isolated (an
    interrupt registered with :func:`never_isolate` propagates at once instead). An
    item that still fails on its own gets the exception as its result: the caller records
    that scene as failed with the reason, and the rest of the batch goes on.

    Args:
        items: the batch.
        run: the batched call.
        is_oom: tells out-of-memory errors from others.
        after_oom: called after each out-of-memory error.

    Returns:
        ``(results, largest)``: per item its result or its exception, in order; and the
        largest batch size that ran without running out of memory (0 if none did), so the
        caller can start its next batch there.
    """
    largest = 0
    out_of_memory = False

    def attempt(batch: Sequence[T]) -> list[R | BaseException]:
        nonlocal largest, out_of_memory
        try:
            results = list(run(batch))
        except Exception as exc:
            if is_interrupt(exc):
                raise
            if is_oom(exc):
                out_of_memory = True
                after_oom()
            if len(batch) == 1:
                return [exc]
            middle = len(batch) // 2
            return attempt(batch[:middle]) + attempt(batch[middle:])
        if len(results) != len(batch):
            raise RuntimeError(f"batched call returned {len(results)} results for {len(batch)}")
        largest = max(largest, len(batch))
        return list(results)

    results = attempt(items)
    return results, (largest if out_of_memory else max(largest, len(items)))
