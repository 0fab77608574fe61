"""A caching device allocator: size-class free lists in front of the driver's allocator.

``cuMemAlloc``/``cuMemFree`` synchronise the device and cost tens of microseconds, so freed
blocks go back to a free list keyed by their size class and are handed out again.  The class
rounds small requests up to 512 bytes and large ones (over 1 MiB) up to 2 MiB, which bounds
waste while letting blocks of similar size be reused.  All work is issued on one stream, so a
block freed here can be reused at once (stream order guarantees earlier kernels finished
reading it before later ones write it).

The driver is injected (``alloc(nbytes) -> handle``, ``free(handle)``, ``address(handle)``),
so this class is testable without a GPU.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

SMALL_QUANTUM = 512
LARGE_THRESHOLD = 1 << 20
LARGE_QUANTUM = 2 << 20


class DeviceMemoryDriver(Protocol):
    def alloc(self, nbytes: int) -> Any: ...
    def free(self, handle: Any) -> None: ...
    def address(self, handle: Any) -> int: ...


class OutOfMemoryError(MemoryError):
    """The device has no room for a request, even after the cache was emptied."""


def size_class(nbytes: int) -> int:
    """Bytes actually reserved for a request of ``nbytes`` (at least one quantum)."""
    q = SMALL_QUANTUM if nbytes <= LARGE_THRESHOLD else LARGE_QUANTUM
    return max(q, -(-nbytes // q) * q)


@dataclass(eq=False)
class Block:
    """One driver allocation; ``ptr`` is 256-byte aligned (cuMemAlloc's guarantee)."""
    handle: Any
    ptr: int
    size: int


class CachingAllocator:
    def __init__(self, driver: DeviceMemoryDriver) -> None:
        self._driver = driver
        self._free: dict[int, list[Block]] = defaultdict(list)
        self._allocated = 0      # bytes handed out (by size class)
        self._reserved = 0       # bytes held from the driver (handed out + cached)
        self._peak = 0
        self._num_allocs = 0     # driver allocations
        self._num_frees = 0      # driver frees
        self._requests = 0
        self._hits = 0

    def allocate(self, nbytes: int) -> Block:
        if nbytes < 0:
            raise ValueError(f"cannot allocate {nbytes} bytes")
        size = size_class(nbytes)
        self._requests += 1
        free = self._free.get(size)
        if free:
            block = free.pop()
            self._hits += 1
        else:
            block = self._driver_alloc(size)
        self._allocated += size
        self._peak = max(self._peak, self._allocated)
        return block

    def free(self, block: Block) -> None:
        """Return ``block`` to its free list (the memory stays reserved)."""
        self._allocated -= block.size
        self._free[block.size].append(block)

    def empty_cache(self) -> None:
        """Give every cached (unused) block back to the driver."""
        for blocks in self._free.values():
            for b in blocks:
                self._driver.free(b.handle)
                self._reserved -= b.size
                self._num_frees += 1
        self._free.clear()

    def memory_stats(self) -> dict[str, int]:
        return {
            "allocated": self._allocated,
            "reserved": self._reserved,
            "peak": self._peak,
            "cached": self._reserved - self._allocated,
            "num_allocs": self._num_allocs,
            "num_frees": self._num_frees,
            "requests": self._requests,
            "cache_hits": self._hits,
        }

    def reset_peak(self) -> None:
        self._peak = self._allocated

    def _driver_alloc(self, size: int) -> Block:
        try:
            handle = self._driver.alloc(size)
        except MemoryError:
            # cached blocks of other sizes may be what stands in the way
            self.empty_cache()
            try:
                handle = self._driver.alloc(size)
            except MemoryError as e:
                raise OutOfMemoryError(
                    f"CUDA out of memory allocating {size} bytes "
                    f"({self._allocated} bytes in use by tracejit)") from e
        self._num_allocs += 1
        self._reserved += size
        return Block(handle, self._driver.address(handle), size)
