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
