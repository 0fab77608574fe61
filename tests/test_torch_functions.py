"""The PyTorch functions built from standard ones (torch_functions.py) give torch's results,
eagerly and under jit, with gradients, and name what is wrong with bad arguments."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch", reason="compares with torch, which is not installed")

X = (np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7.5) / 3
M = np.arange(12, dtype=np.float32).reshape(3, 4) - 5
IDX = np.array([[0, 2, 1, 0], [3, 3, 0, 1]], dtype=np.int64)   # gather index along dim 1 of M[:2]
I = np.array([[7, -7, 6], [-6, 5, -5]], dtype=np.int64)

# (description, input, tracejit call, torch call): each call takes its own library's tensor
CASES = [
    ("narrow", X, lambda x: x.narrow(2, 1, 2), lambda t: t.narrow(2, 1, 2)),
    ("narrow negative start", X, lambda x: tj.narrow(x, 1, -2, 2), lambda t: torch.narrow(t, 1, -2, 2)),
    ("split size", X, lambda x: tj.stack(x.split(3, dim=2)[:1]),
     lambda t: torch.stack(t.split(3, dim=2)[:1])),
    ("split last piece", X, lambda x: tj.split(x, 3, dim=2)[1], lambda t: torch.split(t, 3, dim=2)[1]),
    ("split sections", X, lambda x: x.split([1, 3], dim=-1)[1], lambda t: t.split([1, 3], dim=-1)[1]),
    ("chunk", X, lambda x: tj.chunk(x, 2, dim=1)[1], lambda t: torch.chunk(t, 2, dim=1)[1]),
    ("chunk count", X, lambda x: tj.asarray(len(x.chunk(3, 2))), lambda t: torch.tensor(len(t.chunk(3, 2)))),
    ("unbind", X, lambda x: x.unbind(1)[2], lambda t: t.unbind(1)[2]),
    ("index_select", X, lambda x: x.index_select(2, tj.asarray([3, 0, 3])),
     lambda t: t.index_select(2, torch.tensor([3, 0, 3]))),
    ("gather", M, lambda x: tj.gather(x, 1, tj.asarray(IDX)),
     lambda t: torch.gather(t, 1, torch.from_numpy(IDX))),
    ("gather dim 0", M, lambda x: x.gather(0, tj.asarray(IDX[:, :3] % 3)),
     lambda t: t.gather(0, torch.from_numpy(IDX[:, :3] % 3))),
    ("masked_fill", X, lambda x: x.masked_fill(x > 0, -1.0), lambda t: t.masked_fill(t > 0, -1.0)),
    ("masked_fill broadcast", X, lambda x: tj.masked_fill(x, tj.asarray([True, False, True, False]), 2),
     lambda t: torch.masked_fill(t, torch.tensor([True, False, True, False]), 2)),
    ("t", M, lambda x: x.t() + 1, lambda t: t.t() + 1),
    ("view_as", X, lambda x: x.view_as(tj.zeros(6, 4)), lambda t: t.view_as(torch.zeros(6, 4))),
    ("expand_as", M[:1], lambda x: x.expand_as(tj.zeros(3, 4)), lambda t: t.expand_as(torch.zeros(3, 4))),
    ("sort values", X, lambda x: x.sort(1, descending=True).values,
     lambda t: t.sort(1, descending=True).values),
    ("sort indices", M, lambda x: (x % 3).sort(1, stable=True).indices,
     lambda t: (t % 3).sort(dim=1, stable=True).indices),
    ("argsort", M, lambda x: (x % 4).argsort(dim=0), lambda t: (t % 4).argsort(dim=0, stable=True)),
    ("roll", X, lambda x: x.roll(1, 2), lambda t: t.roll(1, 2)),
    ("roll dims", X, lambda x: x.roll((1, -1), (0, 2)), lambda t: t.roll((1, -1), (0, 2))),
    ("repeat_interleave", M, lambda x: x.repeat_interleave(2, dim=0),
     lambda t: t.repeat_interleave(2, dim=0)),
    ("cumprod", M, lambda x: tj.cumprod(x / 4, 1), lambda t: torch.cumprod(t / 4, 1)),
    ("tril method", M, lambda x: x.tril(1), lambda t: t.tril(1)),
    ("triu method", M, lambda x: x.triu(-1), lambda t: t.triu(-1)),
    ("diagonal", X, lambda x: x.diagonal(1, 1, 2), lambda t: t.diagonal(1, 1, 2)),
    ("diagonal dims 0,2", X, lambda x: tj.diagonal(x, 0, 0, 2), lambda t: torch.diagonal(t, 0, 0, 2)),
    ("diag of matrix", M, lambda x: tj.diag(x, 1), lambda t: torch.diag(t, 1)),
    ("diag of vector", M[0], lambda x: tj.diag(x), lambda t: torch.diag(t)),
    ("diag above", M[0], lambda x: x.diag(2), lambda t: t.diag(2)),
    ("diag below", M[0], lambda x: x.diag(-1), lambda t: t.diag(-1)),
    ("trace", M, lambda x: x.trace(), lambda t: t.trace()),
    ("new_zeros", M, lambda x: x.new_zeros(2, 3), lambda t: t.new_zeros(2, 3)),
    ("new_ones", M, lambda x: x.new_ones((2,)), lambda t: t.new_ones((2,))),
    ("new_full", M, lambda x: x.new_full((2, 2), 7), lambda t: t.new_full((2, 2), 7)),
    ("mm", M, lambda x: tj.mm(x, x.t()), lambda t: torch.mm(t, t.t())),
    ("bmm", X, lambda x: x.bmm(x.transpose(1, 2)), lambda t: t.bmm(t.transpose(1, 2))),
    ("addmm", M, lambda x: tj.addmm(x[:, :3], x, x.t(), beta=0.5, alpha=2),
     lambda t: torch.addmm(t[:, :3], t, t.t(), beta=0.5, alpha=2)),
    ("lerp", M, lambda x: tj.lerp(x, x * x, 0.25), lambda t: torch.lerp(t, t * t, 0.25)),
    ("logsumexp", X, lambda x: x.logsumexp(1), lambda t: t.logsumexp(1)),
    ("logsumexp keepdim", X, lambda x: tj.logsumexp(x, 2, True), lambda t: torch.logsumexp(t, 2, True)),
    ("log_softmax", X, lambda x: x.log_softmax(-1), lambda t: t.log_softmax(-1)),
    ("sigmoid", X, lambda x: tj.sigmoid(x), lambda t: torch.sigmoid(t)),
    ("relu", X, lambda x: tj.relu(x), lambda t: torch.relu(t)),
    ("permute", X, lambda x: tj.permute(x, (2, 0, 1)) * 1, lambda t: torch.permute(t, (2, 0, 1)) * 1),
    ("sin method", X, lambda x: x.sin(), lambda t: t.sin()),
    ("floor method", X, lambda x: x.floor(), lambda t: t.floor()),
    ("square method", X, lambda x: x.square(), lambda t: t.square()),
    ("rsqrt method", X, lambda x: (x * x + 1).rsqrt(), lambda t: (t * t + 1).rsqrt()),
    ("eq/ne", X, lambda x: x.round().eq(1) | x.ne(x), lambda t: t.round().eq(1) | t.ne(t)),
    ("lt/ge", X, lambda x: x.lt(0) & x.ge(-1), lambda t: t.lt(0) & t.ge(-1)),
    ("maximum method", X, lambda x: x.maximum(-x), lambda t: t.maximum(-t)),
    ("add alpha", X, lambda x: x.add(x, alpha=2), lambda t: t.add(t, alpha=2)),
    ("sub alpha", X, lambda x: tj.sub(x, 1, alpha=3), lambda t: torch.sub(t, 1, alpha=3)),
    ("mul/neg", X, lambda x: tj.mul(x, 2).neg(), lambda t: torch.mul(t, 2).neg()),
    ("div", X, lambda x: x.div(3), lambda t: t.div(3)),
    ("div floor", X, lambda x: tj.div(x, 0.7, rounding_mode="floor"),
     lambda t: torch.div(t, 0.7, rounding_mode="floor")),
    ("div trunc", X, lambda x: x.div(0.7, rounding_mode="trunc"),
     lambda t: t.div(0.7, rounding_mode="trunc")),
    ("int div trunc", I, lambda x: x.div(tj.asarray([2, -3, 4]), rounding_mode="trunc"),
     lambda t: t.div(torch.tensor([2, -3, 4]), rounding_mode="trunc")),
    ("int div floor", I, lambda x: x.div(-4, rounding_mode="floor"),
     lambda t: t.div(-4, rounding_mode="floor")),
    ("int div", I, lambda x: x.div(4), lambda t: t.div(4)),
    ("masked_fill_", X, lambda x: x.clone().masked_fill_(x < 0, 0.0),
     lambda t: t.clone().masked_fill_(t < 0, 0.0)),
    ("concatenate axis", X, lambda x: tj.concatenate([x, x], axis=1),
     lambda t: torch.concatenate([t, t], axis=1)),
]


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize(("what", "data", "ours", "theirs"), CASES, ids=[c[0] for c in CASES])
def test_matches_torch(what, data, ours, theirs, mode) -> None:
    fn = ours if mode == "eager" else tj.jit(ours)
    got = fn(tj.asarray(data))
    want = theirs(torch.from_numpy(data.copy())).detach().numpy()
    got = got.numpy()
    assert got.shape == want.shape
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


GRADS = [
    ("gather", lambda x: (tj.gather(x, 1, tj.asarray(IDX)) ** 2).sum(),
     lambda t: (torch.gather(t, 1, torch.from_numpy(IDX)) ** 2).sum()),
    ("chunk", lambda x: (x.chunk(2, 1)[0] * x.chunk(2, 1)[1]).sum(),
     lambda t: (t.chunk(2, 1)[0] * t.chunk(2, 1)[1]).sum()),
    ("masked_fill", lambda x: x.masked_fill(x > 0, 0.5).exp().sum(),
     lambda t: t.masked_fill(t > 0, 0.5).exp().sum()),
    ("index_select", lambda x: x.index_select(0, tj.asarray([2, 2, 0])).sum(),
     lambda t: t.index_select(0, torch.tensor([2, 2, 0])).sum()),
    ("diag", lambda x: (tj.diag(x[0], 1) @ tj.diag(x[1], 1)).sum() + x.trace(),
     lambda t: (torch.diag(t[0], 1) @ torch.diag(t[1], 1)).sum() + t.trace()),
    ("lerp/addmm", lambda x: tj.addmm(x[:, :3], x, x.t()).sum() + tj.lerp(x, x * x, 0.3).sum(),
     lambda t: torch.addmm(t[:, :3], t, t.t()).sum() + torch.lerp(t, t * t, 0.3).sum()),
]


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize(("what", "ours", "theirs"), GRADS, ids=[g[0] for g in GRADS])
def test_gradients_match_torch(what, ours, theirs, mode) -> None:
    g = tj.grad(ours)
    g = tj.jit(g) if mode == "jit" else g
    t = torch.from_numpy(M.copy()).requires_grad_()
    theirs(t).backward()
    np.testing.assert_allclose(g(tj.asarray(M)).numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_from_numpy_shares_memory_and_split_views() -> None:
    a = np.zeros(4, dtype=np.float32)
    t = tj.from_numpy(a)
    a[1] = 3
    assert t.numpy()[1] == 3
    with pytest.raises(TypeError, match="numpy.ndarray"):
        tj.from_numpy([1, 2])
    assert tj.is_tensor(t) and not tj.is_tensor(a)
    assert tj.long is tj.int64.type or tj.long == tj.int64


@pytest.mark.parametrize(("call", "match"), [
    (lambda x: x.narrow(0, 2, 5), "do not fit"),
    (lambda x: x.split([1, 1]), "add up"),
    (lambda x: x.split(0), "positive"),
    (lambda x: x.chunk(0), "positive"),
    (lambda x: tj.gather(x, 1, tj.asarray([0, 1])), "dimensions"),
    (lambda x: tj.gather(x, 1, tj.zeros((5, 1), dtype=tj.int64)), "exceeds"),
    (lambda x: tj.gather(x, 1, tj.zeros((1, 1))), "integers"),
    (lambda x: x.masked_fill(x, 0.0), "bool"),
    (lambda x: x.masked_fill(x > 0, tj.zeros(2)), "number or a 0-D"),
    (lambda x: tj.zeros(2, 2, 2).t(), "at most 2"),
    (lambda x: tj.mm(x, tj.zeros(2, 4, 4)), "2-D tensors"),
    (lambda x: tj.bmm(tj.zeros(2, 3, 4), tj.zeros(3, 4, 5)), "batch sizes"),
    (lambda x: tj.diag(tj.zeros(2, 2, 2)), "1-D or 2-D"),
    (lambda x: x.diagonal(0, 1, 1), "must differ"),
    (lambda x: x.div(2, rounding_mode="round"), "rounding_mode"),
    (lambda x: x.narrow(5, 0, 1), "out of range"),
])
def test_bad_arguments_are_named(call, match) -> None:
    with pytest.raises((ValueError, TypeError, IndexError), match=match):
        call(tj.asarray(M))


def test_standard_functions_keep_their_meaning() -> None:
    x = tj.asarray(M)
    np.testing.assert_array_equal(tj.tril(x, k=-1).numpy(), np.tril(M, -1))   # the standard's keyword
    np.testing.assert_array_equal(tj.sort(x, axis=0).numpy(), np.sort(M, axis=0))   # values only
    assert tj.add(x, 1).shape == (3, 4)


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("jit", [False, True])
def test_index_add_matches_torch(dim, jit):
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal((4, 5)).astype(np.float32)
    n = x0.shape[dim]
    idx = np.array([0, n - 1, 0, 2])                 # a repeated index adds twice
    src_shape = list(x0.shape)
    src_shape[dim] = len(idx)
    src = rng.standard_normal(src_shape).astype(np.float32)
    def f(x, i, s):
        return x.index_add(dim, i, s, alpha=0.5)

    got = (tj.jit(f) if jit else f)(tj.asarray(x0), tj.asarray(idx), tj.asarray(src))
    want = torch.tensor(x0).index_add(dim, torch.tensor(idx), torch.tensor(src), alpha=0.5)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    x = tj.asarray(x0.copy())
    assert x.index_add_(dim, tj.asarray(idx), tj.asarray(src)) is x
    want = torch.tensor(x0).index_add_(dim, torch.tensor(idx), torch.tensor(src))
    np.testing.assert_allclose(x.numpy(), want.numpy(), rtol=1e-6)


def test_index_add_refuses_bad_shapes_and_indices():
    x = tj.zeros((3, 2))
    with pytest.raises(ValueError, match="source shape"):
        x.index_add(0, tj.asarray([0, 1]), tj.ones((3, 2)))
    with pytest.raises(IndexError, match="out of range"):
        x.index_add(0, tj.asarray([3]), tj.ones((1, 2)))
    with pytest.raises(IndexError, match="out of range"):
        tj.jit(lambda x: x.index_add(0, tj.asarray([3]), tj.ones((1, 2))))(x)
