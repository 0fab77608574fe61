"""RNN, LSTM, GRU and their cells against torch: forward, backward, state_dict, under jit."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
nn = tj.nn
ATOL, RTOL = 1e-4, 1e-3


def _close(actual, expected, what: str) -> None:
    a = actual.numpy() if isinstance(actual, tj.Tensor) else np.asarray(actual)
    e = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL, err_msg=what)


def _converted(tmod: torch.nn.Module, jmod: nn.Module) -> None:
    """Load torch's state_dict (converted to arrays) into ``jmod``; names and shapes must agree."""
    sd = {k: v.detach().numpy() for k, v in tmod.state_dict().items()}
    assert list(sd) == list(jmod.state_dict()), "parameter names differ from torch's"
    jmod.load_state_dict(sd)


def _flat(x):
    return [t for s in x for t in _flat(s)] if isinstance(x, (tuple, list)) else [x]


def _compare(tmod, jmod, t_inputs, j_call, t_call, rng, jit: bool = False):
    """Forward outputs, input gradients and parameter gradients of ``jmod`` against torch's, for
    the loss ``sum(out_i * g_i)``.  With ``jit`` the forward and ``loss.backward()`` run as one
    jitted step (parameter gradients only: the inputs are the step's arguments)."""
    t_out = _flat(t_call(tmod, *t_inputs))
    grads = [rng.standard_normal(o.shape).astype(np.float32) for o in t_out]
    sum(((o * torch.tensor(g)).sum() for o, g in zip(t_out, grads))).backward()
    j_inputs = [tj.asarray(t.detach().numpy(), requires_grad=not jit) for t in t_inputs]
    j_grads = [tj.asarray(g) for g in grads]

    def step(*inputs):
        out = _flat(j_call(jmod, *inputs))
        loss = None
        for o, g in zip(out, j_grads):
            term = (o * g).sum()
            loss = term if loss is None else loss + term
        loss.backward()
        return out
    j_out = (tj.jit(step) if jit else step)(*j_inputs)
    assert len(j_out) == len(t_out)
    for i, (a, e) in enumerate(zip(j_out, t_out)):
        assert tuple(a.shape) == tuple(e.shape), f"output {i}: shape {a.shape} != torch {tuple(e.shape)}"
        _close(a, e, f"output {i}")
    if not jit:
        for i, (a, e) in enumerate(zip(j_inputs, t_inputs)):
            _close(a.grad, e.grad, f"grad of input {i}")
    tparams = dict(tmod.named_parameters())
    for name, p in jmod.named_parameters():
        _close(p.grad, tparams[name].grad, f"grad of {name}")


def _seq_inputs(rng, shape, h0_shape=None, lstm=False):
    x = torch.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    if h0_shape is None:
        return [x]
    states = [torch.tensor(rng.standard_normal(h0_shape).astype(np.float32), requires_grad=True)
              for _ in range(2 if lstm else 1)]
    return [x, *states]


@pytest.mark.parametrize("kind,kw", [
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict(num_layers=2, batch_first=True)),
    ("RNN", dict(nonlinearity="relu", bidirectional=True, bias=False)),
    ("RNN", dict(num_layers=1)),
])
def test_recurrent_layer_forward_backward_matches_torch(rng, kind, kw) -> None:
    torch.manual_seed(0)
    tmod = getattr(torch.nn, kind)(5, 6, **kw)
    jmod = getattr(nn, kind)(5, 6, **kw)
    _converted(tmod, jmod)
    dirs = 2 if kw.get("bidirectional") else 1
    n_layers = kw.get("num_layers", 1)
    shape = (3, 7, 5) if kw.get("batch_first") else (7, 3, 5)
    lstm = kind == "LSTM"
    inputs = _seq_inputs(rng, shape, (n_layers * dirs, 3, 6), lstm)

    def call(m, x, *s):
        return m(x, tuple(s) if lstm else s[0])
    _compare(tmod, jmod, inputs, call, call, rng)


