"""Lazy mode: a backward pass over a tape seen before, spliced in, gives eager's gradients.

Each test runs the same steps eagerly and lazily and compares every ``.grad`` after every step,
with something that a replayed walk must not miss: the tape changing on a later step, a tensor
read twice, gradients accumulating over steps, a freed tape, hooks.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit import lazy_backward

F = tj.nn.functional


class _Nothing:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


def _leaves() -> list[Any]:
    rng = np.random.default_rng(0)
    return [tj.asarray(rng.standard_normal((4, 5)).astype(np.float32), requires_grad=True),
            tj.asarray(rng.standard_normal(5).astype(np.float32), requires_grad=True),
            tj.asarray(rng.standard_normal((5, 3)).astype(np.float32), requires_grad=True)]


Step = Callable[[int, list, Any], Any]


def _grads(lazy: bool, loss_of: Step, steps: int = 5, zero: bool = True) -> list[list[np.ndarray | None]]:
    """The leaves' gradients after each step; ``loss_of(i, leaves, x)`` is step i's loss."""
    leaves = _leaves()
    x = tj.asarray(np.linspace(-1, 1, 8 * 4).reshape(8, 4).astype(np.float32))
    out = []
    for i in range(steps):
        with tj.lazy() if lazy else _Nothing():
            if zero:
                for t in leaves:
                    t.grad = None
            loss_of(i, leaves, x).backward()
        out.append([None if t.grad is None else t.grad.numpy().copy() for t in leaves])
    return out


def _same_grads(loss_of: Step, **kw: Any) -> None:
    want, got = _grads(False, loss_of, **kw), _grads(True, loss_of, **kw)
    for i, (w_step, g_step) in enumerate(zip(want, got)):
        for w, g in zip(w_step, g_step):
            assert (w is None) == (g is None), f"step {i}"
            if w is not None:
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7, err_msg=f"after step {i}")


def _mlp(i: int, leaves: list, x: Any) -> Any:
    w1, b1, w2 = leaves
    return F.cross_entropy(F.relu(x @ w1 + b1) @ w2, tj.asarray(np.arange(8) % 3))


def test_a_repeated_tape_is_replayed_with_eager_gradients() -> None:
    lazy_backward._recorded.clear()
    _same_grads(_mlp)
    assert [w is not None for w in lazy_backward._recorded.values()] == [True]


def test_the_tape_changes_on_the_third_step() -> None:
    def loss_of(i: int, leaves: list, x: Any) -> Any:
        w1, b1, w2 = leaves
        h = x @ w1 + b1
        h = tj.tanh(h) if i == 2 else F.relu(h)           # another op on step 2 only
        if i >= 3:
            return ((h @ w2) ** 2).mean()                 # another loss from step 3 on
        return F.cross_entropy(h @ w2, tj.asarray(np.arange(8) % 3))
    _same_grads(loss_of)


def test_a_leaf_without_gradient_and_a_tensor_read_twice() -> None:
    def loss_of(i: int, leaves: list, x: Any) -> Any:
        w1, b1, w2 = leaves
        h = x @ w1
        h = h * h if i % 2 else h * (h + 0)             # the same tensor twice, or two tensors
        if i == 3:
            return h.sum()                               # b1 and w2 get no gradient
        return (h + b1).sum() + w2.sum()
    _same_grads(loss_of)


def test_gradients_accumulate_across_steps() -> None:
    _same_grads(_mlp, zero=False)


def test_a_freed_tape_raises_on_a_second_backward() -> None:
    leaves = _leaves()
    x = tj.asarray(np.ones((2, 4), np.float32))
    for _ in range(3):
        with tj.lazy():
            loss = _mlp(0, leaves, tj.asarray(np.ones((8, 4), np.float32)))
            loss.backward()
            with pytest.raises(RuntimeError, match="second time"):
                loss.backward()
    del x


def test_retain_graph_lets_a_second_backward_add_up() -> None:
    def loss_of(i: int, leaves: list, x: Any) -> Any:
        loss = _mlp(i, leaves, x)
        loss.backward(retain_graph=True)
        return loss
    _same_grads(loss_of)


def test_a_post_accumulate_hook_sees_each_gradient() -> None:
    seen: dict[bool, list[np.ndarray]] = {True: [], False: []}
    for lazy in (False, True):
        leaves = _leaves()
        record = seen[lazy]
        leaves[1].register_post_accumulate_grad_hook(lambda t, record=record: record.append(t.grad.numpy()))
        for _ in range(3):
            with tj.lazy() if lazy else _Nothing():
                leaves[1].grad = None
                _mlp(0, leaves, tj.asarray(np.ones((8, 4), np.float32))).backward()
    assert len(seen[True]) == len(seen[False]) == 3
    for g, w in zip(seen[True], seen[False]):
        np.testing.assert_allclose(g, w, rtol=1e-5)


def test_a_retained_non_leaf_gradient() -> None:
    def run(lazy: bool) -> list[np.ndarray]:
        w1, b1, _ = _leaves()
        x = tj.asarray(np.ones((8, 4), np.float32))
        got = []
        for _ in range(3):
            with tj.lazy() if lazy else _Nothing():
                h = x @ w1 + b1
                h.retain_grad()
                (h * h).sum().backward()
            got.append(h.grad.numpy().copy())
        return got
    for g, w in zip(run(True), run(False)):
        np.testing.assert_allclose(g, w, rtol=1e-6)


_SCALE = [1.0]          # read by the custom op's VJP at every backward


def _scaled_vjp(g: Any, out: Any, x: Any) -> tuple:
    return (g * _SCALE[0],)


_scaled = tj.custom_op("t_lazy_backward_scaled", lambda x: x.copy(), vjp=_scaled_vjp)


def test_a_custom_ops_vjp_runs_at_every_backward() -> None:
    def loss_of(i: int, leaves: list, x: Any) -> Any:
        _SCALE[0] = float(i + 1)          # the VJP's Python state changes every step
        return (_scaled(x @ leaves[0]) ** 2).sum()
    _same_grads(loss_of)


def test_autocast_around_some_steps_only() -> None:
    """The reduced matmul under ``tj.autocast`` on steps 1 and 3: forward and gradients as eagerly."""
    def loss_of(i: int, leaves: list, x: Any) -> Any:
        w1, b1, w2 = leaves
        with tj.autocast(dtype=tj.bfloat16) if i in (1, 3) else _Nothing():
            h = F.relu(x @ w1 + b1)
            out = h @ w2
        return (out.astype(tj.float32) ** 2).mean()
    _same_grads(loss_of)
