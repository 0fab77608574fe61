"""PyTorch-style aliases give torch's results (and NumPy's), eagerly and under jit."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="compares with torch, which is not installed")

X = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7.5

# (description, tracejit call, torch call): each takes the tensor of its own library
CASES = [
    ("unsqueeze(0)", lambda x: x.unsqueeze(0), lambda t: t.unsqueeze(0)),
    ("unsqueeze(-1)", lambda x: tj.unsqueeze(x, -1), lambda t: torch.unsqueeze(t, -1)),
    ("transpose(0, 2)", lambda x: x.transpose(0, 2), lambda t: t.transpose(0, 2)),
    ("transpose(-1, 1)", lambda x: tj.transpose(x, -1, 1), lambda t: torch.transpose(t, -1, 1)),
    ("flatten()", lambda x: x.flatten(), lambda t: t.flatten()),
    ("flatten(1)", lambda x: x.flatten(1), lambda t: t.flatten(1)),
    ("flatten(0, 1)", lambda x: tj.flatten(x, 0, 1), lambda t: torch.flatten(t, 0, 1)),
    ("clamp(-2, 3)", lambda x: x.clamp(-2, 3), lambda t: t.clamp(-2, 3)),
    ("clamp(min=0)", lambda x: tj.clamp(x, min=0.0), lambda t: torch.clamp(t, min=0.0)),
    ("clamp(max=1)", lambda x: x.clamp(max=1.0), lambda t: t.clamp(max=1.0)),
    ("cat dim=1", lambda x: tj.cat([x, x * 2], dim=1), lambda t: torch.cat([t, t * 2], dim=1)),
    ("concatenate", lambda x: tj.concatenate([x, x]), lambda t: torch.concatenate([t, t])),
    ("long()", lambda x: x.long(), lambda t: t.long()),
    ("int()", lambda x: x.int(), lambda t: t.int()),
    ("double()", lambda x: x.double(), lambda t: t.double()),
    ("half()", lambda x: x.half(), lambda t: t.half()),
    ("bool()", lambda x: x.bool(), lambda t: t.bool()),
    ("float() of long", lambda x: x.long().float(), lambda t: t.long().float()),
    ("type_as", lambda x: x.type_as(x.long()), lambda t: t.type_as(t.long())),
    ("contiguous()", lambda x: x.transpose(0, 1).contiguous() + 1,
     lambda t: t.transpose(0, 1).contiguous() + 1),
]


def _same(got, want) -> None:
    want = want.detach().numpy()
    got = got.numpy()
    assert got.shape == want.shape
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_array_equal(got, want)


@needs_torch
@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize(("what", "ours", "theirs"), CASES, ids=[c[0] for c in CASES])
def test_alias_matches_torch(what, ours, theirs, mode) -> None:
    fn = ours if mode == "eager" else tj.jit(ours)
    _same(fn(tj.asarray(X)), theirs(torch.from_numpy(X.copy())))


def test_sizes_and_varargs_creation() -> None:
    x = tj.asarray(X)
    assert x.numel() == tj.numel(x) == 24 and x.dim() == 3
    assert tj.zeros(3, 4).shape == (3, 4) and tj.zeros((3, 4)).shape == (3, 4) and tj.zeros(5).shape == (5,)
    assert tj.ones(2, 3, dtype=tj.int32).dtype == tj.int32
    assert tj.empty([2, 2]).shape == (2, 2)
    assert x.cpu().device == "cpu"


def test_random_creation_follows_the_seed() -> None:
    tj.manual_seed(3)
    a = tj.randn(4, 5).numpy()
    b = tj.rand(4, 5).numpy()
    tj.manual_seed(3)
    np.testing.assert_array_equal(a, tj.randn(4, 5).numpy())
    assert a.shape == (4, 5) and b.min() >= 0 and b.max() < 1


@needs_torch
def test_fill_and_zero_are_in_place_through_views() -> None:
    x = tj.asarray(np.ones((3, 4), np.float32))
    x[1].fill_(7.0)
    x[:, 0].zero_()
    t = torch.ones(3, 4)
    t[1].fill_(7.0)
    t[:, 0].zero_()
    np.testing.assert_array_equal(x.numpy(), t.numpy())

    def f(a):
        a.fill_(2.0)
        return a * 3
    y = tj.asarray(np.zeros(4, np.float32))
    np.testing.assert_array_equal(tj.jit(f)(y).numpy(), np.full(4, 6.0, np.float32))
    np.testing.assert_array_equal(y.numpy(), np.full(4, 2.0, np.float32))


@needs_torch
def test_gradients_flow_through_the_aliases() -> None:
    def loss(x):
        return (x.unsqueeze(0).transpose(1, 2).flatten().clamp(-3, 3) ** 2).sum()
    t = torch.from_numpy(X.copy()).requires_grad_()
    loss(t).backward()
    np.testing.assert_allclose(tj.grad(loss)(tj.asarray(X)).numpy(), t.grad.numpy())
    np.testing.assert_allclose(tj.grad(tj.jit(loss))(tj.asarray(X)).numpy(), t.grad.numpy())


def test_array_api_functions_keep_the_standard_meaning() -> None:
    x = tj.asarray(X[:1])
    with pytest.raises(ValueError):
        tj.squeeze(x, axis=1)           # the standard refuses a dimension that is not 1
    assert tj.concat([x, x], axis=0).shape == (2, 3, 4)


REDUCTIONS = [
    ("sum(1)", lambda x: x.sum(1), lambda t: t.sum(1)),
    ("sum(dim=(0, 2))", lambda x: x.sum(dim=(0, 2)), lambda t: t.sum(dim=(0, 2))),
    ("mean(dim=0, keepdim)", lambda x: x.mean(dim=0, keepdim=True), lambda t: t.mean(dim=0, keepdim=True)),
    ("prod(-1)", lambda x: (x / 10).prod(-1), lambda t: (t / 10).prod(-1)),
    ("max()", lambda x: x.max(), lambda t: t.max()),
    ("max(dim=1).values", lambda x: x.max(dim=1).values, lambda t: t.max(dim=1).values),
    ("max(1).indices", lambda x: x.max(1).indices, lambda t: t.max(1).indices),
    ("min(2, keepdim)[0]", lambda x: x.min(2, True)[0], lambda t: t.min(2, True)[0]),
    ("argmax(dim=2)", lambda x: x.argmax(dim=2), lambda t: t.argmax(dim=2)),
    ("argmin(1, keepdim)", lambda x: x.argmin(1, keepdim=True), lambda t: t.argmin(1, keepdim=True)),
    ("any(0)", lambda x: (x > 3).any(0), lambda t: (t > 3).any(0)),
    ("squeeze()", lambda x: x[:1, :, None].squeeze(), lambda t: t[:1, :, None].squeeze()),
    ("squeeze(1) of size 3", lambda x: x.squeeze(1), lambda t: t.squeeze(1)),
    ("cumsum(1)", lambda x: tj.cumsum(x, 1), lambda t: torch.cumsum(t, 1)),
    ("x.cumsum(dim=-1)", lambda x: x.cumsum(dim=-1), lambda t: t.cumsum(dim=-1)),
]


@needs_torch
@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize(("what", "ours", "theirs"), REDUCTIONS, ids=[c[0] for c in REDUCTIONS])
def test_torch_style_reductions(what, ours, theirs, mode) -> None:
    fn = ours if mode == "eager" else tj.jit(ours)
    got, want = fn(tj.asarray(X)).numpy(), theirs(torch.from_numpy(X.copy())).numpy()
    assert got.shape == want.shape and got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_standard_keywords_still_work_on_methods() -> None:
    x = tj.asarray(X)
    assert x.sum(axis=1, keepdims=True).shape == (2, 1, 4)
    assert x.max(axis=0).shape == (3, 4)           # the standard's axis= gives a tensor, not a pair
    with pytest.raises(ValueError):
        x.squeeze(axis=1)                          # the standard's meaning under its own keyword


@needs_torch
def test_isclose_allclose_and_tensor_match_torch() -> None:
    a = np.array([1.0, np.inf, -np.inf, np.nan, 1e-9, 100.0], np.float32)
    b = np.array([1.0 + 1e-6, np.inf, np.inf, np.nan, 0.0, 100.01], np.float32)
    for equal_nan in (False, True):
        want = torch.isclose(torch.from_numpy(a), torch.from_numpy(b), equal_nan=equal_nan).numpy()
        got = tj.isclose(tj.asarray(a), tj.asarray(b), equal_nan=equal_nan).numpy()
        np.testing.assert_array_equal(got, want)
    assert tj.allclose(tj.asarray(a[:2]), tj.asarray(b[:2])) is True
    assert tj.allclose(tj.asarray(a), tj.asarray(b)) is False
    data = np.ones(3, np.float32)
    t = tj.tensor(data, requires_grad=True)
    data[0] = 5.0                                  # a copy, as torch.tensor makes
    assert t.numpy().tolist() == [1.0, 1.0, 1.0] and t.requires_grad
    assert tj.tensor([1, 2]).dtype == tj.int64 and tj.tensor([1.0]).dtype == tj.float32
    assert tj.tensor(2.5, dtype=tj.float64).dtype == tj.float64


@needs_torch
@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_clone_is_a_copy_that_gradients_flow_through(mode) -> None:
    def f(x):
        c = x.clone()
        c[0] = 100.0                      # writes the clone only
        return (c * x).sum(), x.sum()

    g = f if mode == "eager" else tj.jit(f)
    x = tj.asarray(X.reshape(-1)[:5].copy())
    total, plain = g(x)
    t = torch.from_numpy(X.reshape(-1)[:5].copy())
    want_total, want_plain = f(t)
    assert float(total) == float(want_total) and float(plain) == float(want_plain)
    np.testing.assert_array_equal(x.numpy(), t.numpy())
    neg_zero = tj.clone(tj.asarray(np.array([-0.0], np.float32), requires_grad=True))
    assert np.signbit(neg_zero.numpy()[0])

    def loss(x):
        return (x.clone() ** 2).sum()
    tg = torch.from_numpy(X.copy()).requires_grad_()
    loss(tg).backward()
    grad = tj.grad(loss if mode == "eager" else tj.jit(loss))(tj.asarray(X))
    np.testing.assert_allclose(grad.numpy(), tg.grad.numpy())
