"""Seconds spent per pipeline stage, summed across threads (what ``bench/ai_host.py``
reports as host milliseconds per image by stage)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StageClock"]


class StageClock:
    """Thread-safe sums of wall-clock seconds by stage name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        """Add the block's wall-clock seconds (perf_counter) to ``name``, even when it raises."""
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed

    def add(self, seconds: dict[str, float]) -> None:
        """Add seconds by stage measured elsewhere (a host process's)."""
        with self._lock:
            for name, value in seconds.items():
                self.seconds[name] = self.seconds.get(name, 0.0) + value