def test_lstm_without_initial_state_and_unbatched_input(rng) -> None:
    torch.manual_seed(1)
    tmod, jmod = torch.nn.LSTM(4, 3), nn.LSTM(4, 3)
    _converted(tmod, jmod)
    _compare(tmod, jmod, _seq_inputs(rng, (5, 2, 4)), lambda m, x: m(x), lambda m, x: m(x), rng)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    out, (h, c) = jmod(tj.asarray(x))
    t_out, (t_h, t_c) = tmod(torch.tensor(x))
    assert out.shape == (5, 3) and h.shape == (1, 3)
    _close(out, t_out, "unbatched output")
    _close(c, t_c, "unbatched c_n")


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_match_torch(rng, kind) -> None:
    torch.manual_seed(2)
    tmod, jmod = getattr(torch.nn, kind)(7, 5), getattr(nn, kind)(7, 5)
    _converted(tmod, jmod)
    lstm = kind == "LSTMCell"
    inputs = _seq_inputs(rng, (4, 7), (4, 5), lstm)

    def call(m, x, *s):
        return m(x, tuple(s) if lstm else s[0])
    _compare(tmod, jmod, inputs, call, call, rng)
    # no state given: zeros, as torch
    x = rng.standard_normal((4, 7)).astype(np.float32)
    _close(_flat(jmod(tj.asarray(x)))[0], _flat(tmod(torch.tensor(x)))[0], "zero initial state")


def test_parameter_names_and_gate_layout_are_torchs() -> None:
    m = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    assert list(m.state_dict())[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert "weight_hh_l1_reverse" in m.state_dict()
    assert m.weight_ih_l1.shape == (16, 8) and m.weight_hh_l0_reverse.shape == (16, 4)
    assert nn.GRU(3, 4).weight_ih_l0.shape == (12, 3)
    assert nn.RNN(3, 4).weight_hh_l0.shape == (4, 4)
    bound = 1 / 2
    assert all(float(abs(p).max()) <= bound for p in m.parameters())


def test_jitted_lstm_and_gru_match_torch(rng) -> None:
    for kind, kw in (("LSTM", dict(num_layers=2, batch_first=True, bidirectional=True)), ("GRU", {})):
        torch.manual_seed(3)
        tmod, jmod = getattr(torch.nn, kind)(5, 6, **kw), getattr(nn, kind)(5, 6, **kw)
        _converted(tmod, jmod)
        shape = (3, 4, 5) if kw.get("batch_first") else (4, 3, 5)
        _compare(tmod, jmod, _seq_inputs(rng, shape), lambda m, x: m(x), lambda m, x: m(x), rng, jit=True)


def test_gradients_computed_inside_jit_equal_eager(rng) -> None:
    tj.manual_seed(4)
    m = nn.GRU(4, 5, num_layers=2)
    x = tj.asarray(rng.standard_normal((6, 2, 4)).astype(np.float32))

    def loss(x):
        out, h = m(x)
        return (out * out).sum() + h.sum()
    eager = tj.grad(loss)(x)
    jitted = tj.jit(tj.grad(loss))(x)
    np.testing.assert_allclose(jitted.numpy(), eager.numpy(), rtol=1e-5, atol=1e-6)


def test_lstm_step_under_jit_is_two_matmuls_and_one_kernel(rng) -> None:
    cell = nn.LSTMCell(16, 32).requires_grad_(False)
    x, h, c = (tj.asarray(rng.standard_normal((8, n)).astype(np.float32)) for n in (16, 32, 32))
    step = tj.jit(lambda x, h, c: cell(x, (h, c)))
    h1, c1 = step(x, h, c)
    e_h, e_c = cell(x, (h, c))
    np.testing.assert_allclose(h1.numpy(), e_h.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c1.numpy(), e_c.numpy(), rtol=1e-5, atol=1e-6)
    kinds = {k: n for k, n in step.explain(x, h, c).kernel_kinds().items() if n}
    # the two projections; then one kernel: the gate pre-activations with both biases (read
    # through four disjoint slices, each element once), the new c and the new h
    assert kinds == {"matmul": 2, "elementwise": 1}, kinds


def test_bad_inputs_raise_clear_errors() -> None:
    m = nn.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"input must be .*got shape \(2, 5, 7\)"):
        m(tj.zeros((2, 5, 7)))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 5, 4\)"):
        m(tj.zeros((2, 5, 3)), (tj.zeros((1, 5, 4)), tj.zeros((2, 5, 4))))
    with pytest.raises(TypeError, match="tuple"):
        m(tj.zeros((2, 5, 3)), tj.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(NotImplementedError, match="proj_size"):
        nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match=r"hidden state must have shape \(5, 4\)"):
        nn.GRUCell(3, 4)(tj.zeros((5, 3)), tj.zeros((4,)))
