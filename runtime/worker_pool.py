"""The threads that run a launch's ranges beside the calling thread.

On x86-64 a launch hands each range to a worker through :mod:`codegen.cpu_handoff`: the worker
spins for ~0.2 ms after each job, so the launches of one program call reach it awake in well
under a microsecond, and then sleeps on a semaphore (no core burnt between calls).  Elsewhere,
or when a launch has more ranges than the machine has cores (spinning would then fight for
them), ranges go to a plain ``ThreadPoolExecutor``.

One thread launches through the workers at a time; a launch that finds them busy (another
thread's call in flight) runs its ranges serially on its own thread rather than wait.

A program of several steps runs through the step runner (:mod:`codegen.cpu_runner`): one
native call walks its launches, and this module handles what the runner hands back (Python
steps, workers to wake, workers late to finish).
"""
from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from codegen import cpu, cpu_handoff, cpu_runner
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
        self.post_address, self.wait_address = post, wait
        self.post = ctypes.CFUNCTYPE(_i64, _ptr, _ptr, _i64, _i64, _ptr, _ptr, _ptr)(post)
        self.serve = ctypes.CFUNCTYPE(_i64, _ptr, _i64)(serve)
        self.wait = ctypes.CFUNCTYPE(_i64, _ptr, _i64)(wait)


class _Runner:
    """The loaded step runner (:mod:`codegen.cpu_runner`)."""

    def __init__(self):
        artifact, _ = cached_artifact("runner", cpu_runner.SYMBOL, cpu_runner.compile_runner,
                                      {"disk_errors": 0})
        self.run = ctypes.CFUNCTYPE(_i64, _ptr, _ptr, _i64, _i64, _ptr, _ptr, _ptr, _i64, _i64, _ptr, _ptr)(
            cpu.load_address(artifact))


class Steps:
    """A program's steps as the runner's records: ``native[k] = (kernel, ranges, args,
    operands)`` for a kernel launch (``args``: addresses of its shape, strides and pointer
    arrays; ``operands``: the (slot, byte offset) each pointer is filled from), None for a
    step Python runs.  ``n_slots`` addresses are bound per call; slot ``n_slots`` is always 0
    (a null pointer) and slot ``n_slots + 1`` the calling thread's GEMM packing scratch."""

    @staticmethod
    def extra_slots(n_slots: int) -> tuple[int, int]:
        """(zero slot, scratch slot) past a program's ``n_slots``, for its records to name."""
        return n_slots, n_slots + 1

    def __init__(self, native: Sequence[tuple | None], n_slots: int, scratch_bytes: int = 0):
        self.native = list(native)
        self.n_slots, self.scratch_bytes = n_slots, scratch_bytes
        _, self.scratch_slot = self.extra_slots(n_slots)
        words: list[int] = []
        index = []
        for step in self.native:
            index.append(len(words))
            if step is None:
                words += [0] * cpu_runner.HEADER_WORDS
                continue
            kernel, ranges, args, operands = step
            words += [_ptr.from_buffer(kernel).value, *args, len(operands), len(ranges)]
            for slot, offset in operands:
                words += [slot, offset]
            for a, b in ranges:
                words += [a, b]
        self.desc = np.array(words or [0], np.int64)
        self.index = np.array(index or [0], np.int64)
        self.addresses = (_i64 * (n_slots + 2))()
        self.state = (_i64 * 3)()
        self.max_ranges = max((len(st[1]) for st in self.native if st is not None), default=1)
        self.pointers = (self.desc.ctypes.data, self.index.ctypes.data, ctypes.addressof(self.addresses),
                         ctypes.addressof(self.state))


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


def _selected(workers: Sequence[_Worker], mask: int) -> list[_Worker]:
    return [w for i, w in enumerate(workers) if mask >> i & 1]


def _wake(workers: Sequence[_Worker], mask: int) -> None:
    """Release the semaphores of the workers in bit set ``mask`` (an extra release only costs
    a sleeping worker one empty spin)."""
    for w in _selected(workers, mask):
        w.wake.release()


