"""Optimizers with PyTorch's names, hyperparameters and update rules: SGD, Adam, AdamW.

Every update is an in-place assignment under ``no_grad`` (``p._assign(...)``), and all state —
momentum buffers, moment estimates, the step count — lives in eager tensors created with the
parameter, never in Python numbers.  So a training step run under ``jit`` turns the updates
into graph mutations that the jit writes back into the parameters and the state after every
call, and a cached step keeps advancing exactly like the same code run eagerly (bias
correction reads the step *tensor*; a Python counter would be frozen into the trace).

Param groups are :class:`ParamGroup` dicts that report their reads to an active trace: the
learning rate and the momentum terms (``momentum``, ``betas``) become run-time inputs of a jitted
step (a schedule that changes them every step, OneCycleLR's included, never re-traces), and
every other hyperparameter a guard (changing ``eps`` re-traces).  Whether a momentum term is
zero decides which state exists, so that much of it is a guard too.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import api as A
from ..autograd import enable_grad, no_grad, reset_grad
from ..guards import Guard, user_line
from ..tensors import Tensor
from ..tracing import current_trace, settled


class ParamGroup(dict):
    """A parameter group: a dict whose reads under ``jit`` are recorded by the trace.

    Numbers under the keys in ``RUNTIME`` (and each number of a tuple there, as ``betas``) are
    read at every call of the compiled step; the others are guards on the trace (a change
    re-traces).  Outside a trace it is a plain dict.
    """

    RUNTIME = frozenset({"lr", "momentum", "betas"})

    def __getitem__(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        trace = current_trace()
        if trace is None or key == "params":
            return value
        if key in self.RUNTIME and type(value) is tuple:
            items = self._elements(key)
            return tuple(trace.read_state(items, i, v, runtime=True) for i, v in enumerate(value))
        return trace.read_state(self, key, value, runtime=key in self.RUNTIME)

    def is_nonzero(self, key: Any) -> bool:
        """``bool(self[key])`` for a choice of code path: under ``jit`` only the zero-ness is a
        guard, so a run-time hyperparameter can change between non-zero values freely."""
        value = dict.__getitem__(self, key)
        trace = current_trace()
        if trace is not None:
            what = f"{type(self).__name__}[{key!r}]"
            trace.guards.append(_NonzeroGuard(what, user_line(), self, key, value))
        return bool(value)

    def _elements(self, key: Any) -> _TupleItems:
        # one object per key, so the trace keys its reads by a stable identity
        views = self.__dict__.setdefault("_tuple_items", {})
        if key not in views:
            views[key] = _TupleItems(self, key)
        return views[key]


class _TupleItems:
    """``group[key][i]`` as ``items[i]``: a run-time input reads one number of a tuple."""

    __slots__ = ("group", "key")

    def __init__(self, group: dict, key: Any) -> None:
        self.group, self.key = group, key

    def __getitem__(self, i: int) -> Any:
        return dict.__getitem__(self.group, self.key)[i]


class _NonzeroGuard(Guard):
    """The trace took the branch for ``group[key]`` being zero (or not); holds while that stays so."""

    __slots__ = ("group", "key", "expected")

    def __init__(self, what: str, where: str, group: dict, key: Any, expected: Any) -> None:
        super().__init__(what, where)
        self.group, self.key, self.expected = group, key, expected

    def holds(self) -> bool:
        return bool(dict.get(self.group, self.key)) == bool(self.expected)

    def change(self) -> str:
        now = dict.get(self.group, self.key)
        effect = "enables" if now else "disables"
        return (f"{self.what} changed: {self.expected!r} -> {now!r}, which {effect} "
                f"its state (read at {self.where})")


def _zeros(shape: tuple[int, ...], dtype: Any, like: Tensor, fill: float = 0.0) -> Tensor:
    # built directly, not through an op: inside a trace an op would give a traced constant,
    # while state must be an eager tensor the jit captures and writes back into
    t = Tensor._from_array(np.full(shape, fill, dtype=dtype))
    return t if like.device.type == "cpu" else t.to_device(like.device)


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad``, ``state_dict``."""

    _guard_contents = False      # hyperparameters are read through ParamGroup (guards or run-time inputs)

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state: dict[int, dict[str, Any]] = {}       # id(param) -> state
        self.param_groups: list[dict[str, Any]] = []
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group: dict[str, Any]) -> None:
        group = ParamGroup(group)
        ps = group["params"]
        group["params"] = [ps] if isinstance(ps, Tensor) else list(ps)
        for p in group["params"]:
            if isinstance(p, Tensor) and p.is_tracer and p._trace.is_lazy:
                settled(p)          # lazy mode: an optimizer keeps computed tensors
            if not isinstance(p, Tensor) or p.is_tracer:
                raise TypeError(f"optimizer can only optimize eager tensors, got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError("optimizing a tensor that does not require grad")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset gradients: ``None`` (default), or zeros in place."""
        for g in self.param_groups:
            for p in g["params"]:
                reset_grad(p, set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; ``closure`` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            trace = current_trace()
            if trace is not None and trace.is_lazy and _replay_step(self, trace):
                return loss             # lazy mode: the update recorded once, spliced in
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state.get(id(p))
                    if state is None:
                        state = self.state[id(p)] = self._init_state(p, group)
                    self._update(p, p.grad, group, state)
        return loss

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def _update(self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Tensor]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """PyTorch's layout: ``{"state": {i: {...}}, "param_groups": [{..., "params": [i, ...]}]}``."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        state = {index[pid]: dict(s) for pid, s in self.state.items() if pid in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state; state tensors are copied into existing ones in place."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter groups, the optimizer has "
                             f"{len(self.param_groups)}")
        params = {}
        for mine, saved in zip(self.param_groups, groups):
            if len(mine["params"]) != len(saved["params"]):
                raise ValueError(f"loaded state dict contains a parameter group with {len(saved['params'])} "
                                 f"parameters, the optimizer's group has {len(mine['params'])}")
            for i, p in zip(saved["params"], mine["params"]):
                params[i] = p
            mine.update({k: v for k, v in saved.items() if k != "params"})
        for i, saved_state in state_dict["state"].items():
            p = params.get(int(i))
            if p is None:
                continue
            cur = self.state.setdefault(id(p), {})
            for k, v in saved_state.items():
                if isinstance(v, Tensor) or isinstance(v, np.ndarray):
                    arr = np.asarray(v.numpy() if isinstance(v, Tensor) else v)
                    old = cur.get(k)
                    new = Tensor._from_array(np.array(arr, dtype=old.dtype if isinstance(old, Tensor) else
                                                      p.dtype if arr.ndim else arr.dtype))
                    new = new if p.device.type == "cpu" else new.to_device(p.device)
                    if isinstance(old, Tensor) and old.shape == arr.shape:
                        old._assign(new)      # in place: keeps what a jitted step captured
                    else:
                        cur[k] = new
                else:
                    cur[k] = v

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


def _replay_step(opt: Optimizer, trace: Any) -> bool:
    from .lazy_step import replay_step
    return replay_step(opt, trace)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's rule)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"invalid SGD hyperparameters: lr={lr}, momentum={momentum}, "
                             f"weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        return {}

    def _update(self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Tensor]) -> None:
        lr, damp, wd = group["lr"], group["dampening"], group["weight_decay"]
        if group["maximize"]:
            g = -g
        if wd:
            g = g + wd * p
        if group.is_nonzero("momentum"):
            mom = group["momentum"]
            if "momentum_buffer" not in state:
                # the first step sets buf = g: with a zero buffer that is momentum*0 + (1 - dampening)*g,
                # exact when dampening is 0; otherwise a 0/1 flag selects it (no Python branch to freeze)
                state["momentum_buffer"] = _zeros(p.shape, p.dtype, p)
                if damp:
                    state["initialized"] = _zeros((), p.dtype, p)
            buf = state["momentum_buffer"]
            new = buf * mom + g * (1 - damp)
            if "initialized" in state:
                flag = state["initialized"]
                new = A.where(flag > 0, new, g)
                flag._assign(A.ones_like(flag))
            buf._assign(new)
            g = g + new * mom if group["nesterov"] else new
        p._assign(p - g * lr)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, L2 ``weight_decay`` and optional AMSGrad, as PyTorch."""

    decoupled = False

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"invalid {type(self).__name__} hyperparameters: lr={lr}, betas={betas}, "
                             f"eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = {"step": _zeros((), np.float64, p), "exp_avg": _zeros(p.shape, p.dtype, p),
                 "exp_avg_sq": _zeros(p.shape, p.dtype, p)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = _zeros(p.shape, p.dtype, p)
        return state

    def _update(self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Tensor]) -> None:
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            g = -g
        if wd and self.decoupled:
            p._assign(p * (1 - lr * wd))
        elif wd:
            g = g + wd * p
        step, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        step._assign(step + 1)
        m._assign(m + (g - m) * (1 - b1))               # torch: exp_avg.lerp_(grad, 1 - beta1)
        v._assign(v * b2 + g * g * (1 - b2))
        # bias corrections from the step tensor, in float64 like PyTorch's Python-float arithmetic
        bc1 = 1 - b1 ** step
        bc2_sqrt = A.sqrt(1 - b2 ** step)
        step_size = A.astype(lr / bc1, p.dtype)
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            vmax._assign(A.maximum(vmax, v))
            v = vmax
        denom = A.sqrt(v) / A.astype(bc2_sqrt, p.dtype) + eps
        p._assign(p - step_size * (m / denom))


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr * weight_decay`` before the Adam step)."""

    decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)


__all__ = ["ParamGroup", "Optimizer", "SGD", "Adam", "AdamW"]
