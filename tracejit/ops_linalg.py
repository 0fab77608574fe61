"""Linear-algebra primitives of the op table: LAPACK through NumPy, run as host steps under jit.

Each works on the last two axes of operands whose batch axes already agree (``tracejit.linalg``
broadcasts).  Decompositions with several results (``eigh``, ``svd``, ``qr``, ``slogdet``) are
one primitive with one *packed* output, so one LAPACK call serves every part; the public
functions take the parts out as views.  The layouts:

* ``linalg_eigh``:    ``(..., n + 1, n)``: row 0 the eigenvalues, rows 1.. the eigenvectors;
* ``linalg_svd``:     ``(..., m*ku + k + kv*n)``: ``U`` (m, ku), ``S`` (k), ``Vh`` (kv, n) flattened;
* ``linalg_qr``:      ``(..., m*kq + kr*n)``: ``Q`` (m, kq), ``R`` (kr, n) flattened;
* ``linalg_slogdet``: ``(..., 2)``: the sign and the log of the absolute determinant.

The VJPs follow PyTorch's (``torch/csrc/autograd/FunctionsManual.cpp``) and are written with
primitives and these host ops, so they trace under jit too.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .ops import AVal, Prim, _register


def _P():  # noqa: N802 - the primitive helpers, imported late (they import the op table)
    from . import prims
    return prims


def _check_matrix(op: str, a: AVal, square: bool = True) -> tuple[int, int]:
    if a.dtype.kind not in "fc":
        raise TypeError(f"{op} needs a floating-point dtype, got {a.dtype.name}")
    if len(a.shape) < 2:
        raise ValueError(f"{op} needs a matrix (at least 2-D), got shape {a.shape}")
    m, n = a.shape[-2:]
    if square and m != n:
        raise ValueError(f"{op} needs square matrices, got shape {a.shape}")
    return m, n


def _svd_sizes(m: int, n: int, full: bool) -> tuple[int, int, int]:
    k = min(m, n)
    return (m, k, n) if full else (k, k, k)       # ku, k, kv


def _qr_sizes(m: int, n: int, mode: str) -> tuple[int, int]:
    k = min(m, n)
    return (m, m) if mode == "complete" else (k, k)   # kq, kr


def _flat(a: np.ndarray, nd: int) -> np.ndarray:
    """``a`` with its last ``nd`` axes as one (explicit sizes: -1 is ambiguous for empty arrays)."""
    return a.reshape(a.shape[:a.ndim - nd] + (int(np.prod(a.shape[a.ndim - nd:])),))


# ----------------------------------------------------------------------------- helpers for VJPs

def _mT(x):  # noqa: N802
    P = _P()
    nd = len(x.shape)
    return P.permute(x, perm=tuple(range(nd - 2)) + (nd - 1, nd - 2))


def _mm(a, b):
    return _P().matmul(a, b)


def _last(x, start: int, stop: int):
    """``x[..., start:stop]`` as a slice view."""
    P = _P()
    nd = len(x.shape)
    return P.slice(x, start=(0,) * (nd - 1) + (start,), stop=tuple(x.shape[:-1]) + (stop,), step=(1,) * nd)


def _unflat(x, shape: tuple[int, int]):
    return _P().reshape(x, shape=tuple(x.shape[:-1]) + shape)


def _row(x, i: int):
    """``x[..., i, :]`` (a (..., n) view)."""
    P = _P()
    nd = len(x.shape)
    s = P.slice(x, start=(0,) * (nd - 2) + (i, 0), stop=tuple(x.shape[:-2]) + (i + 1, x.shape[-1]),
                step=(1,) * nd)
    return P.reshape(s, shape=tuple(x.shape[:-2]) + (x.shape[-1],))


def _rows(x, start: int, stop: int):
    P = _P()
    nd = len(x.shape)
    return P.slice(x, start=(0,) * (nd - 2) + (start, 0), stop=tuple(x.shape[:-2]) + (stop, x.shape[-1]),
                   step=(1,) * nd)


def _eye_like(x, n: int):
    """An ``n`` x ``n`` identity of ``x``'s dtype, broadcast to ``x``'s batch axes."""
    P = _P()
    eye = P.constant(np.eye(n, dtype=x.dtype))
    return P.placed_like(P.broadcast_to(eye, tuple(x.shape[:-2]) + (n, n)), x)


def _diag_embed(v):
    """(..., n) -> (..., n, n) with ``v`` on the diagonal (a broadcast product with the identity)."""
    P = _P()
    n = v.shape[-1]
    col = P.expand(P.reshape(v, shape=tuple(v.shape) + (1,)), shape=tuple(v.shape) + (n,))
    return P.mul(_mT(col), _eye_like(col, n))


def _col_scale(x, v):
    """``x * v[..., None, :]``: column j of ``x`` scaled by ``v[j]``."""
    P = _P()
    return P.mul(x, P.expand(P.reshape(v, shape=tuple(v.shape[:-1]) + (1, v.shape[-1])), shape=x.shape))


def _row_scale(x, v):
    """``x * v[..., :, None]``."""
    P = _P()
    return P.mul(x, P.expand(P.reshape(v, shape=tuple(v.shape) + (1,)), shape=x.shape))


def _tri_mask(x, k: int, lower: bool):
    P = _P()
    n, m = x.shape[-2:]
    keep = np.tril(np.ones((n, m), x.dtype), k) if lower else np.triu(np.ones((n, m), x.dtype), k)
    return P.mul(x, P.placed_like(P.broadcast_to(P.constant(keep), x.shape), x))


# ----------------------------------------------------------------------------- inv, solve, det

def _square_infer(op: str):
    def infer(a: AVal, **_: Any) -> AVal:
        _check_matrix(op, a)
        return a
    return infer


def _vjp_inv(g, out, a):
    P = _P()
    t = _mT(out)
    return (P.neg(_mm(t, _mm(g, t))),)


def _solve_infer(a: AVal, b: AVal) -> AVal:
    n, _ = _check_matrix("solve", a)
    if b.dtype != a.dtype:
        raise TypeError(f"solve: dtypes {a.dtype.name} and {b.dtype.name} differ")
    if len(b.shape) != len(a.shape) or b.shape[:-2] != a.shape[:-2] or b.shape[-2] != n:
        raise ValueError(f"solve: cannot solve {a.shape} systems for right-hand sides of shape {b.shape}")
    return b


def _solve_impl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.solve(a, b)


def _vjp_solve(g, out, a, b):
    gb = _P().linalg_solve(_mT(a), g)
    return _P().neg(_mm(gb, _mT(out))), gb


def _det_infer(a: AVal) -> AVal:
    _check_matrix("det", a)
    return AVal(a.shape[:-2], a.dtype)


def _vjp_det(g, out, a):
    # d det(A) = det(A) tr(A^-1 dA): the gradient is g det(A) A^-T
    return (_P().mul(_mT(_P().linalg_inv(a)), _per_matrix(_P().mul(g, out), a)),)


def _per_matrix(s, a):
    """A per-matrix value ``s`` (shape (...)) broadcast over ``a``'s (..., n, n)."""
    P = _P()
    return P.expand(P.reshape(s, shape=tuple(s.shape) + (1, 1)), shape=tuple(a.shape))


