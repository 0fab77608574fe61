"""Searching and sorting: sort/argsort, searchsorted, nonzero, count_nonzero.

``sort``, ``argsort`` and ``searchsorted`` are host primitives (NumPy between kernels under
``jit``); ``nonzero`` has a data-dependent shape and runs eagerly only.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import prims as P
from ..tensors import Tensor
from ._convert import as_tensor, eager_value, normalize_axis


def _sort_args(x: Any, axis: int, op: str) -> tuple[Tensor, int]:
    x = as_tensor(x)
    if x.ndim == 0:
        raise ValueError(f"{op} needs at least a 1-D tensor, got a 0-d one")
    return x, normalize_axis(axis, x.ndim, op)


def sort(x: Tensor, /, *, axis: int = -1, descending: bool = False, stable: bool = True) -> Tensor:
    """Sorted copy of ``x`` along ``axis`` (NaNs last ascending, first descending)."""
    x, ax = _sort_args(x, axis, "sort")
    return P.sort(x, axis=ax, descending=bool(descending), stable=bool(stable))


def argsort(x: Tensor, /, *, axis: int = -1, descending: bool = False, stable: bool = True) -> Tensor:
    """Indices (int64) that sort ``x`` along ``axis``; always stable."""
    x, ax = _sort_args(x, axis, "argsort")
    return P.argsort(x, axis=ax, descending=bool(descending), stable=bool(stable))


def searchsorted(x1: Tensor, x2: Tensor, /, *, side: str = "left", sorter: Tensor | None = None) -> Tensor:
    """Insertion points (int64) of ``x2`` into the sorted 1-D ``x1`` that keep it sorted."""
    a, v = as_tensor(x1), as_tensor(x2)
    if sorter is not None:
        from .indexing import take
        a = take(a, as_tensor(sorter), axis=0)
    dtype = dt.promote_types(a.dtype, v.dtype)
    return P.searchsorted(P.cast(a, dtype), P.cast(v, dtype), side=side)


def count_nonzero(x: Tensor, /, *, axis: int | tuple[int, ...] | None = None,
                  keepdims: bool = False) -> Tensor:
    """Number (int64) of non-zero elements along ``axis``."""
    from .statistical import sum
    x = as_tensor(x)
    nz = P.ne(x, P.zeros_like(x))
    return sum(P.cast(nz, dt.int64), axis=axis, keepdims=keepdims)


def nonzero(x: Tensor, /) -> tuple[Tensor, ...]:
    """Indices of the non-zero elements, one int64 tensor per dim (eager only)."""
    x = as_tensor(x)
    if x.ndim == 0:
        raise ValueError("nonzero needs at least a 1-D tensor; use reshape(x, (1,)) on a 0-d one")
    value = eager_value(x, "nonzero", "use tracejit.where(cond, x, y) to select without changing shape")
    return tuple(P.placed_like(P.constant(np.ascontiguousarray(i, dtype=np.int64)), x)
                 for i in np.nonzero(value))


def take_along_last(x: Tensor, idx: Tensor) -> Tensor:
    """``x[..., idx[..., j]]`` row by row (NumPy's ``take_along_axis`` on the last axis), as one
    ``take`` on the flattened tensor, so it has a gradient and runs under jit."""
    n, k = x.shape[-1], idx.shape[-1]
    rows = 1
    for s in idx.shape[:-1]:
        rows *= s
    flat = P.reshape(idx, shape=(rows, k))
    flat = P.add(flat, P.mul(P.iota((rows, k), 0, dt.int64, flat), P.full((rows, k), n, dt.int64)))
    out = P.take(P.reshape(x, shape=(x.size,)), P.reshape(flat, shape=(rows * k,)), axis=0)
    return P.reshape(out, shape=idx.shape)


def topk(x: Tensor, k: int, /, *, axis: int = -1, largest: bool = True) -> tuple[Tensor, Tensor]:
    """The ``k`` largest (or smallest) values along ``axis``, sorted, and their int64 indices.

    Ties keep the lower index first; NaN counts as the largest value (as in PyTorch).
    """
    from .manipulation import moveaxis
    x, ax = _sort_args(x, axis, "topk")
    n = x.shape[ax]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ValueError(f"topk: k must be an int in [0, {n}] for axis {axis} of shape {x.shape}, got {k!r}")
    last = moveaxis(x, ax, -1) if ax != x.ndim - 1 else x
    order = P.argsort(last, axis=x.ndim - 1, descending=bool(largest), stable=True)
    idx = P.slice(order, start=(0,) * x.ndim, stop=order.shape[:-1] + (int(k),), step=(1,) * x.ndim)
    values = take_along_last(last, idx)
    if ax != x.ndim - 1:
        values, idx = moveaxis(values, -1, ax), moveaxis(idx, -1, ax)
    return values, idx
