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
from ..autocast import autocast_dtype
from ..lazy_composites import replayable
from ..tensors import Tensor

__all__ = ["relu", "gelu", "sigmoid", "silu", "softmax", "log_softmax", "logsumexp", "layer_norm",
           "linear", "one_hot", "embedding", "dropout"]


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


@replayable
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


@replayable
def logsumexp(x: Tensor, axis: int = -1, keepdims: bool = False, *, dim: int | None = None) -> Tensor:
    """``log(sum(exp(x)))`` along ``axis``, computed with the max subtracted for stability."""
    x = _float(x)
    ax = _axis(axis, dim)
    m = _finite_max(x, ax)
    out = A.log(A.sum(A.exp(x - m), axis=ax, keepdims=True)) + m
    return out if keepdims else A.squeeze(out, axis=ax)


@replayable
def softmax(x: Tensor, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis`` (max-shifted)."""
    x = _float(x)
    ax = _axis(axis, dim)
    e = A.exp(x - _finite_max(x, ax))
    return e / A.sum(e, axis=ax, keepdims=True)


@replayable
def log_softmax(x: Tensor, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``."""
    x = _float(x)
    ax = _axis(axis, dim)
    return x - logsumexp(x, ax, keepdims=True)


@replayable
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


@replayable
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias`` with PyTorch's layout: ``weight`` is (out_features, in_features)."""
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    if x.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"linear: input shape {x.shape} does not match weight shape {weight.shape} "
                         f"(last dim {x.shape[-1:]} vs in_features {weight.shape[1]})")
    y = A.matmul(x, A.matrix_transpose(weight))
    if bias is not None and y.dtype != bias.dtype and y.dtype == autocast_dtype():
        bias = A.astype(bias, y.dtype)        # under autocast the whole layer is reduced, as in PyTorch
    return y if bias is None else y + bias


def _one_hot(labels: Tensor, num_classes: int, dtype: Any = None) -> Tensor:
    """``labels[..., None] == arange(num_classes)`` as ``dtype`` (an iota compare: it fuses); an
    out-of-range label gives a zero row (the losses check their labels first)."""
    classes = P.iota(labels.shape + (num_classes,), labels.ndim, labels.dtype, like=labels)
    hit = A.equal(classes, A.expand_dims(labels, axis=-1))
    return A.astype(hit, dtype or dt.default_float)


def one_hot(labels: Tensor, num_classes: int = -1, dtype: Any = None) -> Tensor:
    """PyTorch's ``F.one_hot``: int64 (or ``dtype``) rows with a 1 at each label.  A label
    outside ``[0, num_classes)`` raises ``IndexError`` (under jit when the program runs, naming
    the line); ``num_classes=-1`` means ``max(labels) + 1``, a value jit cannot trace."""
    if not dt.is_int(labels.dtype):
        raise TypeError(f"one_hot: labels must be integers, got {labels.dtype}")
    if num_classes < 0:
        num_classes = int(A.max(labels)) + 1 if labels.size else 0
    if labels.size:
        labels = P.bind("label_check", labels, size=num_classes, ignore_index=None, op="one_hot")
    return _one_hot(labels, num_classes, dtype or dt.int64)


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """PyTorch's ``F.embedding``: the rows of ``weight`` at the integer ``input`` (a gather, its
    gradient a scatter-add); the ``padding_idx`` row's lookups pass no gradient to it."""
    idx = input if isinstance(input, Tensor) else A.asarray(input)
    if not dt.is_int(idx.dtype):
        raise TypeError(f"embedding: indices must be integers, got {idx.dtype.name}")
    rows = A.take(weight, A.reshape(idx, (-1,)), axis=0)
    out = A.reshape(rows, tuple(idx.shape) + tuple(weight.shape[1:]))
    if padding_idx is not None:
        if padding_idx < 0:
            padding_idx += weight.shape[0]
        keep = A.expand_dims(A.not_equal(idx, padding_idx), axis=-1)
        out = A.where(keep, out, _no_grad(out))
    return out


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


# the functional forms of the convolution, pooling and normalization layers live with them
from .conv import conv1d, conv2d, conv_transpose1d, conv_transpose2d  # noqa: E402
from .normalization import batch_norm, dropout2d, group_norm, interpolate, rms_norm  # noqa: E402
from .pooling import (  # noqa: E402
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    avg_pool1d,
    avg_pool2d,
    max_pool1d,
    max_pool2d,
)

__all__ += ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "batch_norm", "dropout2d",
            "group_norm", "interpolate", "rms_norm", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
            "avg_pool1d", "avg_pool2d", "max_pool1d", "max_pool2d"]
from .attention import scaled_dot_product_attention  # noqa: E402  (attention builds on the above)

__all__ += ["scaled_dot_product_attention"]
# the losses (nll_loss, cross_entropy, binary_cross_entropy, kl_div, ...) live in losses.py, which
# builds on the functions above; imported last so that it finds them defined
from .losses import *  # noqa: E402, F403
from .losses import __all__ as _losses_all  # noqa: E402

__all__ += _losses_all
