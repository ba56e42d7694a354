"""modomo.inference.pipelined: every item's outcome once and in order, host work beside the
device's, a bounded number of batches in flight, early close cancels what has not started."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from modomo.inference import Outcome, default_host_threads, pipelined


def batches(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def test_each_outcome_once_in_order_with_failures_where_they_happened() -> None:
    def load(item: int) -> int:
        if item % 7 == 3:
            raise OSError(f"cannot read {item}")
        return item * 10

    def infer(values: list[int], items: list[int]) -> list[int | BaseException]:
        return [
            ValueError("model") if i % 11 == 5 else v + 1
            for v, i in zip(values, items, strict=True)
        ]

    def finish(item: int, value: int, output: int) -> int:
        if item % 13 == 8:
            raise ArithmeticError("finish")
        assert output == value + 1
        return output

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pipelined(batches(60, 4), load, infer, finish, pool))
    assert [o.item for o in outcomes] == list(range(60))
    for o in outcomes:
        if o.item % 7 == 3:
            assert o.at_load and isinstance(o.error, OSError)
        elif o.item % 11 == 5:
            assert not o.at_load and isinstance(o.error, ValueError)
        elif o.item % 13 == 8:
            assert isinstance(o.error, ArithmeticError)
        else:
            assert o.error is None and o.result == o.item * 10 + 1


def test_host_work_runs_while_the_next_batch_is_on_the_device() -> None:
    finishing = threading.Event()
    overlapped = []

    def infer(values: list[int], items: list[int]) -> list[int]:
        if items[0] > 0:  # batch k+1 on the device: batch k's host work is under way
            overlapped.append(finishing.wait(5))
        return values

    def finish(item: int, value: int, output: int) -> int:
        finishing.set()
        time.sleep(0.05)
        return output

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pipelined(batches(12, 3), lambda i: i, infer, finish, pool))
    assert len(outcomes) == 12 and all(o.error is None for o in outcomes)
    assert overlapped and all(overlapped)


@pytest.mark.parametrize("in_flight", [1, 2])
def test_batches_in_flight_are_bounded(in_flight: int) -> None:
    lock = threading.Lock()
    alive: set[int] = set()  # batches loaded whose outcomes are not yet consumed
    peak = 0

    def load(item: int) -> int:
        nonlocal peak
        with lock:
            alive.add(item // 4)
            peak = max(peak, len(alive))
        return item

    with ThreadPoolExecutor(4) as pool:
        for outcome in pipelined(
            batches(64, 4),
            load,
            lambda values, items: values,
            lambda item, value, output: output,
            pool,
            lookahead=in_flight,
            finishing=in_flight,
        ):
            if outcome.item % 4 == 3:
                with lock:
                    alive.discard(outcome.item // 4)
    # decoded ahead + on the device + finishing
    assert peak <= 2 * in_flight + 1


def test_closing_early_cancels_host_work_not_started() -> None:
    loaded: list[int] = []

    def load(item: int) -> int:
        loaded.append(item)
        return item

    with ThreadPoolExecutor(1) as pool:
        outcomes = pipelined(
            batches(400, 4), load, lambda v, i: v, lambda i, v, o: o, pool, lookahead=1
        )
        first = [next(outcomes) for _ in range(4)]
        outcomes.close()
    assert all(isinstance(o, Outcome) for o in first)
    assert len(loaded) <= 16  # a few batches, never the 400 items


def test_an_interrupt_from_the_device_propagates() -> None:
    class Interrupt(Exception):
        pass

    def infer(values: list[int], items: list[int]) -> list[int]:
        if items[0] >= 8:
            raise Interrupt
        return values

    seen = []
    with ThreadPoolExecutor(2) as pool, pytest.raises(Interrupt):
        for outcome in pipelined(batches(20, 4), lambda i: i, infer, lambda i, v, o: o, pool):
            seen.append(outcome.item)
    assert seen == list(range(len(seen))) and len(seen) <= 8


def test_default_host_threads_leaves_a_core_for_the_device_feeder() -> None:
    import os

    assert default_host_threads() == max(1, len(os.sched_getaffinity(0)) - 1)


def test_a_stalled_read_does_not_hold_back_earlier_outcomes() -> None:
    stalled = threading.Event()
    release = threading.Event()

    def load(item: int) -> int:
        if item == 1:  # the second batch's read hangs, holding the only host thread
            stalled.set()
            release.wait(10)
        return item

    counted: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        outcomes = pipelined(batches(3, 1), load, lambda v, i: v, lambda i, v, o: o, pool)
        waiter = threading.Thread(target=lambda: counted.extend(o.item for o in outcomes))
        waiter.start()
        assert stalled.wait(5)
        # the first scene's host work ran on the main thread and its outcome came out
        deadline = time.monotonic() + 5
        while counted != [0] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert counted == [0]
        release.set()
        waiter.join(10)
    assert counted == [0, 1, 2]
