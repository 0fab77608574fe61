"""Functional autodiff (grad, value_and_grad, vjp) eagerly, nested, and traced under jit."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tracejit as tj
from runtime import program as rp

F = tj.nn.functional


def _loss(params, x, y):
    h = tj.tanh(x @ params["w1"] + params["b1"])
    out = h @ params["w2"]
    return F.mse_loss(out, y)


def _params(rng):
    return {"w1": tj.asarray(rng.standard_normal((4, 8)).astype(np.float32)),
            "b1": tj.asarray(np.zeros(8, np.float32)),
            "w2": tj.asarray(rng.standard_normal((8, 2)).astype(np.float32))}


def test_grad_of_pytree_matches_backward() -> None:
    rng = np.random.default_rng(0)
    params = _params(rng)
    x = tj.asarray(rng.standard_normal((5, 4)).astype(np.float32))
    y = tj.asarray(rng.standard_normal((5, 2)).astype(np.float32))
    g = tj.grad(_loss)(params, x, y)
    assert set(g) == set(params) and all(not p.requires_grad for p in params.values())
    leaves = {k: tj.asarray(v.numpy().copy(), requires_grad=True) for k, v in params.items()}
    _loss(leaves, x, y).backward()
    for k in params:
        np.testing.assert_allclose(g[k].numpy(), leaves[k].grad.numpy(), rtol=1e-6, atol=1e-7)
    assert g["w1"].grad_fn is None   # top-level gradients carry no tape


def test_value_and_grad_argnums_and_aux() -> None:
    def f(a, b):
        return (a * b).sum(), {"prod": a * b}
    a, b = tj.asarray([1.0, 2.0]), tj.asarray([3.0, 4.0])
    (val, aux), (ga, gb) = tj.value_and_grad(f, argnums=(0, 1), has_aux=True)(a, b)
    assert float(val) == 11.0 and not val.requires_grad
    np.testing.assert_allclose(aux["prod"].numpy(), [3.0, 8.0])
    np.testing.assert_allclose(ga.numpy(), [3.0, 4.0])
    np.testing.assert_allclose(gb.numpy(), [1.0, 2.0])
    g, aux = tj.grad(f, argnums=1, has_aux=True)(a, b)
    np.testing.assert_allclose(g.numpy(), [1.0, 2.0])


def test_grad_rejects_nonscalar_and_handles_unused_inputs() -> None:
    with pytest.raises(TypeError, match="one element"):
        tj.grad(lambda x: x * 2)(tj.asarray([1.0, 2.0]))
    g = tj.grad(lambda x, y: (y * 2).sum(), argnums=(0, 1))(tj.asarray([1.0]), tj.asarray([1.0]))
    np.testing.assert_allclose(g[0].numpy(), [0.0])
    np.testing.assert_allclose(g[1].numpy(), [2.0])
    np.testing.assert_allclose(tj.grad(lambda x: x * x)(3.0).numpy(), 6.0)


def test_vjp() -> None:
    x = tj.asarray([[1.0, 2.0], [3.0, 4.0]])
    out, fn = tj.vjp(lambda a: tj.exp(a) * 2, x)
    (gx,) = fn(tj.ones_like(out))
    np.testing.assert_allclose(gx.numpy(), 2 * np.exp(x.numpy()), rtol=1e-6)
    (gx2,) = fn(tj.full_like(out, 2.0))      # callable again
    np.testing.assert_allclose(gx2.numpy(), 4 * np.exp(x.numpy()), rtol=1e-6)
    outs, fn = tj.vjp(lambda a, b: (a * b, a + b), x, x)
    ga, gb = fn((tj.ones_like(x), tj.ones_like(x)))
    np.testing.assert_allclose(ga.numpy(), x.numpy() + 1)


@pytest.mark.parametrize("fn,d2", [
    (lambda x: tj.sin(x), lambda x: -np.sin(x)),
    (lambda x: tj.exp(x * 2), lambda x: 4 * np.exp(2 * x)),
    (lambda x: tj.tanh(x), lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    (lambda x: x * x * x, lambda x: 6 * x),
    (lambda x: tj.log(x) / x, lambda x: (2 * np.log(x) - 3) / x ** 3),
    (lambda x: tj.sqrt(x), lambda x: -0.25 * x ** -1.5),
])
def test_second_derivatives(fn, d2) -> None:
    x = np.array([0.3, 0.7, 1.5])
    g2 = tj.grad(lambda t: tj.grad(lambda u: fn(u).sum())(t).sum())(tj.asarray(x))
    np.testing.assert_allclose(g2.numpy(), d2(x), rtol=1e-6)


def test_backward_create_graph() -> None:
    x = tj.asarray([0.5, 1.0], requires_grad=True)
    y = (x ** 3).sum()
    y.backward(create_graph=True)
    gx, x.grad = x.grad, None
    np.testing.assert_allclose(gx.numpy(), 3 * x.numpy() ** 2)
    gx.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.numpy())


# ----------------------------------------------------------------------------- under jit

def test_jit_of_grad_matches_eager(jit_backend: str) -> None:
    rng = np.random.default_rng(1)
    params = _params(rng)
    x = tj.asarray(rng.standard_normal((5, 4)).astype(np.float32))
    y = tj.asarray(rng.standard_normal((5, 2)).astype(np.float32))
    eager = tj.value_and_grad(_loss)(params, x, y)
    jitted = tj.jit(tj.value_and_grad(_loss), backend=jit_backend)
    for _ in range(2):   # traced once, then cached
        val, g = jitted(params, x, y)
        np.testing.assert_allclose(val.numpy(), eager[0].numpy(), rtol=1e-5)
        for k in params:
            np.testing.assert_allclose(g[k].numpy(), eager[1][k].numpy(), rtol=1e-5, atol=1e-6)
    assert jitted.cache_info()["traces"] == 1


def test_jit_grad_of_grad(jit_backend: str) -> None:
    f = tj.jit(tj.grad(lambda t: tj.grad(lambda u: tj.sin(u).sum())(t).sum()), backend=jit_backend)
    x = np.array([0.1, 1.0, 2.0], np.float32)
    np.testing.assert_allclose(f(tj.asarray(x)).numpy(), -np.sin(x), rtol=1e-5)


def test_backward_inside_jit_writes_grads_back(jit_backend: str) -> None:
    rng = np.random.default_rng(2)
    w = tj.asarray(rng.standard_normal((3, 2)).astype(np.float32), requires_grad=True)

    def step(x):
        w.grad = None
        loss = tj.tanh(x @ w).sum()
        loss.backward()
        return loss

    f = tj.jit(step, backend=jit_backend)
    for _ in range(3):
        x = tj.asarray(rng.standard_normal((4, 3)).astype(np.float32))
        loss = f(x)
        ref = tj.asarray(w.numpy().copy(), requires_grad=True)
        ref_loss = tj.tanh(x @ ref).sum()
        ref_loss.backward()
        np.testing.assert_allclose(loss.numpy(), ref_loss.numpy(), rtol=1e-5)
        assert not w.grad.is_tracer
        np.testing.assert_allclose(w.grad.numpy(), ref.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_jit_does_not_mark_user_tensors(jit_backend: str) -> None:
    x = tj.asarray([1.0, 2.0])
    tj.jit(tj.grad(lambda a: (a * a).sum()), backend=jit_backend)(x)
    tj.grad(lambda a: (a * a).sum())(x)
    assert not x.requires_grad and x.grad is None


def test_sum_of_products_is_one_matmul_over_the_joined_inner_dim(rng):
    """``sum_i a_i @ b_i`` (each product read only by the sum, inner dims short next to the
    results) compiles to one matmul; a term that is not a product is added to it; transposed
    operands are joined as transposes."""
    xs = [tj.asarray(rng.standard_normal(s).astype(np.float32))
          for s in [(16, 3), (3, 20), (4, 16), (4, 20), (16, 2), (2, 20), (16, 20)]]

    def f(a1, b1, a2, b2, a3, b3, c):
        return a1 @ b1 + c + tj.matrix_transpose(a2) @ b2 + a3 @ b3
    jf = tj.jit(f)
    kinds = jf.explain(*xs).kernel_kinds()
    assert kinds["matmul"] == 1, kinds
    a1, b1, a2, b2, a3, b3, c = (np.asarray(x, np.float64) for x in xs)
    np.testing.assert_allclose(np.asarray(jf(*xs)), a1 @ b1 + c + a2.T @ b2 + a3 @ b3, rtol=1e-5, atol=1e-5)


def test_lstm_weight_gradients_are_one_matmul_each():
    """An LSTM's backward under jit: one matmul per time step for the hidden state's gradient,
    and each weight's gradient as one product over the whole sequence; equal to eager."""
    seq = 5
    m = tj.nn.LSTM(8, 16)
    x = tj.asarray(np.random.default_rng(0).standard_normal((seq, 3, 8)).astype(np.float32))

    def grads(x):
        for p in m.parameters():
            p.grad = None
        out, _ = m(x)
        (out * out).mean().backward()
        return m.weight_hh_l0.grad, m.weight_ih_l0.grad
    step = tj.jit(grads)
    kinds = step.explain(x).kernel_kinds()
    # forward: the input projection and one hidden product per step; backward: the hidden
    # state's gradient per step but the first, then weight_ih and weight_hh in one product each
    assert kinds["matmul"] == 1 + seq + (seq - 1) + 2, kinds
    eager = [g.numpy() for g in grads(x)]
    for got, want in zip(step(x), eager):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_lstm_weight_gradient_reads_the_sequences_in_place():
    """``weight_hh``'s gradient, ``sum_t g_t.T @ h_{t-1}``, leaves out the zero initial state's
    term and reads the output sequence and the gate gradients' concatenation (made for
    ``weight_ih``'s product) where they are: no other copy of either; equal to eager."""
    seq, batch, hidden = 6, 3, 16
    m = tj.nn.LSTM(8, hidden)
    x = tj.asarray(np.random.default_rng(1).standard_normal((seq, batch, 8)).astype(np.float32))

    def grads(x):
        for p in m.parameters():
            p.grad = None
        out, _ = m(x)
        (out * out).mean().backward()
        return m.weight_hh_l0.grad, m.weight_ih_l0.grad
    step = tj.jit(grads)
    program = step.lower(x).entry.executable.program
    products = [s.shapes[0] for s in program.steps if isinstance(s, rp.Extern) and s.name == "matmul"]
    assert (4 * hidden, (seq - 1) * batch) in products, products
    copies = [s.kernel.name for s in program.steps if isinstance(s, rp.Launch) and not s.kernel.n_reduce
              and math.prod(s.shape) == seq * batch * 4 * hidden]
    # one kernel writes seq x batch x 4 hidden gate gradients (the concatenation), none more
    assert len(copies) == 1, copies
    eager = [g.numpy() for g in grads(x)]
    for got, want in zip(step(x), eager):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