def _slogdet_infer(a: AVal) -> AVal:
    _check_matrix("slogdet", a)
    return AVal(a.shape[:-2] + (2,), a.dtype)


def _slogdet_impl(a: np.ndarray) -> np.ndarray:
    sign, logabs = np.linalg.slogdet(a)
    return np.stack([sign, logabs.astype(sign.dtype)], axis=-1).astype(a.dtype)


def _vjp_slogdet(g, out, a):
    # the sign is piecewise constant; d log|det A| = tr(A^-1 dA)
    P = _P()
    g_log = P.reshape(_last(g, 1, 2), shape=tuple(g.shape[:-1]))
    return (P.mul(_mT(P.linalg_inv(a)), _per_matrix(g_log, a)),)


# ----------------------------------------------------------------------------- cholesky

def _cholesky_impl(a: np.ndarray, *, upper: bool) -> np.ndarray:
    low = np.linalg.cholesky(a)
    return np.conj(np.swapaxes(low, -1, -2)) if upper else low


def _vjp_cholesky(g, out, a, *, upper):
    P = _P()
    low, g_low = (_mT(out), _mT(g)) if upper else (out, g)
    ga = _tri_mask(_mm(_mT(low), g_low), 0, lower=True)
    ga = P.mul(P.full_like(ga, 0.5), P.add(ga, _mT(_tri_mask(ga, -1, lower=True))))
    # L^-T ga L^-1, by two solves
    ga = P.linalg_solve(_mT(low), ga)
    ga = _mT(P.linalg_solve(_mT(low), _mT(ga)))
    return (ga,)


