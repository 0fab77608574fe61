"""The PyTorch functions with no standard counterpart of the same shape (``chunk``, ``gather``,
``diag``, ``x.sort(dim)`` returning values and indices, ...), each a few calls of the standard
functions; :mod:`.torch_names` puts them in its one table of aliases."""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import dtypes as dt
from .. import prims as P
from ..tensors import Tensor
from . import creation, elementwise, indexing, linalg, linalg_ext, manipulation, searching, statistical
from ._convert import as_tensor


class ValuesIndices(NamedTuple):
    """What ``x.max(dim=d)``, ``x.sort(dim)`` and ``torch.topk`` return in PyTorch."""
    values: Tensor
    indices: Tensor


def _dim(x: Tensor, dim: int, what: str) -> int:
    nd = max(x.ndim, 1)
    if not -nd <= dim < nd:
        raise IndexError(f"{what}: dimension {dim} out of range for a {x.ndim}-D tensor")
    return dim % nd


def _along(x: Tensor, dim: int, start: int, stop: int) -> Tensor:
    key = (slice(None),) * dim + (slice(start, stop),)
    return x[key]


def narrow(x: Tensor, dim: int, start: int, length: int) -> Tensor:
    """``length`` elements of ``x`` along ``dim`` from ``start`` (a view, as slicing is)."""
    d = _dim(x, dim, "narrow")
    n = x.shape[d]
    start = start + n if start < 0 else start
    if not (0 <= start <= n and 0 <= length <= n - start):
        raise IndexError(f"narrow: start {start} and length {length} do not fit a dimension of size {n}")
    return _along(x, d, start, start + length)


