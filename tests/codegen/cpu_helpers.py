"""Building and running small hand-written kernels against NumPy."""
from __future__ import annotations

from typing import Any

import numpy as np

from codegen import kir
from runtime.cpu import layout_of, run_kernel
from runtime.kernel_cache import KernelCache

CACHE = KernelCache(disk=False)


def L(i: int) -> kir.Load:
    return kir.Load(i)


def C(value, dtype: str) -> kir.Const:
    return kir.Const(value, dtype)


def op(name: str, dtype: str, *args: kir.Expr) -> kir.Op:
    return kir.Op(name, tuple(args), dtype)


def operand(a: np.ndarray, shape) -> kir.Operand:
    v = np.broadcast_to(a, shape)
    return kir.Operand(a.dtype.name, layout_of(shape, [s // a.itemsize for s in v.strides]))


def elementwise(exprs: list[kir.Expr], inputs: list[np.ndarray], out_dtypes: list[str],
                threads: int | None = None) -> list[np.ndarray]:
    """Run one elementwise kernel storing ``exprs[i]`` into fresh output ``i``."""
    shape = np.broadcast_shapes(*[a.shape for a in inputs])
    outs = [np.empty(shape, dt) for dt in out_dtypes]
    k = kir.Kernel("t", len(shape), 0, tuple(operand(a, shape) for a in inputs),
                   tuple(operand(o, shape) for o in outs),
                   tuple(kir.Store(i, e) for i, e in enumerate(exprs)))
    run_kernel(k, shape, inputs, outs, threads=threads, cache=CACHE)
    return outs


def reduce_kernel(stages: list[kir.Stage], inputs: list[np.ndarray], outputs: list[np.ndarray],
                  shape, n_reduce: int, threads: int | None = None) -> None:
    """Run a kernel over iteration ``shape``; arrays are given already viewed in iteration order
    (outputs with size-1 reduce dims)."""
    k = kir.Kernel("r", len(shape), n_reduce, tuple(operand(a, shape) for a in inputs),
                   tuple(operand(o, shape) for o in outputs), tuple(stages))
    run_kernel(k, shape, inputs, outputs, threads=threads, cache=CACHE)


def before_guard_page(shape: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, object]:
    """An array whose last byte is the last before an unreadable page: a vector access past
    the end of the data faults instead of reading a neighbour's memory."""
    import ctypes
    import mmap
    page = mmap.PAGESIZE
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    pages = -(-nbytes // page)
    m = mmap.mmap(-1, (pages + 1) * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    assert libc.mprotect(base + pages * page, page, 0) == 0     # PROT_NONE
    arr = np.frombuffer(m, np.uint8, nbytes, pages * page - nbytes).view(dtype).reshape(shape)
    return arr, m
