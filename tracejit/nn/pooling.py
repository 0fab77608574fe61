"""Pooling: ``max_pool1d/2d``, ``avg_pool1d/2d``, ``adaptive_avg_pool1d/2d`` and their modules.

Pooling reads the same strided window views as convolution (``tracejit/nn/windows.py``): a max
pool is a chain of ``maximum`` over the window views and an average pool a chain of adds and
one scale, so under ``jit`` each is one elementwise kernel and its gradient one kernel too.  The
chain keeps PyTorch's tie rule: the gradient goes to the first maximum of a window (row-major).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import api as A
from .. import dtypes as dt
from .. import prims as P
from ..autograd import no_grad
from ..tensors import Tensor
from .modules import Module
from .windows import check_input, ntuple, pad_spatial, windows

__all__ = ["max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
           "adaptive_avg_pool2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d",
           "AdaptiveAvgPool2d"]


def _pool_geometry(x: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool,
                   nd: int, op: str) -> tuple[tuple[int, ...], ...]:
    """(kernel, stride, padding, dilation, out, extra high-side padding ceil mode needs)."""
    check_input(x, nd, op)
    kernel = ntuple(kernel_size, nd, "kernel_size", op, 1)
    stride = kernel if stride is None or (isinstance(stride, Sequence) and not stride) else \
        ntuple(stride, nd, "stride", op, 1)
    padding = ntuple(padding, nd, "padding", op)
    dilation = ntuple(dilation, nd, "dilation", op, 1)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel}")
    out, extra = [], []
    for n, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation):
        span = n + 2 * p - d * (k - 1) - 1
        m = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (m - 1) * s >= n + p:      # PyTorch: the last window starts inside the input
            m -= 1
        if m <= 0:
            raise ValueError(f"{op}: input spatial size {x.shape[2:]} (padding {padding}) is smaller than "
                             f"the dilated kernel {tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))}")
        out.append(m)
        extra.append(max(0, (m - 1) * s + d * (k - 1) + 1 - (n + 2 * p)))
    return kernel, stride, padding, dilation, tuple(out), tuple(extra)


def _max_pool(x: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool,
              return_indices: bool, nd: int, op: str) -> Tensor:
    if return_indices:
        raise NotImplementedError(f"{op}: return_indices=True is not supported")
    if isinstance(x, Tensor) and x.ndim == nd + 1:     # unbatched (C, *spatial)
        return A.squeeze(_max_pool(A.expand_dims(x, axis=0), kernel_size, stride, padding, dilation,
                                   ceil_mode, False, nd, op), axis=0)
    kernel, stride, padding, dilation, out, extra = _pool_geometry(x, kernel_size, stride, padding,
                                                                   dilation, ceil_mode, nd, op)
    if dt.is_bool(x.dtype):
        raise TypeError(f"{op}: needs a numeric input, got bool")
    fill = -math.inf if dt.is_float(x.dtype) else int(np.iinfo(x.dtype).min)
    xp = pad_spatial(x, [(p, p + e) for p, e in zip(padding, extra)], value=fill)
    if stride == kernel and all(d == 1 for d in dilation) and math.prod(kernel) > 1:
        return _max_pool_tiles(xp, kernel, out)
    views = windows(xp, kernel, stride, dilation, out)
    y = views[0]
    for v in views[1:]:
        y = P.max(y, v)      # ties: ge(y, v) keeps the earlier window's gradient, as PyTorch
    return y if len(views) > 1 else A.astype(y, y.dtype)


def _max_pool_tiles(xp: Tensor, kernel: tuple[int, ...], out: tuple[int, ...]) -> Tensor:
    """Max pool of windows that tile the input (stride = kernel): the input split into
    ``(..., out_i, k_i, ...)``, the position of each window's first maximum found over the window
    views (NaN counts as the maximum, as in PyTorch), and the result the sum over the window
    dims of the input masked to that position (``-0.0`` elsewhere, so the sum is exact).  The
    gradient is then one elementwise select over the input's own layout, instead of a sum of
    ``prod(kernel)`` pads."""
    nd = len(kernel)
    lead = xp.ndim - nd
    tiled = xp.shape[:lead] + tuple(m * k for m, k in zip(out, kernel))
    if tiled != xp.shape:      # floor mode: the rows and columns no window reaches
        xp = P.slice(xp, start=(0,) * xp.ndim, stop=tiled, step=(1,) * xp.ndim)
    split = xp.shape[:lead] + tuple(v for m, k in zip(out, kernel) for v in (m, k))
    xs = P.reshape(xp, shape=split)
    with no_grad():
        views = windows(xp.detach(), kernel, kernel, (1,) * nd, out)
        best, first = views[0], P.full(views[0].shape, 0, dt.int32)
        for j, v in enumerate(views[1:], 1):
            take = P.bind("or", P.gt(v, best), P.isnan(v))
            best = P.where(take, v, best)
            first = P.where(take, P.full(v.shape, j, dt.int32), first)
        window_dims = tuple(lead + 2 * i + 1 for i in range(nd))
        position = None          # each element's row-major index inside its window
        for i, ax in enumerate(window_dims):
            idx = P.iota(split, ax, dt.int32, like=xp)
            scale = math.prod(kernel[i + 1:])
            idx = P.mul(idx, P.full(split, scale, dt.int32)) if scale > 1 else idx
            position = idx if position is None else P.add(position, idx)
        first = P.broadcast_to(P.reshape(first, shape=tuple(1 if i in window_dims else n
                                                              for i, n in enumerate(split))), split)
        hit = P.eq(position, first)
    masked = P.where(hit, xs, P.full(split, -0.0 if dt.is_float(xs.dtype) else 0, xs.dtype))
    return P.reshape(P.reduce_sum(masked, axes=window_dims), shape=xp.shape[:lead] + tuple(out))


def _avg_divisor(shape: Sequence[int], kernel, stride, padding, out, count_include_pad: bool) -> np.ndarray:
    """PyTorch's divisor per output position: the window clipped to the padded input (or to the
    input itself without ``count_include_pad``), as an array over the output's spatial dims."""
    per_dim = []
    for n, k, s, p, m in zip(shape, kernel, stride, padding, out):
        start = np.arange(m) * s - p
        end = np.minimum(start + k, n + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        per_dim.append((end - start).astype(np.float64))
    div = per_dim[0]
    for d in per_dim[1:]:
        div = np.multiply.outer(div, d)
    return div


def _avg_pool(x: Tensor, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
              count_include_pad: bool, divisor_override: int | None, nd: int, op: str) -> Tensor:
    if isinstance(x, Tensor) and x.ndim == nd + 1:
        return A.squeeze(_avg_pool(A.expand_dims(x, axis=0), kernel_size, stride, padding, ceil_mode,
                                   count_include_pad, divisor_override, nd, op), axis=0)
    kernel, stride, padding, _, out, extra = _pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode,
                                                            nd, op)
    if not dt.is_float(x.dtype):
        raise TypeError(f"{op}: needs a floating-point input, got {x.dtype.name}")
    xp = pad_spatial(x, [(p, p + e) for p, e in zip(padding, extra)])
    views = windows(xp, kernel, stride, (1,) * nd, out)
    y = views[0]
    for v in views[1:]:
        y = P.add(y, v)
    if divisor_override is not None:
        if not isinstance(divisor_override, int) or divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be a non-zero int, got {divisor_override!r}")
        return y * (1.0 / divisor_override)
    div = _avg_divisor(x.shape[2:], kernel, stride, padding, out, count_include_pad)
    if np.all(div == div.flat[0]):
        return y * float(1.0 / div.flat[0])
    return y * P.placed_like(A.asarray((1.0 / div).astype(x.dtype)), x)


