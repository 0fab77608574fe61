"""RMSprop (Hinton's unpublished rule, in PyTorch's form)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import api as A
from ..tensors import Tensor
from .optimizer import Optimizer, _zeros


class RMSprop(Optimizer):
    """Divide the gradient by a running root mean square of past gradients.

    ``square_avg = alpha * square_avg + (1 - alpha) * g**2``; ``centered`` subtracts the squared
    running mean of the gradient (an estimate of its variance); ``momentum`` keeps a buffer of
    ``g / (sqrt(avg) + eps)``.  Same defaults and update order as ``torch.optim.RMSprop``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False) -> None:
        if lr < 0 or eps < 0 or momentum < 0 or weight_decay < 0 or alpha < 0:
            raise ValueError(f"invalid RMSprop hyperparameters: lr={lr}, alpha={alpha}, eps={eps}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = {"step": _zeros((), np.float64, p), "square_avg": _zeros(p.shape, p.dtype, p)}
        if group["centered"]:
            state["grad_avg"] = _zeros(p.shape, p.dtype, p)
        return state

    def _update(self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Tensor]) -> None:
        lr, alpha, eps, wd = group["lr"], group["alpha"], group["eps"], group["weight_decay"]
        if group["maximize"]:
            g = -g
        if wd:
            g = g + wd * p
        step, sq = state["step"], state["square_avg"]
        step._assign(step + 1)
        sq._assign(sq * alpha + g * g * (1 - alpha))
        if "grad_avg" in state:
            ga = state["grad_avg"]
            ga._assign(ga + (g - ga) * (1 - alpha))          # torch: grad_avg.lerp_(grad, 1 - alpha)
            avg = A.sqrt(sq - ga * ga) + eps
        else:
            avg = A.sqrt(sq) + eps
        if group.is_nonzero("momentum"):
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = _zeros(p.shape, p.dtype, p)
            buf = state["momentum_buffer"]
            buf._assign(buf * group["momentum"] + g / avg)
            p._assign(p - buf * lr)
        else:
            p._assign(p - (g / avg) * lr)
