"""Recurrent layers with PyTorch's parameters and layouts: RNN, LSTM, GRU and their cells.

Parameters are named as torch names them (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``, ``*_reverse`` for the backward direction), gates stacked in torch's order
(LSTM ``i, f, g, o``; GRU ``r, z, n``), so a converted torch ``state_dict`` loads as is.

A layer projects the whole input sequence at once (one matmul for all time steps); the loop
over time runs in Python, so under ``jit`` it is unrolled into the trace and each step
becomes the hidden-state matmul plus one fused kernel of gate arithmetic.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .. import api as A
from ..tensors import Tensor
from . import functional as F
from . import init
from .modules import Module, _param

__all__ = ["rnn_tanh_cell", "rnn_relu_cell", "lstm_cell", "gru_cell", "RNNCell", "LSTMCell", "GRUCell",
           "RNN", "LSTM", "GRU"]

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else A.asarray(x)


def _gate(x: Tensor) -> Tensor:
    """``sigmoid(x)`` as ``0.5 + 0.5 * tanh(x / 2)``: one transcendental whose derivative reads
    only its output, so a step's backward keeps one value per gate (``1 / (1 + exp(-x))`` keeps
    three).  Absolute error ~1e-7, which is what gates need."""
    return 0.5 * A.tanh(0.5 * x) + 0.5


def _hidden_matmul(h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    return F.linear(h, w_hh, b_hh)


# The step functions take the input already projected (``x @ w_ih.T + b_ih``): layers project
# a whole sequence in one matmul, cells project one step.

def _rnn_step(xp: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None,
              act: Callable[[Tensor], Tensor]) -> Tensor:
    return act(xp + _hidden_matmul(h, w_hh, b_hh))


def _lstm_step(xp: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
    gates = xp + _hidden_matmul(h, w_hh, b_hh)
    n = h.shape[-1]
    i, f = _gate(gates[..., :n]), _gate(gates[..., n:2 * n])
    g, o = A.tanh(gates[..., 2 * n:3 * n]), _gate(gates[..., 3 * n:])
    c = f * c + i * g
    return o * A.tanh(c), c


def _gru_step(xp: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    gh = _hidden_matmul(h, w_hh, b_hh)
    n = h.shape[-1]
    r = _gate(xp[..., :n] + gh[..., :n])
    z = _gate(xp[..., n:2 * n] + gh[..., n:2 * n])
    cand = A.tanh(xp[..., 2 * n:] + r * gh[..., 2 * n:])
    return (1.0 - z) * cand + z * h


def rnn_tanh_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                  b_hh: Tensor | None = None) -> Tensor:
    """``tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)``."""
    return _rnn_step(F.linear(x, w_ih, b_ih), h, w_hh, b_hh, A.tanh)


def rnn_relu_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                  b_hh: Tensor | None = None) -> Tensor:
    """``relu(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)``."""
    return _rnn_step(F.linear(x, w_ih, b_ih), h, w_hh, b_hh, F.relu)


def lstm_cell(x: Tensor, hc: tuple[Tensor, Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
              b_hh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One LSTM step (gates ``i, f, g, o`` stacked in ``w_ih``/``w_hh``): returns ``(h, c)``."""
    return _lstm_step(F.linear(x, w_ih, b_ih), hc[0], hc[1], w_hh, b_hh)


def gru_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
             b_hh: Tensor | None = None) -> Tensor:
    """One GRU step (gates ``r, z, n``; ``n = tanh(x_n + r * (h @ w_hn.T + b_hn))``, as torch)."""
    return _gru_step(F.linear(x, w_ih, b_ih), h, w_hh, b_hh)


def _reset_uniform(module: Module, hidden_size: int) -> None:
    """torch's init for recurrent layers: every parameter uniform in ``±1/sqrt(hidden_size)``."""
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for p in module.parameters():
        init.uniform_(p, -bound, bound)


def _check_nonlinearity(mode: str, nonlinearity: str) -> str:
    if mode != "RNN":
        return mode
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"


# ------------------------------------------------------------------ cells

