"""A jitted function is differentiable: one tape node whose backward is a compiled program."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit.autograd import CompiledNode, OutputOf

F = tj.nn.functional
BACKENDS = ["llvm", "interpret"]


def _t(a, requires_grad=False):
    return tj.asarray(np.asarray(a, np.float32), requires_grad=requires_grad)


def _loss(params, x, y):
    h = tj.tanh(x @ params["w1"] + params["b1"])
    return F.cross_entropy(h @ params["w2"], y)


def _params(rng):
    return {"w1": _t(rng.standard_normal((6, 8))), "b1": _t(rng.standard_normal(8)),
            "w2": _t(rng.standard_normal((8, 3)))}


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_of_jit_matches_eager_grad(backend) -> None:
    rng = np.random.default_rng(0)
    params = _params(rng)
    x = _t(rng.standard_normal((5, 6)))
    y = tj.asarray(np.array([0, 2, 1, 1, 0]))
    want = tj.grad(_loss)(params, x, y)
    got = tj.grad(tj.jit(_loss, backend=backend))(params, x, y)
    for k in params:
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=1e-5, atol=1e-6)
    assert float(tj.grad(tj.jit(lambda v: (v ** 2).sum()))(_t([1.0, 2.0, 3.0]))[2]) == 6.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_through_jitted_module_forward(backend) -> None:
    rng = np.random.default_rng(1)
    model = tj.nn.Sequential(tj.nn.Linear(4, 16), tj.nn.ReLU(), tj.nn.Linear(16, 2))
    x, y = _t(rng.standard_normal((8, 4))), _t(rng.standard_normal((8, 2)))
    F.mse_loss(model(x), y).backward()
    want = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    fm = tj.jit(model, backend=backend)
    out = fm(x)
    assert out.requires_grad and isinstance(out.grad_fn, OutputOf)
    F.mse_loss(out, y).backward()
    for p, w in zip(model.parameters(), want):
        np.testing.assert_allclose(p.grad.numpy(), w, rtol=1e-5, atol=1e-6)
    # a second step through the cached trace accumulates, as eagerly
    F.mse_loss(fm(x), y).backward()
    for p, w in zip(model.parameters(), want):
        np.testing.assert_allclose(p.grad.numpy(), 2 * w, rtol=1e-5, atol=1e-6)
    assert fm.cache_info()["traces"] == 1


def test_training_loop_with_jitted_forward_matches_eager() -> None:
    def run(jitted: bool) -> list[float]:
        tj.manual_seed(0)
        model = tj.nn.Sequential(tj.nn.Linear(3, 8), tj.nn.GELU(), tj.nn.Linear(8, 1))
        opt = tj.optim.Adam(model.parameters(), lr=1e-2)
        fwd = tj.jit(model) if jitted else model
        rng = np.random.default_rng(2)
        x, y = _t(rng.standard_normal((16, 3))), _t(rng.standard_normal((16, 1)))
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = F.mse_loss(fwd(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss))
        return losses
    np.testing.assert_allclose(run(True), run(False), rtol=1e-5)


def test_dropout_backward_uses_the_forward_mask() -> None:
    tj.manual_seed(3)
    x = _t(np.ones((64, 64)), requires_grad=True)
    f = tj.jit(lambda v: F.dropout(v, p=0.5, training=True))
    y = f(x)
    y.sum().backward()
    kept = y.numpy() != 0
    assert 0.3 < kept.mean() < 0.7
    np.testing.assert_array_equal(x.grad.numpy(), np.where(kept, 2.0, 0.0).astype(np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_several_outputs_share_one_backward(backend) -> None:
    def f(a, b):
        return a * b, tj.exp(a) + b, (a - b).sum()
    rng = np.random.default_rng(4)
    av, bv = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))

    def grads(fn):
        a, b = _t(av, True), _t(bv, True)
        p, q, r = fn(a, b)
        (p.sum() * 2 + (q * q).sum() + r).backward()
        return a.grad.numpy(), b.grad.numpy()
    jf = tj.jit(f, backend=backend)
    for got, want in zip(grads(jf), grads(f)):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    a, b = _t(av, True), _t(bv, True)
    p, q, r = jf(a, b)
    assert isinstance(p.grad_fn, OutputOf) and p.grad_fn.parent is q.grad_fn.parent
    assert isinstance(p.grad_fn.parent, CompiledNode)
    q.sum().backward()          # cotangents of p and r are zero
    np.testing.assert_allclose(a.grad.numpy(), np.exp(av), rtol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), np.ones((3, 4)))


def test_backward_is_compiled_once_and_reused() -> None:
    jf = tj.jit(lambda v: tj.tanh(v * 3).sum())
    for _ in range(3):
        x = _t([0.1, 0.2], True)
        jf(x).backward()
        np.testing.assert_allclose(x.grad.numpy(), 3 / np.cosh(3 * np.array([0.1, 0.2])) ** 2, rtol=1e-5)
    (entry,) = jf.entries()
    from tracejit.compiler import CompiledProgram
    assert isinstance(entry._backward, CompiledProgram)
    assert jf.cache_info()["traces"] == 1


def test_no_grad_and_grad_mode_key_the_trace() -> None:
    jf = tj.jit(lambda v: v * 2)
    x = _t([1.0], True)
    with tj.no_grad():
        assert not jf(x).requires_grad
    assert jf(x).requires_grad
    assert jf(_t([1.0])).requires_grad is False
    assert jf.cache_info()["traces"] == 3


def test_identity_and_captured_outputs() -> None:
    w = _t([1.0, 2.0], True)
    f = tj.jit(lambda v: (v, w * v))
    x = _t([3.0, 4.0], True)
    a, b = f(x)
    (a.sum() + b.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 3.0])
    np.testing.assert_allclose(w.grad.numpy(), [3.0, 4.0])


def test_higher_order_through_jit_is_refused_clearly() -> None:
    jf = tj.jit(lambda v: (v ** 3).sum())
    x = _t([2.0], True)
    with pytest.raises(RuntimeError, match=r"create_graph=True\) through the jitted function"):
        jf(x).backward(create_graph=True)


def test_backward_inside_jit_sets_argument_grad() -> None:
    def step(x):
        loss = (x * x).sum()
        loss.backward()
        return loss
    for f in (step, tj.jit(step)):
        x = _t([1.0, 2.0], True)
        f(x)
        np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
        f(x)                    # accumulates
        np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])


def test_same_tensor_twice_updated_in_place() -> None:
    def f(p, q):
        p += 1
        q += 1
        return p + q
    x, y = tj.zeros((2,)), tj.zeros((2,))
    out = tj.jit(f)(x, x)
    want = f(y, y)
    np.testing.assert_array_equal(x.numpy(), y.numpy())
    np.testing.assert_array_equal(out.numpy(), want.numpy())
    a, b = tj.zeros((2,)), tj.zeros((2,))
    tj.jit(f)(a, b)             # distinct tensors: a different trace
    np.testing.assert_array_equal(a.numpy(), [1.0, 1.0])


def test_python_float_argument_keeps_its_value() -> None:
    f = tj.jit(lambda v, s: v + s)
    z64 = tj.zeros((2,), dtype=tj.float64)
    assert f(z64, 0.001).numpy()[0] == 0.001
    assert f(z64, 1e300).numpy()[0] == 1e300
    z32 = tj.zeros((2,), dtype=tj.float32)
    r = f(z32, 0.001)
    assert r.dtype == tj.float32 and r.numpy()[0] == np.float32(0.001)
    assert f(tj.zeros((2,), dtype=tj.float16), 2.5).dtype == tj.float16
    assert f(tj.zeros((2,), dtype=tj.int32), 3).dtype == tj.int32


@pytest.mark.parametrize("jitted", [False, True])
def test_a_result_through_a_graph_the_function_freed(jitted):
    """A step that calls ``backward`` and also returns a statistic of the freed graph (attention
    weights, logits): eagerly the statistic keeps ``requires_grad`` and only a backward through
    it raises; the jitted step must run the same way, not fail while tracing."""
    w = tj.asarray(np.arange(6.0).reshape(2, 3) / 10, requires_grad=True)

    def step(x):
        h = x @ w
        loss = (h * h).sum()
        loss.backward()
        return loss, h.mean()

    f = tj.jit(step) if jitted else step
    loss, stat = f(tj.ones((4, 2)))
    assert stat.requires_grad
    np.testing.assert_allclose(float(stat), (np.ones((4, 2)) @ w.numpy()).mean())
    np.testing.assert_allclose(w.grad.numpy(), 2 * np.ones((4, 2)).T @ (np.ones((4, 2)) @ w.numpy()))
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        stat.backward()
