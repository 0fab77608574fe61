"""Smoke test of the benchmark machinery on tiny sizes with NumPy only (no timing asserts)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest

from benchmarks import compile_latency, harness, training
from benchmarks.__main__ import selected
from benchmarks.harness import NUMPY, Config, Prepared, Unavailable
from benchmarks.workloads import W1, W3, W7, WORKLOADS, W5a, Workload

TINY = Config(preset="tiny", repeats=5, warmup=1, min_sample_s=0.0)


def tiny(wl: Workload, shape: tuple[int, ...]) -> Workload:
    return dataclasses.replace(wl, sizes={"tiny": [shape]})


def with_broken(impl: str, wl: Workload, inputs: Sequence[np.ndarray], device: str) -> Prepared:
    """The real preparer, plus a wrong implementation, a raising one and a missing one."""
    if impl == "off by a little":
        return Prepared(lambda: wl.numpy(*inputs) + np.float32(1e-2), np.asarray, lambda _: None)
    if impl == "wrong dtype":
        return Prepared(lambda: wl.numpy(*inputs).astype(np.float64), np.asarray, lambda _: None)
    if impl == "raises":
        raise ValueError("operands could not be broadcast\nsecond line")
    if impl == "missing":
        raise Unavailable("somelib not importable")
    return harness.prepare(impl, wl, inputs, device)


@pytest.mark.parametrize("wl", [W1, W3, W5a, W7], ids=lambda w: w.key)
def test_numpy_rows_pass_their_check_and_render(wl: Workload) -> None:
    shape = wl.sizes["quick"][0] if wl is W7 else tuple(min(d, 64) for d in wl.sizes["quick"][0])
    results = harness.run_workload(tiny(wl, shape), shape, TINY, impls=(NUMPY,))
    assert [r.status for r in results] == ["ok"]
    assert len(results[0].samples_s) == TINY.repeats and results[0].median_s
    table = harness.render_group(results, harness.Ceilings(copy_gbps=10.0, gemm_gflops=100.0))
    assert table.startswith(wl.key) and "numpy" in table and "1.00x" in table


def test_wrong_and_failing_implementations_are_reported_not_timed() -> None:
    impls = (NUMPY, "off by a little", "wrong dtype", "raises", "missing")
    results = harness.run_workload(tiny(W1, (256,)), (256,), TINY, impls=impls, preparer=with_broken)
    by_impl = {r.impl: r for r in results}
    assert by_impl[NUMPY].ok
    assert by_impl["off by a little"].status == "MISMATCH"
    assert "elements outside" in by_impl["off by a little"].detail
    assert by_impl["wrong dtype"].status == "MISMATCH" and "dtype" in by_impl["wrong dtype"].detail
    assert by_impl["raises"].status == "error: ValueError: operands could not be broadcast"
    assert by_impl["missing"].status == "skipped: somelib not importable"
    assert all(r.median_s is None and not r.samples_s for r in results if not r.ok)
    table = harness.render_group(results, None)
    assert table.count("MISMATCH") == 2 and "error: ValueError" in table and "skipped:" in table


def test_every_workload_has_consistent_definitions() -> None:
    for wl in WORKLOADS:
        assert set(wl.sizes) == {"full", "quick", "cuda"}, wl.key
        shape = wl.sizes["full"][0]
        assert wl.cost(shape).bytes > 0 and wl.rtol > 0
        small = shape if wl is W7 else tuple(min(d, 8) for d in shape)
        inputs = wl.make_inputs(small, np.random.default_rng(0))
        assert all(a.dtype in (np.float32, np.int64) for a in inputs), wl.key   # (ids are int64)
        ref = harness.reference(wl, inputs)
        assert harness.compare(np.asarray(wl.numpy(*inputs)), ref, wl.rtol, wl.atol) == "", wl.key


def test_training_reference_and_mismatch_detection() -> None:
    params, x, y = training.make_problem()
    ref = training.NumpyTrainer(params, x, y, np.float64)
    ref_loss = float(ref.step())
    ref_params = [a.astype(np.float32) for a in ref.params()]
    problem, _ = training.check_step(training.NumpyTrainer(params, x, y, np.float32), ref_loss, ref_params)
    assert problem == ""
    flipped = [-p for p in ref_params]
    problem, _ = training.check_step(training.NumpyTrainer(params, x, y, np.float32), ref_loss, flipped)
    assert problem.startswith("parameter 0")


def test_only_selection() -> None:
    assert selected("W1,w3") == ["W1", "W3"]
    assert selected("W5") == ["W5a", "W5b"]
    assert selected(None)[-3:] == ["T1", "C1", "D1"]
    with pytest.raises(SystemExit):
        selected("W99")


def test_compile_latency_report_reads_cache_info() -> None:
    info = {"traces": 1, "kernels_compiled": 2, "kernels_disk_hits": 0}
    assert compile_latency.kernel_counts(info) == (2, 0)
    c1 = {"n": 16, "device": "cpu", "rows": [
        {"impl": "tracejit jit", "phase": "cold", "status": "ok", "import_s": 0.1, "first_call_s": 0.5,
         "second_call_s": 0.01, "kernels": [2, 0],
         "shape_change": {"shapes": [[8, 4], [4, 4]], "compiled": [2, 0], "first_call_s": [0.4, 0.003],
                          "problems": ["", ""]}},
        {"impl": "jax.jit", "phase": "cold", "status": "skipped: jax not importable"},
    ]}
    text = compile_latency.render(c1)
    assert "2/0" in text and "ok, re-trace only" in text and "skipped: jax" in text


def test_step_overhead_runs_and_reports(monkeypatch, capsys) -> None:
    from benchmarks import step_overhead
    monkeypatch.setattr("sys.argv", ["step_overhead", "--reps", "3"])
    step_overhead.main()
    out = capsys.readouterr().out
    assert "train step MLP 64-128-128-10 batch 32" in out and "tracejit jit" in out


def test_compile_scaling_runs_a_tiny_model_in_fresh_processes() -> None:
    from benchmarks import compile_scaling
    c2 = compile_scaling.run(("mlp-1",), (harness.TJ_JIT,))
    by_impl = {r["impl"]: r for r in c2["rows"]}
    tj_row = by_impl[harness.TJ_JIT]
    assert tj_row["status"] == "ok", tj_row
    cold, warm = tj_row["cold"], tj_row["warm"]
    assert cold["nodes"] > 0 and cold["kernels"] > 0 and cold["new_batch_compiled"] == 0
    assert {"trace", "optimize", "fusion", "schedule", "codegen"} <= set(cold["phases"])
    assert cold["kernel_sources"]["compiled"] > 0 and warm["kernel_sources"]["compiled"] == 0
    assert abs(cold["loss"] - warm["loss"]) < 1e-6
    text = compile_scaling.render(c2)
    assert text.startswith("C2 ") and "mlp-1" in text and harness.TJ_JIT in text


def test_compile_scaling_render_reports_missing_frameworks() -> None:
    from benchmarks import compile_scaling
    c2 = {"rows": [{"model": "mlp-2", "impl": "jax.jit", "status": "skipped: jax not installed",
                    "cold": {"status": "skipped: jax not installed"}}]}
    assert "jax.jit: skipped: jax not installed" in compile_scaling.render(c2)
    assert selected("C2") == ["C2"] and "C2" not in selected(None)


def test_eager_dispatch_rows_check_values_and_render() -> None:
    from benchmarks import eager_dispatch
    rows = eager_dispatch.run(reps=3, sizes=(5,))
    assert [r["op"] for r in rows] == ["x + x", "exp(x)", "x.sum()", "x * x (grad)"]
    assert all({"numpy", "tracejit"} <= set(r["us"]) for r in rows)
    text = eager_dispatch.render(rows)
    assert "tj/numpy" in text and text.count("\n") == 1 + len(rows)
    with pytest.raises(AssertionError, match="differs from NumPy"):
        eager_dispatch.check("x + x", {"numpy": lambda: np.ones(3), "tracejit": lambda: np.zeros(3)})


def test_embedding_grad_benchmark_checks_its_gradients() -> None:
    from benchmarks import embedding_grad as e1
    table, ids, upstream, want = e1.problem(30, 8, (2, 5))
    runs = {}
    for name, (run, grad) in e1.impls(table, ids, upstream).items():
        run()
        np.testing.assert_allclose(grad(), want, rtol=1e-5, atol=1e-5, err_msg=name)
        runs[name] = run
    times = e1.seconds_per_call(runs, repeats=2, min_sample_s=0.0)
    assert set(times) == set(runs) and all(t > 0 for t in times.values())