# ----------------------------------------------------------------------------- eigh

def _eigh_infer(a: AVal) -> AVal:
    n, _ = _check_matrix("eigh", a)
    return AVal(a.shape[:-2] + (n + 1, n), a.dtype)


def _eigh_impl(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return np.concatenate([w[..., None, :].astype(v.dtype), v], axis=-2)


def _vjp_eigh(g, out, a):
    P = _P()
    n = a.shape[-1]
    w, v = _row(out, 0), _rows(out, 1, n + 1)
    gw, gv = _row(g, 0), _rows(g, 1, n + 1)
    k = _mm(_mT(v), gv)
    skew = P.mul(P.full_like(k, 0.5), P.sub(k, _mT(k)))
    wcol = P.expand(P.reshape(w, shape=tuple(w.shape) + (1,)), shape=tuple(k.shape))
    gap = P.sub(_mT(wcol), wcol)                       # gap[i, j] = w[j] - w[i]
    eye = _eye_like(k, n)
    inner = P.add(P.mul(P.div(skew, P.add(gap, eye)), P.sub(P.full_like(eye, 1.0), eye)), _diag_embed(gw))
    return (_mm(v, _mm(inner, _mT(v))),)


# ----------------------------------------------------------------------------- svd

def _svd_infer(a: AVal, *, full_matrices: bool) -> AVal:
    m, n = _check_matrix("svd", a, square=False)
    ku, k, kv = _svd_sizes(m, n, full_matrices)
    return AVal(a.shape[:-2] + (m * ku + k + kv * n,), a.dtype)


def _svd_impl(a: np.ndarray, *, full_matrices: bool) -> np.ndarray:
    u, s, vh = np.linalg.svd(a, full_matrices=full_matrices)
    return np.concatenate([_flat(u, 2), s.astype(u.dtype), _flat(vh, 2)], axis=-1)


def svd_parts(packed, m: int, n: int, full_matrices: bool):
    """``U``, ``S``, ``Vh`` as views of the packed ``linalg_svd`` result."""
    ku, k, kv = _svd_sizes(m, n, full_matrices)
    u = _unflat(_last(packed, 0, m * ku), (m, ku))
    s = _last(packed, m * ku, m * ku + k)
    vh = _unflat(_last(packed, m * ku + k, m * ku + k + kv * n), (kv, n))
    return u, s, vh


def _vjp_svd(g, out, a, *, full_matrices):
    if full_matrices:
        raise NotImplementedError("the gradient of svd(full_matrices=True) is not defined "
                                  "(U and Vh are not unique); use full_matrices=False")
    P = _P()
    m, n = a.shape[-2:]
    k = min(m, n)
    u, s, vh = svd_parts(out, m, n, False)
    gu, gs, gvh = svd_parts(g, m, n, False)
    v, gv = _mT(vh), _mT(gvh)
    uhgu = _mm(_mT(u), gu)
    vhgv = _mm(_mT(v), gv)
    uhgu, vhgv = P.sub(uhgu, _mT(uhgu)), P.sub(vhgv, _mT(vhgv))
    s2 = P.mul(s, s)
    s2col = P.expand(P.reshape(s2, shape=tuple(s2.shape) + (1,)), shape=tuple(uhgu.shape))
    eye = _eye_like(uhgu, k)
    gap = P.add(P.sub(_mT(s2col), s2col), eye)        # s[j]^2 - s[i]^2, 1 on the diagonal
    inner = P.div(P.add(_col_scale(uhgu, s), _row_scale(vhgv, s)), gap)
    inner = P.add(inner, _diag_embed(gs))
    if m > k:
        ga = _mm(u, inner)
        gu_sinv = P.div(gu, P.expand(P.reshape(s, shape=tuple(s.shape[:-1]) + (1, k)), shape=tuple(gu.shape)))
        ga = P.sub(P.add(ga, gu_sinv), _mm(u, _mm(_mT(u), gu_sinv)))
        return (_mm(ga, vh),)
    if n > k:
        ga = _mm(inner, vh)
        sinv_gvh = P.div(gvh, P.expand(P.reshape(s, shape=tuple(s.shape) + (1,)), shape=tuple(gvh.shape)))
        ga = P.sub(P.add(ga, sinv_gvh), _mm(_mm(sinv_gvh, v), vh))
        return (_mm(u, ga),)
    return (_mm(u, _mm(inner, vh)),)


# ----------------------------------------------------------------------------- qr

def _qr_infer(a: AVal, *, mode: str) -> AVal:
    if mode not in ("reduced", "complete"):
        raise ValueError(f"qr: mode must be 'reduced' or 'complete', got {mode!r}")
    m, n = _check_matrix("qr", a, square=False)
    kq, kr = _qr_sizes(m, n, mode)
    return AVal(a.shape[:-2] + (m * kq + kr * n,), a.dtype)


def _qr_impl(a: np.ndarray, *, mode: str) -> np.ndarray:
    q, r = np.linalg.qr(a, mode=mode)
    return np.concatenate([_flat(q, 2), _flat(r, 2)], axis=-1)


def qr_parts(packed, m: int, n: int, mode: str):
    """``Q``, ``R`` as views of the packed ``linalg_qr`` result."""
    kq, kr = _qr_sizes(m, n, mode)
    q = _unflat(_last(packed, 0, m * kq), (m, kq))
    return q, _unflat(_last(packed, m * kq, m * kq + kr * n), (kr, n))


def _vjp_qr(g, out, a, *, mode):
    # PyTorch's linalg_qr_backward for m >= n, mode='reduced'
    P = _P()
    m, n = a.shape[-2:]
    if mode != "reduced" or m < n:
        raise NotImplementedError("the gradient of qr is defined for mode='reduced' and m >= n")
    q, r = qr_parts(out, m, n, mode)
    gq, gr = qr_parts(g, m, n, mode)
    # gA = (gQ + Q copyltu(M)) R^-T with M = R gR^T - gQ^T Q, copyltu(M) the symmetric matrix
    # with M's lower triangle
    mm = P.sub(_mm(r, _mT(gr)), _mm(_mT(gq), q))
    low = _tri_mask(mm, -1, lower=True)
    sym = P.add(P.add(low, _mT(low)), _diag_part(mm))
    rhs = P.add(gq, _mm(q, sym))
    return (_mT(P.linalg_solve(r, _mT(rhs))),)


def _diag_part(x):
    return _P().mul(x, _eye_like(x, x.shape[-1]))


def _real_only(name: str, vjp):
    """The VJPs here transpose without conjugating: they are for real operands only."""
    def checked(g, out, *xs, **params):
        if any(x.dtype.kind == "c" for x in xs):
            raise NotImplementedError(f"the gradient of linalg.{name} for complex inputs is not implemented")
        return vjp(g, out, *xs, **params)
    return checked


_register(Prim("linalg_inv", "host", _square_infer("inv"), lambda a: np.linalg.inv(a),
               vjp=_real_only("inv", _vjp_inv)))
_register(Prim("linalg_solve", "host", _solve_infer, _solve_impl, vjp=_real_only("solve", _vjp_solve)))
_register(Prim("linalg_det", "host", _det_infer, lambda a: np.asarray(np.linalg.det(a)).astype(a.dtype),
               vjp=_real_only("det", _vjp_det)))
_register(Prim("linalg_slogdet", "host", _slogdet_infer, _slogdet_impl,
               vjp=_real_only("slogdet", _vjp_slogdet)))
_register(Prim("linalg_cholesky", "host", _square_infer("cholesky"), _cholesky_impl,
               vjp=_real_only("cholesky", _vjp_cholesky)))
_register(Prim("linalg_eigh", "host", _eigh_infer, _eigh_impl, vjp=_real_only("eigh", _vjp_eigh)))
_register(Prim("linalg_svd", "host", _svd_infer, _svd_impl, vjp=_real_only("svd", _vjp_svd)))
_register(Prim("linalg_qr", "host", _qr_infer, _qr_impl, vjp=_real_only("qr", _vjp_qr)))
