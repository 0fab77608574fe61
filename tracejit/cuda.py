"""``tracejit.cuda``: is a GPU usable, and its memory and synchronization.

Nothing here needs pycuda to be importable: without it (or without a driver or a GPU)
:func:`is_available` is False and :func:`unavailable_reason` says which.
"""
from __future__ import annotations

from runtime import cuda as _rt

__all__ = ["is_available", "unavailable_reason", "device_count", "get_device_name", "synchronize",
           "memory_stats", "empty_cache"]


def is_available() -> bool:
    """Whether CUDA tensors can be created (pycuda imports, the driver starts, a GPU is there)."""
    return _rt.is_available()


def unavailable_reason() -> str | None:
    """Why CUDA cannot be used (None when it can)."""
    return _rt.unavailable_reason()


def device_count() -> int:
    """Number of visible GPUs (0 without CUDA)."""
    return _rt.device_count()


def get_device_name(device: int = 0) -> str:
    """The GPU's name, e.g. ``"NVIDIA H100 80GB HBM3"``."""
    from .device import require_cuda
    require_cuda("tracejit.cuda.get_device_name")
    return _rt.device_properties(device)[0]


def synchronize() -> None:
    """Wait for all queued GPU work (kernels run asynchronously); a no-op without CUDA."""
    if _rt.is_available():
        _rt.synchronize()


def memory_stats(device: int = 0) -> dict[str, int]:
    """The caching allocator's counters: allocated, reserved, peak, cached, num_allocs, cache_hits…"""
    from .device import require_cuda
    require_cuda("tracejit.cuda.memory_stats")
    return _rt.memory_stats(device)


def empty_cache() -> None:
    """Return cached, unused GPU memory to the driver."""
    _rt.empty_cache()
