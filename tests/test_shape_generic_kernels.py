"""Sizes are run-time numbers: a new batch size re-traces but compiles no new kernel."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

compiler = pytest.importorskip("tracejit.compiler", reason="needs the llvm backend")


def _compiled_during(fn) -> int:
    """Kernels the process had to compile or load from the disk cache while ``fn`` ran (a kernel
    it already holds is a memory hit), so a warm disk cache cannot hide a new kernel."""
    def new() -> int:
        s = compiler.kernel_cache_stats()
        return s["kernels_compiled"] + s["kernels_disk_hits"]
    before = new()
    fn()
    return new() - before


def test_a_mean_over_the_batch_compiles_once(rng):
    f = tj.jit(lambda x: x.mean(axis=0) + x.var(axis=0))
    x64 = rng.standard_normal((64, 5)).astype(np.float32)
    np.testing.assert_allclose(f(tj.asarray(x64)).numpy(), x64.mean(0) + x64.var(0), rtol=1e-5)
    for n in (100, 37, 2, 1):
        x = rng.standard_normal((n, 5)).astype(np.float32)
        assert _compiled_during(lambda x=x: f(tj.asarray(x))) == 0, f"batch {n} compiled new kernels"
        np.testing.assert_allclose(f(tj.asarray(x)).numpy(), x.mean(0) + x.var(0), rtol=1e-5, atol=1e-6)


def test_a_training_step_at_a_new_batch_size_reuses_every_kernel(rng):
    dims = (20, 16, 16, 4)
    params = []
    for a, b in zip(dims[:-1], dims[1:]):
        params += [tj.asarray(rng.uniform(-0.2, 0.2, (a, b)).astype(np.float32), requires_grad=True),
                   tj.asarray(np.zeros(b, np.float32), requires_grad=True)]
    opt = tj.optim.AdamW(params, lr=1e-3)

    def step(x, y):
        opt.zero_grad()
        h = x
        for i in range(0, len(params), 2):
            h = h @ params[i] + params[i + 1]
            if i + 2 < len(params):
                h = F.layer_norm(F.relu(h), h.shape[-1])
        loss = F.cross_entropy(h, y)
        loss.backward()
        opt.step()
        return loss

    jstep = tj.jit(step)

    def batch(n):
        return (tj.asarray(rng.standard_normal((n, dims[0])).astype(np.float32)),
                tj.asarray(rng.integers(0, dims[-1], n)))

    jstep(*batch(96))
    for n in (50, 37, 256, 1):
        xb, yb = batch(n)
        assert _compiled_during(lambda xb=xb, yb=yb: jstep(xb, yb)) == 0, f"batch {n} compiled new kernels"
    assert jstep.cache_info()["traces"] == 5


def test_the_run_time_count_gives_eager_results_for_each_size(rng):
    f = tj.jit(lambda x: F.cross_entropy(x, tj.zeros((x.shape[0],), dtype=tj.int64)))
    for n in (3, 17, 1):
        x = rng.standard_normal((n, 4))
        eager = float(F.cross_entropy(tj.asarray(x), tj.zeros((n,), dtype=tj.int64)))
        assert float(f(tj.asarray(x))) == pytest.approx(eager, rel=1e-12)


def test_functions_differing_in_a_python_number_share_their_kernels(rng):
    # a float met while tracing is loaded by the kernel, not compiled in: 200 scales, one kernel
    x = rng.standard_normal(100).astype(np.float32)
    tj.jit(lambda a: a * 0.25 + 1.5)(tj.asarray(x))

    def run_all():
        for k in range(200):
            scale = 0.1 + k / 7
            got = tj.jit(lambda a, s=scale: a * s + 1.5)(tj.asarray(x)).numpy()
            np.testing.assert_array_equal(got, x * np.float32(scale) + np.float32(1.5))
    assert _compiled_during(run_all) == 0


def test_the_t1_step_at_batch_256_100_37_and_1_compiles_kernels_once(rng):
    """The T1 step (784-512-512-10 MLP, cross-entropy, AdamW): a ragged last batch, of one
    sample included, costs a re-trace only; and each batch size trains as eager code does."""
    def make():
        tj.random.manual_seed(0)
        model = tj.nn.Sequential(tj.nn.Linear(784, 512), tj.nn.ReLU(), tj.nn.Linear(512, 512),
                                 tj.nn.ReLU(), tj.nn.Linear(512, 10))
        opt = tj.optim.AdamW(model.parameters(), lr=1e-3)

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return model, step

    # Each batch's loss is checked against eager code on the same parameters: after a few
    # AdamW steps, two float32 runs differ wherever a gradient is near zero (Adam normalises
    # it to a full step either way), so whole trajectories are not compared here.
    jmodel, jstep = make()
    jstep = tj.jit(jstep)
    for i, n in enumerate((256, 100, 37, 1)):
        x = tj.asarray(rng.standard_normal((n, 784)).astype(np.float32))
        y = tj.asarray(rng.integers(0, 10, n))
        want = float(F.cross_entropy(jmodel(x), y))
        got = []
        new = _compiled_during(lambda x=x, y=y, got=got: got.append(float(jstep(x, y))))
        if i:
            assert new == 0, f"batch {n} compiled {new} new kernels"
        np.testing.assert_allclose(got[0], want, rtol=1e-5)
        want = float(F.cross_entropy(jmodel(x), y))      # after the update
        np.testing.assert_allclose(float(jstep(x, y)), want, rtol=1e-5)
        assert want < got[0], "a step on the same batch lowers its loss"
