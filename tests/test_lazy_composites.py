"""Lazy mode: a loss or normalization recorded once per signature and spliced in with its tape
gives what op-by-op recording and eager give: values, gradients, errors, and writes after it.

Each test runs the same steps eagerly, lazily op by op (``lazy_composites.enabled = False``)
and lazily with splicing, and checks that the splices happened where they should.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit import lazy_composites

F = tj.nn.functional


@contextmanager
def _mode(mode: str) -> Iterator[None]:
    if mode == "eager":
        yield
        return
    lazy_composites.enabled = mode == "spliced"
    try:
        with tj.lazy():
            yield
    finally:
        lazy_composites.enabled = True


def _run(mode: str, step: Callable[[int, list[Any]], Any], steps: int = 4) -> list[list[np.ndarray]]:
    """Per step: the step's result and every leaf's gradient, as arrays."""
    rng = np.random.default_rng(0)
    leaves = [tj.asarray(rng.standard_normal((6, 5)).astype(np.float32), requires_grad=True),
              tj.asarray(rng.standard_normal(5).astype(np.float32), requires_grad=True)]
    out = []
    for i in range(steps):
        with _mode(mode):
            for t in leaves:
                t.grad = None
            value = step(i, leaves)
            if value.requires_grad:
                value.backward()
        out.append([value.numpy().copy()] + [np.zeros(0) if t.grad is None else t.grad.numpy().copy()
                                             for t in leaves])
    return out


def _same(step: Callable[[int, list[Any]], Any], steps: int = 4) -> int:
    """Checks eager == lazy op by op == lazy spliced (bit for bit: the same program runs); the
    number of calls spliced."""
    want = _run("eager", step, steps)
    plain = _run("op by op", step, steps)
    before = lazy_composites.stats["spliced"]
    got = _run("spliced", step, steps)
    for i, (w, p, g) in enumerate(zip(want, plain, got)):
        for a, b, c in zip(w, p, g):
            np.testing.assert_array_equal(c, b, err_msg=f"step {i}: spliced vs op by op")
            np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6, err_msg=f"step {i}: vs eager")
    return lazy_composites.stats["spliced"] - before


LABELS = np.array([0, 4, 2, 2, 1, 3])


def test_cross_entropy_is_spliced_with_its_tape() -> None:
    def step(i: int, p: list[Any]) -> Any:
        return F.cross_entropy(p[0] * (i + 1) + p[1], tj.asarray(LABELS))
    assert _same(step) == 4


@pytest.mark.parametrize("kw", [dict(reduction="sum"), dict(reduction="none"), dict(label_smoothing=0.1),
                                dict(ignore_index=2), dict(weight="w")])
def test_cross_entropy_options_each_have_their_recording(kw: dict[str, Any]) -> None:
    def step(i: int, p: list[Any]) -> Any:
        args = dict(kw)
        if args.get("weight") == "w":
            args["weight"] = tj.asarray(np.linspace(0.5, 2.0, 5).astype(np.float32))
        loss = F.cross_entropy(p[0] + p[1], tj.asarray(LABELS), **args)
        return loss.sum() if loss.ndim else loss
    assert _same(step) == 4


def test_a_changed_signature_is_recorded_again() -> None:
    """Shape, requires_grad, a float argument, grad mode: each step's differs from the last."""
    def step(i: int, p: list[Any]) -> Any:
        x = p[0] if i != 1 else p[0][:4]
        if i == 2:
            x = x.detach()
        eps = 1e-5 if i != 3 else 1e-3
        y = F.layer_norm(x, (5,), p[1], None, eps)
        if i == 4:
            with tj.no_grad():
                return F.log_softmax(y, axis=-1).sum()
        return (F.log_softmax(y, axis=-1) * F.softmax(y, axis=0)).sum() + F.gelu(y).mean()
    before = lazy_composites.stats["recorded"]
    assert _same(step, steps=5) == 4 * 4 + 2
    assert lazy_composites.stats["recorded"] - before >= 4


def test_modules_train_through_spliced_linear_and_layer_norm() -> None:
    """nn.Linear (its weight read transposed: a view the tape keeps), nn.LayerNorm with a list
    shape and nn.GELU, trained by SGD: every call after the first is spliced."""
    def run(mode: str) -> list[np.ndarray]:
        tj.manual_seed(0)
        net = tj.nn.Sequential(tj.nn.Linear(5, 4), tj.nn.LayerNorm([4]), tj.nn.GELU(), tj.nn.Linear(4, 3))
        opt = tj.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        x = tj.asarray(np.linspace(-2, 2, 30).reshape(6, 5).astype(np.float32))
        out = []
        for _ in range(4):
            with _mode(mode):
                opt.zero_grad()
                loss = F.cross_entropy(net(x), tj.asarray(LABELS[:6] % 3))
                loss.backward()
                opt.step()
            out.append(loss.numpy().copy())
        return out + [p.detach().numpy().copy() for p in net.parameters()]

    want, plain = run("eager"), run("op by op")
    before = lazy_composites.stats["spliced"]
    got = run("spliced")
    assert lazy_composites.stats["spliced"] - before == 4 * 5
    for w, p, g in zip(want, plain, got):
        np.testing.assert_array_equal(g, p)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_second_order_gradients_through_a_spliced_tape() -> None:
    def grad_norm(mode: str) -> np.ndarray:
        x = tj.asarray(np.linspace(-1, 1, 12).reshape(3, 4).astype(np.float32), requires_grad=True)
        w = tj.asarray(np.ones((3, 4), np.float32), requires_grad=True)
        for _ in range(2):
            with _mode(mode):
                x.grad = w.grad = None
                y = F.log_softmax(x * w, axis=-1)
                (y * y).sum().backward(create_graph=True)
                g = x.grad
                x.grad = None
                (g * g).sum().backward()
            out = w.grad.numpy().copy()
        return out
    np.testing.assert_allclose(grad_norm("spliced"), grad_norm("eager"), rtol=1e-5, atol=1e-6)


