"""tracejit.nn.functional vs float64 NumPy/PyTorch references, eager and jit."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj
from tracejit.nn import functional as F

erf = np.vectorize(math.erf, otypes=[np.float64])


def _lse(a, axis=-1, keepdims=False):
    m = a.max(axis=axis, keepdims=True)
    out = np.log(np.exp(a - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis)


def _log_softmax(a, axis=-1):
    return a - _lse(a, axis, keepdims=True)


ACTIVATIONS = [
    ("relu", F.relu, lambda a: np.maximum(a, 0)),
    ("gelu", F.gelu, lambda a: 0.5 * a * (1 + erf(a / np.sqrt(2)))),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"),
     lambda a: 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3)))),
    ("sigmoid", F.sigmoid, lambda a: 1 / (1 + np.exp(-a))),
    ("silu", F.silu, lambda a: a / (1 + np.exp(-a))),
    ("softmax", F.softmax, lambda a: np.exp(_log_softmax(a))),
    ("softmax0", lambda x: F.softmax(x, axis=0), lambda a: np.exp(_log_softmax(a, 0))),
    ("log_softmax", lambda x: F.log_softmax(x, dim=1), lambda a: _log_softmax(a, 1)),
    ("logsumexp", F.logsumexp, _lse),
    ("logsumexp_keep", lambda x: F.logsumexp(x, 0, keepdims=True), lambda a: _lse(a, 0, True)),
]


@pytest.mark.parametrize("name,fn,ref", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activations(name, fn, ref, rng, jit_backend):
    a = (rng.standard_normal((4, 7)) * 4).astype(np.float32)
    expected = ref(a.astype(np.float64))
    assert_close(fn(tj.asarray(a)), expected, rtol=1e-5, atol=1e-6)
    assert_close(jitted(fn, jit_backend)(tj.asarray(a)), expected, rtol=1e-5, atol=1e-6)
    assert_close(fn(tj.asarray(a.T)), ref(a.T.astype(np.float64)), rtol=1e-5, atol=1e-6)   # a view


def test_softmax_is_stable_for_large_and_infinite_inputs():
    a = np.array([[1000.0, 1000.0, -1000.0], [-np.inf, 0.0, 0.0]], np.float32)
    assert_close(F.softmax(tj.asarray(a)), [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    assert_close(F.logsumexp(tj.asarray(a)), [1000 + np.log(2), np.log(2)], rtol=1e-6)
    assert_close(F.sigmoid(tj.asarray([-1000.0, 1000.0])), [0.0, 1.0])


def test_layer_norm_and_linear(rng, jit_backend):
    a = rng.standard_normal((3, 4, 6))
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    mu, var = a.mean(-1, keepdims=True), a.var(-1, keepdims=True)
    expected = (a - mu) / np.sqrt(var + 1e-5) * w + b
    args = (tj.asarray(a), 6, tj.asarray(w), tj.asarray(b))
    assert_close(F.layer_norm(*args), expected)
    assert_close(jitted(F.layer_norm, jit_backend, static_argnums=1)(*args), expected)
    mu2 = a.mean((-2, -1), keepdims=True)
    expected2 = (a - mu2) / np.sqrt(a.var((-2, -1), keepdims=True) + 1e-3)
    assert_close(F.layer_norm(tj.asarray(a), (4, 6), eps=1e-3), expected2)
    with pytest.raises(ValueError, match="normalized_shape"):
        F.layer_norm(tj.asarray(a), (5,))

    W, bias = rng.standard_normal((5, 6)), rng.standard_normal(5)
    assert_close(F.linear(tj.asarray(a), tj.asarray(W), tj.asarray(bias)), a @ W.T + bias)
    assert_close(jitted(F.linear, jit_backend)(tj.asarray(a), tj.asarray(W)), a @ W.T)
    with pytest.raises(ValueError, match="in_features"):
        F.linear(tj.asarray(a), tj.asarray(W.T))


def _ce_ref(logits, target, reduction, smoothing, class_axis=1):
    logp = _log_softmax(logits, class_axis)
    n = logits.shape[class_axis]
    if target.dtype.kind in "iu":
        probs = np.moveaxis(np.eye(n)[target], -1, class_axis)
    else:
        probs = target
    probs = probs * (1 - smoothing) + smoothing / n
    loss = -(probs * logp).sum(class_axis)
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy(reduction, smoothing, rng, jit_backend):
    logits = rng.standard_normal((8, 5))
    labels = rng.integers(0, 5, 8)
    probs = np.exp(_log_softmax(rng.standard_normal((8, 5))))
    f = jitted(F.cross_entropy, jit_backend, static_argnames=("reduction", "label_smoothing"))
    for target in (labels, probs):
        expected = _ce_ref(logits, target, reduction, smoothing)
        kw = {"reduction": reduction, "label_smoothing": smoothing}
        assert_close(F.cross_entropy(tj.asarray(logits), tj.asarray(target), **kw), expected)
        assert_close(f(tj.asarray(logits), tj.asarray(target), **kw), expected)
    spatial = rng.standard_normal((2, 5, 3))                     # (N, C, d): class dim 1
    lab = rng.integers(0, 5, (2, 3))
    assert_close(F.cross_entropy(tj.asarray(spatial), tj.asarray(lab), reduction=reduction),
                 _ce_ref(spatial, lab, reduction, 0.0))


def test_cross_entropy_matches_torch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    want = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels), label_smoothing=0.2)
    assert_close(F.cross_entropy(tj.asarray(logits), tj.asarray(labels), label_smoothing=0.2), want.numpy())
    x = torch.tensor(logits)
    assert_close(F.gelu(tj.asarray(logits)), torch.nn.functional.gelu(x).numpy(), rtol=1e-7, atol=1e-7)
    assert_close(F.gelu(tj.asarray(logits), approximate="tanh"),
                 torch.nn.functional.gelu(x, approximate="tanh").numpy(), rtol=1e-7, atol=1e-7)


def test_cross_entropy_errors_and_graph():
    with pytest.raises(IndexError, match=r"labels must be in \[0, 3\)"):
        F.cross_entropy(tj.zeros((2, 3)), tj.asarray([0, 3]))
    with pytest.raises(ValueError, match="reduction must be"):
        F.cross_entropy(tj.zeros((2, 3)), tj.asarray([0, 1]), reduction="avg")
    # the label's log-probability is picked with an iota compare, not a gather: it fuses
    lowered = tj.jit(F.cross_entropy, backend="interpret").lower(tj.spec((4, 3)), tj.spec((4,), tj.int64))
    text = str(lowered.graph)
    assert "iota" in text and "take" not in text


def test_mse_loss(rng, jit_backend):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    assert_close(F.mse_loss(tj.asarray(a), tj.asarray(b)), ((a - b) ** 2).mean())
    f = jitted(lambda x, y: F.mse_loss(x, y, reduction="sum"), jit_backend)
    assert_close(f(tj.asarray(a), tj.asarray(b)), ((a - b) ** 2).sum())
    assert_close(F.mse_loss(tj.asarray(a), tj.asarray(b), reduction="none"), (a - b) ** 2)


@pytest.mark.parametrize("backend", ["interpret", "llvm"])
def test_embedding_padding_row_gets_no_gradient(backend):
    torch = pytest.importorskip("torch")
    w0 = np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32)
    idx = np.array([[0, 2, 2], [4, 2, 1]])
    w = tj.tensor(w0, requires_grad=True)
    out = jitted(lambda i: F.embedding(i, w, padding_idx=-3), backend)(tj.asarray(idx))
    (out * out).sum().backward()
    wt = torch.tensor(w0, requires_grad=True)
    ot = torch.nn.functional.embedding(torch.tensor(idx), wt, padding_idx=2)
    (ot * ot).sum().backward()
    np.testing.assert_allclose(out.numpy(), ot.detach().numpy())
    np.testing.assert_allclose(w.grad.numpy(), wt.grad.numpy())
    assert not w.grad.numpy()[2].any()
    m = tj.nn.Embedding(5, 3, padding_idx=2)
    m(tj.asarray(idx)).sum().backward()
    assert not m.weight.grad.numpy()[2].any() and m.weight.grad.numpy()[0].all()


@pytest.mark.parametrize("backend", ["interpret", "llvm"])
def test_one_hot_as_pytorch_and_out_of_range_labels_raise(backend):
    f = jitted(lambda labels: F.one_hot(labels, 4), backend)
    got = f(tj.asarray(np.array([0, 3, 1])))
    assert got.dtype == tj.int64
    np.testing.assert_array_equal(got.numpy(), np.eye(4, dtype=np.int64)[[0, 3, 1]])
    for bad in ([0, 4], [-1, 2]):
        with pytest.raises(IndexError, match=r"one_hot: labels must be in \[0, 4\)"):
            F.one_hot(tj.asarray(np.array(bad)), 4)
        with pytest.raises(IndexError, match=r"one_hot: labels must be in \[0, 4\)"):
            f(tj.asarray(np.array(bad)))
    np.testing.assert_array_equal(F.one_hot(tj.asarray(np.array([2, 0]))).numpy(), [[0, 0, 1], [1, 0, 0]])
