"""Neural-network functions, composed from public tensor functions.

Nothing here is a primitive: every function is a handful of elementwise ops and reductions,
so under ``jit`` they fuse (softmax or layer_norm become one row kernel) and autograd
differentiates them through the primitives' VJPs without special cases.  ``axis`` follows
the Array API; ``dim`` is accepted as its PyTorch spelling.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import api as A
from .. import dtypes as dt
from .. import prims as P
from .. import random as R
from ..tensors import Tensor
from ..tracing import current_trace

__all__ = ["relu", "gelu", "sigmoid", "silu", "softmax", "log_softmax", "logsumexp", "layer_norm",
           "linear", "cross_entropy", "mse_loss", "one_hot", "dropout"]


def _axis(axis: int, dim: int | None) -> int:
    return axis if dim is None else dim


def _float(x: Any) -> Tensor:
    x = A.asarray(x) if not isinstance(x, Tensor) else x
    return x if dt.is_float(x.dtype) else A.astype(x, dt.default_float)


def _no_grad(x: Tensor) -> Tensor:
    """``x`` without autograd history: a stability shift whose gradient cancels out exactly."""
    detach = getattr(x, "detach", None)
    return detach() if detach is not None else x


def _finite_max(x: Tensor, axis: int) -> Tensor:
    """Row max for the log-sum-exp shift; 0 where it is not finite (all -inf rows, inf entries)."""
    m = _no_grad(A.max(x, axis=axis, keepdims=True))
    return A.where(A.isfinite(m), m, 0.0)


def relu(x: Tensor) -> Tensor:
    """``max(x, 0)``."""
    x = A.asarray(x) if not isinstance(x, Tensor) else x
    return A.maximum(x, 0)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit: ``x * Phi(x)``; ``approximate="tanh"`` uses the tanh form."""
    x = _float(x)
    if approximate == "none":
        return 0.5 * x * (1.0 + A.erf(x * (1.0 / math.sqrt(2.0))))
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1.0 + A.tanh(inner))
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def sigmoid(x: Tensor) -> Tensor:
    """``1 / (1 + exp(-x))`` (saturates to 0 and 1 without NaNs)."""
    x = _float(x)
    return 1.0 / (1.0 + A.exp(-x))


def silu(x: Tensor) -> Tensor:
    """``x * sigmoid(x)`` (also known as swish)."""
    x = _float(x)
    return x * sigmoid(x)


def logsumexp(x: Tensor, axis: int = -1, keepdims: bool = False, *, dim: int | None = None) -> Tensor:
    """``log(sum(exp(x)))`` along ``axis``, computed with the max subtracted for stability."""
    x = _float(x)
    ax = _axis(axis, dim)
    m = _finite_max(x, ax)
    out = A.log(A.sum(A.exp(x - m), axis=ax, keepdims=True)) + m
    return out if keepdims else A.squeeze(out, axis=ax)


def softmax(x: Tensor, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis`` (max-shifted)."""
    x = _float(x)
    ax = _axis(axis, dim)
    e = A.exp(x - _finite_max(x, ax))
    return e / A.sum(e, axis=ax, keepdims=True)


def log_softmax(x: Tensor, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``."""
    x = _float(x)
    ax = _axis(axis, dim)
    return x - logsumexp(x, ax, keepdims=True)


def layer_norm(x: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize over the trailing ``normalized_shape`` dims (biased variance), then scale and shift."""
    x = _float(x)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(shape):]) != shape or len(shape) > x.ndim:
        raise ValueError(f"layer_norm: normalized_shape {shape} does not match the trailing dims of "
                         f"input shape {x.shape}")
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    mu = A.mean(x, axis=axes, keepdims=True)
    d = x - mu
    var = A.mean(d * d, axis=axes, keepdims=True)
    y = d * A.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias`` with PyTorch's layout: ``weight`` is (out_features, in_features)."""
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    if x.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"linear: input shape {x.shape} does not match weight shape {weight.shape} "
                         f"(last dim {x.shape[-1:]} vs in_features {weight.shape[1]})")
    y = A.matmul(x, A.matrix_transpose(weight))
    return y if bias is None else y + bias


def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return A.mean(loss)
    if reduction == "sum":
        return A.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def one_hot(labels: Tensor, num_classes: int, dtype: Any = None) -> Tensor:
    """``labels[..., None] == arange(num_classes)`` as ``dtype`` (an iota compare: it fuses)."""
    classes = P.iota(labels.shape + (num_classes,), labels.ndim, labels.dtype, like=labels)
    hit = A.equal(classes, A.expand_dims(labels, axis=-1))
    return A.astype(hit, dtype or dt.default_float)


def cross_entropy(logits: Tensor, target: Tensor, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of ``logits`` (class dim 1, or 0 for 1-D input, as in PyTorch) against
    integer class labels or class probabilities of the same shape as ``logits``."""
    logits = _float(logits)
    target = A.asarray(target) if not isinstance(target, Tensor) else target
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    class_axis = 0 if logits.ndim == 1 else 1
    if logits.ndim > 2:   # (N, C, d1, ...) -> (N, d1, ..., C): classes last
        logits = A.moveaxis(logits, 1, -1)
        if target.ndim == logits.ndim:
            target = A.moveaxis(target, 1, -1)
    n_classes = logits.shape[-1]
    logp = log_softmax(logits, axis=-1)
    if dt.is_int(target.dtype):
        if target.shape != logits.shape[:-1]:
            raise ValueError(f"cross_entropy: label shape {target.shape} does not match logits shape "
                             f"{logits.shape} without its class dim {class_axis}")
        trace = current_trace()
        if (trace is None or trace.is_lazy) and target.size:   # eager: check labels (a traced one can't)
            lo, hi = int(target.numpy().min()), int(target.numpy().max())
            if lo < 0 or hi >= n_classes:
                raise IndexError(f"cross_entropy: labels must be in [0, {n_classes}), got values in "
                                 f"[{lo}, {hi}]")
        probs = one_hot(target, n_classes, logp.dtype)
    else:
        if target.shape != logits.shape:
            raise ValueError(f"cross_entropy: probability target shape {target.shape} does not match "
                             f"logits shape {logits.shape}")
        probs = A.astype(target, logp.dtype)
    if label_smoothing:
        probs = probs * (1.0 - label_smoothing) + label_smoothing / n_classes
    loss = -A.sum(probs * logp, axis=-1)
    return _reduce(loss, reduction, "cross_entropy")


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Mean (or sum, or elementwise) squared error."""
    d = A.subtract(input, target)
    return _reduce(d * d, reduction, "mse_loss")


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator: R.Generator | None = None) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)`` while
    ``training`` (counter-based random bits from ``generator``, default the global one)."""
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = P.placed_like(R.uniform((generator or R.default_generator).next_key(), x.shape, dt.float32), x)
    scale = P.where(P.ge(keep, P.full(x.shape, p, dt.float32)), P.full(x.shape, 1.0 / (1.0 - p), x.dtype),
                    P.full(x.shape, 0.0, x.dtype))
    return x * scale
