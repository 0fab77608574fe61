"""tj.profiler: what a profile records for eager ops and compiled programs, its table, and its
Chrome trace; profiling never changes results."""
from __future__ import annotations

import json

import numpy as np
import pytest

import tracejit as tj
from runtime import cpu as cpu_runtime
from tracejit import prims


def _program(x, w):
    h = tj.tanh(x @ w * 1.5)                      # a GEMM, then a fused kernel
    return h.sum(axis=-1), tj.sort(x[:, 0])       # a host step (sort)


_jitted = tj.jit(_program)


@pytest.fixture
def operands(rng):
    x = rng.standard_normal((64, 16)).astype(np.float32)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    return x, w


def test_tj_profiler_is_public():
    import tracejit.profiler as module
    assert tj.profiler is module and "profiler" in tj.__all__


def test_compiled_steps_recorded_with_costs_and_same_results(operands):
    x, w = (tj.asarray(a) for a in operands)
    expected = [np.asarray(r) for r in _jitted(x, w)]       # compiled once, unprofiled
    with tj.profiler.profile() as prof:
        got = [np.asarray(r) for r in _jitted(x, w)]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)               # the step-by-step path computes the same
    ref = np.tanh(operands[0].astype(np.float64) @ operands[1] * 1.5).sum(-1)
    np.testing.assert_allclose(got[0], ref, rtol=1e-5, atol=1e-5)
    kinds = {e.kind for e in prof.events}
    assert {"gemm", "kernel", "host", "program"} <= kinds
    gemm = next(e for e in prof.events if e.kind == "gemm")
    assert gemm.flops == 2 * 64 * 16 * 8
    assert gemm.bytes == (64 * 16 + 16 * 8 + 64 * 8) * 4
    sort = next(e for e in prof.events if e.kind == "host")
    assert sort.name == "sort" and sort.bytes >= 2 * 64 * 4
    program = next(e for e in prof.events if e.kind == "program")
    assert "test_profiler.py" in program.name
    steps = [e for e in prof.events if e.kind in ("gemm", "kernel", "host")]
    for e in steps:                                   # steps lie inside their program call
        assert program.start_ns <= e.start_ns and e.start_ns + e.dur_ns <= program.start_ns + program.dur_ns
        assert e.dur_ns > 0


def test_kernel_flops_count_the_ir():
    f = tj.jit(lambda x: x * 2.0 + 1.0)
    x = tj.ones((1000,))
    f(x)
    with tj.profiler.profile() as prof:
        f(x)
    (k,) = [e for e in prof.events if e.kind == "kernel"]
    assert k.flops == 2 * 1000                      # one mul and one add per element
    assert k.bytes == 2 * 1000 * 4                  # x read and the result written once


def test_eager_ops_recorded_with_the_users_line():
    a = tj.ones((10, 20))
    with tj.profiler.profile() as prof:
        b = tj.exp(a)
        c = b.sum(axis=0)
    np.testing.assert_allclose(np.asarray(c), np.full(20, 10 * np.e), rtol=1e-6)
    ops = {e.name: e for e in prof.events if e.kind == "eager"}
    assert {"exp", "reduce_sum"} <= set(ops)
    assert ops["exp"].flops == 200 and ops["exp"].bytes == 2 * 200 * 4
    assert ops["reduce_sum"].flops == 200
    assert ops["exp"].args["source"].startswith("test_profiler.py:")


def test_autograd_backward_ops_recorded():
    w = tj.asarray(np.arange(4.0), requires_grad=True)
    with tj.profiler.profile() as prof:
        (w * w).sum().backward()
    np.testing.assert_array_equal(np.asarray(w.grad), 2 * np.arange(4.0))
    assert sum(e.kind == "eager" for e in prof.events) >= 3       # forward and backward ops


