"""The Array API ``linalg`` extension (2023.12), exported as ``tracejit.linalg``.

Decompositions, solves and determinants are host primitives (``tracejit/ops_linalg.py``:
LAPACK through NumPy, host steps under jit, VJPs as PyTorch defines them); norms, ``cross``,
``diagonal``, ``trace``, ``matrix_power``, ``matrix_rank`` and ``pinv`` are compositions of
primitives, so they fuse and differentiate like any other code.  Operands must have a
floating-point dtype (integer matrices are a TypeError, not a silent cast).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from .. import dtypes as dt
from .. import prims as P
from ..ops_linalg import qr_parts, svd_parts
from ..tensors import Tensor
from ._convert import as_tensor, broadcast_shapes_for, normalize_axes, normalize_axis
from .linalg import matmul, outer, tensordot, vecdot
from .manipulation import matrix_transpose


class EighResult(NamedTuple):
    eigenvalues: Tensor
    eigenvectors: Tensor


class QRResult(NamedTuple):
    Q: Tensor
    R: Tensor


class SlogdetResult(NamedTuple):
    sign: Tensor
    logabsdet: Tensor


class SVDResult(NamedTuple):
    U: Tensor
    S: Tensor
    Vh: Tensor


def _matrix(x: Any, op: str, square: bool = True) -> Tensor:
    t = as_tensor(x)
    if t.dtype.kind not in "fc":
        raise TypeError(f"linalg.{op} needs a floating-point array, got {t.dtype.name}")
    if t.ndim < 2:
        raise ValueError(f"linalg.{op} needs a matrix (at least 2-D), got shape {t.shape}")
    if square and t.shape[-1] != t.shape[-2]:
        raise ValueError(f"linalg.{op} needs square matrices, got shape {t.shape}")
    return t


def _real_dtype(d: Any) -> Any:
    return {dt.complex64: dt.float32, dt.complex128: dt.float64}.get(d, d) if hasattr(dt, "complex64") else d


def _real_part(x: Tensor) -> Tensor:
    if x.dtype.kind != "c":
        return x
    from .elementwise import real
    return real(x)


# ----------------------------------------------------------------------------- host primitives

def inv(x: Tensor, /) -> Tensor:
    """The inverse of each square matrix in ``x`` (..., n, n)."""
    return P.bind("linalg_inv", _matrix(x, "inv"))


def solve(x1: Tensor, x2: Tensor, /) -> Tensor:
    """``x`` with ``x1 @ x = x2``: ``x2`` is (..., n, k) stacks, or one (n,) vector for every system."""
    a = _matrix(x1, "solve")
    b = as_tensor(x2)
    dtype = dt.promote_types(a.dtype, b.dtype)
    a, b = P.cast(a, dtype), P.cast(b, dtype)
    n = a.shape[-1]
    vector = b.ndim == 1
    if vector:
        if b.shape[0] != n:
            raise ValueError(f"linalg.solve: {a.shape} systems and a right-hand side of shape {b.shape}")
        b = P.reshape(b, shape=(n, 1))
    if b.ndim < 2 or b.shape[-2] != n:
        raise ValueError(f"linalg.solve: {a.shape} systems and right-hand sides of shape {x2.shape}")
    batch = broadcast_shapes_for("linalg.solve", a.shape[:-2], b.shape[:-2])
    a = P.broadcast_to(a, batch + a.shape[-2:])
    b = P.broadcast_to(b, batch + b.shape[-2:])
    out = P.bind("linalg_solve", a, b)
    return P.reshape(out, shape=batch + (n,)) if vector else out


def det(x: Tensor, /) -> Tensor:
    """The determinant of each square matrix."""
    return P.bind("linalg_det", _matrix(x, "det"))


def slogdet(x: Tensor, /) -> SlogdetResult:
    """Sign and natural log of the absolute determinant (``sign == 0``, ``logabsdet == -inf`` if singular)."""
    a = _matrix(x, "slogdet")
    packed = P.bind("linalg_slogdet", a)
    batch = a.shape[:-2]
    parts = [P.reshape(P.slice(packed, start=(0,) * len(batch) + (i,), stop=batch + (i + 1,),
                               step=(1,) * (len(batch) + 1)), shape=batch) for i in (0, 1)]
    return SlogdetResult(parts[0], _real_part(parts[1]))


def cholesky(x: Tensor, /, *, upper: bool = False) -> Tensor:
    """The Cholesky factor of each symmetric (Hermitian) positive-definite matrix: ``L`` with
    ``x = L @ L.mT``, or the upper ``U = L.mT`` when ``upper``."""
    return P.bind("linalg_cholesky", _matrix(x, "cholesky"), upper=bool(upper))


def eigh(x: Tensor, /) -> EighResult:
    """Eigenvalues (ascending) and eigenvectors (columns) of symmetric (Hermitian) matrices;
    only the lower triangle is read, as LAPACK does."""
    a = _matrix(x, "eigh")
    n = a.shape[-1]
    packed = P.bind("linalg_eigh", a)
    nd = packed.ndim
    batch = a.shape[:-2]
    w = P.reshape(P.slice(packed, start=(0,) * nd, stop=batch + (1, n), step=(1,) * nd), shape=batch + (n,))
    v = P.slice(packed, start=(0,) * (nd - 2) + (1, 0), stop=batch + (n + 1, n), step=(1,) * nd)
    return EighResult(_real_part(w), v)


def eigvalsh(x: Tensor, /) -> Tensor:
    """The eigenvalues of symmetric (Hermitian) matrices, ascending."""
    return eigh(x).eigenvalues


def svd(x: Tensor, /, *, full_matrices: bool = True) -> SVDResult:
    """``U, S, Vh`` with ``x = U @ diag(S) @ Vh``, ``S`` descending (gradients need
    ``full_matrices=False``)."""
    a = _matrix(x, "svd", square=False)
    m, n = a.shape[-2:]
    packed = P.bind("linalg_svd", a, full_matrices=bool(full_matrices))
    u, s, vh = svd_parts(packed, m, n, bool(full_matrices))
    return SVDResult(u, _real_part(s), vh)


def svdvals(x: Tensor, /) -> Tensor:
    """The singular values of each matrix, descending."""
    return svd(x, full_matrices=False).S


def qr(x: Tensor, /, *, mode: str = "reduced") -> QRResult:
    """``Q`` (orthonormal columns) and upper-triangular ``R`` with ``x = Q @ R``."""
    a = _matrix(x, "qr", square=False)
    if mode not in ("reduced", "complete"):
        raise ValueError(f"linalg.qr: mode must be 'reduced' or 'complete', got {mode!r}")
    m, n = a.shape[-2:]
    q, r = qr_parts(P.bind("linalg_qr", a, mode=mode), m, n, mode)
    return QRResult(q, r)


# ----------------------------------------------------------------------------- compositions

def diagonal(x: Tensor, /, *, offset: int = 0) -> Tensor:
    """The ``offset``-th diagonal of each matrix (a strided view: the flat matrix sliced with
    step ``n + 1``)."""
    a = as_tensor(x)
    if a.ndim < 2:
        raise ValueError(f"linalg.diagonal needs at least 2-D input, got shape {a.shape}")
    rows, cols = a.shape[-2:]
    batch = a.shape[:-2]
    first_row, first_col = (0, offset) if offset >= 0 else (-offset, 0)
    length = max(0, min(rows - first_row, cols - first_col))
    if length == 0:
        return P.reshape(P.slice(P.reshape(a, shape=batch + (rows * cols,)), start=(0,) * (len(batch) + 1),
                                 stop=batch + (0,), step=(1,) * (len(batch) + 1)), shape=batch + (0,))
    flat = P.reshape(a, shape=batch + (rows * cols,))
    start = first_row * cols + first_col
    stop = start + (length - 1) * (cols + 1) + 1
    nb = len(batch)
    return P.slice(flat, start=(0,) * nb + (start,), stop=batch + (stop,), step=(1,) * nb + (cols + 1,))


def trace(x: Tensor, /, *, offset: int = 0, dtype: Any = None) -> Tensor:
    """The sum of the ``offset``-th diagonal of each matrix (integer sums in the default int)."""
    from .statistical import sum
    return sum(diagonal(x, offset=offset), axis=-1, dtype=dtype)


def cross(x1: Tensor, x2: Tensor, /, *, axis: int = -1) -> Tensor:
    """The cross product of 3-vectors along ``axis`` (operands broadcast)."""
    from .elementwise import multiply, subtract
    from .manipulation import stack
    a, b = as_tensor(x1), as_tensor(x2)
    if a.dtype.kind == "b" or b.dtype.kind == "b":
        raise TypeError("linalg.cross needs numeric arrays, got bool")
    if not -min(a.ndim, b.ndim) <= axis < 0 if axis < 0 else axis >= min(a.ndim, b.ndim):
        raise ValueError(f"linalg.cross: axis {axis} is out of range for shapes {a.shape} and {b.shape}")
    shape = broadcast_shapes_for("linalg.cross", a.shape, b.shape)
    ax = normalize_axis(axis, len(shape), "linalg.cross")
    if a.shape[ax - len(shape)] != 3 or b.shape[ax - len(shape)] != 3:
        raise ValueError(f"linalg.cross: axis {axis} must have size 3 in both, got {a.shape} and {b.shape}")
    dtype = dt.promote_types(a.dtype, b.dtype)
    a = P.broadcast_to(P.cast(a, dtype), shape)
    b = P.broadcast_to(P.cast(b, dtype), shape)

    def comp(t: Tensor, i: int) -> Tensor:
        start = tuple(i if d == ax else 0 for d in range(len(shape)))
        stop = tuple(i + 1 if d == ax else n for d, n in enumerate(shape))
        s = P.slice(t, start=start, stop=stop, step=(1,) * len(shape))
        return P.reshape(s, shape=tuple(n for d, n in enumerate(shape) if d != ax))
    a0, a1, a2 = (comp(a, i) for i in range(3))
    b0, b1, b2 = (comp(b, i) for i in range(3))
    return stack([subtract(multiply(a1, b2), multiply(a2, b1)),
                  subtract(multiply(a2, b0), multiply(a0, b2)),
                  subtract(multiply(a0, b1), multiply(a1, b0))], axis=ax)


def matrix_power(x: Tensor, n: int, /) -> Tensor:
    """``x`` multiplied by itself ``n`` times (by repeated squaring); ``n < 0`` uses ``inv(x)``,
    ``n == 0`` the identity."""
    import operator
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"linalg.matrix_power: n must be an integer, got {type(n).__name__}") from None
    a = as_tensor(x)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"linalg.matrix_power needs square matrices, got shape {a.shape}")
    if n == 0:
        from .creation import eye
        ident = eye(a.shape[-1], dtype=a.dtype, device=a.device)
        return P.broadcast_to(ident, a.shape)
    if n < 0:
        a, n = inv(a), -n
    result = None
    power = a
    while n:
        if n & 1:
            result = power if result is None else matmul(result, power)
        n >>= 1
        if n:
            power = matmul(power, power)
    return result


def vector_norm(x: Tensor, /, *, axis: int | Sequence[int] | None = None, keepdims: bool = False,
                ord: float = 2) -> Tensor:  # noqa: A002 - the standard's parameter name
    """The ``ord``-norm over ``axis`` (all axes when None): 2 (default), 1, inf, -inf, 0 (the
    count of non-zeros) or any other real p, ``sum(|x|**p) ** (1/p)``."""
    from .elementwise import abs, not_equal, pow, sqrt
    from .statistical import max, min, sum
    a = as_tensor(x)
    if a.dtype.kind not in "fc":
        raise TypeError(f"linalg.vector_norm needs a floating-point array, got {a.dtype.name}")
    axes = normalize_axes(axis, a.ndim, "linalg.vector_norm")
    mag = abs(a)
    if ord == 2:
        r = sqrt(sum(mag * mag, axis=axes, keepdims=True))
    elif ord == 1:
        r = sum(mag, axis=axes, keepdims=True)
    elif ord == math.inf:
        r = max(mag, axis=axes, keepdims=True)
    elif ord == -math.inf:
        r = min(mag, axis=axes, keepdims=True)
    elif ord == 0:
        r = P.cast(sum(not_equal(mag, 0.0), axis=axes, keepdims=True), mag.dtype)
    else:
        p = float(ord)
        r = pow(sum(pow(mag, p), axis=axes, keepdims=True), 1.0 / p)
    if keepdims:
        return r
    return P.reshape(r, shape=tuple(n for i, n in enumerate(a.shape) if i not in axes))


def matrix_norm(x: Tensor, /, *, keepdims: bool = False, ord: Any = "fro") -> Tensor:  # noqa: A002
    """Norm of each matrix: ``'fro'`` (default), ``'nuc'``, 1, -1, 2, -2, inf, -inf (as NumPy)."""
    from .elementwise import abs, sqrt
    from .statistical import max, min, sum
    a = _matrix(x, "matrix_norm", square=False)
    if ord == "fro":
        mag = abs(a)
        r = sqrt(sum(mag * mag, axis=(-2, -1)))
    elif ord == "nuc":
        r = sum(svdvals(a), axis=-1)
    elif ord in (2, -2):
        s = svdvals(a)
        r = max(s, axis=-1) if ord == 2 else min(s, axis=-1)
    elif ord in (1, -1, math.inf, -math.inf):
        along = -2 if ord in (1, -1) else -1      # column sums for 1, row sums for inf
        sums = sum(abs(a), axis=along)
        r = max(sums, axis=-1) if ord > 0 else min(sums, axis=-1)
    else:
        raise ValueError("linalg.matrix_norm: ord must be 'fro', 'nuc', 1, -1, 2, -2, inf or -inf, "
                         f"got {ord!r}")
    return P.reshape(r, shape=r.shape + (1, 1)) if keepdims else r


def _default_rtol(a: Tensor) -> float:
    return max(a.shape[-2:]) * dt.finfo(_real_dtype(a.dtype)).eps


def _cutoff(s: Tensor, rtol: Any, a: Tensor) -> Tensor:
    """``rtol * max(s)`` per matrix, shaped (..., 1) to compare with ``s``."""
    from .elementwise import multiply
    from .statistical import max
    rtol = _default_rtol(a) if rtol is None else rtol
    if isinstance(rtol, Tensor):
        rtol = P.reshape(P.cast(rtol, s.dtype), shape=rtol.shape + (1,))
    top = max(s, axis=-1, keepdims=True) if s.shape[-1] else P.full(s.shape[:-1] + (1,), 0, s.dtype)
    return multiply(top, rtol)


def matrix_rank(x: Tensor, /, *, rtol: Any = None) -> Tensor:
    """The number of singular values above ``rtol * max(S)`` (default ``rtol``:
    ``max(M, N) * eps``)."""
    from .elementwise import greater
    from .statistical import sum
    a = _matrix(x, "matrix_rank", square=False)
    s = svdvals(a)
    return sum(greater(s, _cutoff(s, rtol, a)), axis=-1)


def pinv(x: Tensor, /, *, rtol: Any = None) -> Tensor:
    """The Moore-Penrose pseudo-inverse from the SVD, with singular values at or below
    ``rtol * max(S)`` treated as zero."""
    from .elementwise import divide, greater, where
    a = _matrix(x, "pinv", square=False)
    u, s, vh = svd(a, full_matrices=False)
    keep = greater(s, _cutoff(s, rtol, a))
    one = P.full_like(s, 1.0)
    s_inv = where(keep, divide(one, where(keep, s, one)), P.zeros_like(s))
    if u.dtype != s_inv.dtype:
        s_inv = P.cast(s_inv, u.dtype)
    from .elementwise import conj
    k = s.shape[-1]
    v = conj(matrix_transpose(vh))                     # pinv = V diag(1/S) U^H
    scaled = P.mul(v, P.expand(P.reshape(s_inv, shape=s_inv.shape[:-1] + (1, k)), shape=v.shape))
    return matmul(scaled, conj(matrix_transpose(u)))


__all__ = [
    "cholesky", "cross", "det", "diagonal", "eigh", "eigvalsh", "inv", "matmul", "matrix_norm",
    "matrix_power", "matrix_rank", "matrix_transpose", "outer", "pinv", "qr", "slogdet", "solve", "svd",
    "svdvals", "tensordot", "trace", "vecdot", "vector_norm",
    "EighResult", "QRResult", "SlogdetResult", "SVDResult",
]
