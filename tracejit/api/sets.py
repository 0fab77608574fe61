"""Set functions of the Array API (``unique_*``): data-dependent shapes, so eager only.

As the standard asks, NaNs are all distinct (each NaN is its own unique value).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import prims as P
from ..tensors import Tensor
from ._convert import as_tensor, eager_value

_WAY_OUT = "compute the unique values before calling the jitted function and pass them in"


class UniqueAllResult(NamedTuple):
    values: Tensor
    indices: Tensor
    inverse_indices: Tensor
    counts: Tensor


class UniqueCountsResult(NamedTuple):
    values: Tensor
    counts: Tensor


class UniqueInverseResult(NamedTuple):
    values: Tensor
    inverse_indices: Tensor


def _unique(x: Any, op: str) -> tuple[np.ndarray, ...]:
    """(values, first indices, inverse indices shaped like x, counts) in NumPy."""
    a = eager_value(as_tensor(x), op, _WAY_OUT)
    values, index, inverse, counts = np.unique(a.reshape(-1), return_index=True, return_inverse=True,
                                               return_counts=True, equal_nan=False)
    return values, index.astype(np.int64), inverse.reshape(a.shape).astype(np.int64), counts.astype(np.int64)


def _t(a: np.ndarray, like: Tensor) -> Tensor:
    """A result array as a tensor on the device of the input ``like``."""
    # (np.ascontiguousarray makes a 0-d array 1-d: the inverse indices of a 0-d x are 0-d)
    return P.placed_like(P.constant(a if a.flags.c_contiguous else np.ascontiguousarray(a)), like)


def unique_values(x: Tensor, /) -> Tensor:
    """The sorted unique elements of ``x`` (flattened)."""
    x = as_tensor(x)
    return _t(_unique(x, "unique_values")[0], x)


def unique_counts(x: Tensor, /) -> UniqueCountsResult:
    """Unique elements and how often each occurs."""
    x = as_tensor(x)
    v, _, _, c = _unique(x, "unique_counts")
    return UniqueCountsResult(_t(v, x), _t(c, x))


def unique_inverse(x: Tensor, /) -> UniqueInverseResult:
    """Unique elements and, for each element of ``x``, the index of its value among them."""
    x = as_tensor(x)
    v, _, inv, _ = _unique(x, "unique_inverse")
    return UniqueInverseResult(_t(v, x), _t(inv, x))


def unique_all(x: Tensor, /) -> UniqueAllResult:
    """Unique elements, first occurrence indices, inverse indices (shaped like ``x``) and counts."""
    x = as_tensor(x)
    v, idx, inv, c = _unique(x, "unique_all")
    return UniqueAllResult(_t(v, x), _t(idx, x), _t(inv, x), _t(c, x))
