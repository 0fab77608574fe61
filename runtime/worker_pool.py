"""The threads that run a launch's ranges beside the calling thread.

On x86-64 a launch hands each range to a worker through :mod:`codegen.cpu_handoff`: the worker
spins for ~0.2 ms after each job, so the launches of one program call reach it awake in well
under a microsecond, and then sleeps on a semaphore (no core burnt between calls).  Elsewhere,
or when a launch has more ranges than the machine has cores (spinning would then fight for
them), ranges go to a plain ``ThreadPoolExecutor``.

One thread launches through the workers at a time; a launch that finds them busy (another
thread's call in flight) runs its ranges serially on its own thread rather than wait.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from codegen import cpu, cpu_handoff
from runtime.kernel_cache import cached_artifact

# Time-stamp counter ticks a worker spins for a job before sleeping (~0.2 ms at 2.5 GHz), and
# a waiting launcher spins before yielding its core (its worker may have been preempted).
SPIN_CYCLES = 500_000
WAIT_CYCLES = 2_000_000

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p
_CORES = os.cpu_count() or 1      # (os.cpu_count() costs microseconds per call)


def num_threads() -> int:
    """``$TRACEJIT_NUM_THREADS``, default the number of cores."""
    return max(1, int(os.environ.get("TRACEJIT_NUM_THREADS") or _CORES))


class _Handoff:
    """The loaded hand-off functions."""

    def __init__(self):
        artifact, _ = cached_artifact("handoff", cpu_handoff.SYMBOLS[0], cpu_handoff.compile_handoff,
                                      {"disk_errors": 0})
        post, serve, wait = (cpu.load_address(artifact, s) for s in cpu_handoff.SYMBOLS)
        self.post = ctypes.CFUNCTYPE(_i64, _ptr, _ptr, _i64, _i64, _ptr, _ptr, _ptr)(post)
        self.serve = ctypes.CFUNCTYPE(_i64, _ptr, _i64)(serve)
        self.wait = ctypes.CFUNCTYPE(_i64, _ptr, _i64)(wait)


class _Worker:
    """A daemon thread serving jobs posted to its control block."""

    def __init__(self, handoff: _Handoff):
        self._block = np.zeros(cpu_handoff.BLOCK_BYTES // 8, np.int64)
        self.address = self._block.ctypes.data
        self.wake = threading.Semaphore(0)
        self._handoff = handoff
        threading.Thread(target=self._serve, daemon=True, name="tracejit-worker").start()

    def _serve(self) -> None:
        while True:
            self._handoff.serve(self.address, SPIN_CYCLES)
            self.wake.acquire()


def _wait_all(h: _Handoff, pending: list[_Worker]) -> None:
    """Wait for every posted job (emptying ``pending``), even through Ctrl-C: unwinding while a
    worker still writes into the call's buffers could hand them to the next call."""
    interrupted = None
    while pending:
        try:
            while pending:
                if h.wait(pending[-1].address, WAIT_CYCLES):
                    pending.pop()
                else:
                    time.sleep(0)
        except KeyboardInterrupt as e:
            interrupted = e
    if interrupted is not None:
        raise interrupted


class WorkerPool:
    """Runs the ranges of a launch on this thread and on workers."""

    def __init__(self):
        self._native = cpu_handoff.supported()
        self._handoff: _Handoff | None = None
        self._workers: list[_Worker] = []
        self._busy = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def run(self, fn, ranges: Sequence[tuple[int, int]], shape_p: int, strides_p: int,
            ptrs_p: int) -> None:
        """Call ``fn(start, end, shape_p, strides_p, ptrs_p)`` for every range; return when all
        are done.  The first range runs on this thread."""
        if len(ranges) == 1:
            fn(ranges[0][0], ranges[0][1], shape_p, strides_p, ptrs_p)
        elif not self._native or len(ranges) > _CORES:
            self._run_executor(fn, ranges, shape_p, strides_p, ptrs_p)
        elif self._busy.acquire(blocking=False):
            try:
                self._run_native(fn, ranges, shape_p, strides_p, ptrs_p)
            finally:
                self._busy.release()
        else:
            for a, b in ranges:
                fn(a, b, shape_p, strides_p, ptrs_p)

    def _run_native(self, fn, ranges, shape_p, strides_p, ptrs_p) -> None:
        if self._handoff is None:
            self._handoff = _Handoff()
        h = self._handoff
        while len(self._workers) < len(ranges) - 1:
            self._workers.append(_Worker(h))
        address = _ptr.from_buffer(fn).value      # a ctypes function object holds its address
        posted = []
        try:
            for w, (a, b) in zip(self._workers, ranges[1:]):
                posted.append(w)    # (waiting on a block never posted to returns at once)
                if h.post(w.address, address, a, b, shape_p, strides_p, ptrs_p):
                    w.wake.release()
            fn(ranges[0][0], ranges[0][1], shape_p, strides_p, ptrs_p)
        finally:
            _wait_all(h, posted)

    def _run_executor(self, fn, ranges, shape_p, strides_p, ptrs_p) -> None:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(len(ranges) - 1, thread_name_prefix="tracejit")
            ex = self._executor
        futures = [ex.submit(fn, a, b, shape_p, strides_p, ptrs_p) for a, b in ranges[1:]]
        try:
            fn(ranges[0][0], ranges[0][1], shape_p, strides_p, ptrs_p)
        finally:
            wait(futures)


_pool = WorkerPool()


def _after_fork() -> None:
    # a child has none of the parent's threads: start over with fresh workers
    global _pool
    _pool = WorkerPool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def run(fn, ranges: Sequence[tuple[int, int]], shape_p: int, strides_p: int, ptrs_p: int) -> None:
    """Run ``fn`` over each range (see :meth:`WorkerPool.run`)."""
    _pool.run(fn, ranges, shape_p, strides_p, ptrs_p)