def test_table_groups_by_kernel_with_totals(operands):
    x, w = (tj.asarray(a) for a in operands)
    _jitted(x, w)
    with tj.profiler.profile() as prof:
        for _ in range(3):
            _jitted(x, w)
    table = prof.table()
    head, *rows = table.splitlines()
    for col in ("calls", "total ms", "GB/s", "GFLOP/s"):
        assert col in head
    gemm_row = next(r for r in rows if r.startswith("matmul 64x16 @ 16x8"))
    assert gemm_row.split()[5] == "3"                 # name (5 words), kind, calls
    total = next(r for r in rows if r.startswith("total"))
    assert int(total.split()[1]) == sum(e.kind in ("gemm", "kernel", "host", "eager") for e in prof.events)
    rows_by_name = {r.name: r for r in prof.key_averages()}
    g = rows_by_name["matmul 64x16 @ 16x8"]
    assert g.calls == 3 and g.flops == 3 * 2 * 64 * 16 * 8
    assert g.gflops == pytest.approx(g.flops / g.total_ns)
    assert "program calls" in table
    assert prof.table(sort_by="name", row_limit=1).count("\n") < table.count("\n")
    with pytest.raises(ValueError, match="sort_by must be one of"):
        prof.table(sort_by="speed")


def test_chrome_trace_is_valid_with_a_track_per_thread(tmp_path):
    f = tj.jit(lambda x: tj.exp(x) * 2.0)
    x = tj.ones((512, 4096))                          # large enough to split over the cores
    f(x)
    with tj.profiler.profile() as prof:
        f(x)
        tj.exp(tj.ones((3,)))
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(path)
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    complete = [e for e in events if e["ph"] == "X"]
    assert complete
    for e in complete:
        assert {"name", "cat", "pid", "tid", "ts", "dur"} <= set(e)
        assert e["ts"] >= 0 and e["dur"] >= 0
        assert e["tid"] in names                       # every track is named
    launch = next(e for e in complete if e["cat"] == "kernel")
    ranges = [e for e in complete if e["cat"] == "range"]
    assert len(ranges) == launch["args"]["threads"]
    if launch["args"]["threads"] > 1:
        assert len({e["tid"] for e in ranges}) > 1     # ranges on the threads that ran them
    assert any(e["cat"] == "eager" for e in complete)


def test_hooks_off_outside_and_after_an_error():
    assert cpu_runtime.profiler is None and prims.eager_hook is None
    with pytest.raises(KeyError):
        with tj.profiler.profile():
            assert cpu_runtime.profiler is not None and prims.eager_hook is not None
            raise KeyError("inside")
    assert cpu_runtime.profiler is None and prims.eager_hook is None
    assert tj.profiler.active() is None


def test_profiles_do_not_nest():
    with tj.profiler.profile():
        with pytest.raises(RuntimeError, match="do not nest"):
            with tj.profiler.profile():
                pass
    assert tj.profiler.active() is None


def test_gpu_steps_on_the_stream_track(tmp_path, rng):
    from codegen import ptx
    from tests.gpu.simulated_cuda import installed
    from tracejit import eager_device
    if not ptx.ptxas_available():
        pytest.skip("the simulated GPU assembles every kernel with ptxas, which is not on PATH")
    a = rng.standard_normal((32, 16)).astype(np.float32)
    eager_device.cache_clear()
    try:
        with installed():
            x = tj.asarray(a).to("cuda")
            f = tj.jit(lambda x: tj.exp(x).sum(axis=-1))
            expected = np.asarray(f(x).to("cpu"))
            with tj.profiler.profile() as prof:
                got = f(x)
                y = x * 2.0                                     # an eager GPU op: a one-op program
            np.testing.assert_array_equal(np.asarray(got.to("cpu")), expected)
            np.testing.assert_allclose(np.asarray(y.to("cpu")), a * 2, rtol=1e-6)
    finally:
        eager_device.cache_clear()
    np.testing.assert_allclose(expected, np.exp(a.astype(np.float64)).sum(-1), rtol=1e-5)
    gpu = [e for e in prof.events if e.tid == tj.profiler.GPU_TID]
    assert len(gpu) >= 2 and all(e.args["device"] == "simulated GPU" for e in gpu)
    assert {e.kind for e in gpu} == {"kernel"}
    assert sum(e.flops for e in gpu) > 0
    programs = [e for e in prof.events if e.kind == "program"]
    assert len(programs) == 2 and all(e.tid != tj.profiler.GPU_TID for e in programs)
    prof.export_chrome_trace(tmp_path / "gpu.json")
    doc = json.loads((tmp_path / "gpu.json").read_text())
    names = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"]
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names[tj.profiler.GPU_TID] == "GPU stream (simulated GPU)"
