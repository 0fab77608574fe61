"""Execute kernels and :class:`runtime.program.Program`\\ s on the host CPU.

* :func:`run_kernel` runs one kernel on NumPy arrays (tests, eager mode).
* :class:`CpuProgram` runs a whole program; everything that does not change between calls
  (kernels, shape and stride arrays, work splits, GEMM calls) is prepared once, so a call only
  binds buffers and passes pointers; a program of several steps is then walked by one native
  call (:func:`runtime.worker_pool.run_steps`), Python running only its other externs.

Large kernels are split by outer range over :mod:`runtime.worker_pool` (the ctypes call
releases the GIL; workers spin briefly between jobs, so a hand-off costs about a microsecond);
small ones (by points times an estimated cost per point) run on the calling thread, where a
hand-off and the shared cache traffic would cost more than the work.  Large buffers come from a
size-class pool: allocating (and first touching) tens of MiB costs more than most kernels that
fill them; small ones are plain NumPy memory (a tiny call costs ~3 us in all).
"""
from __future__ import annotations

import ctypes
import mmap
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from codegen import cpu_gemm as cpu_gemm_kernel
from codegen import kir
from codegen.mathlib import FUNCTIONS as MATH_FUNCTIONS
from runtime import cpu_gemm, cpu_scatter, worker_pool
from runtime.addresses import data_address
from runtime.kernel_cache import KernelCache, default_cache
from runtime.program import Extern, Launch, Program, View, checked_indices
from runtime.scatter_layout import scatter_layout
from runtime.worker_pool import num_threads

# Work (iteration points times point_cost) below which a launch stays on one thread: on a
# 2-core Zen 4 VM a 64K-element x*2+1 (work 96K) ran as fast on two threads as on one, 128K
# 1.5x faster; a 16K-element tanh (work 144K) 1.1x.
SMALL_WORK = 96 * 1024
SMALL_SLOT = 256 * 1024         # buffers up to this size are plain NumPy memory, not pooled
_HUGE = 2 * 1024 * 1024


