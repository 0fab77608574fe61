"""Adagrad (Duchi et al.), in PyTorch's form."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import api as A
from ..tensors import Tensor
from .optimizer import Optimizer, _zeros


class Adagrad(Optimizer):
    """Scale each coordinate's step by the root of its summed squared gradients.

    The step size decays as ``lr / (1 + (step - 1) * lr_decay)``, computed from the step
    *tensor* (so a jitted step keeps decaying); ``initial_accumulator_value`` starts the sum.
    Same defaults and update order as ``torch.optim.Adagrad``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 maximize: bool = False) -> None:
        if lr < 0 or lr_decay < 0 or weight_decay < 0 or initial_accumulator_value < 0 or eps < 0:
            raise ValueError(f"invalid Adagrad hyperparameters: lr={lr}, lr_decay={lr_decay}, "
                             f"weight_decay={weight_decay}, initial_accumulator_value="
                             f"{initial_accumulator_value}, eps={eps}")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        return {"step": _zeros((), np.float64, p),
                "sum": _zeros(p.shape, p.dtype, p, fill=group["initial_accumulator_value"])}

    def _update(self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Tensor]) -> None:
        lr, lr_decay, eps, wd = group["lr"], group["lr_decay"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            g = -g
        if wd:
            g = g + wd * p
        step, acc = state["step"], state["sum"]
        step._assign(step + 1)
        # in float64 from the step tensor, like PyTorch's Python-float arithmetic
        clr = A.astype(lr / (1 + (step - 1) * lr_decay), p.dtype)
        acc._assign(acc + g * g)
        p._assign(p - clr * (g / (A.sqrt(acc) + eps)))
