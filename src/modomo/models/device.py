"""Torch device selection, precision and out-of-memory detection.

Torch is imported inside these functions, never at module import: the Celery parent process
imports the task modules, and no CUDA state may exist there before it forks its children.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "empty_cache",
    "is_oom",
    "reserve_host_cores",
    "resolve_device",
    "set_torch_threads",
    "torch_dtype",
    "usable_cores",
]


def resolve_device(name: str = "auto") -> str:
    """The torch device to run on.

    Args:
        name: ``auto`` (CUDA if available, else Apple MPS, else CPU), ``cpu``, ``cuda``,
            ``cuda:N`` or ``mps`` (``MODOMO_DEVICE``).

    Returns:
        A device string torch accepts.

    Raises:
        ValueError: ``name`` is not a device torch knows.
        RuntimeError: the named accelerator is not available in this process.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"MODOMO_DEVICE: not a torch device: {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"MODOMO_DEVICE={name} but CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"MODOMO_DEVICE={name} but MPS is not available on this machine")
    return name


def torch_dtype(device: str, half: bool) -> Any:
    """float16 on CUDA when ``half`` (``MODOMO_HALF_PRECISION``), else float32."""
    import torch

    return torch.float16 if half and device.startswith("cuda") else torch.float32


def is_oom(exc: BaseException) -> bool:
    """True when ``exc`` is an accelerator out-of-memory error (CUDA or MPS)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def empty_cache(device: str) -> None:
    """Release cached accelerator memory after an out-of-memory error."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, which a container's cpuset
    limits; the machine's count where there is no affinity, as on macOS)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_host_cores = 0
"""Cores this process's host threads or processes keep busy (see :func:`reserve_host_cores`)."""


def reserve_host_cores(count: int) -> None:
    """Leave ``count`` cores to this process's host work when torch's thread count is
    automatic: the next :func:`set_torch_threads` (every model load) applies it.

    An AI worker decodes and finishes scenes on host processes while torch runs the models:
    a torch pool as wide as the machine oversubscribes it, and its OpenMP threads spin
    waiting for work on the cores the host processes need (``bench/ai_host.py`` on 2 cores,
    stand-in models, 1280x960/5: two host processes used 77 ms of CPU per image beside two
    torch threads and 45 ms beside one, and ran 0.76x and 1.45x as fast as one process).

    Args:
        count: the worker's host threads or processes (``MODOMO_AI_HOST_THREADS``, resolved).
    """
    global _host_cores
    _host_cores = max(0, count)


def set_torch_threads(threads: int = 0) -> int:
    """Set torch's CPU (intra-op) thread count, whatever an import set it to.

    Args:
        threads: ``MODOMO_TORCH_THREADS``; 0 for :func:`usable_cores` less the cores
            reserved for host work (:func:`reserve_host_cores`), at least 1.

    Returns:
        The count set.
    """
    import torch

    threads = threads if threads > 0 else max(1, usable_cores() - _host_cores)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
