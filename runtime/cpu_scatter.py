"""``scatter_add`` on the CPU with the generated kernel (:mod:`codegen.cpu_scatter`).

The kernel is compiled once per dtype and host and cached on disk like the GEMM.  A call
splits the output's ``(before, after)`` columns of the scattered axis into one range per
thread: each thread copies the base into its columns and adds every source row to them in
index order, so no two threads write one element (no atomics) and the sums are
``np.add.at``'s, bit for bit.  Indices must be in range and non-negative: a program's
``index_check`` step or :func:`scatter_add` checks them first.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from codegen import cpu, cpu_scatter
from runtime.addresses import data_address, element_strides
from runtime.kernel_cache import cached_artifact
from runtime.scatter_layout import ScatterLayout
from runtime.worker_pool import num_threads
from runtime.worker_pool import run as launch

DTYPES = cpu_scatter.DTYPES
# Elements written (base copy plus added rows) below which a call stays on the calling thread
SMALL_WORK = 64 * 1024

_kernels: dict[str, cpu.KernelFn] = {}
_kernels_lock = threading.Lock()


def _kernel(dtype: str) -> cpu.KernelFn:
    """The loaded kernel of ``dtype`` (from the disk cache, or compiled once)."""
    with _kernels_lock:
        fn = _kernels.get(dtype)
        if fn is None:
            name = cpu_scatter.symbol(dtype)
            artifact, _ = cached_artifact(f"scatter_add {name}", name,
                                          lambda: cpu_scatter.compile_scatter_add(dtype), {"disk_errors": 0})
            fn = _kernels[dtype] = cpu.load(artifact)
        return fn


def plan(sizes: tuple[int, int, int, int], dtype: str, threads: int | None = None) -> list[tuple[int, int]]:
    """Ranges of the flattened ``(P, C)`` columns, one per thread when the call is large, cut at
    64-byte pieces of a row where rows are made of them, else between rows (threads writing
    parts of one cache line would pass it back and forth at every row)."""
    p, n, m, c = sizes
    total = p * c
    if not total:
        return []
    align = max(1, 64 // np.dtype(dtype).itemsize)
    unit = align if c % align == 0 else c
    parts = min(num_threads() if threads is None else threads, total // unit)
    if parts <= 1 or p * (n + m) * c < SMALL_WORK:
        return [(0, total)]
    units = total // unit
    cuts = [0] + [units * k // parts * unit for k in range(1, parts)] + [total]
    return list(zip(cuts, cuts[1:]))


class ScatterCall:
    """One scatter_add's kernel, sizes, strides and ranges, worked out once: :meth:`run` takes the
    operands' addresses (a program step, or an eager call).  Not re-entrant."""

    def __init__(self, dtype: str, layout: ScatterLayout, threads: int | None = None):
        self.fn = _kernel(dtype)
        self.ranges = plan(layout.sizes, dtype, threads)
        self.shape = (ctypes.c_int64 * 4)(*layout.sizes)
        self.strides = (ctypes.c_int64 * 8)(*layout.strides)
        self.ptrs = (ctypes.c_uint64 * 4)()
        self.args = tuple(ctypes.addressof(x) for x in (self.shape, self.strides, self.ptrs))

    def run(self, out: int, base: int, src: int, idx: int) -> None:
        if not self.ranges:
            return
        ptrs = self.ptrs
        ptrs[0], ptrs[1], ptrs[2], ptrs[3] = out, base, src, idx
        if len(self.ranges) == 1:
            self.fn(*self.ranges[0], *self.args)
        else:
            launch(self.fn, self.ranges, *self.args)


def scatter_add(base: np.ndarray, idx: np.ndarray, src: np.ndarray, axis: int) -> np.ndarray | None:
    """``out = base.copy(); np.add.at`` of ``src`` at ``idx`` along ``axis``, with the kernel;
    None when it does not take these operands (their dtype).  ``idx`` must be int64 in
    ``[0, base.shape[axis])``."""
    dtype = base.dtype.name
    if dtype not in DTYPES or src.dtype != base.dtype or idx.dtype != np.int64:
        return None
    out = np.empty(base.shape, base.dtype)
    src, idx = np.ascontiguousarray(src), np.ascontiguousarray(idx)
    layout = ScatterLayout(base.shape, idx.shape, axis, element_strides(out), element_strides(base),
                           element_strides(src), element_strides(idx))
    if not layout.ok:
        base = np.ascontiguousarray(base)
        layout = ScatterLayout(base.shape, idx.shape, axis, element_strides(out), element_strides(base),
                               element_strides(src), element_strides(idx))
    if not layout.ok:
        return None
    addresses = (data_address(x) for x in (out, base, src, idx))
    ScatterCall(dtype, layout).run(*addresses)
    return out
