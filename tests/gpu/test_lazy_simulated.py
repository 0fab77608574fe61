"""Lazy mode on a (simulated) CUDA device: the pending graph compiles to PTX and runs there,
with the same results as eager GPU ops."""
from __future__ import annotations

import numpy as np
import pytest
from simulated_cuda import installed

import tracejit as tj
from tracejit import eager_device, lazy_mode


@pytest.fixture
def gpu():
    eager_device.cache_clear()
    with installed() as dev:
        yield dev
    eager_device.cache_clear()


def _program(t: tj.Tensor) -> tuple[tj.Tensor, ...]:
    v = t[1:3]
    v *= 10                      # (an eager GPU view is a copy: t keeps its values)
    u = tj.exp(t * 0.3) + 2.0
    t += 1
    return u.sum(), t * 1, v, tj.arange(6, dtype=tj.float32, device="cuda") * t


def test_lazy_ops_run_as_one_program_on_the_device(gpu):
    a = np.arange(6, dtype=np.float32)
    te, tl = tj.asarray(a).to("cuda"), tj.asarray(a).to("cuda")
    want = _program(te)
    before = dict(lazy_mode.stats)
    launches = gpu.launches
    with tj.lazy():
        got = _program(tl)
        assert all(g.is_tracer for g in got) and gpu.launches == launches   # nothing ran yet
    assert lazy_mode.stats["flushes"] == before["flushes"] + 1
    for g, w in zip(got, want):
        assert g.device == "cuda:0"
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(tl.numpy(), te.numpy())


def test_mixing_devices_raises_at_the_op(gpu):
    t = tj.asarray(np.ones(4, np.float32)).to("cuda")
    h = tj.asarray(np.ones(4, np.float32))
    with tj.lazy():
        with pytest.raises(ValueError, match=r"different devices \(cuda:0 and cpu\)"):
            t + h
        r = t * 2.5 + 1.0                 # Python numbers are fine, as eagerly
    np.testing.assert_array_equal(r.numpy(), np.full(4, 3.5))


def test_training_step_on_the_device_matches_eager(gpu):
    from benchmarks import training
    params, x, y = training.make_problem(dims=(48, 32, 32, 10), batch=16)
    eager = training.make_trainer("tracejit eager", params, x, y, device="cuda")
    lazy = training.make_trainer("tracejit lazy", params, x, y, device="cuda")
    counts = []
    for _ in range(3):
        want, got = eager.loss_value(eager.step()), lazy.loss_value(lazy.step())
        np.testing.assert_allclose(got, want, rtol=1e-6)
        counts.append(lazy_mode.stats["compiles"])
    assert counts[2] == counts[1]          # the repeating step compiled once
    assert all(p.device == "cuda:0" for p in lazy.p)
    for a, b in zip(lazy.params(), eager.params()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