class _CellBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool, nonlinearity: str,
                 dtype: Any) -> None:
        super().__init__()
        self.mode = _check_nonlinearity(mode, nonlinearity)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.nonlinearity = nonlinearity
        g = GATES[self.mode] * hidden_size
        self.weight_ih = _param((g, input_size), dtype)
        self.weight_hh = _param((g, hidden_size), dtype)
        if bias:
            self.bias_ih = _param((g,), dtype)
            self.bias_hh = _param((g,), dtype)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_uniform(self, self.hidden_size)

    def _input(self, x: Any) -> Tensor:
        x = _as_tensor(x)
        name = type(self).__name__
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input must be (batch, {self.input_size}) or ({self.input_size},), "
                             f"got shape {x.shape}")
        return x

    def _state(self, hx: Any, x: Tensor) -> Tensor:
        shape = tuple(x.shape[:-1]) + (self.hidden_size,)
        if hx is None:
            return A.zeros(shape, dtype=self.weight_ih.dtype, device=x.device)
        hx = _as_tensor(hx)
        if tuple(hx.shape) != shape:
            raise ValueError(f"{type(self).__name__}: hidden state must have shape {shape} for input "
                             f"{x.shape}, got {hx.shape}")
        return hx

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        return s + ("" if self.bias else ", bias=False")