def _adaptive_matrix(n: int, m: int, dtype: np.dtype) -> np.ndarray:
    """``(m, n)`` averaging matrix of PyTorch's adaptive windows ``[floor(i*n/m), ceil((i+1)*n/m))``."""
    a = np.zeros((m, n), dtype=np.float64)
    for i in range(m):
        lo, hi = (i * n) // m, -(-((i + 1) * n) // m)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a.astype(dtype)


def _adaptive_avg_pool(x: Tensor, output_size: Any, nd: int, op: str) -> Tensor:
    if isinstance(x, Tensor) and x.ndim == nd + 1:
        return A.squeeze(_adaptive_avg_pool(A.expand_dims(x, axis=0), output_size, nd, op), axis=0)
    check_input(x, nd, op)
    if not dt.is_float(x.dtype):
        raise TypeError(f"{op}: needs a floating-point input, got {x.dtype.name}")
    sizes = (output_size,) * nd if isinstance(output_size, int) or output_size is None else tuple(output_size)
    if len(sizes) != nd:
        raise ValueError(f"{op}: output_size must be an int or {nd} ints (or None), got {output_size!r}")
    sizes = tuple(n if m is None else m for n, m in zip(x.shape[2:], sizes))
    if any(not isinstance(m, int) or m < 1 for m in sizes):
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
    if all(n % m == 0 for n, m in zip(x.shape[2:], sizes)):    # equal windows: an average pool
        k = tuple(n // m for n, m in zip(x.shape[2:], sizes))
        if all(m == 1 for m in sizes):
            return A.mean(x, axis=tuple(range(2, 2 + nd)), keepdims=True)
        return _avg_pool(x, k, k, 0, False, True, None, nd, op)
    y = x
    for i, (n, m) in enumerate(zip(x.shape[2:], sizes)):   # one averaging matrix per dim
        ax = 2 + i
        mat = P.placed_like(A.asarray(_adaptive_matrix(n, m, x.dtype)), x)
        moved = A.moveaxis(y, ax, -1)                                  # (..., n)
        pooled = A.sum(A.expand_dims(moved, axis=-2) * mat, axis=-1)  # (..., m)
        y = A.moveaxis(pooled, -1, ax)
    return y


def max_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    """Max over sliding windows of ``(N, C, L)`` (padding counts as ``-inf``)."""
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 1,
                     "max_pool1d")


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    """Max over sliding windows of ``(N, C, H, W)``; ``stride`` defaults to ``kernel_size``."""
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 2,
                     "max_pool2d")


