"""``out = a @ b`` on the CPU with the generated GEMM (:mod:`codegen.cpu_gemm`).

The kernel is compiled once per dtype and host and cached on disk like the other CPU kernels
(:mod:`runtime.disk_cache` entries: a damaged one is rebuilt).  A call splits C's columns (or,
when C is narrow, its rows) into one range per thread and runs them with
:func:`runtime.worker_pool.run`; each range packs into its own slot of a per-calling-thread
scratch buffer, kept between calls (first-touching fresh pages would cost more than small
GEMMs).  A :class:`GemmCall` is that work out for one shape and layout, made once: a program
keeps one per matmul step, eager calls one per recent signature.
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable

import ml_dtypes
import numpy as np

from codegen import cpu, cpu_gemm, cpu_gemm_bf16
from codegen.scalar import itemsize
from runtime.addresses import data_address, element_strides
from runtime.kernel_cache import cached_artifact
from runtime.worker_pool import num_threads
from runtime.worker_pool import run as launch

# Multiply-adds below which a GEMM stays on the calling thread (each thread packs its own
# panels): on a 2-core Zen 4, (96,96,96) and (256,10,512) ran 20-40% faster on both cores,
# (64,64,64) slower.
SMALL_GEMM = 1 << 20
# TRACEJIT_BLAS_MATMUL=1 sends every matmul to NumPy's BLAS (to compare the two).
ALWAYS_BLAS = os.environ.get("TRACEJIT_BLAS_MATMUL", "") not in ("", "0")


class _Gemm:
    """The loaded kernel of one dtype (and vector width: the host's unless testing others)."""

    def __init__(self, dtype: str, vector_bytes: int | None = None):
        if dtype == BF16:
            self.params = p = cpu_gemm_bf16.params()
            build = cpu_gemm_bf16.compile_gemm
        else:
            self.params = p = cpu_gemm.params(dtype, vector_bytes)
            build = functools.partial(cpu_gemm.compile_gemm, dtype, vector_bytes)
        self.stats = {"disk_errors": 0}
        artifact, self.from_disk = cached_artifact(f"gemm {p.symbol}", p.symbol, build, self.stats)
        self.fn = cpu.load(artifact)
        self.batched_fn = cpu.KERNEL_CFUNCTYPE(cpu.load_address(artifact, f"{p.symbol}_batched"))


_kernels: dict[tuple[str, int | None], _Gemm] = {}
_kernels_lock = threading.Lock()


def _kernel(dtype: str, vector_bytes: int | None = None) -> _Gemm:
    with _kernels_lock:
        k = _kernels.get((dtype, vector_bytes))
        if k is None:
            k = _kernels[dtype, vector_bytes] = _Gemm(dtype, vector_bytes)
        return k


class _Scratch(threading.local):
    """Per calling thread: packing scratch kept between calls (concurrent calls from several
    threads never share it, and a call allocates nothing)."""

    def __init__(self):
        self.array: np.ndarray | None = None

    def address(self, nbytes: int) -> int:
        """Address of >= ``nbytes`` of 64-byte aligned scratch."""
        if self.array is None or self.array.nbytes < nbytes + 64:
            self.array = np.zeros(nbytes + 64, np.uint8)
        return (data_address(self.array) + 63) // 64 * 64


_scratch = _Scratch()


def scratch_address(nbytes: int) -> int:
    """The calling thread's packing scratch, at least ``nbytes`` (64-byte aligned)."""
    return _scratch.address(nbytes)


def _round_up(x: int, step: int) -> int:
    return -(-x // step) * step


def plan(m: int, n: int, k: int, p: cpu_gemm.GemmParams, threads: int) -> tuple[int, int, int]:
    """(split, chunk, total): ranges of ``chunk`` columns (split 0) or rows (split 1) of C.

    Every range packs all of the operand it does not split (all of A for a range of columns),
    so the longer side of C is split: a tall C (a weight gradient over a long sequence, M 1024
    by N 256) split by columns had each thread pack the whole 16 MB A."""
    if threads > 1 and m * n * k >= SMALL_GEMM:
        by_cols, by_rows = n >= 2 * p.nr * threads, m >= 2 * p.mr * threads
        if by_cols and not (by_rows and m > n):
            return 0, _round_up(-(-n // threads), p.nr), n
        if by_rows:
            return 1, _round_up(-(-m // threads), p.mr), m
    return 0, max(n, 1), n


DTYPES = cpu_gemm.DTYPES
_DTYPE_NAMES = {np.dtype(d): d for d in DTYPES}
BF16 = cpu_gemm_bf16.OPERAND
_BF16_DTYPE = np.dtype(ml_dtypes.bfloat16)


def _check(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> str:
    """Validate the operands; returns the dtype's name."""
    for name, x in (("a", a), ("b", b), ("out", out)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"gemm: {name} must be a NumPy array, got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"gemm: {name} must be 2-D, got shape {x.shape}")
    if a.dtype == b.dtype == _BF16_DTYPE and out.dtype == np.float32:
        dtype = BF16                    # bfloat16 products summed in float32
    else:
        dtype = _DTYPE_NAMES.get(a.dtype)
        if not (a.dtype == b.dtype == out.dtype) or dtype is None:
            raise TypeError(f"gemm: a, b and out must share one dtype of {cpu_gemm.DTYPES} "
                            f"(or be bfloat16 into float32), got {a.dtype}, {b.dtype}, {out.dtype}")
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
    floats = a.dtype in _DTYPE_NAMES and a.dtype == b.dtype == out.dtype and not ALWAYS_BLAS
    if floats and a.ndim == 2:
        _gemm(a, b, out, None)
        return
    if floats and a.ndim == b.ndim == out.ndim > 2 and a.shape[:-2] == b.shape[:-2] == out.shape[:-2]:
        batched_gemm(a, b, out)
        return
    if a.dtype == b.dtype == _BF16_DTYPE:
        _matmul_bf16(a, b, out)
        return
    if a.ndim == 2 and a.shape[1] < 64 and out.flags.c_contiguous:
        # NumPy's matmul(out=) takes a slow non-BLAS loop for a short inner dim; dot does not
        np.dot(a, b, out=out)
    else:
        np.matmul(a, b, out=out)


def _matmul_bf16(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """bfloat16 products summed in float32 and rounded once into ``out``: the AVX-512 BF16
    kernel where the host has it, else the float32 GEMM on the widened operands (the same
    products, exact in float32; sums in another order)."""
    acc = out if out.dtype == np.float32 else np.empty(out.shape, np.float32)
    if a.ndim == b.ndim == 2 and cpu_gemm_bf16.available() and not ALWAYS_BLAS:
        _gemm(a, b, acc, None)
    else:
        matmul(a.astype(np.float32), b.astype(np.float32), acc)
    if acc is not out:
        out[...] = acc.astype(out.dtype)


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """``out[...] = a @ b`` for 2-D float32/float64 arrays of any strides (``threads`` default:
    :func:`runtime.worker_pool.num_threads`).  Inputs overlapping ``out`` are copied first."""
    _gemm(a, b, out, threads)


class GemmCall:
    """One GEMM's kernel, shapes, element strides and split, worked out once: :meth:`run` takes
    the operands' addresses (a program step, or a repeated eager product).  Not re-entrant.

    B (the kernel's: A when the product runs transposed) is packed per call into scratch,
    unless :meth:`share_b` points the call at panels shared with other products of the same B
    (a program's products of one weight, :func:`runtime.cpu.share_packed_weights`)."""

    def __init__(self, dtype: str, m: int, n: int, k: int, a_strides: tuple[int, int],
                 b_strides: tuple[int, int], out_strides: tuple[int, int], threads: int | None = None,
                 vector_bytes: int | None = None):
        kern = _kernels.get((dtype, vector_bytes)) or _kernel(dtype, vector_bytes)
        p = kern.params
        self.swapped = n < p.nr <= m
        if self.swapped:
            # C.T = B.T @ A.T: a narrow C wastes most of each tile's columns, fewer of its rows
            a_strides, b_strides, out_strides = b_strides[::-1], a_strides[::-1], out_strides[::-1]
            m, n = n, m
        split, chunk, total = plan(m, n, k, p, num_threads() if threads is None else threads)
        self.ranges = [(s, min(s + chunk, total)) for s in range(0, total, chunk)] if m and n else []
        self.fn = kern.fn
        self.params = p
        self.has_k = k > 0
        self.scratch_bytes = p.scratch_bytes * len(self.ranges)
        # what fixes the shared panels' layout and content, given the address of B's element [0, 0]
        self.b_layout = (dtype, vector_bytes, k, n, tuple(b_strides))
        self.b_mode, self.shared_b = cpu_gemm.B_SCRATCH, 0
        self.shape = (ctypes.c_int64 * 6)(m, n, k, split, chunk, cpu_gemm.B_SCRATCH)
        self.strides = (ctypes.c_int64 * 6)(*a_strides, *b_strides, *out_strides)
        self.ptrs = (ctypes.c_uint64 * 5)()
        self.args = tuple(ctypes.addressof(x) for x in (self.shape, self.strides, self.ptrs))

    @property
    def packs_all_of_b(self) -> bool:
        """Do this call's ranges pack B's panels between them, each panel once (columns split,
        or one range), so that it may fill shared panels (``B_PACK``)?"""
        return bool(self.ranges) and self.has_k and (self.shape[3] == 0 or len(self.ranges) == 1)

    def shared_b_bytes(self) -> int:
        """Bytes of the shared panels of this call's B."""
        p = self.params
        _, _, k, n, _ = self.b_layout
        return cpu_gemm.shared_b_elements(p, k, n) * itemsize(p.operand_dtype)

    def share_b(self, mode: int, address: int) -> None:
        """Pack B into (``B_PACK``) or read it from (``B_PACKED``) the shared panels at
        ``address`` (64-byte aligned, :meth:`shared_b_bytes` long)."""
        if mode == cpu_gemm.B_PACK and not self.packs_all_of_b:
            raise ValueError("gemm: only a call whose ranges split C's columns may fill shared panels")
        if address % 64:
            raise ValueError("gemm: shared panels must be 64-byte aligned")
        self.b_mode, self.shared_b = mode, address
        self.shape[5] = mode
        self.ptrs[4] = address

    def pointer_sources(self, a, b, out, zero, scratch) -> list:
        """What the kernel's pointer array holds, in order, given what A, B and C's pointers
        come from (a step runner's (slot, offset) pairs; ``zero``: a null pointer's,
        ``scratch``: the packing scratch's)."""
        if self.swapped:
            a, b = b, a
        shared = (zero[0], zero[1] + self.shared_b)
        return [a, b, out, scratch, shared] if self.has_k else [zero, zero, out, scratch, shared]

    def run(self, a: int, b: int, out: int) -> None:
        """``out = a @ b`` at these addresses (of each operand's element [0, 0])."""
        if not self.ranges:
            return
        if self.swapped:
            a, b = b, a
        ptrs = self.ptrs
        ptrs[0], ptrs[1] = (a, b) if self.has_k else (0, 0)
        ptrs[2] = out
        ptrs[3] = _scratch.address(self.scratch_bytes)
        launch(self.fn, self.ranges, *self.args)


def batch_offsets(batch: tuple[int, ...], strides: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """Each product's element offsets from A, B and C (one row of three per item of ``batch``,
    C order), given each operand's strides over the batch dims."""
    grids = np.indices(batch, dtype=np.int64).reshape(len(batch), -1) if batch else np.zeros((0, 1), np.int64)
    return np.stack([np.asarray(st, np.int64) @ grids for st in strides], axis=1).reshape(-1).copy()


class BatchedGemmCall(GemmCall):
    """``C[i] = A[i] @ B[i]`` over a batch, in one launch: the products are split across the
    threads whole (each packs and multiplies its own), or, when there are fewer products than
    threads, each product's columns too.  Operands' batch strides may be anything (0 for a
    broadcast).  Runs as :class:`GemmCall` does, its offset table in the fifth pointer.  Not
    re-entrant."""

    def __init__(self, dtype: str, batch: tuple[int, ...], m: int, n: int, k: int,
                 batch_strides: tuple[tuple[int, ...], ...], a_strides: tuple[int, int],
                 b_strides: tuple[int, int], out_strides: tuple[int, int], threads: int | None = None):
        kern = _kernels.get((dtype, None)) or _kernel(dtype)
        p = kern.params
        self.swapped = n < p.nr <= m
        offsets = batch_offsets(batch, batch_strides)
        if self.swapped:        # C.T = B.T @ A.T, as GemmCall
            a_strides, b_strides, out_strides = b_strides[::-1], a_strides[::-1], out_strides[::-1]
            m, n = n, m
            offsets = offsets.reshape(-1, 3)[:, [1, 0, 2]].reshape(-1).copy()
        self.offsets = offsets
        items = int(np.prod(batch, dtype=np.int64))
        threads = num_threads() if threads is None else threads
        parts = 1
        if items < threads and m * n * k >= SMALL_GEMM and n >= 2 * p.nr * threads:
            parts = threads
        cols = _round_up(-(-n // parts), p.nr) if n else 1
        total = items * parts
        chunk = max(1, -(-total // threads)) if items * m * n * k >= SMALL_GEMM else max(total, 1)
        self.ranges = [(s, min(s + chunk, total)) for s in range(0, total, chunk)] if m and n else []
        self.fn = kern.batched_fn
        self.has_k = k > 0
        self.scratch_bytes = p.scratch_bytes * len(self.ranges)
        self.shape = (ctypes.c_int64 * 6)(m, n, k, chunk, parts, cols)
        self.strides = (ctypes.c_int64 * 6)(*a_strides, *b_strides, *out_strides)
        self.ptrs = (ctypes.c_uint64 * 5)()
        self.ptrs[4] = data_address(self.offsets)
        self.args = tuple(ctypes.addressof(x) for x in (self.shape, self.strides, self.ptrs))

    def pointer_sources(self, a, b, out, zero, scratch) -> list:
        """What the kernel's pointer array holds (see :meth:`GemmCall.pointer_sources`); the
        offset table's address comes from the null pointer's slot plus the address."""
        if self.swapped:
            a, b = b, a
        return [a, b, out, scratch, (zero[0], zero[1] + data_address(self.offsets))]


def batched_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """``out[i] = a[i] @ b[i]`` over the leading dims (one shape, any strides) of float arrays,
    in one launch of the generated GEMM.  Inputs overlapping ``out`` are copied first."""
    if not (a.ndim == b.ndim == out.ndim >= 2) or not (a.shape[:-2] == b.shape[:-2] == out.shape[:-2]):
        raise ValueError(f"batched_gemm: operands must share their batch dims, got {a.shape}, {b.shape}, "
                         f"{out.shape}")
    dtype = _check(*(np.lib.stride_tricks.as_strided(x, x.shape[-2:], x.strides[-2:]) for x in (a, b, out)))
    a, b = _apart_from(out, a, b)
    threads = num_threads() if threads is None else threads

    def make() -> BatchedGemmCall:
        strides = [element_strides(x) for x in (a, b, out)]
        return BatchedGemmCall(dtype, a.shape[:-2], out.shape[-2], out.shape[-1], a.shape[-1],
                               tuple(st[:-2] for st in strides), *(st[-2:] for st in strides), threads)
    key = ("batched", dtype, out.shape, a.shape[-1], a.strides, b.strides, out.strides, threads)
    call = _cached_call(key, make)
    call.run(data_address(a), data_address(b), data_address(out))


class _Calls(threading.local):
    """Per calling thread: the :class:`GemmCall` of each recent eager signature."""

    def __init__(self):
        self.by_signature: dict[tuple, GemmCall] = {}


_calls = _Calls()


def _cached_call(key: tuple, make: Callable[[], GemmCall]) -> GemmCall:
    """The calling thread's call for an eager signature (a bounded table, cleared when full)."""
    calls = _calls.by_signature
    call = calls.get(key)
    if call is None:
        if len(calls) >= 64:
            calls.clear()
        call = calls[key] = make()
    return call


def _apart_from(out: np.ndarray, *xs: np.ndarray) -> list[np.ndarray]:
    """``xs``, each copied first if it overlaps ``out`` (the kernel writes ``out`` as it reads)."""
    return [x.copy() if np.may_share_memory(x, out) else x for x in xs]


def _gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int | None,
          vector_bytes: int | None = None) -> None:
    """:func:`gemm` with the kernel built for ``vector_bytes`` registers (tests of other hosts)."""
    dtype = _check(a, b, out)
    a, b = _apart_from(out, a, b)
    threads = num_threads() if threads is None else threads
    call = _cached_call(
        (dtype, out.shape, a.shape[1], a.strides, b.strides, out.strides, threads, vector_bytes),
        lambda: GemmCall(dtype, out.shape[0], out.shape[1], a.shape[1], element_strides(a),
                         element_strides(b), element_strides(out), threads, vector_bytes))
    call.run(data_address(a), data_address(b), data_address(out))
