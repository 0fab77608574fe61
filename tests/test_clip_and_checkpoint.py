"""Gradient clipping against torch.nn.utils, eagerly and in a jitted step; gradient checkpointing."""
from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
nn, F = tj.nn, tj.nn.functional


def _grads_pair(rng, scale: float = 1.0):
    shapes = [(4, 3), (3,), (2, 5)]
    arrays = [rng.standard_normal(s) * scale for s in shapes]
    jp = [tj.asarray(np.zeros(s), requires_grad=True) for s in shapes]
    tp = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    for j, t, a in zip(jp, tp, arrays):
        j.grad = tj.asarray(a.copy())
        t.grad = torch.tensor(a.copy())
    return jp, tp


@pytest.mark.parametrize("norm_type", [2.0, 1, math.inf, 3.0, 0.5])
@pytest.mark.parametrize("max_norm", [0.3, 1e3])           # clipped, and left alone
def test_clip_grad_norm_matches_torch(norm_type, max_norm, rng) -> None:
    jp, tp = _grads_pair(rng)
    jt = nn.utils.clip_grad_norm_(jp, max_norm, norm_type=norm_type)
    tt = torch.nn.utils.clip_grad_norm_(tp, max_norm, norm_type=norm_type)
    np.testing.assert_allclose(float(jt), float(tt), rtol=1e-12)
    for j, t in zip(jp, tp):
        np.testing.assert_allclose(j.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    if max_norm < 1:
        again = nn.utils.clip_grad_norm_(jp, 1e9, norm_type=norm_type)
        assert float(again) == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_value_and_edge_cases(rng) -> None:
    jp, tp = _grads_pair(rng)
    assert nn.utils.clip_grad_value_(jp, 0.4) is None
    torch.nn.utils.clip_grad_value_(tp, 0.4)
    for j, t in zip(jp, tp):
        np.testing.assert_array_equal(j.grad.numpy(), t.grad.numpy())
    # one tensor, a parameter without a gradient, no gradients at all
    p = tj.asarray([3.0, 4.0], requires_grad=True)
    p.grad = tj.asarray([3.0, 4.0])
    q = tj.asarray([1.0], requires_grad=True)
    assert float(nn.utils.clip_grad_norm_([p, q], 1.0)) == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), np.array([0.6, 0.8]) * 5 / (5 + 1e-6), rtol=1e-6)
    assert float(nn.utils.clip_grad_norm_(q, 1.0)) == 0.0
    p.grad = tj.asarray([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)


def _mlp():
    tj.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 4))


def test_clip_grad_norm_inside_jitted_step_matches_eager(rng) -> None:
    xs = [rng.standard_normal((8, 6)).astype(np.float32) * 3 for _ in range(4)]
    ys = [rng.integers(0, 4, 8) for _ in range(4)]
    runs = {}
    for mode in ("eager", "jit"):
        model = _mlp()
        opt = tj.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)

        def step(x, y, model=model, opt=opt):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            nn.utils.clip_grad_value_(model.parameters(), 0.05)
            opt.step()
            return loss, norm

        fn = tj.jit(step) if mode == "jit" else step
        out = [tuple(float(v) for v in fn(tj.asarray(xs[i % 4]), tj.asarray(ys[i % 4]))) for i in range(8)]
        runs[mode] = out, [p.numpy().copy() for p in model.parameters()]
        if mode == "jit":
            assert fn.cache_info()["traces"] == 1
    (oe, pe), (oj, pj) = runs["eager"], runs["jit"]
    np.testing.assert_allclose(oj, oe, rtol=1e-5, atol=1e-6)
    assert max(n for _, n in oe) > 0.25        # the norm clipping was active
    for a, b in zip(pj, pe):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def strict(x, y, model=model):
        F.cross_entropy(model(x), y).backward()
        return nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)

    with pytest.raises(tj.UnsupportedUnderJitError, match="error_if_nonfinite"):
        tj.jit(strict)(tj.asarray(xs[0]), tj.asarray(ys[0]))


# ---------------------------------------------------------------------------- checkpointing

class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin1, self.lin2, self.drop = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), nn.Dropout(0.3)
        self.calls, self.kept = 0, []

    def forward(self, x):
        self.calls += 1
        h = F.gelu(self.lin1(x))
        self.kept.append(weakref.ref(h))
        return x + self.lin2(self.drop(h))


def _model(d: int = 5):
    tj.manual_seed(7)
    return nn.Sequential(*[_Block(d) for _ in range(3)]).to(tj.float64)


