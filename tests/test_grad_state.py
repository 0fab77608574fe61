"""``.grad`` under jit is Python state: a compiled call reads and sets it as the eager code would.

Every case runs the same loop eagerly and jitted and compares parameters and gradients after
each step (the old code captured the gradient tensor seen while tracing, so later calls read
the first step's gradient, or overwrote an existing gradient instead of adding to it).
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import JIT_BACKENDS, jitted

import tracejit as tj
import tracejit.nn as nn

X = np.arange(12.0, dtype=np.float32).reshape(4, 3) / 10


def _model():
    tj.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _run_both(loop, backend):
    """``loop(wrap)`` eagerly and with ``wrap = jitted``: the per-step snapshots must agree."""
    eager = loop(lambda f: f)
    compiled = loop(lambda f: jitted(f, backend))
    assert len(eager) == len(compiled)
    for step, (e, c) in enumerate(zip(eager, compiled)):
        for a, b in zip(e, c):
            if a is None or b is None:
                assert a is None and b is None, f"step {step}: .grad None in one run only"
            else:
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")


def _snapshot(model):
    return [p.numpy().copy() for p in model.parameters()] + \
           [None if p.grad is None else p.grad.numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("backend", JIT_BACKENDS)
@pytest.mark.parametrize("make_opt", [lambda ps: tj.optim.SGD(ps, lr=0.1, momentum=0.9),
                                      lambda ps: tj.optim.Adam(ps, lr=0.01)], ids=["sgd", "adam"])
def test_a_jitted_optimizer_step_reads_each_steps_gradients(backend, make_opt):
    def loop(wrap):
        m = _model()
        opt = make_opt(m.parameters())
        step = wrap(lambda: opt.step())
        out = []
        for k in range(4):
            opt.zero_grad()
            (m(tj.asarray(X * (k + 1))) ** 2).sum().backward()     # eager: a new .grad each step
            step()
            out.append(_snapshot(m))
        return out
    _run_both(loop, backend)


@pytest.mark.parametrize("backend", JIT_BACKENDS)
def test_a_jitted_manual_update_reads_each_steps_gradients(backend):
    def loop(wrap):
        m = _model()

        def update():
            with tj.no_grad():
                for p in m.parameters():
                    p -= 0.1 * p.grad
        update = wrap(update)
        out = []
        for k in range(3):
            m.zero_grad()
            m(tj.asarray(X * (k + 1))).sum().backward()
            update()
            out.append(_snapshot(m))
        return out
    _run_both(loop, backend)


@pytest.mark.parametrize("backend", JIT_BACKENDS)
def test_backward_inside_jit_adds_to_existing_gradients(backend):
    def loop(wrap):
        m = _model()

        def accumulate(x):
            loss = m(x).sum()
            loss.backward()
            return loss
        accumulate = wrap(accumulate)
        out = []
        for k in range(3):                  # gradient accumulation: no zero_grad between
            accumulate(tj.asarray(X * (k + 1)))
            out.append(_snapshot(m))
        m.zero_grad()                        # eagerly, then once more
        accumulate(tj.asarray(X))
        out.append(_snapshot(m))
        return out
    _run_both(loop, backend)


@pytest.mark.parametrize("backend", JIT_BACKENDS)
def test_backward_inside_jit_adds_to_each_arguments_own_gradient(backend):
    def loop(wrap):
        f = wrap(lambda w: (w * w * w).sum().backward())
        w = tj.tensor(np.arange(3.0), requires_grad=True)
        v = tj.tensor(np.ones(3), requires_grad=True)
        v.grad = tj.asarray(np.full(3, 10.0))
        out = []
        for x in (w, w, v, w):
            f(x)
            out.append([w.grad.numpy().copy(), v.grad.numpy().copy()])
        return out
    _run_both(loop, backend)


@pytest.mark.parametrize("backend", JIT_BACKENDS)
@pytest.mark.parametrize("set_to_none", [True, False])
def test_a_full_training_step_traces_once(backend, set_to_none):
    def loop(wrap):
        m = _model()
        opt = tj.optim.AdamW(m.parameters(), lr=0.01)

        def step(x):
            opt.zero_grad(set_to_none=set_to_none)
            loss = (m(x) ** 2).mean()
            loss.backward()
            opt.step()
            return loss
        step = wrap(step)
        out = []
        for k in range(4):
            step(tj.asarray(X * (k + 1)))
            out.append(_snapshot(m))
        loop.step = step
        return out
    _run_both(loop, backend)
    # zero_grad does not read .grad before setting None, so whether it was None is no guard
    assert loop.step.cache_info()["traces"] == (1 if set_to_none else 2)


def test_storing_a_traced_value_in_grad_is_refused():
    w = tj.tensor(np.ones(3), requires_grad=True)

    def f(x):
        w.grad = x * 2
        return x

    with pytest.raises(tj.UnsupportedUnderJitError, match="stored in the .grad"):
        tj.jit(f)(tj.ones(3))