class WorkerPool:
    """Runs the ranges of a launch on this thread and on workers."""

    def __init__(self):
        self._native = cpu_handoff.supported()
        self._handoff: _Handoff | None = None
        self._runner: _Runner | None = None
        self._setup_lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._blocks = (_i64 * 1)()             # control block addresses, for the runner
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
        h = self._get_handoff()
        self._ensure_workers(len(ranges) - 1)
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

    def _loaded(self, attr: str, load: Callable[[], object]) -> object:
        """``self.<attr>``, loaded on first use (once, by whichever thread comes first)."""
        value = getattr(self, attr)
        if value is None:
            with self._setup_lock:
                value = getattr(self, attr)
                if value is None:
                    value = load()
                    setattr(self, attr, value)
        return value

    def _get_handoff(self) -> _Handoff:
        return self._loaded("_handoff", _Handoff)

    def _get_runner(self) -> _Runner:
        return self._loaded("_runner", _Runner)

    def _ensure_workers(self, n: int) -> None:
        """At least ``n`` workers (only while holding ``_busy``: it alone changes the list)."""
        if len(self._workers) < n:
            while len(self._workers) < n:
                self._workers.append(_Worker(self._handoff))
            self._blocks = (_i64 * len(self._workers))(*[w.address for w in self._workers])

    def _claim(self, n: int) -> tuple[list[_Worker], ctypes.Array]:
        """(holding ``_busy``) At least ``n`` workers, and the list and control-block array as
        they are now: the runner reads that array, so the caller keeps it alive."""
        self._ensure_workers(n)
        return list(self._workers), self._blocks

    def can_run_steps(self, steps: Steps) -> bool:
        """Whether :meth:`run_steps` takes ``steps`` natively (x86-64, no more ranges than cores)."""
        return self._native and steps.max_ranges <= _CORES

    def run_steps(self, steps: Steps, addresses: Sequence[int], scratch: int,
                  python_step: Callable[[int], None]) -> None:
        """Run every step with the buffers at ``addresses`` (``scratch``: the calling thread's
        GEMM scratch); ``python_step(k)`` runs the steps that are not kernels."""
        h, run = self._get_handoff(), self._get_runner().run
        arr = steps.addresses
        arr[:steps.n_slots] = addresses
        arr[steps.scratch_slot] = scratch
        desc, index, arr_p, state_p = steps.pointers
        state, native, need = steps.state, steps.native, steps.max_ranges - 1
        workers: list[_Worker] = []
        blocks = None
        owned = self._busy.acquire(blocking=False)
        state[0] = cpu_runner.DONE
        try:
            if owned:
                workers, blocks = self._claim(need)
            k, n = 0, len(native)
            while k < n:
                k = run(desc, index, k, n, arr_p, ctypes.addressof(blocks) if owned else 0, state_p,
                        WAIT_CYCLES, 0 if owned else 1, h.post_address, h.wait_address)
                if k >= n:
                    break
                if state[0] == cpu_runner.PYTHON:
                    state[0] = cpu_runner.DONE
                    if owned:           # (the step may launch through the pool itself)
                        self._busy.release()
                    owned = False
                    python_step(k)
                    owned = self._busy.acquire(blocking=False)
                    if owned:
                        workers, blocks = self._claim(need)
                else:
                    if state[0] == cpu_runner.WAKE:
                        _wake(workers, state[2])
                        kernel, ranges, args, _ = native[k]
                        kernel(ranges[0][0], ranges[0][1], *args)
                    _wait_all(h, _selected(workers, state[1]))
                    state[0] = cpu_runner.DONE
                k += 1
        except BaseException:
            # Unwinding (Ctrl-C, say) with a step's ranges posted: the workers must run and
            # finish them first, or they would write into buffers the next call reuses (and
            # one left asleep with a job would never be woken).
            if state[0] in (cpu_runner.WAKE, cpu_runner.WAIT):
                if state[0] == cpu_runner.WAKE:
                    _wake(workers, state[2])
                _wait_all(h, _selected(workers, state[1]))
            raise
        finally:
            if owned:
                self._busy.release()

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


def can_run_steps(steps: Steps) -> bool:
    return _pool.can_run_steps(steps)


def run_steps(steps: Steps, addresses: Sequence[int], scratch: int,
              python_step: Callable[[int], None]) -> None:
    """Run a program's steps in one native call where it can (see :meth:`WorkerPool.run_steps`)."""
    _pool.run_steps(steps, addresses, scratch, python_step)
