"""The AI worker's host side: decoding and per-scene post-processing on a pool of threads
while the device runs the models, a bounded number of batches in flight.

One AI worker process holds one copy of each model per GPU (concurrency 1). Its main thread
feeds the device; :func:`pipelined` keeps the host work around it off that thread::

    host threads:  decode k+1        finish k (per scene)      decode k+2 …
    main thread:          infer k+1 ─────────────────────────── count k, infer k+2 …

Batch k+1 is decoded while batch k is inferred, and batch k's scenes are finished (masks to
RLE, palettes, depth PNG, storage) while batch k+1 is on the device. While the main thread
waits for a batch's inputs, it hands over the outcomes already finished and takes on itself
the host work no thread has started, so a stalled read cannot hold back earlier scenes. At
most ``lookahead`` batches are decoded ahead and ``finishing`` batches await their host work,
so memory stays flat however long the task. The AI worker's ``load`` and ``finish`` hand the
CPU work to host processes (:mod:`modomo.inference.host_processes`), its threads here only
reading, writing and waiting; with ``MODOMO_AI_HOST_PROCESSES=false`` they do the work
themselves (palettes' k-means, many small NumPy calls, then holds the GIL). Our own code
because this scheduling is the product's core (what keeps a GPU busy); a
``torch.utils.data.DataLoader`` covers only the decode side of it.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from modomo.models.device import usable_cores

__all__ = ["Outcome", "default_host_threads", "host_pool", "pipelined", "single_threaded_libraries"]

T = TypeVar("T")  # an item (a scene id)
D = TypeVar("D")  # its decoded input
I = TypeVar("I")  # noqa: E741 - its model outputs
R = TypeVar("R")  # its finished result


def default_host_threads() -> int:
    """The cores this process may use, less one for the main thread feeding the device;
    at least 1."""
    return max(1, usable_cores() - 1)


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def host_pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of ``threads`` host threads (created on first use, after a
    worker's fork; a forked child never uses its parent's), with NumPy's BLAS on one thread
    (:func:`single_threaded_libraries`)."""
    key = (os.getpid(), threads)
    with _pools_lock:
        if key not in _pools:
            single_threaded_libraries()
            _pools[key] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ai-host")
        return _pools[key]


def single_threaded_libraries() -> None:
    """Run NumPy's BLAS (OpenBLAS, with threadpoolctl) and OpenCV on one thread each in
    this process: the host threads are its parallelism.

    Host work is many small matrix products (k-means over a palette's bins) and a few
    OpenCV calls (JPEG orientation, resizing) on several host threads at once; the
    libraries' own threads only contend with them and with the models (palettes 25-30 %
    slower on a 2-core machine). Torch's thread pool is left as ``MODOMO_TORCH_THREADS``
    sets it.
    """
    import cv2
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    cv2.setNumThreads(1)


@dataclass(frozen=True)
class Outcome(Generic[T, R]):
    """One item's end: its result, or the error that stopped it and where.

    Attributes:
        item: the item (a scene id).
        result: the finished result, or None when it failed.
        error: the exception, or None.
        at_load: True when loading (reading, decoding) failed: no model saw the item.
    """

    item: T
    result: R | None = None
    error: BaseException | None = None
    at_load: bool = False


@dataclass
class _Batch(Generic[T]):
    items: Sequence[T]
    outcomes: list[Outcome | Future]
    work: dict[int, tuple[Any, ...]]  # a finish future's arguments, by slot


