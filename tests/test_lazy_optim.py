"""Lazy mode: an optimizer's step recorded once and spliced in afterwards means what it does eagerly.

Each test trains the same small model eagerly and lazily, changing something between steps
(a learning rate, a hyperparameter, which parameters have gradients, a parameter itself), and
compares every parameter after every step.  A replayed step that missed the change would
update with a stale value, skip or repeat an update, or write the wrong tensor.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit import lazy_mode

nn, F = tj.nn, tj.nn.functional


def _init() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((5, 8)).astype(np.float32) * 0.3,
              rng.standard_normal(8).astype(np.float32) * 0.1,
              rng.standard_normal((8, 3)).astype(np.float32) * 0.3]
    xs = [rng.standard_normal((6, 5)).astype(np.float32) for _ in range(6)]
    ys = [rng.integers(0, 3, 6) for _ in range(6)]
    return params, xs, ys


Change = Callable[[int, Any, list], None]


def _train(lazy: bool, make_opt: Callable[[list], Any], change: Change | None = None,
           steps: int = 6) -> tuple[list[float], list[list[np.ndarray]]]:
    """Losses and the parameters after every step; ``change(i, opt, params)`` runs first in step i."""
    init, xs, ys = _init()
    params = [tj.asarray(a.copy(), requires_grad=True) for a in init]
    opt = make_opt(params)
    losses, after = [], []
    for i in range(steps):
        with tj.lazy() if lazy else _Nothing():
            if change is not None:
                change(i, opt, params)
            opt.zero_grad()
            w1, b1, w2 = opt.param_groups[0]["params"][:3]
            h = F.relu(tj.asarray(xs[i]) @ w1 + b1)
            loss = F.cross_entropy(h @ w2, tj.asarray(ys[i]))
            loss.backward()
            opt.step()
            losses.append(loss.item())
        after.append([p.numpy().copy() for g in opt.param_groups for p in g["params"]])
    return losses, after


class _Nothing:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


def _same_training(make_opt: Callable[[list], Any], change: Change | None = None, steps: int = 6) -> None:
    want_losses, want = _train(False, make_opt, change, steps)
    got_losses, got = _train(True, make_opt, change, steps)
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5)
    for i, (g_step, w_step) in enumerate(zip(got, want)):
        for g, w in zip(g_step, w_step):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7, err_msg=f"after step {i}")


OPTIMIZERS = {
    "AdamW": lambda ps: tj.optim.AdamW(ps, lr=0.01),
    "Adam-amsgrad": lambda ps: tj.optim.Adam(ps, lr=0.01, amsgrad=True, weight_decay=0.01),
    "SGD-momentum": lambda ps: tj.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01),
    "SGD-nesterov": lambda ps: tj.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "RMSprop": lambda ps: tj.optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    "Adagrad": lambda ps: tj.optim.Adagrad(ps, lr=0.05, lr_decay=0.01),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_replayed_steps_match_eager(name: str) -> None:
    _same_training(OPTIMIZERS[name])


def test_the_update_is_run_once_and_then_replayed_compiling_once() -> None:
    calls = []
    opt_class = type("CountingAdamW", (tj.optim.AdamW,), {})
    update = tj.optim.AdamW._update

    def counting(self: Any, *args: Any) -> None:
        calls.append(1)
        update(self, *args)
    opt_class._update = counting
    # a subclass with its own update is recorded op by op: every step calls it
    _train(True, lambda ps: opt_class(ps, lr=0.01), steps=3)
    assert len(calls) == 3 * 3
    calls.clear()
    import tracejit.optim.lazy_step as lazy_step
    original = lazy_step._replayable_updates
    lazy_step._REPLAYABLE = original() | {counting}
    try:
        before = dict(lazy_mode.stats)
        _train(True, lambda ps: opt_class(ps, lr=0.01), steps=4)
        compiles = lazy_mode.stats["compiles"] - before["compiles"]
    finally:
        lazy_step._REPLAYABLE = None
    assert len(calls) == 3, "the update's Python ran again after it was recorded"
    assert compiles <= 1


def test_a_learning_rate_schedule_is_honoured_without_new_programs() -> None:
    def schedule(i: int, opt: Any, params: list) -> None:
        if i == 0:
            opt.scheduler = tj.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
        else:
            opt.scheduler.step()
    _same_training(OPTIMIZERS["AdamW"], schedule)
    before = dict(lazy_mode.stats)
    _train(True, OPTIMIZERS["AdamW"], schedule)
    assert lazy_mode.stats["compiles"] - before["compiles"] <= 1


@pytest.mark.parametrize("key,value", [("lr", 0.1), ("lr", 1), ("eps", 1e-2), ("weight_decay", 0.5),
                                       ("betas", (0.5, 0.9)), ("maximize", True)])
def test_a_changed_hyperparameter_is_honoured(key: str, value: Any) -> None:
    def change(i: int, opt: Any, params: list) -> None:
        if i == 3:
            opt.param_groups[0][key] = value
    _same_training(OPTIMIZERS["AdamW"], change)


@pytest.mark.parametrize("momentum", [0.0, 0.7])
def test_momentum_turned_on_or_off(momentum: float) -> None:
    def change(i: int, opt: Any, params: list) -> None:
        if i == 2:
            opt.param_groups[0]["momentum"] = momentum
    start = 0.7 if momentum == 0 else 0.0
    _same_training(lambda ps: tj.optim.SGD(ps, lr=0.05, momentum=start), change)


def test_a_parameter_without_gradient_on_the_third_step_is_not_updated() -> None:
    def change(i: int, opt: Any, params: list) -> None:
        params[1].requires_grad = i != 2        # b1 gets no gradient on step 2 only
    _same_training(OPTIMIZERS["AdamW"], change)


def test_a_replaced_parameter_and_a_new_param_group() -> None:
    def change(i: int, opt: Any, params: list) -> None:
        if i == 2:
            group = opt.param_groups[0]
            group["params"][0] = tj.asarray(group["params"][0].numpy() * 0.5, requires_grad=True)
        if i == 4:
            extra = tj.asarray(np.ones(3, np.float32), requires_grad=True)
            opt.add_param_group({"params": [extra], "lr": 0.2})
            extra.grad = tj.asarray(np.full(3, 0.25, np.float32))
    _same_training(OPTIMIZERS["AdamW"], change)


def test_a_replaced_param_group_is_read_afresh() -> None:
    def change(i: int, opt: Any, params: list) -> None:
        if i == 0:
            opt.param_groups[0] = dict(opt.param_groups[0])     # a plain dict: its reads are not seen
        if i in (2, 4):
            opt.param_groups[0]["lr"] *= 3
        if i == 3:
            opt.param_groups[0] = tj.optim.ParamGroup({**opt.param_groups[0], "lr": 0.2, "eps": 1e-3})
    _same_training(OPTIMIZERS["AdamW"], change)


def test_parameters_sharing_memory_are_updated_in_order() -> None:
    """Two parameters that are views of one buffer: the second update reads the first's write."""
    def run(lazy: bool) -> np.ndarray:
        flat = np.linspace(-1, 1, 12).astype(np.float32)
        whole = tj.asarray(flat, requires_grad=True)
        half = tj.asarray(flat[:6], requires_grad=True)     # NumPy memory shared with ``whole``
        opt = tj.optim.SGD([whole, half], lr=0.1, momentum=0.5)
        for _ in range(4):
            with tj.lazy() if lazy else _Nothing():
                opt.zero_grad()
                ((whole * whole).sum() + (half * 3).sum()).backward()
                opt.step()
        return flat.copy()
    np.testing.assert_allclose(run(True), run(False), rtol=1e-6)


def test_a_parameter_changed_earlier_in_the_same_block() -> None:
    def change(i: int, opt: Any, params: list) -> None:
        with tj.no_grad():
            params[0] *= 0.9        # pending when the update reads it
    _same_training(OPTIMIZERS["AdamW"], change)


def test_state_loaded_between_steps() -> None:
    def change(i: int, opt: Any, params: list) -> None:
        if i == 3:
            state = opt.state_dict()
            for s in state["state"].values():
                s["exp_avg"] = s["exp_avg"].numpy() * 0
            opt.load_state_dict(state)
    _same_training(OPTIMIZERS["AdamW"], change)
