"""Linear algebra: matmul (its own kernel kind), tensordot, vecdot."""
from __future__ import annotations

from collections.abc import Sequence

from .. import dtypes as dt
from .. import prims as P
from ..tensors import Tensor
from ._convert import as_tensor, broadcast_shapes_for, normalize_axis


def matmul(x1: Tensor, x2: Tensor, /) -> Tensor:
    """Matrix product with NumPy's rules for 1-D operands and broadcast batch dims."""
    a, b = as_tensor(x1), as_tensor(x2)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
    dtype = dt.promote_types(a.dtype, b.dtype)
    a, b = P.cast(a, dtype), P.cast(b, dtype)
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = P.reshape(a, shape=(1,) + a.shape)
    if squeeze_b:
        b = P.reshape(b, shape=b.shape + (1,))
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: shapes {x1.shape} and {x2.shape} are not aligned "
                         f"({a.shape[-1]} != {b.shape[-2]})")
    batch = broadcast_shapes_for("matmul", a.shape[:-2], b.shape[:-2])
    a = P.broadcast_to(a, batch + a.shape[-2:])
    b = P.broadcast_to(b, batch + b.shape[-2:])
    out = P.matmul(a, b)
    shape = batch + (() if squeeze_a else out.shape[-2:-1]) + (() if squeeze_b else out.shape[-1:])
    return out if shape == out.shape else P.reshape(out, shape=shape)


def tensordot(x1: Tensor, x2: Tensor, /, *, axes: int | tuple[Sequence[int], Sequence[int]] = 2) -> Tensor:
    """Sum over the given axes of ``x1`` and ``x2`` (as a permute + reshape + matmul)."""
    from .manipulation import permute_dims, reshape
    a, b = as_tensor(x1), as_tensor(x2)
    if isinstance(axes, int):
        if axes < 0:
            raise ValueError(f"tensordot: axes must be non-negative, got {axes}")
        ax_a, ax_b = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        ax_a = [normalize_axis(i, a.ndim, "tensordot") for i in axes[0]]
        ax_b = [normalize_axis(i, b.ndim, "tensordot") for i in axes[1]]
    for i, j in zip(ax_a, ax_b):
        if a.shape[i] != b.shape[j]:
            raise ValueError(f"tensordot: axis {i} of {a.shape} and axis {j} of {b.shape} differ")
    free_a = [i for i in range(a.ndim) if i not in ax_a]
    free_b = [i for i in range(b.ndim) if i not in ax_b]
    k = 1
    for i in ax_a:
        k *= a.shape[i]
    m = 1
    for i in free_a:
        m *= a.shape[i]
    n = 1
    for i in free_b:
        n *= b.shape[i]
    am = reshape(permute_dims(a, free_a + ax_a), (m, k))
    bm = reshape(permute_dims(b, ax_b + free_b), (k, n))
    return reshape(matmul(am, bm), tuple(a.shape[i] for i in free_a) + tuple(b.shape[i] for i in free_b))


def vecdot(x1: Tensor, x2: Tensor, /, *, axis: int = -1) -> Tensor:
    """Dot product along ``axis`` with broadcasting."""
    from .elementwise import multiply
    from .statistical import sum
    a, b = as_tensor(x1), as_tensor(x2)
    nd = max(a.ndim, b.ndim)
    ax = normalize_axis(axis, nd, "vecdot")
    if a.shape[ax - nd] != b.shape[ax - nd] if a.ndim and b.ndim else True:
        raise ValueError(f"vecdot: shapes {a.shape} and {b.shape} differ along axis {axis}")
    return sum(multiply(a, b), axis=ax - nd)