def pipelined(
    batches: Iterable[Sequence[T]],
    load: Callable[[T], D],
    infer: Callable[[list[D], list[T]], Sequence[I | BaseException]],
    finish: Callable[[T, D, I], R],
    pool: ThreadPoolExecutor,
    *,
    lookahead: int = 1,
    finishing: int = 1,
    started: Callable[[Sequence[T]], None] | None = None,
) -> Generator[Outcome[T, R], None, None]:
    """Load, infer and finish batches of items as a pipeline; yield each item's outcome once,
    in order.

    ``load`` and ``finish`` run on ``pool``'s threads, one call per item; ``infer`` runs on
    the calling thread, one call per batch, and returns one output (or exception) per loaded
    item. An exception from ``load`` or ``finish``, or returned by ``infer``, fails that item
    alone; one raised by ``infer`` (an interrupt such as Celery's soft time limit) propagates,
    after the outcomes already finished are yielded.

    Closing the generator early (a ``break``, an exception in the consumer) cancels the host
    work not yet started and does not wait for the rest; the items not yet yielded are the
    consumer's to account for.

    Args:
        batches: items, in batches (the device's batch).
        load: reads and decodes one item (host thread).
        infer: runs the models on a batch's loaded inputs (calling thread).
        finish: turns one item's outputs into its result (host thread).
        pool: the host threads.
        lookahead: batches loaded ahead of the one on the device (>= 1).
        finishing: batches whose host work may still run while the next is inferred (>= 1).
        started: called with a batch's items when it becomes the one waited for and
            inferred (so a consumer knows which items are in hand, not just loaded ahead).
    """
    source = iter(batches)
    loading: deque[tuple[Sequence[T], list[Future[D]]]] = deque()
    done: deque[_Batch[T]] = deque()

    def submit_loads(limit: int) -> None:
        while len(loading) < limit:
            items = next(source, None)
            if items is None:
                return
            loading.append((items, [pool.submit(load, item) for item in items]))

    try:
        submit_loads(lookahead + 1)  # the first batch and those ahead of it
        while loading:
            items, loads = loading.popleft()
            submit_loads(lookahead)
            if started is not None:
                started(items)
            # While this batch's inputs are not ready: hand over what is finished, and do
            # here the host work still queued behind those loads (a stalled read holding the
            # host threads must not hold back the outcomes of earlier batches).
            while True:
                yield from _drain_settled(done)
                if all(f.done() for f in loads) or not _steal(done):
                    break
            outcomes: list[Outcome | Future] = []
            work: dict[int, tuple[Any, ...]] = {}
            ready: list[tuple[int, T, D]] = []
            for item, future in zip(items, loads, strict=True):
                try:
                    value = future.result()
                except Exception as exc:
                    outcomes.append(Outcome(item, error=exc, at_load=True))
                    continue
                ready.append((len(outcomes), item, value))
                outcomes.append(Outcome(item))  # replaced below
            if ready:
                try:
                    outputs = infer(
                        [value for _, _, value in ready], [item for _, item, _ in ready]
                    )
                except BaseException:
                    # an interrupt (a time limit): hand over what is already finished first
                    yield from _drain_settled(done)
                    raise
                for (slot, item, value), output in zip(ready, outputs, strict=True):
                    if isinstance(output, BaseException):
                        outcomes[slot] = Outcome(item, error=output)
                    else:
                        work[slot] = (finish, item, value, output)
                        outcomes[slot] = pool.submit(_finished, *work[slot])
            done.append(_Batch(items, outcomes, work))
            while len(done) > finishing or (done and not loading):
                yield from _drain(done.popleft())
            yield from _drain_settled(done)
    finally:
        for _, loads in loading:
            for future in loads:
                future.cancel()
        for batch in done:
            for entry in batch.outcomes:
                if isinstance(entry, Future):
                    entry.cancel()


def _finished(finish: Callable[[T, D, I], R], item: T, value: D, output: I) -> Outcome:
    try:
        return Outcome(item, result=finish(item, value, output))
    except Exception as exc:
        return Outcome(item, error=exc)


def _steal(batches: Iterable[_Batch]) -> bool:
    """Run on this thread the oldest finish call no host thread has started; False if none."""
    for batch in batches:
        for slot, entry in enumerate(batch.outcomes):
            if isinstance(entry, Future) and entry.cancel():
                batch.outcomes[slot] = _finished(*batch.work[slot])
                return True
    return False


def _settled(batch: _Batch) -> bool:
    return all(not isinstance(e, Future) or e.done() for e in batch.outcomes)


def _drain_settled(done: deque[_Batch]) -> Generator[Outcome, None, None]:
    """The outcomes of the oldest batches whose host work has all ended, in order."""
    while done and _settled(done[0]):
        yield from _drain(done.popleft())


def _drain(batch: _Batch) -> Generator[Outcome, None, None]:
    for entry in batch.outcomes:
        yield entry.result() if isinstance(entry, Future) else entry