def avg_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               ceil_mode: bool = False, count_include_pad: bool = True) -> Tensor:
    """Mean over sliding windows of ``(N, C, L)``."""
    return _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, None, 1, "avg_pool1d")


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,  # noqa: A002
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """Mean over sliding windows of ``(N, C, H, W)`` with PyTorch's divisors at the borders."""
    return _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, 2,
                     "avg_pool2d")


def adaptive_avg_pool1d(input: Tensor, output_size: Any) -> Tensor:  # noqa: A002
    """Average ``(N, C, L)`` down to ``output_size`` with PyTorch's adaptive windows."""
    return _adaptive_avg_pool(input, output_size, 1, "adaptive_avg_pool1d")


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:  # noqa: A002
    """Average ``(N, C, H, W)`` down to ``output_size`` (an int, a pair, ``None`` keeps a dim)."""
    return _adaptive_avg_pool(input, output_size, 2, "adaptive_avg_pool2d")


class _MaxPoolNd(Module):
    _fn: Any = None

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__()
        if return_indices:
            raise NotImplementedError(f"{type(self).__name__}: return_indices=True is not supported")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode

    def forward(self, x: Tensor) -> Tensor:
        return type(self)._fn(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, "
                f"padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """Max pooling over ``(N, C, L)``."""
    _fn = staticmethod(max_pool1d)


class MaxPool2d(_MaxPoolNd):
    """Max pooling over ``(N, C, H, W)``."""
    _fn = staticmethod(max_pool2d)


class AvgPool1d(Module):
    """Average pooling over ``(N, C, L)``."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad)


class AvgPool2d(Module):
    """Average pooling over ``(N, C, H, W)``."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool1d(Module):
    """Adaptive average pooling of ``(N, C, L)`` to ``output_size``."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        return adaptive_avg_pool1d(x, self.output_size)


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling of ``(N, C, H, W)`` to ``output_size``."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        return adaptive_avg_pool2d(x, self.output_size)
