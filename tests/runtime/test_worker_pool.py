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


# --------------------------------------------------------------------------- native step lists

_NATIVE = cpu_handoff.supported() and (os.cpu_count() or 1) >= 2
needs_native = pytest.mark.skipif(not _NATIVE, reason="the step runner needs x86-64 and two cores")


class _Log:
    """Kernel-shaped callbacks that log (step, start, thread) in the order they ran."""

    def __init__(self, delay_workers: float = 0.0):
        self.events: list[tuple[str, int, str]] = []
        self._lock = threading.Lock()
        self._delay = delay_workers

    def kernel(self, name: str):
        def call(start, end, *_):
            if start and self._delay:
                time.sleep(self._delay)
            with self._lock:
                self.events.append((name, start, threading.current_thread().name))
        return _RANGE_FN(call)

    def python(self, k: int) -> None:
        self.events.append((f"py{k}", 0, threading.current_thread().name))


def _steps(log: _Log) -> tuple[worker_pool.Steps, list]:
    fns = [log.kernel("a"), log.kernel("c")]     # (kept alive by the caller)
    records = [(fns[0], _ranges(2), (0, 0, 0), []), None, (fns[1], _ranges(2), (0, 0, 0), []),
               (fns[1], [], (0, 0, 0), [])]       # an empty launch: nothing runs
    return worker_pool.Steps(records, n_slots=0), fns


def _check_order(log: _Log) -> None:
    names = [n for n, _, _ in log.events]
    assert sorted(names[:2]) == ["a", "a"] and names[2] == "py1" and names[3:] == ["c", "c"]
    ran = sorted((n, s) for n, s, _ in log.events if n != "py1")
    assert ran == [("a", 0), ("a", 10), ("c", 0), ("c", 10)]


@needs_native
def test_step_runner_runs_each_range_once_and_python_steps_between():
    log = _Log()
    steps, _fns = _steps(log)
    assert worker_pool.can_run_steps(steps)
    worker_pool.run_steps(steps, [], 0, log.python)
    _check_order(log)
    assert {t for n, s, t in log.events if s == 10} == {"tracejit-worker"}


@needs_native
def test_step_runner_wakes_sleeping_workers():
    log = _Log()
    steps, _fns = _steps(log)
    for _ in range(20):
        time.sleep(0.003)       # past the spin window: the worker is asleep at the first step
        log.events.clear()
        worker_pool.run_steps(steps, [], 0, log.python)
        _check_order(log)


@needs_native
def test_step_runner_leaves_a_late_worker_to_python():
    """A worker still busy after the runner's spin limit: Python waits for it, and the next
    step starts only once it is done."""
    log = _Log(delay_workers=0.02)
    steps, _fns = _steps(log)
    worker_pool.run_steps(steps, [], 0, log.python)
    _check_order(log)


@needs_native
def test_step_runner_runs_serially_while_another_thread_holds_the_workers():
    log = _Log()
    steps, _fns = _steps(log)
    pool = worker_pool._pool
    assert pool._busy.acquire()
    try:
        worker_pool.run_steps(steps, [], 0, log.python)
    finally:
        pool._busy.release()
    _check_order(log)
    assert {t for *_, t in log.events} == {threading.current_thread().name}


@needs_native
def test_step_runner_ctrl_c_waits_for_workers_before_unwinding():
    finished = []

    def slow(start, end, *_):
        if start:
            time.sleep(0.05)
            _thread.interrupt_main()
            time.sleep(0.05)
            finished.append(start)

    fn = _RANGE_FN(slow)
    steps = worker_pool.Steps([(fn, _ranges(2), (0, 0, 0), []), (fn, _ranges(2), (0, 0, 0), [])], n_slots=0)
    with pytest.raises(KeyboardInterrupt):
        worker_pool.run_steps(steps, [], 0, lambda k: None)
    assert finished == [10]
    log = _Log()                        # and the workers serve the next call normally
    steps, _fns = _steps(log)
    worker_pool.run_steps(steps, [], 0, log.python)
    _check_order(log)


_CONCURRENT_FIRST_CALLS = """
import sys, threading
import numpy as np
import tracejit as tj
rng = np.random.default_rng(4)
x = rng.standard_normal((512, 256)).astype(np.float32)
w = rng.standard_normal((256, 512)).astype(np.float32) / 16
y = rng.standard_normal((1 << 18,)).astype(np.float32)

def softmax_of_product(a, b):
    z = a @ b
    e = tj.exp(z - tj.max(z, axis=-1, keepdims=True))
    return e / tj.sum(e, axis=-1, keepdims=True)

fs = [(tj.jit(softmax_of_product), (x, w)), (tj.jit(lambda v: tj.tanh(v) * 2 + tj.sum(v)), (y,))]
z = x.astype(np.float64) @ w
e = np.exp(z - z.max(-1, keepdims=True))
want = [e / e.sum(-1, keepdims=True), np.tanh(y.astype(np.float64)) * 2 + y.astype(np.float64).sum()]
bad = []

def work(i):
    f, args = fs[i % 2]
    for _ in range(20):
        got = np.asarray(f(*[tj.asarray(a) for a in args]))
        wrong = int((~np.isclose(got, want[i % 2], rtol=1e-4, atol=1e-4)).sum())
        if wrong:
            bad.append((i, wrong))

threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(bad)
sys.exit(1 if bad else 0)
"""


def test_programs_from_several_threads_at_once():
    """Different multi-step programs from four threads, from the first call of a fresh process
    on (when the workers are created): one thread holds the workers, the others run their
    ranges themselves, and every result is right."""
    import subprocess
    import sys
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", _CONCURRENT_FIRST_CALLS], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
