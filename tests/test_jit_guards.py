"""A cached trace is reused only while the Python state it read still holds.

Each test changes something a traced function read besides its arguments (a module's mode or
attributes, an optimizer's hyperparameters, a global or closure variable, a captured tensor's
metadata) and checks that the jitted function then gives what the same code gives eagerly.
"""
from __future__ import annotations

import logging
import random
import warnings

import numpy as np
import pytest
from conftest import assert_close

import tracejit as tj
import tracejit.nn as nn


def _model(seed: int = 0) -> nn.Module:
    tj.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


def test_eval_after_first_call_turns_dropout_off():
    model = _model()
    x = tj.ones((16, 4))
    fm = tj.jit(model)
    fm(x)                                   # traced in training mode: dropout active
    model.eval()
    assert_close(fm(x), model(x))           # eager in eval mode is deterministic
    assert fm.cache_info()["traces"] == 2
    model.train()
    fm(x)
    assert fm.cache_info()["traces"] == 2   # the training-mode trace is still valid: reused
    model.eval()
    assert_close(fm(x), model(x))
    assert fm.cache_info()["traces"] == 2


def test_module_attribute_change_retraces():
    model = _model()
    model.eval()
    x = tj.asarray(np.random.default_rng(0).standard_normal((5, 4)), dtype=tj.float32)
    fm = tj.jit(lambda t: model(t))
    assert_close(fm(x), model(x))
    setattr(model, "0", nn.Linear(4, 8))    # a new submodule: new parameters
    assert_close(fm(x), model(x))
    model[2].p = 0.0                        # a plain attribute read in forward
    model.train()
    assert_close(fm(x), model(x))           # p = 0: dropout is the identity even in training


def test_moving_parameters_to_another_dtype_retraces():
    model = nn.Linear(3, 2)
    x32 = tj.ones((2, 3))
    fm = tj.jit(lambda m, t: m(t))
    fm(model, x32)
    model.to(tj.float64)
    out = fm(model, tj.ones((2, 3), dtype=tj.float64))
    assert out.dtype == tj.float64
    assert_close(out, model(tj.ones((2, 3), dtype=tj.float64)))


def _train(opt_cls, lrs, jit: bool, **opt_kw):
    tj.manual_seed(1)
    model = nn.Linear(3, 2)
    opt = opt_cls(model.parameters(), lr=lrs[0], **opt_kw)
    x = tj.asarray(np.linspace(-1, 1, 12).reshape(4, 3), dtype=tj.float32)

    def step(t):
        opt.zero_grad()
        loss = (model(t) ** 2).sum()
        loss.backward()
        opt.step()
        return loss

    run = tj.jit(step) if jit else step
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        run(x)
    return model, run


@pytest.mark.parametrize("opt_cls", [tj.optim.SGD, tj.optim.Adam, tj.optim.AdamW])
def test_learning_rate_schedule_is_a_runtime_input(opt_cls):
    lrs = [0.1, 0.05, 0.0, 0.2, 0.01]
    eager, _ = _train(opt_cls, lrs, jit=False)
    compiled, run = _train(opt_cls, lrs, jit=True)
    assert_close(compiled.weight, eager.weight, rtol=1e-5, atol=1e-6)
    assert_close(compiled.bias, eager.bias, rtol=1e-5, atol=1e-6)
    assert run.cache_info()["traces"] == 1          # lr changed every step, never re-traced


def test_zero_learning_rate_after_tracing_freezes_weights():
    model = nn.Linear(2, 1)
    opt = tj.optim.SGD(model.parameters(), lr=0.1)

    @tj.jit
    def step(x):
        opt.zero_grad()
        loss = (model(x) ** 2).sum()
        loss.backward()
        opt.step()
        return loss

    x = tj.ones((3, 2))
    step(x)
    w = model.weight.numpy().copy()
    opt.param_groups[0]["lr"] = 0.0
    step(x)
    np.testing.assert_array_equal(model.weight.numpy(), w)


def test_other_hyperparameters_are_guards(caplog):
    model_e, _ = _train(tj.optim.SGD, [0.1], jit=False, momentum=0.9)
    tj.manual_seed(1)
    model = nn.Linear(3, 2)
    opt = tj.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)

    def step(t):
        opt.zero_grad()
        (model(t) ** 2).sum().backward()
        opt.step()

    run = tj.jit(step)
    x = tj.asarray(np.linspace(-1, 1, 12).reshape(4, 3), dtype=tj.float32)
    opt.param_groups[0]["momentum"] = 0.9   # before the first call: the trace sees 0.9
    with caplog.at_level(logging.INFO, logger="tracejit.recompiles"):
        run(x)
        assert_close(model.weight, model_e.weight, rtol=1e-6)
        opt.param_groups[0]["momentum"] = 0.0
        run(x)
    assert run.cache_info()["traces"] == 2
    assert any("'momentum'" in r.getMessage() and "0.9 -> 0.0" in r.getMessage() for r in caplog.records)