def split(x: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces of ``split_size`` along ``dim`` (the last one smaller), or pieces of the given sizes."""
    d = _dim(x, dim, "split")
    n = x.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0:
            raise ValueError(f"split: split_size must be positive, got {step}")
        sizes = [min(step, n - s) for s in range(0, n, step)] or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise ValueError(f"split: sections {sizes} do not add up to the dimension's size {n}")
    bounds = [0, *itertools.accumulate(sizes)]
    return tuple(_along(x, d, a, b) for a, b in zip(bounds, bounds[1:]))



def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """At most ``chunks`` pieces along ``dim``, each of ``ceil(size / chunks)`` but the last."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    n = x.shape[_dim(x, dim, "chunk")]
    return split(x, max(math.ceil(n / chunks), 1), dim)


def unbind(x: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    """The slices of ``x`` along ``dim``, that dimension removed (``unstack``)."""
    return manipulation.unstack(x, axis=dim)


def index_select(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """``x``'s entries at the 1-D integer ``index`` along ``dim`` (``take``)."""
    index = as_tensor(index)
    if index.ndim > 1:
        raise ValueError(f"index_select: index must be 0-D or 1-D, got {index.ndim}-D")
    return indexing.take(x, manipulation.reshape(index, (-1,)), axis=dim)


def gather(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """``out[i][j] = x[i][index[i][j]]`` for ``dim=1`` (NumPy's ``take_along_axis``): ``index``
    has ``x``'s rank and, away from ``dim``, sizes no larger than ``x``'s."""
    index = as_tensor(index)
    d = _dim(x, dim, "gather")
    if index.ndim != x.ndim:
        raise ValueError(f"gather: index has {index.ndim} dimensions, the tensor {x.ndim}")
    if any(i != d and m > n for i, (m, n) in enumerate(zip(index.shape, x.shape))):
        raise ValueError(f"gather: index shape {index.shape} exceeds the tensor's {x.shape} "
                         f"away from dimension {d}")
    if not dt.is_int(index.dtype):
        raise TypeError(f"gather: index must be integers, got {index.dtype.name}")
    src = x[tuple(slice(0, m) if i != d else slice(None) for i, m in enumerate(index.shape))]
    moved = manipulation.moveaxis(src, d, -1)
    out = searching.take_along_last(moved, manipulation.moveaxis(index, d, -1))
    return manipulation.moveaxis(out, -1, d)


def index_add(x: Tensor, dim: int, index: Tensor, source: Tensor, *, alpha: Any = 1) -> Tensor:
    """``x`` with ``alpha * source[i]`` added at position ``index[i]`` along ``dim`` (repeated
    indices add up): a ``scatter_add``, a generated kernel on the CPU."""
    index, source = as_tensor(index), as_tensor(source)
    d = _dim(x, dim, "index_add")
    if index.ndim > 1 or not dt.is_int(index.dtype):
        raise ValueError(f"index_add: index must be a 0-D or 1-D integer tensor, got {index.dtype.name}"
                         f"[{', '.join(map(str, index.shape))}]")
    index = manipulation.reshape(index, (-1,))
    want = x.shape[:d] + (index.shape[0],) + x.shape[d + 1:]
    if tuple(source.shape) != tuple(want):
        raise ValueError(f"index_add: source shape {tuple(source.shape)} must be {tuple(want)} "
                         f"(the tensor's, with dimension {d} the index's length)")
    if source.dtype != x.dtype:
        raise TypeError(f"index_add: source dtype {source.dtype.name} differs from the tensor's "
                        f"{x.dtype.name}")
    if not (isinstance(alpha, (int, float)) and alpha == 1):
        source = source * alpha
    return P.scatter_add(x, index, source, axis=d)


def masked_fill(x: Tensor, mask: Tensor, value: Any) -> Tensor:
    """``value`` where ``mask`` is true, ``x`` elsewhere, in ``x``'s dtype."""
    mask = as_tensor(mask)
    if not dt.is_bool(mask.dtype):
        raise TypeError(f"masked_fill: mask must be bool, got {mask.dtype.name}")
    fill = creation.asarray(value, dtype=x.dtype, device=x.device) if not isinstance(value, Tensor) \
        else manipulation.astype(value, x.dtype)
    if fill.ndim:
        raise ValueError(f"masked_fill: value must be a number or a 0-D tensor, got shape {fill.shape}")
    out = elementwise.where(mask, fill, x)
    if out.shape != x.shape:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to {x.shape}")
    return out


def t(x: Tensor) -> Tensor:
    """The transpose of a tensor of at most 2 dimensions."""
    if x.ndim > 2:
        raise ValueError(f"t() expects a tensor with at most 2 dimensions, got {x.ndim}; use transpose or mT")
    return manipulation.permute_dims(x, tuple(reversed(range(x.ndim))))


def view_as(x: Tensor, other: Tensor) -> Tensor:
    return manipulation.reshape(x, tuple(other.shape))


def expand_as(x: Tensor, other: Tensor) -> Tensor:
    return manipulation.broadcast_to(x, tuple(other.shape))


def sort(x: Tensor, dim: int = -1, descending: bool = False, stable: bool = True) -> ValuesIndices:
    """PyTorch's ``x.sort(dim)``: (values, indices), stable (``stable`` is accepted for torch's signature)."""
    return ValuesIndices(searching.sort(x, axis=dim, descending=descending),
                         searching.argsort(x, axis=dim, descending=descending))


def argsort(x: Tensor, dim: int = -1, descending: bool = False, stable: bool = True) -> Tensor:
    """PyTorch's ``x.argsort(dim)`` (always stable)."""
    return searching.argsort(x, axis=dim, descending=descending)


def roll(x: Tensor, shifts: int | Sequence[int], dims: int | Sequence[int] | None = None) -> Tensor:
    return manipulation.roll(x, shifts, axis=dims)


def repeat_interleave(x: Tensor, repeats: int | Tensor, dim: int | None = None) -> Tensor:
    """Each element repeated ``repeats`` times along ``dim`` (the standard's ``repeat``)."""
    return manipulation.repeat(x, repeats, axis=dim)


def cumprod(x: Tensor, dim: int, *, dtype: Any = None) -> Tensor:
    return statistical.cumulative_prod(x, axis=dim, dtype=dtype)


def diagonal(x: Tensor, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """The diagonal of the ``dim1``/``dim2`` planes, as the last dimension."""
    a, b = _dim(x, dim1, "diagonal"), _dim(x, dim2, "diagonal")
    if a == b:
        raise ValueError("diagonal: dim1 and dim2 must differ")
    rest = [i for i in range(x.ndim) if i not in (a, b)]
    return linalg_ext.diagonal(manipulation.permute_dims(x, (*rest, a, b)), offset=offset)


def diag(x: Tensor, diagonal: int = 0) -> Tensor:
    """A 1-D tensor's square matrix with it on diagonal ``diagonal``, or a 2-D tensor's diagonal."""
    if x.ndim == 2:
        return linalg_ext.diagonal(x, offset=diagonal)
    if x.ndim != 1:
        raise ValueError(f"diag expects a 1-D or 2-D tensor, got {x.ndim}-D")
    k, n = diagonal, x.shape[0] + abs(diagonal)
    padded = manipulation.pad(x, (0, abs(k))) if k else x
    # row i holds x[i] (k >= 0) or column j holds x[j] (k < 0): the value broadcast along the
    # other axis, kept only on the diagonal
    lane = manipulation.reshape(padded, (n, 1) if k >= 0 else (1, n))
    on_diagonal = creation.eye(n, k=k, dtype=dt.bool_, device=x.device)
    return elementwise.where(on_diagonal, lane, creation.zeros((), dtype=x.dtype, device=x.device))


def trace(x: Tensor) -> Tensor:
    if x.ndim != 2:
        raise ValueError(f"trace expects a 2-D tensor, got {x.ndim}-D")
    return statistical.sum(linalg_ext.diagonal(x))


def _new(fill: Any) -> Any:
    def create(x: Tensor, *size: Any, dtype: Any = None, device: Any = None) -> Tensor:
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
        return creation.full(shape, fill, dtype=dtype or x.dtype, device=device or x.device)
    create.__doc__ = f"A new tensor of ``size`` filled with {fill}, ``x``'s dtype and device."
    return create


new_zeros, new_ones = _new(0), _new(1)


def new_full(x: Tensor, size: Sequence[int], fill_value: Any, *, dtype: Any = None,
             device: Any = None) -> Tensor:
    return creation.full(tuple(size), fill_value, dtype=dtype or x.dtype, device=device or x.device)


def _matrices(a: Tensor, b: Tensor, ndim: int, what: str) -> None:
    if a.ndim != ndim or b.ndim != ndim:
        raise ValueError(f"{what} expects two {ndim}-D tensors, got {a.ndim}-D and {b.ndim}-D")


def mm(a: Tensor, b: Tensor) -> Tensor:
    """The product of two matrices (no broadcasting)."""
    _matrices(a, b, 2, "mm")
    return linalg.matmul(a, b)


def bmm(a: Tensor, b: Tensor) -> Tensor:
    """Batched product of two 3-D tensors with the same batch size."""
    _matrices(a, b, 3, "bmm")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"bmm: batch sizes differ ({a.shape[0]} and {b.shape[0]})")
    return linalg.matmul(a, b)


def addmm(input: Tensor, m1: Tensor, m2: Tensor, *, beta: Any = 1, alpha: Any = 1) -> Tensor:  # noqa: A002
    """``beta * input + alpha * (m1 @ m2)``."""
    prod = mm(m1, m2)
    prod = prod if alpha == 1 else elementwise.multiply(prod, alpha)
    return elementwise.add(input if beta == 1 else elementwise.multiply(input, beta), prod)


def lerp(start: Tensor, end: Tensor, weight: Any) -> Tensor:
    """``start + weight * (end - start)``."""
    return elementwise.add(start, elementwise.multiply(weight, elementwise.subtract(end, start)))


def div(x: Tensor, other: Any, *, rounding_mode: str | None = None) -> Tensor:
    """True division, or rounded toward zero (``"trunc"``) or down (``"floor"``)."""
    if rounding_mode is None:
        return elementwise.divide(x, other)
    if rounding_mode == "floor":
        return elementwise.floor_divide(x, other)
    if rounding_mode == "trunc":
        x, other = as_tensor(x), as_tensor(other) if isinstance(other, Tensor) else other
        q = elementwise.divide(x, other)
        if dt.is_float(q.dtype) and (dt.is_float(x.dtype) or isinstance(other, float) or
                                     (isinstance(other, Tensor) and dt.is_float(other.dtype))):
            return elementwise.trunc(q)
        # integers: floor division, moved up by one where the signs differ and it was inexact
        down = elementwise.floor_divide(x, other)
        inexact = elementwise.not_equal(elementwise.remainder(x, other), 0)
        signs_differ = elementwise.not_equal(elementwise.less(x, 0), elementwise.less(other, 0))
        up = elementwise.logical_and(inexact, signs_differ)
        return elementwise.add(down, manipulation.astype(up, down.dtype))
    raise ValueError(f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}")


def add(x: Tensor, other: Any, *, alpha: Any = 1) -> Tensor:
    return elementwise.add(x, other if alpha == 1 else elementwise.multiply(other, alpha))


def sub(x: Tensor, other: Any, *, alpha: Any = 1) -> Tensor:
    return elementwise.subtract(x, other if alpha == 1 else elementwise.multiply(other, alpha))


def is_tensor(obj: Any) -> bool:
    return isinstance(obj, Tensor)


def from_numpy(a: Any) -> Tensor:
    """A tensor sharing a NumPy array's memory (``asarray``), as ``torch.from_numpy``."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(a).__name__}")
    return creation.asarray(a)
