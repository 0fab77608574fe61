"""The worker pool runs every range of a launch exactly once, whether its workers are spinning,
asleep, busy with another thread's launch, or gone after a fork."""
import _thread
import ctypes
import multiprocessing
import os
import threading
import time

import numpy as np
import pytest

import tracejit as tj
from codegen import cpu_handoff
from runtime import worker_pool

_RANGE_FN = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_void_p)


class _Recorder:
    """A kernel-shaped callback that records the ranges it was called with, and from where."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[tuple[int, int, str]] = []
        self._lock = threading.Lock()
        self._delay = delay
        self.fn = _RANGE_FN(self._call)

    def _call(self, start, end, shape_p, strides_p, ptrs_p):
        if self._delay:
            time.sleep(self._delay)
        with self._lock:
            self.calls.append((start, end, threading.current_thread().name))

    def ranges(self) -> list[tuple[int, int]]:
        return sorted((a, b) for a, b, _ in self.calls)


def _ranges(parts: int) -> list[tuple[int, int]]:
    return [(10 * i, 10 * i + 10) for i in range(parts)]


@pytest.mark.parametrize("parts", [1, 2, os.cpu_count() or 1, 2 * (os.cpu_count() or 1) + 1])
def test_every_range_runs_once(parts):
    rec = _Recorder()
    worker_pool.run(rec.fn, _ranges(parts), 0, 0, 0)
    assert rec.ranges() == _ranges(parts)


@pytest.mark.skipif(not cpu_handoff.supported() or (os.cpu_count() or 1) < 2,
                    reason="native hand-off needs x86-64 and two cores")
def test_ranges_reach_native_workers():
    rec = _Recorder(delay=0.01)      # long enough that the caller cannot have run both
    worker_pool.run(rec.fn, _ranges(2), 0, 0, 0)
    assert rec.ranges() == _ranges(2)
    assert {name for *_, name in rec.calls} == {threading.current_thread().name, "tracejit-worker"}


def test_many_launches_with_workers_spinning_and_asleep():
    rec = _Recorder()
    expected = []
    for i in range(300):
        worker_pool.run(rec.fn, _ranges(2), 0, 0, 0)
        expected += _ranges(2)
        if i % 50 == 0:
            time.sleep(0.003)       # past the spin window: the workers go to sleep
    assert rec.ranges() == sorted(expected)


def test_concurrent_launches_from_threads():
    recs = [_Recorder() for _ in range(6)]

    def launch_many(rec):
        for _ in range(50):
            worker_pool.run(rec.fn, _ranges(2), 0, 0, 0)

    threads = [threading.Thread(target=launch_many, args=(r,)) for r in recs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rec in recs:
        assert rec.ranges() == sorted(_ranges(2) * 50)


def _sum_in_child(conn):
    rec = _Recorder()
    worker_pool.run(rec.fn, _ranges(2), 0, 0, 0)
    conn.send(rec.ranges())


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_launch_after_fork():
    rec = _Recorder()
    worker_pool.run(rec.fn, _ranges(2), 0, 0, 0)       # parent's workers exist before the fork
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_sum_in_child, args=(child,))
    p.start()
    assert parent.poll(30), "child hung launching after fork"
    ranges = parent.recv()
    p.join(10)
    assert ranges == _ranges(2) and p.exitcode == 0


def test_split_kernel_matches_numpy():
    """A real kernel split across the workers (a large elementwise add)."""
    x = np.random.default_rng(0).random(1 << 21, dtype=np.float32)
    y = np.random.default_rng(1).random(1 << 21, dtype=np.float32)
    out = tj.jit(lambda a, b: a * 2 + b)(tj.asarray(x), tj.asarray(y))
    np.testing.assert_array_equal(np.asarray(out), x * 2 + y)


@pytest.mark.skipif(not cpu_handoff.supported() or (os.cpu_count() or 1) < 2,
                    reason="native hand-off needs x86-64 and two cores")
def test_ctrl_c_waits_for_workers_before_unwinding():
    """A KeyboardInterrupt while waiting must not return while a worker still runs (it may be
    writing the call's buffers)."""
    finished = []

    def slow(start, end, *_):
        if start:               # the worker's range: interrupt the waiting caller, then finish
            time.sleep(0.05)     # (the caller is in its wait loop by now)
            _thread.interrupt_main()
            time.sleep(0.05)
            finished.append(start)

    fn = _RANGE_FN(slow)
    with pytest.raises(KeyboardInterrupt):
        worker_pool.run(fn, _ranges(2), 0, 0, 0)
    assert finished == [10]
