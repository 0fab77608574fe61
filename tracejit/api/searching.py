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
