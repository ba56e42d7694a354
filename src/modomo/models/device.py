"""Torch device selection, precision and out-of-memory detection.

Torch is imported inside these functions, never at module import: the Celery parent process
imports the task modules, and no CUDA state may exist there before it forks its children.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "empty_cache",
    "is_oom",
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


def set_torch_threads(threads: int = 0) -> int:
    """Set torch's CPU (intra-op) thread count, whatever an import set it to.

    Args:
        threads: ``MODOMO_TORCH_THREADS``; 0 for :func:`usable_cores`.

    Returns:
        The count set.
    """
    import torch

    threads = threads if threads > 0 else usable_cores()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
