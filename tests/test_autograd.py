"""Reverse mode: every differentiable primitive against central finite differences (float64)
and against torch.autograd (float32), plus the tape's behaviour (accumulation, retain_graph,
no_grad, detach, retain_grad, in-place ops)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import tracejit as tj
from tracejit import prims as P


def _numeric_grad(fn: Callable[..., float], arrays: list[np.ndarray], i: int, eps: float) -> np.ndarray:
    x = arrays[i]
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        hi = fn(*arrays)
        x[idx] = old - eps
        lo = fn(*arrays)
        x[idx] = old
        g[idx] = (hi - lo) / (2 * eps)
    return g


def check_grads(op: Callable[..., tj.Tensor], arrays: list[np.ndarray], wrt: tuple[int, ...] | None = None,
                rtol: float = 1e-5, atol: float = 1e-7, eps: float = 1e-6) -> None:
    """Gradient of sum(op(*xs) * w) from the tape vs central differences, in float64."""
    wrt = tuple(range(len(arrays))) if wrt is None else wrt
    arrays = [np.array(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a)
              for a in arrays]
    out_shape = op(*[tj.asarray(a) for a in arrays]).shape
    w = np.random.default_rng(0).uniform(0.5, 1.5, out_shape)

    def scalar(*xs: np.ndarray) -> float:
        with tj.no_grad():
            return float((op(*[tj.asarray(x.copy()) for x in xs]).numpy() * w).sum())

    leaves = [tj.asarray(a.copy(), requires_grad=i in wrt) for i, a in enumerate(arrays)]
    out = op(*leaves)
    out.backward(tj.asarray(w))
    for i in wrt:
        expect = _numeric_grad(scalar, arrays, i, eps)
        assert leaves[i].grad is not None, f"input {i} got no gradient"
        assert leaves[i].grad.shape == leaves[i].shape
        np.testing.assert_allclose(leaves[i].grad.numpy(), expect, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i}")


R = np.random.default_rng(1)


def _u(shape: tuple[int, ...], lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    return R.uniform(lo, hi, shape)


UNARY_DOMAINS = {
    "exp": (-2, 2), "exp2": (-2, 2), "expm1": (-2, 2), "log": (0.2, 3), "log2": (0.2, 3),
    "log10": (0.2, 3), "log1p": (-0.5, 3), "sqrt": (0.2, 3), "rsqrt": (0.2, 3), "sin": (-3, 3),
    "cos": (-3, 3), "tan": (-1.2, 1.2), "asin": (-0.9, 0.9), "acos": (-0.9, 0.9), "atan": (-3, 3),
    "sinh": (-2, 2), "cosh": (-2, 2), "tanh": (-2, 2), "asinh": (-3, 3), "acosh": (1.2, 3),
    "atanh": (-0.9, 0.9), "reciprocal": (0.3, 3), "erf": (-2, 2), "neg": (-2, 2), "abs": (0.1, 2),
    "square": (-2, 2), "floor": (0.1, 0.9), "ceil": (0.1, 0.9), "round": (0.1, 0.4), "trunc": (0.1, 0.9),
    "sign": (0.1, 2),
}


@pytest.mark.parametrize("name", sorted(UNARY_DOMAINS))
def test_unary_vjp_matches_finite_differences(name: str) -> None:
    lo, hi = UNARY_DOMAINS[name]
    check_grads(lambda x: P.bind(name, x), [_u((2, 3), lo, hi)])


BINARY = {
    "add": ((-2, 2), (-2, 2)), "sub": ((-2, 2), (-2, 2)), "mul": ((-2, 2), (-2, 2)),
    "div": ((-2, 2), (0.5, 2)), "pow": ((0.5, 2), (-1.5, 1.5)), "max": ((-2, 2), (-2, 2)),
    "min": ((-2, 2), (-2, 2)), "atan2": ((-2, 2), (0.5, 2)), "hypot": ((0.5, 2), (0.5, 2)),
    "logaddexp": ((-2, 2), (-2, 2)),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_vjp_matches_finite_differences(name: str) -> None:
    (a0, a1), (b0, b1) = BINARY[name]
    check_grads(lambda a, b: P.bind(name, a, b), [_u((3, 2), a0, a1), _u((3, 2), b0, b1)])


def test_copysign_and_mod_first_operand() -> None:
    check_grads(lambda a, b: P.bind("copysign", a, b), [_u((4,), 0.2, 2), _u((4,), -2, 2)], wrt=(0,))
    check_grads(lambda a, b: P.bind("mod", a, b), [_u((4,), 0.1, 0.9), np.full(4, 2.0)], wrt=(0,))


def test_where_and_cast() -> None:
    cond = np.array([[True, False, True], [False, False, True]])
    check_grads(lambda a, b: P.where(tj.asarray(cond), a, b), [_u((2, 3)), _u((2, 3))])
    check_grads(lambda a: P.cast(P.mul(P.cast(a, np.dtype("float32")), P.cast(a, np.dtype("float32"))),
                                 np.dtype("float64")), [_u((3,))], rtol=1e-3, atol=1e-3, eps=1e-2)


@pytest.mark.parametrize("prim", ["reduce_sum", "reduce_prod", "reduce_max", "reduce_min"])
@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (0, 2), (0, 1, 2)])
def test_reduction_vjps(prim: str, axes: tuple[int, ...]) -> None:
    x = _u((2, 3, 4), 0.5, 1.5)   # distinct values: max/min have a unique winner
    check_grads(lambda a: P.bind(prim, a, axes=axes), [x])


def test_movement_vjps() -> None:
    x = _u((2, 3, 4))
    check_grads(lambda a: P.reshape(a, shape=(4, 6)), [x])
    check_grads(lambda a: P.permute(a, perm=(2, 0, 1)), [x])
    check_grads(lambda a: P.expand(a, shape=(2, 3, 4, 5)[:3]), [_u((2, 1, 4))])
    check_grads(lambda a: P.expand(a, shape=(2, 3, 4)), [_u((1, 3, 1))])
    check_grads(lambda a: P.slice(a, start=(0, 1, 0), stop=(2, 3, 4), step=(1, 1, 2)), [x])
    check_grads(lambda a: P.slice(a, start=(1, 2, 3), stop=(-1, -1, 0), step=(-1, -2, -2)), [x])
    check_grads(lambda a: P.pad(a, pads=((1, 0), (0, 2), (1, 1)), value=0.0), [x])
    check_grads(lambda a, b: P.concat(a, b, axis=1), [x, _u((2, 2, 4))])
    check_grads(lambda a, b: P.slice_scatter(a, b, start=(0, 0, 1), stop=(2, 3, 4), step=(1, 2, 2)),
                [x, _u((2, 2, 2))])


def test_matmul_cumsum_take_scatter() -> None:
    check_grads(lambda a, b: P.matmul(a, b), [_u((3, 4)), _u((4, 2))])
    check_grads(lambda a, b: P.matmul(a, b), [_u((2, 3, 4)), _u((2, 4, 2))])
    check_grads(lambda a: P.cumulative_sum(a, axis=1, include_initial=False), [_u((2, 4))])
    check_grads(lambda a: P.cumulative_sum(a, axis=0, include_initial=True), [_u((3, 2))])
    idx = tj.asarray(np.array([2, 0, 2, 1]))
    check_grads(lambda a: P.take(a, idx, axis=1), [_u((2, 3))])
    check_grads(lambda a, s: P.scatter_add(a, idx, s, axis=0), [_u((3, 2)), _u((4, 2))])


# ----------------------------------------------------------------------------- public API level

def test_broadcasting_gradients_sum_back() -> None:
    check_grads(lambda a, b: a * b + a, [_u((3, 1)), _u((4,))])
    check_grads(lambda a, b: tj.where(a > 0, a, b), [_u((2, 3)), _u((1, 3))])
    check_grads(lambda a: a * 2.5 - 1, [_u((2, 2))])


def test_noncontiguous_leaves() -> None:
    base = _u((4, 6))
    check_grads(lambda a: tj.exp(a).sum(axis=0), [base.T])
    check_grads(lambda a: (a * a).sum(), [base[::2, 1::2]])


@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2), (-1, 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_statistical_reductions_any_axes(axis, keepdims: bool) -> None:
    x = _u((2, 3, 4), 0.5, 1.5)
    for fn in (tj.sum, tj.mean, tj.max, tj.var):
        check_grads(lambda a, fn=fn: fn(a, axis=axis, keepdims=keepdims), [x])


def test_indexing_gradients() -> None:
    check_grads(lambda a: a[1, ::2], [_u((3, 4))])
    check_grads(lambda a: a[..., -1], [_u((3, 4))])
    check_grads(lambda a: a[tj.asarray(np.array([0, 2, 2]))], [_u((3, 4))])
    check_grads(lambda a: a[:, None, 1:3].T if False else a[:, None, 1:3], [_u((3, 4))])


def test_composites_from_nn_functional() -> None:
    F = tj.nn.functional
    check_grads(lambda a: F.softmax(a, axis=-1), [_u((2, 5))])
    check_grads(lambda a: F.log_softmax(a, axis=0), [_u((3, 2))])
    check_grads(lambda a: F.gelu(a), [_u((2, 3))], rtol=1e-4)
    check_grads(lambda a, w, b: F.layer_norm(a, 4, w, b), [_u((3, 4)), _u((4,)), _u((4,))], rtol=1e-4)
    y = tj.asarray(np.array([1, 0, 3]))
    check_grads(lambda a: F.cross_entropy(a, y), [_u((3, 4))])


# ----------------------------------------------------------------------------- against torch

TORCH_CASES = [
    ("exp", lambda m, x, y: m.exp(x) * y),
    ("tanh-matmul", lambda m, x, y: m.tanh(x @ y.T)),
    ("log-sqrt", lambda m, x, y: m.log(x * x + 1) + m.sqrt(y * y + 1)),
    ("broadcast-div", lambda m, x, y: x / (y[:1] + 3)),
    ("sum-axis", lambda m, x, y: (x * y).sum(axis=1, keepdims=True) * x),
    ("max", lambda m, x, y: m.maximum(x, y) - m.minimum(x, y) * 2),
    ("sigmoid", lambda m, x, y: 1 / (1 + m.exp(-x)) * y),
    ("slice", lambda m, x, y: x[1:, ::2] * y[:-1, 1::2]),
    ("mean-var", lambda m, x, y: x - x.mean(axis=0) + (y * y).mean()),
]


@pytest.mark.parametrize("name,fn", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_matches_torch_autograd(name: str, fn) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2)]
    w = rng.standard_normal((3, 4)).astype(np.float32)
    tt = [torch.tensor(a, requires_grad=True) for a in xs]
    out_t = fn(torch, *tt)
    out_t.backward(torch.tensor(w[:out_t.shape[0], :out_t.shape[1]]).expand(out_t.shape).contiguous())
    jt = [tj.asarray(a, requires_grad=True) for a in xs]
    out_j = fn(tj, *jt)
    out_j.backward(tj.asarray(np.ascontiguousarray(np.broadcast_to(w[:out_t.shape[0], :out_t.shape[1]],
                                                                   out_t.shape))))
    for a, b in zip(jt, tt):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------- tape behaviour

def test_grad_accumulates_and_second_backward_needs_retain_graph() -> None:
    x = tj.asarray([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_nonscalar_backward_needs_gradient() -> None:
    x = tj.asarray([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="gradient="):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        tj.asarray([1.0]).sum().backward()


def test_no_grad_enable_grad_and_detach() -> None:
    x = tj.asarray([1.0, 2.0], requires_grad=True)
    with tj.no_grad():
        y = x * 2
        with tj.enable_grad():
            z = x * 3
    assert not y.requires_grad and z.requires_grad and z.grad_fn is not None

    @tj.no_grad()
    def f(a):
        return a * a
    assert not f(x).requires_grad
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    assert tj.is_grad_enabled()


def test_retain_grad_and_leaf_flags() -> None:
    x = tj.asarray([1.0, -2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.numpy())
    np.testing.assert_allclose(x.grad.numpy(), 18 * x.numpy())
    assert x.is_leaf and not h.is_leaf


def test_inplace_on_nonleaf_and_leaf_guard() -> None:
    x = tj.asarray([1.0, 2.0], requires_grad=True)
    h = x * 2
    h += x
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])
    with pytest.raises(RuntimeError, match="in-place"):
        x += 1
    with tj.no_grad():
        x -= 1
    np.testing.assert_allclose(x.numpy(), [0.0, 1.0])


def test_integer_tensors_cannot_require_grad_and_stop_gradients() -> None:
    with pytest.raises(RuntimeError, match="floating-point"):
        tj.asarray([1, 2]).requires_grad_()
    x = tj.asarray([1.5, 2.5], requires_grad=True)
    y = (tj.astype(x, tj.int64) * 2).sum()
    assert not y.requires_grad


def test_long_chain_has_no_recursion_limit() -> None:
    x = tj.asarray(1.0, requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 1.0001 ** 3000, rtol=1e-4)