class RNNCell(_CellBase):
    """``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (or ``relu``); ``forward(x, h=None)``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 dtype: Any = None) -> None:
        super().__init__("RNN", input_size, hidden_size, bias, nonlinearity, dtype)

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        x = self._input(x)
        h = self._state(hx, x)
        cell = rnn_tanh_cell if self.mode == "RNN_TANH" else rnn_relu_cell
        return cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class LSTMCell(_CellBase):
    """One LSTM step: ``forward(x, (h, c)=None)`` returns ``(h', c')``; gates ``i, f, g, o``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: Any = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, "tanh", dtype)

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        x = self._input(x)
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError("LSTMCell: the state must be a tuple (h, c)")
        h = self._state(None if hx is None else hx[0], x)
        c = self._state(None if hx is None else hx[1], x)
        return lstm_cell(x, (h, c), self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(_CellBase):
    """One GRU step: ``forward(x, h=None)`` returns ``h'``; gates ``r, z, n`` as in torch."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype: Any = None) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, "tanh", dtype)

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        x = self._input(x)
        h = self._state(hx, x)
        return gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


# ------------------------------------------------------------------ layers

class _RNNBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 nonlinearity: str = "tanh", proj_size: int = 0, dtype: Any = None) -> None:
        super().__init__()
        name = mode
        if proj_size:
            raise NotImplementedError(f"{name}: proj_size is not supported")
        if num_layers < 1:
            raise ValueError(f"{name}: num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout}")
        self.mode = _check_nonlinearity(mode, nonlinearity)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.nonlinearity, self.proj_size = bidirectional, nonlinearity, proj_size
        g = GATES[self.mode] * hidden_size
        dirs = 2 if bidirectional else 1
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * dirs
            for suffix in ("", "_reverse")[:dirs]:
                setattr(self, f"weight_ih_l{layer}{suffix}", _param((g, in_size), dtype))
                setattr(self, f"weight_hh_l{layer}{suffix}", _param((g, hidden_size), dtype))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", _param((g,), dtype))
                    setattr(self, f"bias_hh_l{layer}{suffix}", _param((g,), dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_uniform(self, self.hidden_size)

    @property
    def _dirs(self) -> int:
        return 2 if self.bidirectional else 1

    def _weights(self, layer: int, suffix: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        get = self._parameters.get
        return (get(f"weight_ih_l{layer}{suffix}"), get(f"weight_hh_l{layer}{suffix}"),
                get(f"bias_ih_l{layer}{suffix}"), get(f"bias_hh_l{layer}{suffix}"))

    def _check_state(self, s: Any, batch: int, what: str) -> Tensor:
        shape = (self.num_layers * self._dirs, batch, self.hidden_size)
        s = _as_tensor(s)
        if tuple(s.shape) != shape:
            raise ValueError(f"{type(self).__name__}: {what} must have shape {shape}, got {s.shape}")
        return s

    def _run_direction(self, x: Tensor, states: tuple[Tensor, ...], layer: int, reverse: bool
                       ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One layer in one direction over time-major ``x`` (L, N, in): outputs (L, N, H) and the
        final state."""
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, "_reverse" if reverse else "")
        xp = F.linear(x, w_ih, b_ih)                 # every time step's input projection at once
        if self.mode != "GRU" and b_hh is not None:  # (GRU keeps b_hn inside r * (...))
            xp, b_hh = xp + b_hh, None
        steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        outs: list[Tensor] = [None] * x.shape[0]   # type: ignore[list-item]
        if self.mode == "LSTM":
            h, c = states
            for t in steps:
                h, c = _lstm_step(xp[t], h, c, w_hh, b_hh)
                outs[t] = h
            final: tuple[Tensor, ...] = (h, c)
        else:
            (h,) = states
            act = F.relu if self.mode == "RNN_RELU" else A.tanh
            for t in steps:
                h = (_gru_step(xp[t], h, w_hh, b_hh) if self.mode == "GRU"
                     else _rnn_step(xp[t], h, w_hh, b_hh, act))
                outs[t] = h
            final = (h,)
        return A.stack(outs, axis=0), final

    def forward(self, input: Tensor, hx: Any = None) -> tuple[Tensor, Any]:  # noqa: A002
        name = type(self).__name__
        x = _as_tensor(input)
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input must be (seq, batch, {self.input_size}) (batch first with "
                             f"batch_first=True) or unbatched (seq, {self.input_size}), got shape {x.shape}")
        unbatched = x.ndim == 2
        if unbatched:
            x = A.expand_dims(x, axis=1)
        elif self.batch_first:
            x = A.permute_dims(x, (1, 0, 2))
        if x.shape[0] == 0:
            raise ValueError(f"{name}: input sequence is empty (shape {input.shape})")
        n = x.shape[1]
        n_states = 2 if self.mode == "LSTM" else 1
        if hx is None:
            zero = A.zeros((self.num_layers * self._dirs, n, self.hidden_size), dtype=self.weight_ih_l0.dtype,
                           device=x.device)
            init_states = [zero] * n_states
        else:
            if self.mode == "LSTM" and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
                raise TypeError(f"LSTM: the initial state must be a tuple (h_0, c_0), "
                                f"got {type(hx).__name__}")
            given = tuple(hx) if self.mode == "LSTM" else (hx,)
            if unbatched:
                given = tuple(A.expand_dims(_as_tensor(s), axis=1) for s in given)
            init_states = [self._check_state(s, n, w) for s, w in zip(given, ("h_0", "c_0"))]
        finals: list[list[Tensor]] = [[] for _ in range(n_states)]
        for layer in range(self.num_layers):
            outs = []
            for d in range(self._dirs):
                k = layer * self._dirs + d
                out, final = self._run_direction(x, tuple(s[k] for s in init_states), layer, reverse=d == 1)
                outs.append(out)
                for acc, s in zip(finals, final):
                    acc.append(s)
            x = outs[0] if len(outs) == 1 else A.concat(outs, axis=-1)
            if self.dropout and self.training and layer + 1 < self.num_layers:
                x = F.dropout(x, self.dropout, True)
        states = tuple(A.stack(f, axis=0) for f in finals)
        if unbatched:
            x = A.squeeze(x, axis=1)
            states = tuple(A.squeeze(s, axis=1) for s in states)
        elif self.batch_first:
            x = A.permute_dims(x, (1, 0, 2))
        return x, (states if self.mode == "LSTM" else states[0])

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s


class RNN(_RNNBase):
    """Elman RNN, ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or ``relu``).

    ``forward(input, h_0=None)`` returns ``(output, h_n)``: output (L, N, D*H) (batch first with
    ``batch_first``), h_n (num_layers*D, N, H).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, dtype: Any = None) -> None:
        super().__init__("RNN", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, nonlinearity, dtype=dtype)


class LSTM(_RNNBase):
    """Long short-term memory; ``forward(input, (h_0, c_0)=None)`` returns ``(output, (h_n, c_n))``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, dtype: Any = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size=proj_size, dtype=dtype)


class GRU(_RNNBase):
    """Gated recurrent unit; ``forward(input, h_0=None)`` returns ``(output, h_n)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: Any = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype=dtype)