def test_checkpoint_equals_plain_backward_and_frees_activations(rng) -> None:
    x0 = rng.standard_normal((4, 5))
    results = {}
    for mode in ("plain", "checkpoint"):
        model = _model()
        x = tj.asarray(x0, requires_grad=True)
        tj.manual_seed(11)
        h = x
        for blk in model:
            h = tj.checkpoint(blk, h) if mode == "checkpoint" else blk(h)
        gc.collect()
        alive = sum(r() is not None for blk in model for r in blk.kept)
        loss = (h * h).sum()
        loss.backward()
        results[mode] = (h.numpy(), x.grad.numpy(), [p.grad.numpy() for p in model.parameters()],
                         [blk.calls for blk in model], alive)
    (hp, gp, pp, cp, ap), (hc, gc_, pc, cc, ac) = results["plain"], results["checkpoint"]
    np.testing.assert_array_equal(hc, hp)
    np.testing.assert_allclose(gc_, gp, rtol=1e-12, atol=1e-14)
    for a, b in zip(pc, pp):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)   # same dropout masks when recomputed
    assert cp == [1, 1, 1] and cc == [2, 2, 2]                       # each block ran again in backward
    assert ap == 3 and ac == 0       # the tape kept every block's activation; checkpointing kept none


def test_checkpoint_tuple_outputs_kwargs_and_no_grad(rng) -> None:
    w = tj.asarray(rng.standard_normal((3, 3)), requires_grad=True)
    x = tj.asarray(rng.standard_normal((2, 3)))        # no input requires grad: w's gradient still flows

    def two(x, scale=1.0):
        y = tj.tanh(x @ w)
        return y * scale, tj.argmax(y, axis=1)

    a, idx = tj.checkpoint(two, x, scale=2.0)
    assert idx.dtype == tj.int64 and not idx.requires_grad
    a.sum().backward()
    expected = x.numpy().T @ (2 * (1 - np.tanh(x.numpy() @ w.numpy()) ** 2))
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-12)
    with tj.no_grad():
        assert not tj.checkpoint(two, x)[0].requires_grad
    with pytest.raises(TypeError, match="must return a tensor"):
        tj.checkpoint(lambda t: {"y": t @ w}, x)


def test_checkpoint_under_jit_equals_eager(rng) -> None:
    x0 = rng.standard_normal((4, 5))
    grads = {}
    for mode in ("eager", "jit"):
        model = _model()

        def loss_fn(x, model=model):
            h = x
            for blk in model:
                h = tj.checkpoint(blk, h)
            return (h * h).sum()

        def step(x, loss_fn=loss_fn, model=model):
            for p in model.parameters():
                p.grad = None
            loss = loss_fn(x)
            loss.backward()
            return loss

        fn = tj.jit(step) if mode == "jit" else step
        tj.manual_seed(5)
        losses = [float(fn(tj.asarray(x0))) for _ in range(2)]
        grads[mode] = losses, [p.grad.numpy().copy() for p in model.parameters()]
    (le, ge), (lj, gj) = grads["eager"], grads["jit"]
    np.testing.assert_allclose(lj, le, rtol=1e-12)
    assert le[0] != le[1]                       # dropout drew new masks on the second call
    for a, b in zip(gj, ge):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_checkpoint_with_tj_grad_higher_order_closures_and_nesting(rng) -> None:
    w = tj.asarray(rng.standard_normal((3, 3)), requires_grad=True)
    a = tj.asarray(rng.standard_normal((3, 3)), requires_grad=True)
    x = tj.asarray(rng.standard_normal((2, 3)))

    def plain(w, x):
        return tj.sum(tj.tanh(x @ w) ** 2)

    def ck(w, x):
        return tj.sum(tj.checkpoint(lambda h: tj.tanh(h @ w) ** 2, x))

    np.testing.assert_allclose(tj.grad(ck)(w, x).numpy(), tj.grad(plain)(w, x).numpy(), rtol=1e-12)
    hess_ck = tj.grad(lambda w, x: tj.sum(tj.grad(ck)(w, x) ** 2))(w, x)          # create_graph through it
    hess = tj.grad(lambda w, x: tj.sum(tj.grad(plain)(w, x) ** 2))(w, x)
    np.testing.assert_allclose(hess_ck.numpy(), hess.numpy(), rtol=1e-10)

    def run(checkpointed: bool):
        a.grad = w.grad = None
        m = a * 2                               # a non-leaf from outside, closed over
        def inner(h):
            return tj.sin(h @ m)
        def block(h):
            h = tj.tanh(h @ w)
            return tj.checkpoint(inner, h) if checkpointed else inner(h)
        tj.sum(tj.checkpoint(block, x) if checkpointed else block(x)).backward()
        return a.grad.numpy(), w.grad.numpy()

    for got, want in zip(run(True), run(False)):
        np.testing.assert_allclose(got, want, rtol=1e-12)
