"""``out = a @ b`` on the CPU with the generated GEMM (:mod:`codegen.cpu_gemm`).

The kernel is compiled once per dtype and host and cached on disk like the other CPU kernels
(:mod:`runtime.disk_cache` entries: a damaged one is rebuilt).  A call splits C's columns (or,
when C is narrow, its rows) into one range per thread and runs them with
:func:`runtime.cpu.launch`; each range packs into its own slot of a per-calling-thread scratch
buffer, kept between calls (first-touching fresh pages would cost more than small GEMMs).
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from codegen import cpu, cpu_gemm
from runtime.cpu import data_address, launch, num_threads
from runtime.kernel_cache import cached_artifact

# Multiply-adds below which a GEMM stays on the calling thread: each thread packs its own panels,
# and below ~4M multiply-adds ((128,128,128), (256,10,512)) one core was as fast as two.
SMALL_GEMM = 4 << 20
# TRACEJIT_BLAS_MATMUL=1 sends every matmul to NumPy's BLAS (to compare the two).
_ALWAYS_BLAS = os.environ.get("TRACEJIT_BLAS_MATMUL", "") not in ("", "0")


class _Gemm:
    """The loaded kernel of one dtype (and vector width: the host's unless testing others)."""

    def __init__(self, dtype: str, vector_bytes: int | None = None):
        self.params = p = cpu_gemm.params(dtype, vector_bytes)
        self.stats = {"disk_errors": 0}
        artifact, self.from_disk = cached_artifact(f"gemm {p.symbol}", p.symbol,
                                                   lambda: cpu_gemm.compile_gemm(dtype, vector_bytes),
                                                   self.stats)
        self.fn = cpu.load(artifact)


_kernels: dict[tuple[str, int | None], _Gemm] = {}
_kernels_lock = threading.Lock()


def _kernel(dtype: str, vector_bytes: int | None = None) -> _Gemm:
    with _kernels_lock:
        k = _kernels.get((dtype, vector_bytes))
        if k is None:
            k = _kernels[dtype, vector_bytes] = _Gemm(dtype, vector_bytes)
        return k


class _Args(threading.local):
    """Per calling thread: the kernel's argument arrays and packing scratch (so concurrent
    calls from several threads never share them, and a call allocates nothing)."""

    def __init__(self):
        self.shape = (ctypes.c_int64 * 5)()
        self.strides = (ctypes.c_int64 * 6)()
        self.ptrs = (ctypes.c_uint64 * 4)()
        self.addresses = tuple(ctypes.addressof(x) for x in (self.shape, self.strides, self.ptrs))
        self.scratch: np.ndarray | None = None

    def scratch_address(self, nbytes: int) -> int:
        """Address of >= ``nbytes`` of 64-byte aligned scratch."""
        if self.scratch is None or self.scratch.nbytes < nbytes + 64:
            self.scratch = np.zeros(nbytes + 64, np.uint8)
        return (data_address(self.scratch) + 63) // 64 * 64


_args = _Args()


def _round_up(x: int, step: int) -> int:
    return -(-x // step) * step


def plan(m: int, n: int, k: int, p: cpu_gemm.GemmParams, threads: int) -> tuple[int, int, int]:
    """(split, chunk, total): ranges of ``chunk`` columns (split 0) or rows (split 1) of C."""
    if threads > 1 and m * n * k >= SMALL_GEMM:
        if n >= 2 * p.nr * threads:
            return 0, _round_up(-(-n // threads), p.nr), n
        if m >= 2 * p.mr * threads:
            return 1, _round_up(-(-m // threads), p.mr), m
    return 0, max(n, 1), n


_DTYPE_NAMES = {np.dtype(d): d for d in cpu_gemm.DTYPES}


def _check(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> str:
    """Validate the operands; returns the dtype's name."""
    for name, x in (("a", a), ("b", b), ("out", out)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"gemm: {name} must be a NumPy array, got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"gemm: {name} must be 2-D, got shape {x.shape}")
    dtype = _DTYPE_NAMES.get(a.dtype)
    if not (a.dtype == b.dtype == out.dtype) or dtype is None:
        raise TypeError(f"gemm: a, b and out must share one dtype of {cpu_gemm.DTYPES}, "
                        f"got {a.dtype}, {b.dtype}, {out.dtype}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm: inner dimensions differ: a {a.shape} @ b {b.shape}")
    if out.shape != (a.shape[0], b.shape[1]):
        raise ValueError(f"gemm: out has shape {out.shape}, a {a.shape} @ b {b.shape} needs "
                         f"{(a.shape[0], b.shape[1])}")
    if not out.flags.writeable:
        raise ValueError("gemm: out is read-only")
    return dtype


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = a @ b`` (any dims, dtypes NumPy's matmul takes): the generated GEMM for 2-D
    float products, NumPy otherwise.

    Even the small products NumPy's BLAS does a few microseconds faster stay here: a BLAS whose
    threads spin after each call (OpenBLAS) takes the cores from the kernels that follow, which
    doubled the time of the next large GEMM in an MLP forward pass.
    """
    if a.ndim == 2 and a.dtype in _DTYPE_NAMES and a.dtype == b.dtype == out.dtype and not _ALWAYS_BLAS:
        _gemm(a, b, out, None)
        return
    if a.ndim == 2 and a.shape[1] < 64 and out.flags.c_contiguous:
        # NumPy's matmul(out=) takes a slow non-BLAS loop for a short inner dim; dot does not
        np.dot(a, b, out=out)
    else:
        np.matmul(a, b, out=out)


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """``out[...] = a @ b`` for 2-D float32/float64 arrays of any strides (``threads`` default:
    :func:`runtime.cpu.num_threads`).  Inputs overlapping ``out`` are copied first."""
    _gemm(a, b, out, threads)


def _gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int | None,
          vector_bytes: int | None = None) -> None:
    """:func:`gemm` with the kernel built for ``vector_bytes`` registers (tests of other hosts)."""
    dtype = _check(a, b, out)
    m, n, k = out.shape[0], out.shape[1], a.shape[1]
    if m == 0 or n == 0:
        return
    if np.may_share_memory(a, out):
        a = a.copy()
    if np.may_share_memory(b, out):
        b = b.copy()
    kern = _kernels.get((dtype, vector_bytes)) or _kernel(dtype, vector_bytes)
    p = kern.params
    if n < p.nr <= m:
        # C.T = B.T @ A.T: a narrow C wastes most of each tile's columns, fewer of its rows
        a, b, out, m, n = b.T, a.T, out.T, n, m
    split, chunk, total = plan(m, n, k, p, num_threads() if threads is None else threads)
    ranges = [(s, min(s + chunk, total)) for s in range(0, total, chunk)]
    size = a.itemsize
    args = _args
    args.shape[:] = (m, n, k, split, chunk)
    (a_m, a_k), (b_k, b_n), (c_m, c_n) = a.strides, b.strides, out.strides
    args.strides[:] = (a_m // size, a_k // size, b_k // size, b_n // size, c_m // size, c_n // size)
    args.ptrs[:] = (data_address(a) if k else 0, data_address(b) if k else 0, data_address(out),
                    args.scratch_address(p.scratch_bytes * len(ranges)))
    launch(kern.fn, ranges, *args.addresses)
