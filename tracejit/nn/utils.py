"""Gradient clipping with PyTorch's names: ``clip_grad_norm_`` and ``clip_grad_value_``.

Both update each parameter's ``.grad`` in place (``_assign`` under ``no_grad``), so inside a
jitted training step the clipped gradients are what the optimizer step that follows reads, and
the total norm is computed and applied in the compiled program without leaving it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from .. import api as A
from ..autograd import no_grad
from ..errors import UnsupportedUnderJitError
from ..tensors import Tensor
from ..tracing import current_trace

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad for p in params if p.grad is not None]


def _vector_norm(g: Tensor, norm_type: float) -> Tensor:
    a = A.abs(g)
    if norm_type == math.inf:
        return A.max(a)
    if norm_type == -math.inf:
        return A.min(a)
    if norm_type == 0:
        return A.sum(A.astype(a != 0, a.dtype))
    if norm_type == 1:
        return A.sum(a)
    if norm_type == 2:
        return A.sqrt(A.sum(a * a))
    return A.sum(a ** norm_type) ** (1.0 / norm_type)


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients together so that their joint ``norm_type``-norm is at most ``max_norm``.

    The norm is that of the vector of every gradient's norm (``inf`` for the max norm); the
    scale is ``min(1, max_norm / (total + 1e-6))``, as PyTorch.  Returns the total norm (before
    clipping) as a 0-d tensor.
    """
    norm_type = float(norm_type)
    grads = _grads(parameters)
    if not grads:
        return A.asarray(0.0)
    with no_grad():
        norms = A.stack([_vector_norm(g, norm_type) for g in grads])
        total = _vector_norm(norms, norm_type)
        if error_if_nonfinite:
            if current_trace() is not None:
                raise UnsupportedUnderJitError(
                    "clip_grad_norm_(error_if_nonfinite=True) needs the norm's value to decide whether to "
                    "raise, which a traced step cannot read; pass error_if_nonfinite=False under jit, or "
                    "check the returned norm after the call")
            if not math.isfinite(float(total)):
                raise RuntimeError(f"the total norm of order {norm_type} of the gradients is non-finite "
                                   f"({float(total)}), so it cannot be clipped; pass "
                                   "error_if_nonfinite=False to scale them anyway")
        scale = A.minimum(max_norm / (total + 1e-6), 1.0)
        for g in grads:
            g._assign(g * A.astype(scale, g.dtype))
    return total


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient elementwise into ``[-clip_value, clip_value]``."""
    clip_value = float(clip_value)
    with no_grad():
        for g in _grads(parameters):
            g._assign(A.clip(g, -clip_value, clip_value))
