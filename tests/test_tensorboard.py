"""tj.utils.tensorboard.SummaryWriter, read back with TensorBoard's own EventAccumulator; and
explain's SVG rendering."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import tracejit as tj

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard package is not installed (pip install 'tracejit[tensorboard]')")
SummaryWriter = tj.utils.tensorboard.SummaryWriter


def _read(path) -> event_accumulator.EventAccumulator:
    ea = event_accumulator.EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0,
                                                                      "tensors": 0})
    ea.Reload()
    return ea


def _model(x, w):
    return tj.nn.functional.softmax(tj.tanh(x @ w + 1.0), axis=-1).sum(axis=0)


def test_scalars_histograms_text_round_trip(tmp_path, rng):
    values = rng.standard_normal(1000)
    with SummaryWriter(tmp_path) as w:
        for step in range(5):
            w.add_scalar("train/loss", tj.asarray(1.0 / (step + 1)), step)
        w.add_scalar("lr", 0.125, global_step=3, walltime=1234.5)
        w.add_histogram("weights", tj.asarray(values), 7, bins=20)
        w.add_text("notes", "lr **0.1**, batch 64", 0)
        w.add_scalars("loss", {"train": 0.5, "val": 0.75}, 2)
    ea = _read(tmp_path)
    loss = ea.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(5))
    np.testing.assert_allclose([e.value for e in loss], [1.0 / (s + 1) for s in range(5)], rtol=1e-7)
    (lr,) = ea.Scalars("lr")
    assert (lr.step, lr.value, lr.wall_time) == (3, 0.125, 1234.5)
    (h,) = ea.Histograms("weights")
    hv = h.histogram_value
    assert h.step == 7 and hv.num == 1000 and len(hv.bucket) == 20 and sum(hv.bucket) == 1000
    assert hv.min == values.min() and hv.max == values.max()
    np.testing.assert_allclose([hv.sum, hv.sum_squares], [values.sum(), (values ** 2).sum()], rtol=1e-12)
    counts, edges = np.histogram(values, bins=20)
    np.testing.assert_array_equal(hv.bucket, counts)
    np.testing.assert_allclose(hv.bucket_limit, edges[1:])
    (text,) = ea.Tensors("notes")
    assert text.tensor_proto.string_val == [b"lr **0.1**, batch 64"]
    for key, v in (("train", 0.5), ("val", 0.75)):             # one run per series, as torch does
        (e,) = _read(tmp_path / f"loss_{key}").Scalars("loss")
        assert (e.step, e.value) == (2, v)


def test_add_graph_groups_fused_kernels(tmp_path):
    f = tj.jit(_model)
    x, w = tj.ones((4, 3)), tj.ones((3, 5))
    with SummaryWriter(tmp_path) as sw:
        sw.add_graph(f, x, w)
    graph = _read(tmp_path).Graph()
    names = [n.name for n in graph.node]
    entry = f.lower(x, w).entry
    plan = entry.executable.plan
    scopes = {n.split("/")[0] for n in names}
    kernels = [s for s in plan.steps if hasattr(s, "kernel")]
    for k, step in enumerate(plan.steps):
        if hasattr(step, "kernel"):
            assert f"kernel{k}_{step.kernel.name}" in scopes
    assert any(s.startswith("step") and s.endswith("_matmul") for s in scopes)     # the GEMM
    assert len(kernels) >= 1 and "inputs" in scopes and "outputs" in scopes
    by_name = {n.name: n for n in graph.node}
    for n in graph.node:                                   # edges name existing nodes
        assert all(i in by_name for i in n.input)
    assert any(n.op == "tanh" for n in graph.node)
    src = next(n for n in graph.node if n.op == "tanh").attr["source"].s.decode()
    assert src.startswith("test_tensorboard.py:")


def test_bad_input_is_a_clear_error(tmp_path):
    w = SummaryWriter(tmp_path)
    with pytest.raises(ValueError, match="expected one number"):
        w.add_scalar("x", tj.ones(3))
    with pytest.raises(TypeError, match="step must be an int"):
        w.add_scalar("x", 1.0, 1.5)
    with pytest.raises(TypeError, match="tag must be a non-empty str"):
        w.add_scalar("", 1.0)
    with pytest.raises(ValueError, match="NaN or infinity"):
        w.add_histogram("h", np.array([1.0, np.nan]))
    with pytest.raises(TypeError, match="non-empty dict"):
        w.add_scalars("s", {})
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.add_scalar("x", 1.0)


def test_train_mlp_logs_to_tensorboard(tmp_path):
    import subprocess
    import sys
    logdir = tmp_path / "runs"
    r = subprocess.run([sys.executable, "examples/train_mlp.py", "--epochs", "1", "--samples", "256",
                        "--batch-size", "64", "--logdir", str(logdir)],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 0, r.stderr
    for mode in ("eager", "jit"):
        ea = _read(logdir / mode)
        for tag in ("train/loss", "train/lr", "train/grad_norm", "train/step_ms"):
            events = ea.Scalars(tag)
            assert [e.step for e in events] == [0, 1, 2, 3], tag
        assert all(e.value == pytest.approx(1e-3) for e in ea.Scalars("train/lr"))
        assert all(np.isfinite(e.value) and e.value > 0 for e in ea.Scalars("train/grad_norm"))


def test_explain_svg(tmp_path, monkeypatch):
    f = tj.jit(_model)
    ex = f.explain(tj.ones((4, 3)), tj.ones((3, 5)))
    if shutil.which("dot") is not None:
        svg = ex.to_svg(str(tmp_path / "g.svg"))
        assert "<svg" in svg and "kernel" in svg
        assert (tmp_path / "g.svg").read_text() == svg
        assert ex._repr_svg_() == svg                            # notebooks draw it
    monkeypatch.setenv("PATH", str(tmp_path))                    # no dot here
    with pytest.raises(RuntimeError, match="install it.*graphviz"):
        ex.to_svg()
    assert ex._repr_svg_() is None and "digraph" in ex.to_dot()


def test_add_graph_of_a_module(tmp_path):
    model = tj.nn.Sequential(tj.nn.Linear(8, 4), tj.nn.ReLU(), tj.nn.Linear(4, 2))
    with SummaryWriter(tmp_path) as w:
        w.add_graph(model, tj.ones((3, 8)))
        w.add_histogram("fc1/weight", model[0].weight, 0)
    ea = _read(tmp_path)
    ops = [n.op for n in ea.Graph().node]
    assert ops.count("matmul") == 2 and "max" in " ".join(ops)
    assert ea.Histograms("fc1/weight")[0].histogram_value.num == 32
