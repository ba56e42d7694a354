"""Out-of-memory back-off of batched model calls (the failure is injected in the call)."""

from collections.abc import Sequence

import pytest

from modomo.batching import map_with_backoff


class FakeOOM(RuntimeError):
    pass


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, FakeOOM)


def test_oom_halves_the_batch_until_it_fits() -> None:
    calls: list[int] = []
    freed: list[int] = []

    def run(batch: Sequence[int]) -> list[int]:
        calls.append(len(batch))
        if len(batch) > 2:
            raise FakeOOM("CUDA out of memory")
        return [x * 10 for x in batch]

    results, largest = map_with_backoff(
        list(range(8)), run, is_oom=is_oom, after_oom=lambda: freed.append(1)
    )
    assert results == [x * 10 for x in range(8)]
    assert largest == 2
    assert calls[:3] == [8, 4, 2] and max(calls[3:]) <= 4
    assert len(freed) == 3  # 8 and both 4s ran out of memory


def test_an_item_that_fails_alone_gets_its_error_and_the_rest_goes_on() -> None:
    def run(batch: Sequence[int]) -> list[int]:
        if 3 in batch:
            raise FakeOOM("out of memory on the huge image")
        return list(batch)

    results, largest = map_with_backoff([1, 2, 3, 4], run, is_oom=is_oom)
    assert results[:2] == [1, 2] and results[3] == 4
    assert isinstance(results[2], FakeOOM)
    assert largest == 2


def test_no_oom_keeps_the_batch_size() -> None:
    results, largest = map_with_backoff([1, 2, 3], lambda b: list(b), is_oom=is_oom)
    assert results == [1, 2, 3] and largest == 3


def test_closing_prefetch_does_not_wait_for_a_stalled_load() -> None:
    # After a soft time limit the task leaves its loop at once; a read that hangs (a stalled
    # network filesystem) must not hold it until the hard limit kills the worker child.
    import time
    from contextlib import closing

    from modomo.batching import prefetch

    def load(item: int) -> int:
        if item == 2:
            time.sleep(3)
        return item

    started = time.monotonic()
    with closing(prefetch([1, 2, 3], load, depth=1)) as loads:
        for _item, future in loads:
            assert future.result() == 1
            break
    assert time.monotonic() - started < 1.0


def test_an_interrupt_stops_the_batch_instead_of_failing_an_item() -> None:
    """Celery's soft time limit (registered by the task layer) propagates at once: no split,
    no retry of the halves, no item recorded as failed by it."""
    from celery.exceptions import SoftTimeLimitExceeded

    import modomo.tasks.base  # noqa: F401 - registers the soft time limit
    from modomo.batching import is_interrupt

    calls: list[int] = []

    def run(batch: Sequence[int]) -> list[int]:
        calls.append(len(batch))
        raise SoftTimeLimitExceeded()

    assert is_interrupt(SoftTimeLimitExceeded())
    with pytest.raises(SoftTimeLimitExceeded):
        map_with_backoff(list(range(8)), run, is_oom=lambda exc: False)
    assert calls == [8]