def test_a_write_into_the_argument_after_the_call() -> None:
    """The tape keeps the argument itself: a later in-place write shows in the gradient as eagerly."""
    def step(i: int, p: list[Any]) -> Any:
        h = p[0] * 1.0
        loss = F.mse_loss(h, tj.zeros((6, 5)))
        with tj.no_grad():
            h[0] = 3.0
        return loss
    assert _same(step) == 4


def test_label_errors_are_raised_as_op_by_op() -> None:
    bad_shape = tj.asarray(np.array([0, 1]))
    bad_label = tj.asarray(np.array([0, 1, 2, 9, 0, 1]))
    x = tj.asarray(np.zeros((6, 5), np.float32), requires_grad=True)
    for _ in range(2):
        with pytest.raises(ValueError, match="label shape"):
            with tj.lazy():
                F.cross_entropy(x, bad_shape)
        with pytest.raises(IndexError):
            with tj.lazy():
                F.cross_entropy(x, bad_label).numpy()
        with tj.lazy():
            assert np.isfinite(F.cross_entropy(x, tj.asarray(LABELS)).numpy())


def test_a_capture_is_refused_and_a_returned_view_stays_a_view() -> None:
    captured = tj.asarray(np.arange(5, dtype=np.float32))

    @lazy_composites.replayable
    def reads_a_capture(x: Any) -> Any:
        return (x * captured).sum()

    @lazy_composites.replayable
    def returns_a_view(x: Any) -> Any:
        return (x * 2.0)[1:]

    x = tj.asarray(np.ones((3, 5), np.float32), requires_grad=True)
    for _ in range(2):
        before = dict(lazy_composites.stats)
        with tj.lazy():
            a = reads_a_capture(x)
            v = returns_a_view(x)
            v[0, 0] = 7.0                   # through the view into the value it views
            b = returns_a_view(x, ) * 1.0
        assert lazy_composites.stats["spliced"] - before["spliced"] == 2
        assert lazy_composites.stats["refused"] - before["refused"] == 1
        assert float(a.numpy()) == 30.0
        assert v.numpy()[0, 0] == 7.0 and b.numpy()[0, 0] == 2.0
    captured[...] = 1.0
    with tj.lazy():
        assert float(reads_a_capture(x).numpy()) == 15.0


def test_eager_and_jit_do_not_splice() -> None:
    before = lazy_composites.stats["spliced"] + lazy_composites.stats["refused"]
    x = tj.asarray(np.ones((2, 3), np.float32))
    F.softmax(x)
    tj.jit(lambda a: F.softmax(a))(x)
    assert lazy_composites.stats["spliced"] + lazy_composites.stats["refused"] == before


def test_a_write_through_a_returned_view_reaches_what_it_views() -> None:
    @lazy_composites.replayable
    def value_and_view(x: Any) -> Any:
        y = x * 2.0
        return y, y[1:]

    x = tj.asarray(np.ones((3, 5), np.float32))
    for _ in range(3):
        before = lazy_composites.stats["spliced"]
        with tj.lazy():
            y, v = value_and_view(x)
            v[0, 0] = 7.0
        assert lazy_composites.stats["spliced"] == before + 1
        assert y.numpy()[1, 0] == 7.0 and y.numpy()[0, 0] == 2.0


@pytest.mark.parametrize("transposed", [False, True])
def test_a_returned_view_of_an_argument_follows_its_memory_layout(transposed: bool) -> None:
    """A reshape of a contiguous argument is a view of it, of a transposed one a copy (NumPy's
    rule): a later write into the argument shows in the result exactly as eagerly."""
    @lazy_composites.replayable
    def flat(x: Any) -> Any:
        return tj.reshape(x, (-1,))

    def run(mode: str) -> np.ndarray:
        x = tj.asarray(np.arange(12, dtype=np.float32).reshape(4, 3)).T if transposed \
            else tj.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
        with _mode(mode):
            y = flat(x)
            x[0, 0] = 100.0
        return y.numpy().copy()

    before = lazy_composites.stats["spliced"]
    want = run("eager")
    assert (want[0] == 100.0) != transposed
    for _ in range(2):
        np.testing.assert_array_equal(run("spliced"), want)
    assert lazy_composites.stats["spliced"] - before == 2
