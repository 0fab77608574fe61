"""Reductions: statistical and searching functions of the Array API."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import prims as P
from ..tensors import Tensor
from ..tracing import current_trace
from ._convert import as_tensor, normalize_axes, normalize_axis

Axis = int | Sequence[int] | None


def _finish(r: Tensor, x: Tensor, axes: tuple[int, ...], keepdims: bool) -> Tensor:
    if keepdims:
        return r
    return P.reshape(r, shape=tuple(n for i, n in enumerate(x.shape) if i not in axes))


def _reduce(prim: str, x: Tensor, axis: Axis, keepdims: bool, dtype: Any = None) -> Tensor:
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim, prim)
    if dtype is not None and dt.canonical(dtype) != x.dtype and axes and prim in _NUMPY_REDUCE \
            and not x.is_tracer and not x.requires_grad and x.device.type == "cpu" \
            and current_trace() is None:
        # NumPy casts while it reduces, in buffered chunks: a broadcast view of int8 summed in
        # int64 never becomes an int64 array of its full size
        with np.errstate(all="ignore"):
            r = _NUMPY_REDUCE[prim](x._value, axis=axes, dtype=dt.canonical(dtype), keepdims=True)
        return _finish(P.constant(r), x, axes, keepdims)
    if dtype is not None:
        x = P.cast(x, dt.canonical(dtype))
    if not axes:
        return x
    return _finish(P.bind(prim, x, axes=axes), x, axes, keepdims)


_NUMPY_REDUCE = {"reduce_sum": np.sum, "reduce_prod": np.prod}


def _sum_dtype(x: Tensor) -> Any:
    # the standard: sums of small ints accumulate in the default int (unsigned ones in the unsigned
    # int of its width); bool counts as int
    if dt.is_bool(x.dtype) or (x.dtype.kind == "i" and x.dtype.itemsize < 8):
        return dt.int64
    if x.dtype.kind == "u" and x.dtype.itemsize < 8:
        return dt.default_uint
    return None


def sum(x: Tensor, /, *, axis: Axis = None, dtype: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    x = as_tensor(x)
    return _reduce("reduce_sum", x, axis, keepdims, dtype or _sum_dtype(x))


def prod(x: Tensor, /, *, axis: Axis = None, dtype: Any = None, keepdims: bool = False) -> Tensor:
    x = as_tensor(x)
    return _reduce("reduce_prod", x, axis, keepdims, dtype or _sum_dtype(x))


def max(x: Tensor, /, *, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return _reduce("reduce_max", x, axis, keepdims)


def min(x: Tensor, /, *, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return _reduce("reduce_min", x, axis, keepdims)


def _accumulation_dtype(x: Tensor) -> Any:
    """float16 sums and counts overflow at 65,504: accumulate in float32, as NumPy does."""
    return dt.float32 if x.dtype == dt.float16 else x.dtype


def _count(like: Tensor, n: float) -> Tensor:
    """``n`` broadcast to ``like``: a run-time number, so kernels do not depend on the batch size."""
    c = P.size_constant(n, like.dtype)
    if not like.shape:
        return c
    return P.bind("expand", P.reshape(c, shape=(1,) * like.ndim), shape=like.shape)


def mean(x: Tensor, /, *, axis: Axis = None, keepdims: bool = False) -> Tensor:
    x = as_tensor(x)
    if not dt.is_inexact(x.dtype):
        raise TypeError(f"mean needs a floating-point dtype, got {x.dtype.name}")
    if _accumulation_dtype(x) != x.dtype:
        return P.cast(mean(P.cast(x, _accumulation_dtype(x)), axis=axis, keepdims=keepdims), x.dtype)
    axes = normalize_axes(axis, x.ndim, "mean")
    count = 1
    for a in axes:
        count *= x.shape[a]
    s = sum(x, axis=axes, keepdims=keepdims)
    # divide, not multiply by 1/count: the mean of n equal values must be that value
    return P.div(s, _count(s, count if count else float("nan")))


def var(x: Tensor, /, *, axis: Axis = None, correction: float = 0.0, keepdims: bool = False) -> Tensor:
    """Variance, as mean of squared deviations (two passes; fuses into row kernels)."""
    x = as_tensor(x)
    if dt.is_complex(x.dtype):
        raise TypeError(f"var needs a real-valued dtype, got {x.dtype.name}")
    if dt.is_float(x.dtype) and _accumulation_dtype(x) != x.dtype:
        return P.cast(var(P.cast(x, _accumulation_dtype(x)), axis=axis, correction=correction,
                          keepdims=keepdims), x.dtype)
    axes = normalize_axes(axis, x.ndim, "var")
    count = 1
    for a in axes:
        count *= x.shape[a]
    mu = mean(x, axis=axes, keepdims=True)
    d = P.sub(x, P.broadcast_to(mu, x.shape))
    ss = sum(P.mul(d, d), axis=axes, keepdims=keepdims)
    denom = count - correction
    return P.div(ss, _count(ss, denom if denom > 0 else float("nan")))


def std(x: Tensor, /, *, axis: Axis = None, correction: float = 0.0, keepdims: bool = False) -> Tensor:
    return P.sqrt(var(x, axis=axis, correction=correction, keepdims=keepdims))


def _arg(prim: str, x: Tensor, axis: int | None, keepdims: bool) -> Tensor:
    x = as_tensor(x)
    if axis is None:
        flat = P.reshape(x, shape=(x.size,)) if x.ndim != 1 else x
        r = P.bind(prim, flat, axes=(0,))
        return P.reshape(r, shape=(1,) * x.ndim if keepdims else ())
    ax = normalize_axis(axis, x.ndim, prim)
    return _finish(P.bind(prim, x, axes=(ax,)), x, (ax,), keepdims)


def argmax(x: Tensor, /, *, axis: int | None = None, keepdims: bool = False) -> Tensor:
    return _arg("argmax", x, axis, keepdims)


def argmin(x: Tensor, /, *, axis: int | None = None, keepdims: bool = False) -> Tensor:
    return _arg("argmin", x, axis, keepdims)


def all(x: Tensor, /, *, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """True where no element along ``axis`` is false (True for an empty reduction)."""
    x = as_tensor(x)
    normalize_axes(axis, x.ndim, "all")   # checked here so that errors name all(), not the sum
    false_count = sum(P.cast(P.logical_not(P.cast(x, dt.bool_)), dt.int64), axis=axis, keepdims=keepdims)
    return P.eq(false_count, P.zeros_like(false_count))


def any(x: Tensor, /, *, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """True where some element along ``axis`` is true (False for an empty reduction)."""
    x = as_tensor(x)
    normalize_axes(axis, x.ndim, "any")   # checked here so that errors name any(), not the sum
    true_count = sum(P.cast(P.cast(x, dt.bool_), dt.int64), axis=axis, keepdims=keepdims)
    return P.gt(true_count, P.zeros_like(true_count))


def _cumulative(prim: str, x: Tensor, axis: int | None, dtype: Any, include_initial: bool) -> Tensor:
    x = as_tensor(x)
    if x.ndim == 0:
        raise ValueError(f"{prim} needs at least a 1-D tensor, got a 0-d one")
    if axis is None:
        if x.ndim != 1:
            raise ValueError(f"{prim}: axis is required for a {x.ndim}-D tensor")
        axis = 0
    ax = normalize_axis(axis, x.ndim, prim)
    want = dt.canonical(dtype) if dtype is not None else _sum_dtype(x)
    if want is not None:
        x = P.cast(x, want)
    return P.bind(prim, x, axis=ax, include_initial=bool(include_initial))


def cumulative_sum(x: Tensor, /, *, axis: int | None = None, dtype: Any = None,
                   include_initial: bool = False) -> Tensor:
    """Running sums along ``axis`` (with a leading 0 when ``include_initial``)."""
    return _cumulative("cumulative_sum", x, axis, dtype, include_initial)


def cumulative_prod(x: Tensor, /, *, axis: int | None = None, dtype: Any = None,
                    include_initial: bool = False) -> Tensor:
    """Running products along ``axis`` (with a leading 1 when ``include_initial``)."""
    return _cumulative("cumulative_prod", x, axis, dtype, include_initial)


def diff(x: Tensor, /, *, axis: int = -1, n: int = 1, prepend: Tensor | None = None,
         append: Tensor | None = None) -> Tensor:
    """``n``-th forward difference along ``axis`` (two shifted slices and a subtraction)."""
    from .elementwise import subtract
    from .manipulation import _axis_slice, concat
    x = as_tensor(x)
    if x.ndim == 0:
        raise ValueError("diff needs at least a 1-D tensor")
    if n < 0:
        raise ValueError(f"diff: n must be non-negative, got {n}")
    ax = normalize_axis(axis, x.ndim, "diff")
    if prepend is not None or append is not None:
        parts = [as_tensor(p) for p in (prepend, x, append) if p is not None]
        x = concat(parts, axis=ax)
    for _ in range(n):
        m = x.shape[ax]
        if m == 0:
            break
        x = subtract(_axis_slice(x, ax, 1, m), _axis_slice(x, ax, 0, m - 1))
    return x
