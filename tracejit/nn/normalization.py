"""Normalization layers: ``batch_norm``, ``group_norm``, ``rms_norm``, ``dropout2d``, ``interpolate``
(nearest) and the modules ``BatchNorm1d/2d``, ``GroupNorm``, ``RMSNorm``, ``Dropout2d``, ``Upsample``.

All are compositions of reductions and elementwise ops, so under ``jit`` a normalization is a
statistics kernel and one elementwise kernel that also takes the neighbouring bias adds and
activations.  A batch norm's running statistics are buffers updated in place (``_assign``
under ``no_grad``), which a jitted step writes back into the module's tensors; ``model.eval()``
changes the module's ``training`` flag, which every trace that used the module is guarded on,
so a cached step re-traces (or picks its eval trace) instead of updating statistics in eval.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import api as A
from .. import dtypes as dt
from .. import prims as P
from .. import random as R
from ..autograd import no_grad
from ..tensors import Tensor
from . import init
from .modules import Module, _param

__all__ = ["batch_norm", "group_norm", "rms_norm", "dropout2d", "interpolate", "BatchNorm1d", "BatchNorm2d",
           "GroupNorm", "RMSNorm", "Dropout2d", "Upsample", "UpsamplingNearest2d"]


def _float_input(x: Any, op: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")
    if not dt.is_float(x.dtype):
        raise TypeError(f"{op}: needs a floating-point input, got {x.dtype.name}")
    return x


def _per_channel(t: Tensor, ndim: int) -> Tensor:
    """A (C,) tensor shaped to broadcast over (N, C, *spatial)."""
    return A.reshape(t, (1, t.shape[0]) + (1,) * (ndim - 2))


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,  # noqa: A002
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalize each channel of ``(N, C, *)`` by its batch statistics (``training``) or by the
    running ones; in training the running statistics are updated in place with PyTorch's rule
    ``r = (1 - momentum) * r + momentum * s`` (unbiased variance)."""
    x = _float_input(input, "batch_norm")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: input must be (N, C, ...), got shape {x.shape}")
    c = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"batch_norm: {name} must have shape ({c},) for input {x.shape}, got {t.shape}")
    axes = (0,) + tuple(range(2, x.ndim))
    if training:
        count = x.size // c
        if count <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got "
                             f"input shape {x.shape}")
        mean = A.mean(x, axis=axes, keepdims=True)
        d = x - mean
        var = A.mean(d * d, axis=axes, keepdims=True)
        if running_mean is not None or running_var is not None:
            with no_grad():
                m = momentum
                if running_mean is not None:
                    new = A.reshape(mean.detach(), (c,))
                    running_mean._assign(A.astype(running_mean * (1.0 - m) + new * m, running_mean.dtype))
                if running_var is not None:
                    unbiased = A.reshape(var.detach(), (c,)) * (count / (count - 1))
                    running_var._assign(A.astype(running_var * (1.0 - m) + unbiased * m, running_var.dtype))
        y = d * A.rsqrt(var + eps)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are needed when not training")
        scale = A.rsqrt(_per_channel(running_var, x.ndim) + eps)
        y = (x - _per_channel(running_mean, x.ndim)) * scale
    if weight is not None:
        y = y * _per_channel(weight, x.ndim)
    if bias is not None:
        y = y + _per_channel(bias, x.ndim)
    return y


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None,  # noqa: A002
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize ``(N, C, *)`` over each group of ``C / num_groups`` channels and the spatial dims."""
    x = _float_input(input, "group_norm")
    if x.ndim < 2:
        raise ValueError(f"group_norm: input must be (N, C, ...), got shape {x.shape}")
    n, c = x.shape[:2]
    if not isinstance(num_groups, int) or num_groups < 1 or c % num_groups:
        raise ValueError(f"group_norm: {c} channels are not divisible into num_groups={num_groups}")
    g = A.reshape(x, (n, num_groups, -1))
    mean = A.mean(g, axis=-1, keepdims=True)
    d = g - mean
    var = A.mean(d * d, axis=-1, keepdims=True)
    y = A.reshape(d * A.rsqrt(var + eps), x.shape)
    if weight is not None:
        y = y * _per_channel(weight, x.ndim)
    if bias is not None:
        y = y + _per_channel(bias, x.ndim)
    return y


def rms_norm(input: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,  # noqa: A002
             eps: float | None = None) -> Tensor:
    """``x / sqrt(mean(x**2) + eps) * weight`` over the trailing ``normalized_shape`` dims;
    ``eps`` defaults to the dtype's machine epsilon (as PyTorch's)."""
    x = _float_input(input, "rms_norm")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if len(shape) > x.ndim or tuple(x.shape[x.ndim - len(shape):]) != shape:
        raise ValueError(f"rms_norm: normalized_shape {shape} does not match the trailing dims of input "
                         f"shape {x.shape}")
    eps = float(np.finfo(x.dtype).eps) if eps is None else eps
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    y = x * A.rsqrt(A.mean(x * x, axis=axes, keepdims=True) + eps)
    return y if weight is None else y * weight


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True,  # noqa: A002
              generator: R.Generator | None = None) -> Tensor:
    """Zero whole channels of ``(N, C, *)`` with probability ``p`` (scaling the rest by
    ``1 / (1 - p)``) while ``training``."""
    x = _float_input(input, "dropout2d")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout2d: probability must be in [0, 1], got {p}")
    if x.ndim < 2:
        raise ValueError(f"dropout2d: input must be (N, C, ...), got shape {x.shape}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    mask_shape = x.shape[:2] + (1,) * (x.ndim - 2)
    keep = P.placed_like(R.uniform((generator or R.default_generator).next_key(), mask_shape, dt.float32), x)
    scale = P.where(P.ge(keep, P.full(mask_shape, p, dt.float32)),
                    P.full(mask_shape, 1.0 / (1.0 - p), x.dtype), P.full(mask_shape, 0.0, x.dtype))
    return x * scale


def _nearest_sizes(x: Tensor, size: Any,
                   scale_factor: Any) -> tuple[tuple[int, ...], tuple[float, ...] | None]:
    nd = x.ndim - 2
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        out = (size,) * nd if isinstance(size, int) else tuple(size)
        if len(out) != nd or any(not isinstance(m, int) or m < 1 for m in out):
            raise ValueError(f"interpolate: size must be {nd} positive ints for input {x.shape}, "
                             f"got {size!r}")
        return out, None
    scales = (scale_factor,) * nd if isinstance(scale_factor, (int, float)) else tuple(scale_factor)
    if len(scales) != nd or any(s <= 0 for s in scales):
        raise ValueError(f"interpolate: scale_factor must be {nd} positive numbers, got {scale_factor!r}")
    return tuple(int(math.floor(n * s)) for n, s in zip(x.shape[2:], scales)), tuple(float(s) for s in scales)


def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",  # noqa: A002
                align_corners: bool | None = None) -> Tensor:
    """Resize the spatial dims of ``(N, C, *)``; ``mode='nearest'`` (PyTorch's: source index
    ``floor(i * in / out)``, or ``floor(i / scale_factor)`` when a scale factor is given)."""
    if mode != "nearest":
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported (only 'nearest')")
    if align_corners is not None:
        raise ValueError("interpolate: align_corners only applies to the linear modes")
    if not isinstance(input, Tensor):
        raise TypeError(f"interpolate: input must be a Tensor, got {type(input).__name__}")
    x = input
    if x.ndim < 3:
        raise ValueError(f"interpolate: input must be (N, C, *spatial), got shape {x.shape}")
    out, scales = _nearest_sizes(x, size, scale_factor)
    for i, m in enumerate(out):
        ax, n = 2 + i, x.shape[2 + i]
        if m == n and (scales is None or scales[i] == 1.0):
            continue
        if m % n == 0 and (scales is None or scales[i] == m // n):   # integer factor: a broadcast
            r = m // n
            x = A.reshape(x, x.shape[:ax + 1] + (1,) + x.shape[ax + 1:])
            x = A.broadcast_to(x, x.shape[:ax + 1] + (r,) + x.shape[ax + 2:])
            x = A.reshape(x, x.shape[:ax] + (m,) + x.shape[ax + 2:])
            continue
        ratio = (1.0 / scales[i]) if scales is not None else n / m
        src = np.minimum(np.floor(np.arange(m) * np.float32(ratio)).astype(np.int64), n - 1)
        x = A.take(x, P.placed_like(A.asarray(src), x), axis=ax)
    return x if x is not input else A.astype(x, x.dtype)


class _BatchNorm(Module):
    _dims: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, dtype: Any = None) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = init.ones_(_param((num_features,), dtype))
            self.bias = _param((num_features,), dtype)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", A.zeros(num_features, dtype=dtype or dt.default_float))
            self.register_buffer("running_var", A.ones(num_features, dtype=dtype or dt.default_float))
            self.register_buffer("num_batches_tracked", A.zeros((), dtype=dt.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            with no_grad():
                self.running_mean._assign(A.zeros_like(self.running_mean))
                self.running_var._assign(A.ones_like(self.running_var))
                self.num_batches_tracked._assign(A.zeros_like(self.num_batches_tracked))

    def forward(self, x: Tensor) -> Tensor:
        name = type(self).__name__
        if not isinstance(x, Tensor) or x.ndim not in self._dims:
            dims = " or ".join(f"{d}-D" for d in self._dims)
            raise ValueError(f"{name}: expected {dims} input, got "
                             f"{x.shape if isinstance(x, Tensor) else type(x).__name__}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{name}: expected {self.num_features} channels (dim 1), got input shape "
                             f"{x.shape}")
        use_batch = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            with no_grad():
                self.num_batches_tracked._assign(self.num_batches_tracked + 1)
            if self.momentum is None:     # cumulative moving average: 1 / batches seen
                momentum = 1.0 / A.astype(self.num_batches_tracked, dt.float32)
        # without tracked statistics the buffers are None: batch statistics, nothing updated
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_batch, momentum,
                          self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of ``(N, C)`` or ``(N, C, L)`` per channel (buffers ``running_mean``,
    ``running_var``, ``num_batches_tracked``; parameters ``weight``, ``bias``)."""
    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization of ``(N, C, H, W)`` per channel (PyTorch's parameters and buffers)."""
    _dims = (4,)


class GroupNorm(Module):
    """Group normalization of ``(N, C, *)``; per-channel ``weight``/``bias`` (ones/zeros init)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 dtype: Any = None) -> None:
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        if affine:
            self.weight = init.ones_(_param((num_channels,), dtype))
            self.bias = _param((num_channels,), dtype)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class RMSNorm(Module):
    """Root-mean-square normalization over the trailing ``normalized_shape`` dims (``weight`` ones)."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float | None = None,
                 elementwise_affine: bool = True, dtype: Any = None) -> None:
        super().__init__()
        self.normalized_shape = ((normalized_shape,) if isinstance(normalized_shape, int)
                                 else tuple(normalized_shape))
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = init.ones_(_param(self.normalized_shape, dtype))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Dropout2d(Module):
    """Zero whole channels with probability ``p`` in training."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout2d: probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout2d(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Upsample(Module):
    """Resize by ``size`` or ``scale_factor`` (``mode='nearest'``)."""

    def __init__(self, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                 align_corners: bool | None = None) -> None:
        super().__init__()
        if mode != "nearest":
            raise NotImplementedError(f"Upsample: mode {mode!r} is not supported (only 'nearest')")
        self.size, self.scale_factor, self.mode, self.align_corners = size, scale_factor, mode, align_corners

    def forward(self, x: Tensor) -> Tensor:
        return interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self) -> str:
        return f"size={self.size}, scale_factor={self.scale_factor}, mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    """``Upsample(mode='nearest')`` for ``(N, C, H, W)``."""

    def __init__(self, size: Any = None, scale_factor: Any = None) -> None:
        super().__init__(size, scale_factor, "nearest")