W = tj.full((4, 4), 2.0)
SCALE = 3.0


def _uses_global(x):
    return (x @ W).sum() * SCALE


def _calls_helper(x):
    return _uses_global(x) + 1


def test_rebinding_a_global_tensor_retraces(caplog):
    global W, SCALE
    old_w, old_scale = W, SCALE
    f = tj.jit(_calls_helper)            # the global is read by a function it calls
    x = tj.ones((2, 4))
    try:
        assert float(f(x)) == float(_calls_helper(x))
        W = tj.full((4, 4), 5.0)
        with caplog.at_level(logging.INFO, logger="tracejit.recompiles"):
            assert float(f(x)) == float(_calls_helper(x)) == 481.0
        msg = "\n".join(r.getMessage() for r in caplog.records)
        assert "global W changed" in msg and "test_jit_guards.py" in msg
        SCALE = 0.5
        assert float(f(x)) == float(_calls_helper(x))
    finally:
        W, SCALE = old_w, old_scale


def test_rebinding_a_closure_variable_retraces():
    k = 2.0
    bias = tj.zeros((3,))

    def f(x):
        return x * k + bias

    jf = tj.jit(f)
    x = tj.ones((3,))
    assert_close(jf(x), f(x))
    k = 7.0
    bias = tj.full((3,), 1.0)
    assert_close(jf(x), f(x))
    assert float(jf(x)[0]) == 8.0


def test_in_place_update_of_a_captured_tensor_does_not_retrace():
    b = tj.zeros((3,))
    jf = tj.jit(lambda x: x + b)
    jf(tj.ones((3,)))
    b += 1
    assert_close(jf(tj.ones((3,))), np.full(3, 2.0))
    assert jf.cache_info()["traces"] == 1


def test_module_and_optimizer_as_arguments():
    tj.manual_seed(0)
    models = [nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1)) for _ in range(2)]
    eager = [nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1)) for _ in range(2)]
    for m, e in zip(models, eager):
        e.load_state_dict(m.state_dict())
    opts = [tj.optim.Adam(m.parameters(), lr=0.01) for m in models]
    eopts = [tj.optim.Adam(m.parameters(), lr=0.01) for m in eager]

    def step(model, opt, x, y):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    jstep = tj.jit(step)
    x = tj.asarray(np.random.default_rng(0).standard_normal((8, 4)), dtype=tj.float32)
    y = tj.ones((8, 1))
    for _ in range(3):
        for m, o, e, eo in zip(models, opts, eager, eopts):
            assert_close(jstep(m, o, x, y), step(e, eo, x, y), rtol=1e-5)
    for m, e in zip(models, eager):
        for p, q in zip(m.parameters(), e.parameters()):
            assert_close(p, q, rtol=1e-5, atol=1e-6)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.scale = 2.0

    @tj.jit
    def forward(self, x):
        return self.fc(x) * self.scale


def test_jit_on_a_method():
    net = _Net()
    x = tj.ones((3, 4))
    expected = (x @ net.fc.weight.mT + net.fc.bias) * 2.0
    assert_close(net(x), expected)
    net.scale = 5.0
    assert_close(net(x), (x @ net.fc.weight.mT + net.fc.bias) * 5.0)
    other = _Net()
    assert_close(other(x), (x @ other.fc.weight.mT + other.fc.bias) * 2.0)


def test_requires_grad_of_an_argument_is_part_of_the_key():
    def f(x):
        if x.requires_grad:
            return x * 2
        return x * 3

    jf = tj.jit(f)
    a = tj.ones((2,))
    b = tj.asarray(np.ones(2, np.float32), requires_grad=True)
    assert float(jf(a)[0]) == 3.0
    assert float(jf(b)[0]) == 2.0


