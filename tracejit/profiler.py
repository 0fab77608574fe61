"""``with tj.profiler.profile() as prof:``: what ran, for how long, and how fast.

While a profile records, every eager CPU op (through :func:`tracejit.prims.bind`) and every step
of every compiled program (kernel launches, GEMMs, host steps; on a GPU too, eager GPU ops
being one-op programs) is timed and given an estimate of the bytes it moved and the
floating-point operations it did:

* bytes: each operand's elements once (a broadcast dim counts once), inputs and outputs;
* FLOPs: for a kernel, its loop-level IR's operations (casts and selects are free) times the
  points each stage runs at; for a matmul ``2*m*n*k`` per product; for an eager elementwise op
  one per element, for a reduction one per input element.

``prof.table()`` groups them by kernel or op with counts, totals and achieved GB/s and
GFLOP/s; ``prof.export_chrome_trace(path)`` writes Chrome trace-event JSON (Perfetto,
``chrome://tracing``) with one track per thread: the calling thread's steps, and each range
of a multi-threaded launch on the thread that ran it; GPU steps on a track of the GPU's stream,
each timed from its launch to a synchronize after it (host-side timing, which includes the
launch's cost; the device is idle between steps while profiling).

Profiling changes how programs run: each step is launched from Python (the native step runner
is bypassed) and the ranges of a multi-threaded launch go to the profiler's own threads, each
timed, so a small program costs more per call than unprofiled.  When no profile records, the
hooks are one ``None`` check per program call and per eager op.
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codegen import kir
from runtime import cpu as cpu_runtime
from runtime import cuda as cuda_runtime
from runtime import program as rp

from . import prims
from .errors import source_line
from .ops import Prim

KINDS = ("kernel", "gemm", "host", "eager", "program", "range")
GPU_TID = 1 << 30             # the track of a GPU's stream in the Chrome trace (no thread has this id)
LEAF_KINDS = ("kernel", "gemm", "host", "eager")     # what the table's total adds up
_FREE_OPS = frozenset({"cast", "where"})             # no arithmetic: not counted as FLOPs
SORT_KEYS = ("total", "calls", "mean", "name", "bytes", "flops", "gbps", "gflops")


@dataclass
class Event:
    """One timed thing: a kernel launch, a GEMM, a host step, an eager op, a program call, or a
    range of a launch run by one thread."""
    name: str
    kind: str               # one of KINDS
    start_ns: int           # time.perf_counter_ns() at the start
    dur_ns: int
    tid: int                # the native id of the thread that ran it
    bytes: int = 0
    flops: int = 0
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    """Events with one name and kind, summed (see :meth:`Profile.key_averages`)."""
    name: str
    kind: str
    calls: int
    total_ns: int
    bytes: int
    flops: int

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.calls

    @property
    def gbps(self) -> float:
        return self.bytes / self.total_ns if self.total_ns else 0.0      # bytes per ns == GB/s

    @property
    def gflops(self) -> float:
        return self.flops / self.total_ns if self.total_ns else 0.0


# ---------------------------------------------------------------------------- cost estimates

def touched_bytes(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> int:
    """Bytes of an operand read or written once (broadcast dims, stride 0, count once)."""
    return math.prod(n for n, s in zip(shape, strides) if s != 0) * itemsize


def kernel_flops(kernel: kir.Kernel, shape: tuple[int, ...]) -> int:
    """Operations of one launch of ``kernel`` over ``shape``: each stage's IR operations times
    the points it runs at (a reduction's accumulate counts one)."""
    points = math.prod(shape)
    outer = math.prod(shape[:kernel.n_outer])
    total = 0
    for st in kernel.stages:
        ops = sum(1 for e in kir.walk(st.expr) if isinstance(e, kir.Op) and e.op not in _FREE_OPS)
        if isinstance(st, kir.Reduce):
            total += (ops + 1) * points
        else:
            total += ops * (points if st.over_reduce else outer)
    return total


def matmul_flops(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> int:
    """``2*m*n*k`` per product, times the batch."""
    *batch, m, k = a_shape
    n = b_shape[-1]
    return 2 * math.prod(batch) * m * n * k


def _step_cost(step: rp.Launch | rp.Extern, slot_dtypes: list[str]) -> tuple[str, str, int, int]:
    """(name, kind, bytes, flops) of a program step."""
    size = [np.dtype(slot_dtypes[v.slot]).itemsize for v in step.inputs + step.outputs]
    if isinstance(step, rp.Launch):
        # (a launch reads a complex slot as two float operands: operand dtypes count)
        operands = step.kernel.inputs + step.kernel.outputs
        moved = sum(touched_bytes(step.shape, v.strides, np.dtype(o.dtype).itemsize)
                    for v, o in zip(step.inputs + step.outputs, operands))
        return step.kernel.name, "kernel", moved, kernel_flops(step.kernel, step.shape)
    views = step.inputs + step.outputs
    moved = sum(touched_bytes(shp, v.strides, s) for v, shp, s in zip(views, step.shapes, size))
    if step.name == "matmul":
        a, b = step.shapes[0], step.shapes[1]
        return f"matmul {'x'.join(map(str, a))} @ {'x'.join(map(str, b))}", "gemm", moved, matmul_flops(a, b)
    return step.name, "host", moved, 0


def _eager_cost(prim: Prim, arrays: list[Any], value: Any) -> tuple[int, int]:
    """(bytes, flops) of an eager op on ``arrays`` giving ``value``."""
    out = np.asarray(value)
    moved = touched_bytes(out.shape, out.strides, out.itemsize)
    for a in arrays:
        if isinstance(a, np.ndarray):
            moved += touched_bytes(a.shape, a.strides, a.itemsize)
    if prim.kind == "elementwise":
        flops = 0 if prim.name in _FREE_OPS else out.size
    elif prim.kind == "reduce":
        flops = int(np.asarray(arrays[0]).size)
    elif prim.kind == "matmul":
        flops = matmul_flops(np.shape(arrays[0]), np.shape(arrays[1]))
    else:
        flops = 0
    return moved, flops


# ---------------------------------------------------------------------------- recording

class _Recorder:
    """What the runtime and ``bind`` call while a profile records."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._costs: dict[int, tuple[Any, tuple[str, str, int, int]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _cost(self, step: rp.Launch | rp.Extern, slot_dtypes: list[str]) -> tuple[str, str, int, int]:
        hit = self._costs.get(id(step))
        if hit is None or hit[0] is not step:
            hit = self._costs[id(step)] = (step, _step_cost(step, slot_dtypes))
        return hit[1]

    # --- compiled programs (runtime.cpu.CpuProgram)
    def run_steps(self, program: Any, bufs: list, addresses: list[int]) -> None:
        """Run ``program``'s steps one by one, timing each."""
        add = self.profile._add
        tid = threading.get_native_id()
        slot_dtypes = program.program.slot_dtypes
        t_program = time.perf_counter_ns()
        for prepared, step in zip(program.steps, program.program.steps):
            name, kind, moved, flops = self._cost(step, slot_dtypes)
            t0 = time.perf_counter_ns()
            if isinstance(prepared, cpu_runtime._PreparedLaunch):
                ranges = prepared.ranges
                prepared.run(bufs, addresses,
                             lambda fn, rs, *args, name=name: self._launch(name, fn, rs, args))
                args = {"shape": list(step.shape), "threads": len(ranges)}
            else:
                prepared.run(bufs, addresses)
                args = {"shapes": [list(s) for s in step.shapes]}
            add(Event(name, kind, t0, time.perf_counter_ns() - t0, tid, moved, flops, args))
        where = source_line()
        add(Event(f"program @ {where}" if where else "program", "program", t_program,
                  time.perf_counter_ns() - t_program, tid, args={"steps": len(program.steps)}))

    # --- GPU programs (runtime.cuda._ProgramRun), eager GPU ops included (one-op programs)
    def run_gpu_steps(self, run: Any) -> None:
        """Run a GPU program's steps one by one, each timed from its launch until the device is
        idle again (a synchronize after each step), on the GPU stream's track."""
        add = self.profile._add
        slot_dtypes = run.p.slot_dtypes
        device = getattr(run.dev, "name", "cuda")
        self.profile.thread_names.setdefault(GPU_TID, f"GPU stream ({device})")
        run.dev.synchronize()
        t_program = time.perf_counter_ns()
        for step in run.p.steps:
            name, kind, moved, flops = self._cost(step, slot_dtypes)
            t0 = time.perf_counter_ns()
            run.step(step)
            run.dev.synchronize()
            args = {"shape": list(step.shape)} if isinstance(step, rp.Launch) else \
                {"shapes": [list(sh) for sh in step.shapes]}
            add(Event(name, kind, t0, time.perf_counter_ns() - t0, GPU_TID, moved, flops,
                      {**args, "device": device}))
        where = source_line()
        add(Event(f"program @ {where}" if where else "program", "program", t_program,
                  time.perf_counter_ns() - t_program, threading.get_native_id(),
                  args={"steps": len(run.p.steps), "device": device}))

    def _launch(self, name: str, fn: Any, ranges: list[tuple[int, int]], args: tuple) -> None:
        """A multi-threaded launch: the first range here, the others on the profiler's threads,
        each timed on the thread that ran it."""
        pool = self._threads()
        futures = [pool.submit(self._range, name, fn, a, b, args) for a, b in ranges[1:]]
        try:
            self._range(name, fn, *ranges[0], args)
        finally:
            for f in futures:
                f.result()

    def _range(self, name: str, fn: Any, a: int, b: int, args: tuple) -> None:
        t0 = time.perf_counter_ns()
        fn(a, b, *args)
        self.profile._add(Event(name, "range", t0, time.perf_counter_ns() - t0, threading.get_native_id(),
                                args={"range": [a, b]}))

    def _threads(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1),
                                                thread_name_prefix="tracejit-worker")
            return self._pool

    # --- eager ops (prims.bind)
    def eager(self, prim: Prim, inputs: tuple, params: dict[str, Any]) -> Any:
        arrays = [x._value for x in inputs]
        t0 = time.perf_counter_ns()
        value = prim.impl(*arrays, **params)
        dur = time.perf_counter_ns() - t0
        moved, flops = _eager_cost(prim, arrays, value)
        self.profile._add(Event(prim.name, "eager", t0, dur, threading.get_native_id(), moved, flops,
                                {"source": source_line(), "shape": list(np.shape(value))}))
        return value


_active_lock = threading.Lock()
_active: Profile | None = None


class Profile:
    """A recording (see :func:`profile`): ``events``, :meth:`table`, :meth:`key_averages`,
    :meth:`export_chrome_trace`."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.thread_names: dict[int, str] = {}
        self.start_ns = 0
        self.end_ns = 0
        self._recorder: _Recorder | None = None

    def __enter__(self) -> Profile:
        global _active
        with _active_lock:
            if _active is not None:
                raise RuntimeError("tracejit.profiler.profile: a profile is already recording; "
                                   "profiles do not nest")
            _active = self
            self._recorder = rec = _Recorder(self)
            self.start_ns = time.perf_counter_ns()
            cpu_runtime.profiler = cuda_runtime.profiler = rec
            prims.eager_hook = rec.eager
        return self

    def __exit__(self, *exc: Any) -> None:
        global _active
        with _active_lock:
            cpu_runtime.profiler = cuda_runtime.profiler = None
            prims.eager_hook = None
            _active = None
        self.end_ns = time.perf_counter_ns()
        if self._recorder is not None:
            self._recorder.close()

    def _add(self, event: Event) -> None:
        if event.tid not in self.thread_names:
            self.thread_names[event.tid] = threading.current_thread().name
        self.events.append(event)       # (list.append is atomic: workers record too)

    # ------------------------------------------------------------------ views
    def key_averages(self, kinds: tuple[str, ...] = LEAF_KINDS + ("program",)) -> list[Row]:
        """Events of ``kinds`` grouped by (name, kind), in first-seen order."""
        rows: dict[tuple[str, str], Row] = {}
        for e in self.events:
            if e.kind not in kinds:
                continue
            r = rows.get((e.name, e.kind))
            if r is None:
                rows[(e.name, e.kind)] = Row(e.name, e.kind, 1, e.dur_ns, e.bytes, e.flops)
            else:
                r.calls += 1
                r.total_ns += e.dur_ns
                r.bytes += e.bytes
                r.flops += e.flops
        return list(rows.values())

    def total_ns(self) -> int:
        """Time in kernels, GEMMs, host steps and eager ops (what the table's total line says)."""
        return sum(e.dur_ns for e in self.events if e.kind in LEAF_KINDS)

    def table(self, sort_by: str = "total", row_limit: int | None = None) -> str:
        """The events grouped by kernel or op, with calls, total and mean time, bytes, FLOPs and
        the achieved GB/s and GFLOP/s; program calls follow as rows of their own.

        ``sort_by``: one of ``total``, ``calls``, ``mean``, ``name``, ``bytes``, ``flops``,
        ``gbps``, ``gflops`` (largest first, ``name`` alphabetically)."""
        if sort_by not in SORT_KEYS:
            raise ValueError(f"profile.table: sort_by must be one of {', '.join(SORT_KEYS)}; got {sort_by!r}")
        keyf: dict[str, Callable[[Row], Any]] = {
            "total": lambda r: -r.total_ns, "calls": lambda r: -r.calls, "mean": lambda r: -r.mean_ns,
            "name": lambda r: r.name, "bytes": lambda r: -r.bytes, "flops": lambda r: -r.flops,
            "gbps": lambda r: -r.gbps, "gflops": lambda r: -r.gflops}
        steps = sorted(self.key_averages(LEAF_KINDS), key=keyf[sort_by])
        programs = sorted(self.key_averages(("program",)), key=keyf[sort_by])
        if row_limit is not None:
            steps = steps[:row_limit]
        width = max([len(r.name) for r in steps + programs] + [24])
        width = min(width, 60)
        head = (f"{'name':<{width}}  {'kind':<7} {'calls':>6} {'total ms':>10} {'mean us':>10} "
                f"{'MB':>10} {'MFLOP':>10} {'GB/s':>8} {'GFLOP/s':>8}")
        lines = [head, "-" * len(head)]

        def line(r: Row) -> str:
            name = r.name if len(r.name) <= width else r.name[:width - 3] + "..."
            return (f"{name:<{width}}  {r.kind:<7} {r.calls:>6} {r.total_ns / 1e6:>10.3f} "
                    f"{r.mean_ns / 1e3:>10.1f} {r.bytes / 1e6:>10.3f} {r.flops / 1e6:>10.3f} "
                    f"{r.gbps:>8.2f} {r.gflops:>8.2f}")
        lines += [line(r) for r in steps]
        total = Row("total", "", sum(r.calls for r in self.key_averages(LEAF_KINDS)), self.total_ns(),
                    sum(e.bytes for e in self.events if e.kind in LEAF_KINDS),
                    sum(e.flops for e in self.events if e.kind in LEAF_KINDS))
        lines += ["-" * len(head), line(total) if total.calls else "total: no kernels or ops recorded"]
        if programs:
            lines += ["", "program calls (each includes its steps above):"] + [line(r) for r in programs]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def chrome_trace(self) -> dict[str, Any]:
        """The recording as a Chrome trace-event object (``traceEvents``: complete events ``X``
        in microseconds since the profile began, and the threads' names as metadata)."""
        pid = os.getpid()
        out: list[dict[str, Any]] = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                                      "args": {"name": "tracejit"}}]
        for tid, name in self.thread_names.items():
            out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
        for e in sorted(self.events, key=lambda e: e.start_ns):
            args = dict(e.args)
            if e.kind in LEAF_KINDS:
                args.update(bytes=e.bytes, flops=e.flops,
                            gbps=round(e.bytes / e.dur_ns, 3) if e.dur_ns else 0.0)
            out.append({"name": e.name, "cat": e.kind, "ph": "X", "pid": pid, "tid": e.tid,
                        "ts": (e.start_ns - self.start_ns) / 1e3, "dur": e.dur_ns / 1e3, "args": args})
        return {"traceEvents": out, "displayTimeUnit": "ms"}

    def export_chrome_trace(self, path: str | os.PathLike) -> None:
        """Write :meth:`chrome_trace` as JSON to ``path`` (open it in Perfetto or chrome://tracing)."""
        with open(path, "w") as f:
            json.dump(self.chrome_trace(), f)


def profile() -> Profile:
    """A profile to record with: ``with tj.profiler.profile() as prof: ...; print(prof.table())``."""
    return Profile()


def active() -> Profile | None:
    """The profile recording now, if any."""
    return _active


__all__ = ["profile", "Profile", "Event", "Row", "active", "kernel_flops", "matmul_flops", "touched_bytes",
           "GPU_TID"]