def _split(n: int, parts: int, align: int = 64) -> list[tuple[int, int]]:
    """[0, n) in ``parts`` nearly equal ranges, inner bounds rounded to ``align``."""
    bounds = [0]
    for p in range(1, parts):
        cut = (n * p // parts) // align * align
        if cut > bounds[-1]:
            bounds.append(cut)
    bounds.append(n)
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def launch(fn, ranges: Sequence[tuple[int, int]], shape_p: int, strides_p: int, ptrs_p: int) -> None:
    """Run ``fn`` over each outer range: the first on this thread, the rest on pool workers."""
    worker_pool.run(fn, ranges, shape_p, strides_p, ptrs_p)


_SLOW_OPS = frozenset({"div", "sqrt", "rsqrt", "floordiv", "mod"})


def point_cost(kernel: kir.Kernel) -> float:
    """Rough cost of one iteration point relative to a copy (transcendental functions ~8).

    What does not vary from point to point (an expression of broadcast scalars, such as
    Adam's bias corrections) is computed once per launch and costs nothing here.
    """
    varies: dict[int, bool] = {}
    total = 1.0
    for st in kernel.stages:
        for e in kir.walk(st.expr):             # (post-order: arguments first)
            if isinstance(e, kir.Load):
                v = any(lay != "b" for lay in kernel.inputs[e.input].layout)
            elif isinstance(e, kir.Op):
                v = any(varies[id(a)] for a in e.args)
                if v:
                    total += 8.0 if e.op in MATH_FUNCTIONS else 1.0 if e.op in _SLOW_OPS else 0.25
            else:
                v = isinstance(e, kir.Index)
            varies[id(e)] = v
    return total


def plan_ranges(shape: Sequence[int], n_outer: int, threads: int | None = None,
                cost: float = 1.0) -> list[tuple[int, int]]:
    """How to split a launch's outer space across threads (one range when small); ``cost`` is
    the kernel's :func:`point_cost`."""
    outer = int(np.prod(shape[:n_outer], dtype=np.int64))
    work = int(np.prod(shape, dtype=np.int64)) * cost
    threads = num_threads() if threads is None else threads
    if outer == 0:                  # (an empty reduce space still writes every output)
        return []
    if threads <= 1 or work < SMALL_WORK or outer < 2:
        return [(0, outer)]
    return _split(outer, min(threads, outer), align=64 if outer >= 64 * threads else 1)


# --------------------------------------------------------------------------- buffer pool


class _Block:
    """Raw host memory of one size class; large blocks are anonymous mmaps (huge pages)."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        if nbytes >= _HUGE:
            self._map = mmap.mmap(-1, nbytes)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                try:
                    self._map.madvise(mmap.MADV_HUGEPAGE)
                except OSError:
                    pass
            self.array = np.frombuffer(self._map, dtype=np.uint8)
        else:
            self.array = np.empty(max(nbytes, 64), dtype=np.uint8)
        self.address = self.array.ctypes.data


class _Lease:
    """Owner of a pooled block handed to the user: the block returns to the pool when the last
    array viewing it dies (so results are never overwritten while alive)."""

    def __init__(self, pool: BufferPool, block: _Block):
        self.block = block
        self.__array_interface__ = block.array.__array_interface__
        weakref.finalize(self, pool.release, block)


class BufferPool:
    """Reusable host buffers by size class (powers of two, at least 64 bytes)."""

    def __init__(self, max_cached_bytes: int = 1 << 31):
        self._free: dict[int, list[_Block]] = {}
        self._cached = 0
        self._max = max_cached_bytes
        self._lock = threading.Lock()

    @staticmethod
    def size_class(nbytes: int) -> int:
        return 1 << max(6, (max(nbytes, 1) - 1).bit_length())

    def acquire(self, nbytes: int) -> _Block:
        size = self.size_class(nbytes)
        with self._lock:
            free = self._free.get(size)
            if free:
                self._cached -= size
                return free.pop()
        return _Block(size)

    def release(self, block: _Block) -> None:
        with self._lock:
            if self._cached + block.nbytes <= self._max:
                self._free.setdefault(block.nbytes, []).append(block)
                self._cached += block.nbytes

    def lease(self, block: _Block) -> np.ndarray:
        """``block`` as a uint8 array owned by the caller; it comes back here once unreferenced."""
        return np.asarray(_Lease(self, block))


_buffers = BufferPool()

# While a profile records (``tracejit.profiler``), the object that runs each program step by
# step and times it; None otherwise, so an unprofiled call pays one check.
profiler: Any = None


# --------------------------------------------------------------------------- single kernels


def layout_of(shape: Sequence[int], strides: Sequence[int]) -> tuple[str, ...]:
    """The layout pattern (``"b"``/``"c"``/``"s"`` per dim) of a view with element ``strides``."""
    return tuple("b" if st == 0 else "c" if st == 1 else "s" for n, st in zip(shape, strides))


def _check_layout(kernel: kir.Kernel, shape, all_strides) -> None:
    for i, (op, strides) in enumerate(zip(kernel.inputs + kernel.outputs, all_strides)):
        for d, (n, st, lay) in enumerate(zip(shape, strides, op.layout)):
            if n > 1 and ((lay == "b" and st != 0) or (lay == "c" and st != 1)):
                raise ValueError(f"kernel {kernel.name}: operand {i} has stride {st} on dim {d}, "
                                 f"but the kernel was built for layout {''.join(op.layout)!r}")


def run_kernel(kernel: kir.Kernel, shape: Sequence[int], inputs: Sequence[np.ndarray],
               outputs: Sequence[np.ndarray], threads: int | None = None,
               cache: KernelCache | None = None) -> None:
    """Run ``kernel`` over iteration space ``shape`` on NumPy arrays.

    Each array is viewed broadcast to ``shape`` (outputs of reductions: give them size 1, or
    stride 0, along the reduce dims) and its strides are passed to the kernel.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != kernel.ndim or len(inputs) != len(kernel.inputs) or len(outputs) != len(kernel.outputs):
        raise ValueError(f"kernel {kernel.name}: expected ndim {kernel.ndim}, {len(kernel.inputs)} inputs, "
                         f"{len(kernel.outputs)} outputs; got shape {shape}, {len(inputs)}, {len(outputs)}")
    arrays, strides, keep = [], [], []
    for k, (a, op) in enumerate(zip(list(inputs) + list(outputs), kernel.inputs + kernel.outputs)):
        a = np.asarray(a)
        if a.dtype != np.dtype(op.dtype):
            raise TypeError(f"kernel {kernel.name}: operand {k} is {a.dtype}, expected {op.dtype}")
        if k >= len(inputs) and not a.flags.writeable:
            raise ValueError(f"kernel {kernel.name}: output {k - len(inputs)} is read-only")
        v = np.broadcast_to(a, shape)
        # (an output with no elements along an empty reduce space is still written per outer
        # point when the caller gave it stride 0 there: its address is needed all the same)
        arrays.append(a.ctypes.data)
        strides.append([s // a.itemsize for s in v.strides])
        keep.append(a)
    _check_layout(kernel, shape, strides)
    ranges = plan_ranges(shape, kernel.n_outer, threads, point_cost(kernel))
    if not ranges:
        return
    fn = (cache or default_cache()).get(kernel).fn
    shape_a = np.array(shape or [0], dtype=np.int64)
    strides_a = np.array(strides, dtype=np.int64).reshape(-1)
    if strides_a.size == 0:
        strides_a = np.zeros(1, dtype=np.int64)
    ptrs_a = np.array(arrays or [0], dtype=np.uintp)
    launch(fn, ranges, shape_a.ctypes.data, strides_a.ctypes.data, ptrs_a.ctypes.data)


# --------------------------------------------------------------------------- programs


class _PreparedLaunch:
    """A Launch with its argument arrays built once; only pointers change per call."""

    def __init__(self, step: Launch, slot_dtypes: Sequence[str], cache: KernelCache):
        k = step.kernel
        self.fn = cache.get(k).fn
        self.shape = np.array(step.shape or (0,), dtype=np.int64)
        views = step.inputs + step.outputs
        strides = [list(v.strides) for v in views]
        _check_layout(k, step.shape, strides)
        self.strides = np.array(strides or [[0]], dtype=np.int64).reshape(-1)
        if self.strides.size == 0:
            self.strides = np.zeros(1, dtype=np.int64)
        # (slot, byte offset) per operand; offsets count the operand's elements (a complex
        # slot's parts are float operands, the imaginary one a float past the real one)
        self.operands = [(v.slot, v.offset * np.dtype(o.dtype).itemsize)
                         for v, o in zip(views, k.inputs + k.outputs, strict=True)]
        self.ptrs = (ctypes.c_uint64 * max(1, len(views)))()
        self.ranges = plan_ranges(step.shape, k.n_outer, cost=point_cost(k))
        self.args = (self.shape.ctypes.data, self.strides.ctypes.data, ctypes.addressof(self.ptrs))

    def native(self, zero_slot: int, scratch_slot: int) -> tuple:
        """This launch as a step runner's record (:class:`runtime.worker_pool.Steps`)."""
        return self.fn, self.ranges, self.args, self.operands

    def run(self, bufs: list, addresses: list[int], launcher: Callable[..., None] = launch) -> None:
        ranges = self.ranges
        if not ranges:
            return
        ptrs = self.ptrs
        for j, (slot, offset) in enumerate(self.operands):
            ptrs[j] = addresses[slot] + offset
        if len(ranges) == 1:
            self.fn(ranges[0][0], ranges[0][1], *self.args)
        else:
            launcher(self.fn, ranges, *self.args)


class _PreparedMatmul:
    """An extern ``matmul`` of 2-D float operands as a :class:`runtime.cpu_gemm.GemmCall`: no
    arrays are built per call, only three addresses computed."""

    def __init__(self, step: Extern, slot_dtypes: Sequence[str]):
        (m, k), (_, n), _ = step.shapes
        a, b, out = step.inputs + step.outputs
        self.call = cpu_gemm.GemmCall(step.dtype, m, n, k, a.strides, b.strides, out.strides)
        size = np.dtype(step.dtype).itemsize
        self.operands = [(v.slot, v.offset * size) for v in (a, b, out)]

    @staticmethod
    def applies(step: Extern, p: Program, ndim: int = 2) -> bool:
        """Is ``step`` a product of ``ndim``-D operands the generated GEMM takes, with operands
        that stay within their slots and an output no operand can overlap: a buffer of its own,
        or an input updated in place (bound to memory no other input shares, see
        :meth:`CpuProgram._bind_in_place`)?"""
        if step.name != "matmul" or cpu_gemm.ALWAYS_BLAS or step.dtype not in cpu_gemm.DTYPES:
            return False
        views = step.inputs + step.outputs
        if len(views) != 3 or any(len(shp) != ndim for shp in step.shapes) \
                or any(p.slot_dtypes[v.slot] != step.dtype for v in views):
            return False
        out = step.outputs[0].slot
        own = out >= p.n_inputs and out not in p.constants
        if not (own or out in p.inplace.values()) or out in {v.slot for v in step.inputs}:
            return False
        size = np.dtype(step.dtype).itemsize
        return all(_within(v, shp, p.slot_nbytes[v.slot] // size) for v, shp in zip(views, step.shapes))

    def native(self, zero_slot: int, scratch_slot: int) -> tuple:
        c = self.call
        return c.fn, c.ranges, c.args, c.pointer_sources(*self.operands, (zero_slot, 0), (scratch_slot, 0))

    def run(self, bufs: list, addresses: list[int]) -> None:
        (sa, oa), (sb, ob), (sc, oc) = self.operands
        self.call.run(addresses[sa] + oa, addresses[sb] + ob, addresses[sc] + oc)


class _PreparedScatter:
    """An extern ``scatter_add`` as a :class:`runtime.cpu_scatter.ScatterCall` (a step of the
    native runner, no NumPy): one whose indices this program's ``index_check`` step made (in
    range for the scattered axis, non-negative) and whose operands the kernel walks."""

    def __init__(self, step: Extern, p: Program):
        self.call = cpu_scatter.ScatterCall(step.dtype, scatter_layout(step))
        base, idx, src = step.inputs
        views = (step.outputs[0], base, src, idx)
        self.operands = [(v.slot, v.offset * np.dtype(p.slot_dtypes[v.slot]).itemsize) for v in views]

    @staticmethod
    def applies(step: Extern, p: Program) -> bool:
        if step.name != "scatter_add" or step.dtype not in cpu_scatter.DTYPES or len(step.inputs) != 3:
            return False
        base, idx, src = step.inputs
        out = step.outputs[0].slot
        if p.slot_dtypes[idx.slot] != "int64" or {p.slot_dtypes[v.slot] for v in (base, src)} != {step.dtype}:
            return False
        own = out >= p.n_inputs and out not in p.constants
        if not (own or out in p.inplace.values()) or out in {v.slot for v in step.inputs}:
            return False
        axis = dict(step.params)["axis"]
        if not checked_indices(p, idx.slot, step.shapes[0][axis]):
            return False
        views = step.inputs + step.outputs
        if not all(_within(v, shp, p.slot_nbytes[v.slot] // np.dtype(p.slot_dtypes[v.slot]).itemsize)
                   for v, shp in zip(views, step.shapes)):
            return False
        return scatter_layout(step).ok

    def native(self, zero_slot: int, scratch_slot: int) -> tuple:
        c = self.call
        return c.fn, c.ranges, c.args, self.operands

    def run(self, bufs: list, addresses: list[int]) -> None:
        self.call.run(*(addresses[slot] + offset for slot, offset in self.operands))


class _PreparedBatchedMatmul(_PreparedMatmul):
    """An extern ``matmul`` of N-D float operands (a batch of products) as one
    :class:`runtime.cpu_gemm.BatchedGemmCall`."""

    def __init__(self, step: Extern, slot_dtypes: Sequence[str]):
        a, b, out = step.inputs + step.outputs
        *batch, m, k = step.shapes[0]
        n = step.shapes[1][-1]
        views = (a, b, out)
        self.call = cpu_gemm.BatchedGemmCall(step.dtype, tuple(batch), m, n, k,
                                             tuple(v.strides[:-2] for v in views),
                                             *(tuple(v.strides[-2:]) for v in views))
        size = np.dtype(step.dtype).itemsize
        self.operands = [(v.slot, v.offset * size) for v in views]

    @staticmethod
    def applies(step: Extern, p: Program, ndim: int = 0) -> bool:
        """A batched product (operands of one rank above 2) :meth:`_PreparedMatmul.applies` takes."""
        rank = len(step.shapes[0]) if step.shapes else 0
        return rank > 2 and _PreparedMatmul.applies(step, p, rank)


def _prepared_extern(step: Extern, p: Program) -> _PreparedMatmul | _PreparedScatter | _ExternCall:
    """A matmul the generated GEMM takes, or a checked scatter-add the scatter kernel takes, as a
    prepared call; any other extern as a Python call."""
    if _PreparedMatmul.applies(step, p):
        return _PreparedMatmul(step, p.slot_dtypes)
    if _PreparedBatchedMatmul.applies(step, p):
        return _PreparedBatchedMatmul(step, p.slot_dtypes)
    if _PreparedScatter.applies(step, p):
        return _PreparedScatter(step, p)
    return _ExternCall(step, p.slot_dtypes)


def _slot_sharers(p: Program) -> dict[int, frozenset[int]]:
    """Each slot's possible sharers of memory at run time (itself included): the temporaries of
    one pooled buffer (the buffer plan's aliases).  Inputs bound to one caller's memory are
    not: an input updated in place that overlaps another is given a private copy."""
    classes: dict[int, set[int]] = {}
    for s in range(len(p.slot_nbytes)):
        classes.setdefault(p.aliases.get(s, s), set()).add(s)
    return {s: frozenset(c) for c in classes.values() for s in c}


def _shared_b_key(prepared: _PreparedMatmul) -> tuple:
    """What a 2-D product's shared B panels depend on: the kernel's B operand (slot, byte
    offset), its strides, K, N and the kernel."""
    call = prepared.call
    a, b, _ = prepared.operands
    return ((a if call.swapped else b), call.b_layout)


def share_packed_weights(steps: Sequence[Any], p: Program) -> list[np.ndarray]:
    """Let a program's 2-D products of one B (a weight read by every time step of a recurrence)
    pack it once per run: the first product after B was last written packs its panels into a
    buffer of the program's (``B_PACK``), the ones after it read them (``B_PACKED``) until a
    step writes memory B may share, after which the next product packs again.  A product that
    cannot fill shared panels (rows split across threads) packs its own.  Returns the buffers,
    which the program keeps (a call of the program is not re-entrant, so one set suffices)."""
    sharers = _slot_sharers(p)
    runs: dict[tuple, list[list[_PreparedMatmul]]] = {}   # key -> runs of products between writes
    open_runs: dict[tuple, list[_PreparedMatmul]] = {}
    for step, prepared in zip(p.steps, steps):
        if type(prepared) is _PreparedMatmul and prepared.call.ranges and prepared.call.has_k:
            key = _shared_b_key(prepared)
            run = open_runs.get(key)
            if run is None and prepared.call.packs_all_of_b:
                run = open_runs[key] = []
                runs.setdefault(key, []).append(run)
            if run is not None:
                run.append(prepared)
        written = {t for v in step.outputs for t in sharers[v.slot]}
        for key in [k for k in open_runs if k[0][0] in written]:
            del open_runs[key]
    buffers = []
    for key_runs in runs.values():
        shared = [r for r in key_runs if len(r) > 1]
        if not shared:
            continue
        nbytes = shared[0][0].call.shared_b_bytes()
        buf = np.empty(nbytes + 64, np.uint8)
        buffers.append(buf)
        address = (data_address(buf) + 63) // 64 * 64
        for run in shared:
            run[0].call.share_b(cpu_gemm_kernel.B_PACK, address)
            for prepared in run[1:]:
                prepared.call.share_b(cpu_gemm_kernel.B_PACKED, address)
    return buffers


def _within(view: View, shape: Sequence[int], n_elements: int) -> bool:
    """Do all elements of ``view`` (of ``shape``) lie in [0, n_elements)?"""
    if 0 in shape:
        return True
    lo = view.offset + sum(min(0, (n - 1) * st) for n, st in zip(shape, view.strides))
    hi = view.offset + sum(max(0, (n - 1) * st) for n, st in zip(shape, view.strides))
    return 0 <= lo and hi < n_elements


class _ExternCall:
    """Any other extern: its operands as NumPy views of the slots, built per call."""

    def __init__(self, step: Extern, slot_dtypes: Sequence[str]):
        self.step, self.slot_dtypes = step, slot_dtypes

    def native(self, zero_slot: int, scratch_slot: int) -> None:
        return None             # (Python runs it)

    def run(self, bufs: list, addresses: list[int]) -> None:
        _run_extern(self.step, bufs, self.slot_dtypes)


def _strided(buf: np.ndarray, dtype: str, view: View, shape: Sequence[int]) -> np.ndarray:
    """``view`` of ``buf`` as an array (the ndarray constructor checks it stays in bounds)."""
    dt = np.dtype(dtype)
    if not buf.flags.c_contiguous:
        buf = np.ascontiguousarray(buf)
    raw = buf.reshape(-1).view(np.uint8)
    return np.ndarray(tuple(shape), dt, buffer=raw, offset=view.offset * dt.itemsize,
                      strides=tuple(s * dt.itemsize for s in view.strides))


def _is_dense(view: View, shape: Sequence[int]) -> bool:
    """Does ``view`` cover elements [0, prod(shape)) of its slot in C order?"""
    expect = 1
    for n, st in zip(reversed(shape), reversed(view.strides)):
        if n != 1 and st != expect:
            return False
        expect *= n
    return view.offset == 0


def _overlapping(addresses: Sequence[int], nbytes: Sequence[int]) -> set[int]:
    """Indices of the buffers (start ``addresses``, ``nbytes`` long) that share memory with another."""
    spans = sorted((a, a + n, i) for i, (a, n) in enumerate(zip(addresses, nbytes)) if n)
    overlapping: set[int] = set()
    end, owner = -1, -1
    for a, b, i in spans:
        if a < end:
            overlapping.update((i, owner))
        if b > end:
            end, owner = b, i
    return overlapping


class CpuProgram:
    """A program ready to run: ``outputs = prog(*inputs)``.  Not re-entrant (one call at a time).

    Per call, only the input and output buffers change.  Slots of up to ``SMALL_SLOT`` bytes
    skip the pool: temporaries get one buffer for the program's lifetime and outputs a fresh
    NumPy array each call (returned as is when the output is the whole slot), so a tiny call
    costs a few microseconds.
    """

    def __init__(self, program: Program, cache: KernelCache | None = None,
                 native_steps: bool = True):
        self.program = p = program
        cache = cache or default_cache()
        self.steps = [_PreparedLaunch(s, p.slot_dtypes, cache) if isinstance(s, Launch)
                      else _prepared_extern(s, p) for s in p.steps]
        self._shared_b = share_packed_weights(self.steps, p)
        n_slots = len(p.slot_nbytes)
        scratch = max((s.call.scratch_bytes for s in self.steps if isinstance(s, _PreparedMatmul)), default=0)
        records = [s.native(*worker_pool.Steps.extra_slots(n_slots)) for s in self.steps]
        self._native = worker_pool.Steps(records, n_slots, scratch)
        # (a program of one step gains nothing: it would only load the runner)
        self.native_steps = native_steps and len(self.steps) > 1 and worker_pool.can_run_steps(self._native)
        self.constants = {s: np.ascontiguousarray(c) for s, c in p.constants.items()}
        self.output_slots = {v.slot for v, _, _ in p.outputs}
        self.temp_slots = [s for s in range(p.n_inputs, len(p.slot_nbytes)) if s not in self.constants]
        self._in_checks = [(np.dtype(p.slot_dtypes[i]), p.slot_nbytes[i]) for i in range(p.n_inputs)]
        self._lock = threading.Lock()
        # Buffers and addresses that do not change between calls: constants, small temporaries.
        self._bufs: list = [None] * len(p.slot_nbytes)
        for s, c in self.constants.items():
            self._bufs[s] = c
        uses: dict[int, int] = {}
        for v, _, _ in p.outputs:
            uses[v.slot] = uses.get(v.slot, 0) + 1
        fresh: dict[int, tuple[tuple[int, ...], np.dtype]] = {}     # small outputs: slot -> array
        self._pooled: list[int] = []
        for s in self.temp_slots:
            nbytes = p.slot_nbytes[s]
            if nbytes > SMALL_SLOT:
                self._pooled.append(s)
            elif s in self.output_slots:
                fresh[s] = ((max(nbytes, 1),), np.dtype(np.uint8))
            else:
                self._bufs[s] = np.empty(max(nbytes, 64), np.uint8)
        # An output that is the whole of a small slot used by nothing else is allocated with
        # its final shape and dtype and returned as it is.
        self._direct: set[int] = set()          # output indices
        for i, (v, shape, dtype) in enumerate(p.outputs):
            whole = np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64)) == p.slot_nbytes[v.slot]
            if v.slot in fresh and uses[v.slot] == 1 and p.slot_dtypes[v.slot] == dtype and whole \
                    and _is_dense(v, shape):
                self._direct.add(i)
                fresh[v.slot] = (tuple(shape), np.dtype(dtype))
        self._fresh = [(s, shape, dtype) for s, (shape, dtype) in fresh.items()]
        self._fresh_slots = set(fresh)
        self._addresses = [0 if b is None else data_address(b) for b in self._bufs]
        self._in_place_slots = sorted(set(p.inplace.values()))
        self._last_extents: tuple | None = None     # inputs' (addresses, sizes) at the last call
        self._overlapping: set[int] = set()

    def _bind(self, inputs: Sequence[np.ndarray]) -> tuple[list, list[int], dict, list]:
        p = self.program
        bufs = self._bufs.copy()
        addresses = self._addresses.copy()
        for i, x in enumerate(inputs):
            if type(x) is not np.ndarray or not x.flags.c_contiguous:
                x = np.ascontiguousarray(x)
            dtype, nbytes = self._in_checks[i]
            if (x.dtype is not dtype and x.dtype != dtype) or x.nbytes < nbytes:
                raise ValueError(f"input {i}: expected {dtype} with {nbytes} bytes, "
                                 f"got {x.dtype} with {x.nbytes} bytes")
            bufs[i] = x
            addresses[i] = data_address(x)
        copy_back = self._bind_in_place(inputs, bufs, addresses) if self._in_place_slots else []
        for s, shape, dtype in self._fresh:
            bufs[s] = a = np.empty(shape, dtype)
            addresses[s] = data_address(a)
        blocks: dict[int, _Block] = {}
        for s in self._pooled:
            reuse = p.aliases.get(s)
            if reuse is not None and reuse in blocks and p.slot_nbytes[s] <= blocks[reuse].nbytes \
                    and reuse not in self.output_slots and s not in self.output_slots:
                blocks[s] = blocks[reuse]
            else:
                blocks[s] = _buffers.acquire(p.slot_nbytes[s])
            bufs[s] = blocks[s].array
            addresses[s] = blocks[s].address
        return bufs, addresses, blocks, copy_back

    def _bind_in_place(self, inputs: Sequence[np.ndarray], bufs: list, addresses: list[int]) -> list:
        """Point in-place slots at the caller's arrays where that is safe; else at a private copy
        written back after the run (a strided, read-only or foreign array, or one whose memory
        overlaps another input, which a kernel may still read after the update)."""
        n = len(inputs)
        extents = (addresses[:n], [bufs[i].nbytes for i in range(n)])
        if extents != self._last_extents:       # (a training step passes the same arrays each call)
            self._last_extents, self._overlapping = extents, _overlapping(*extents)
        overlapping = self._overlapping
        copy_back = []
        for s in self._in_place_slots:
            x = inputs[s]
            if bufs[s] is not x:                    # bound to a contiguous copy already
                copy_back.append((x, bufs[s]))
            elif not x.flags.writeable or s in overlapping:
                bufs[s] = private = x.copy()
                addresses[s] = data_address(private)
                copy_back.append((x, private))
        return copy_back

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        p = self.program
        if len(inputs) != p.n_inputs:
            raise TypeError(f"program takes {p.n_inputs} inputs, got {len(inputs)}")
        with self._lock:
            bufs, addresses, blocks, copy_back = self._bind(inputs)
            if profiler is not None:
                profiler.run_steps(self, bufs, addresses)
            elif self.native_steps:
                steps, nbytes = self.steps, self._native.scratch_bytes
                scratch = cpu_gemm.scratch_address(nbytes) if nbytes else 0
                worker_pool.run_steps(self._native, addresses, scratch,
                                      lambda k: steps[k].run(bufs, addresses))
            else:
                for step in self.steps:
                    step.run(bufs, addresses)
            for x, private in copy_back:
                np.copyto(x, private.reshape(np.shape(x)))
            results = self._collect(inputs, bufs, blocks)
            if blocks:
                released = set()
                for s, block in blocks.items():
                    if s not in self.output_slots and id(block) not in released:
                        released.add(id(block))
                        _buffers.release(block)
        for in_slot, out_index in p.writebacks:
            np.copyto(inputs[in_slot], results[out_index].reshape(np.shape(inputs[in_slot])))
        return results

    def _collect(self, inputs: Sequence[np.ndarray], bufs: list, blocks: dict) -> list[np.ndarray]:
        leased: dict[int, np.ndarray] = {}
        results = []
        in_place = self.program.inplace
        for i, (view, shape, dtype) in enumerate(self.program.outputs):
            s = view.slot
            if i in in_place:
                results.append(inputs[s])
            elif i in self._direct:
                results.append(bufs[s])
            elif s in blocks:
                if s not in leased:
                    leased[s] = _buffers.lease(blocks[s])
                results.append(_strided(leased[s], dtype, view, shape))
            elif s in self.output_slots and s in self._fresh_slots:
                results.append(_strided(bufs[s], dtype, view, shape))
            else:       # an input or constant passed through: never alias the caller's memory
                results.append(_strided(bufs[s], dtype, view, shape).copy())
        return results


EXTERNS: dict[str, Callable[..., np.ndarray]] = {}


def register_extern(name: str, fn: Callable[..., np.ndarray]) -> None:
    """Make ``Extern(name)`` steps run ``fn(*input_arrays, **params)`` (result copied to the output)."""
    EXTERNS[name] = fn


def _run_extern(step: Extern, bufs: list, slot_dtypes: Sequence[str]) -> None:
    views = step.inputs + step.outputs
    arrays = [_strided(bufs[v.slot], slot_dtypes[v.slot], v, shp) for v, shp in zip(views, step.shapes)]
    if step.name == "matmul":
        cpu_gemm.matmul(*arrays)
    elif step.name in EXTERNS:
        *ins, out = arrays
        try:
            out[...] = EXTERNS[step.name](*ins, **dict(step.params))
        except (IndexError, ValueError) as e:   # bad data (an index out of range): say where
            if not step.source:
                raise
            raise type(e)(f"{e}  (at {step.source})") from None
    else:
        raise NotImplementedError(f"extern {step.name!r} on the CPU")


def run_program(program: Program, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Prepare and run ``program`` once (callers that repeat should keep a :class:`CpuProgram`)."""
    return CpuProgram(program)(*inputs)