def test_retraces_are_bounded_with_a_warning():
    jf = tj.jit(lambda x: x + 1, max_traces=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in (1, 2, 3, 4, 2):
            assert_close(jf(tj.zeros((n,))), np.ones(n))
    assert jf.cache_info()["entries"] == 2
    assert jf.cache_info()["evictions"] >= 2
    assert sum("more than 2 traces" in str(w.message) for w in caught) == 1
    with pytest.raises(ValueError, match="max_traces"):
        tj.jit(lambda x: x, max_traces=0)


# ---------------------------------------------------------------- containers, objects and Python arguments

def test_contents_of_global_containers_and_objects_are_guarded():
    import dataclasses

    @dataclasses.dataclass
    class Cfg:
        scale: float = 2.0

    cfg, items, table = Cfg(), [tj.ones((2,))], {"k": 1.0}
    f = tj.jit(lambda x: x * cfg.scale + items[0] * table["k"])
    x = tj.ones((2,))
    assert_close(f(x), [3.0, 3.0])
    cfg.scale = 3.0
    assert_close(f(x), [4.0, 4.0])
    items[0] = tj.full((2,), 5.0)
    assert_close(f(x), [8.0, 8.0])
    table["k"] = 0.5
    assert_close(f(x), [5.5, 5.5])
    assert f.cache_info()["traces"] == 4
    assert_close(f(x), [5.5, 5.5])
    assert f.cache_info()["traces"] == 4


def test_python_state_changed_while_tracing_warns():
    log = []

    def f(x):
        log.append(x.shape)
        return x + 1
    with pytest.warns(UserWarning, match="changed Python state while being traced.*closure variable log"):
        tj.jit(f)(tj.ones((2,)))


def test_bool_and_str_arguments_select_the_trace():
    def f(x, training=True, mode="add"):
        y = x * (2 if training else 3)
        return y + 1 if mode == "add" else y - 1
    jf = tj.jit(f)
    x = tj.ones((2,))
    for kw in ({}, {"training": False}, {"mode": "sub"}, {"training": False, "mode": "sub"}):
        assert_close(jf(x, **kw), f(x, **kw))
    assert jf.cache_info()["traces"] == 4


def test_branching_on_a_number_argument_specializes_it():
    def f(x, n, scale):
        for _ in range(n):
            x = x * scale
        return x
    jf = tj.jit(f)
    x = tj.ones((2,))
    assert_close(jf(x, 2, 3.0), [9.0, 9.0])
    assert_close(jf(x, 3, 3.0), [27.0, 27.0])
    assert_close(jf(x, 2, 3.0), [9.0, 9.0])
    assert jf.cache_info()["traces"] == 2


def test_jit_on_a_plain_method_reads_its_instance():
    class Scaler:
        def __init__(self):
            self.k = 2.0

        @tj.jit
        def apply(self, x):
            return x * self.k
    s = Scaler()
    assert_close(s.apply(tj.ones((2,))), [2.0, 2.0])
    s.k = 5.0
    assert_close(s.apply(tj.ones((2,))), [5.0, 5.0])


def test_values_read_as_data_while_tracing_are_guarded():
    table = np.ones(3, np.float32)
    scale = tj.asarray(3.0)
    f = tj.jit(lambda x: x + table + tj.asarray(table) * scale.item())
    x = tj.zeros((3,))
    assert_close(f(x), [4.0, 4.0, 4.0])
    table[:] = 2.0                 # the array is a constant of the program: changing it re-traces
    assert_close(f(x), [8.0, 8.0, 8.0])
    scale[...] = 1.0               # so is a captured tensor's .item()
    assert_close(f(x), [4.0, 4.0, 4.0])
    assert f.cache_info()["traces"] == 3


def test_reading_a_large_captured_value_as_data_is_refused():
    big = tj.zeros((1 << 19,))      # 2 MiB
    f = tj.jit(lambda x: x + big.numpy().sum())
    with pytest.raises(tj.ConcretizationError, match="would bake them into the compiled program"):
        f(tj.zeros((2,)))


def test_a_module_state_recompile_names_the_users_call(caplog):
    import tracejit.nn as nn
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    f = tj.jit(model)
    x = tj.ones((1, 2))
    with caplog.at_level(logging.INFO, logger="tracejit.recompiles"):
        f(x)
        model.eval()
        f(x)            # the line the log names
    line = next(r.getMessage() for r in caplog.records if "training: True -> False" in r.getMessage())
    assert f"{__file__}:" in line and "modules.py" not in line


class _Settings:
    scale = 2.0


def test_a_class_attribute_read_through_an_instance_or_the_class_is_guarded():
    cfg = _Settings()

    def by_instance(x):
        return x * cfg.scale

    def by_class(x):
        return x * _Settings.scale

    f, g = tj.jit(by_instance), tj.jit(by_class)
    x = tj.ones(2)
    try:
        for scale in (2.0, 5.0, 2.0, 7.0):
            _Settings.scale = scale
            np.testing.assert_array_equal(f(x).numpy(), [scale, scale])
            np.testing.assert_array_equal(g(x).numpy(), [scale, scale])
        cfg.scale = 3.0                       # an instance attribute now hides the class's
        np.testing.assert_array_equal(f(x).numpy(), [3.0, 3.0])
        del cfg.scale
        np.testing.assert_array_equal(f(x).numpy(), [7.0, 7.0])
    finally:
        _Settings.scale = 2.0


@pytest.mark.parametrize("draw", [lambda: random.random(), lambda: float(np.random.rand())],
                         ids=["random", "numpy.random"])
def test_drawing_host_random_numbers_while_traced_is_refused(draw):
    def f(x):
        return x * draw()

    with pytest.raises(tj.UnsupportedUnderJitError, match="drew random numbers"):
        tj.jit(f)(tj.ones(2))
