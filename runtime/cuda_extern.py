"""Extern ``matmul`` on the GPU, and strided copies as kir kernels.

Floating-point matmuls run the tiled shared-memory kernel of :mod:`codegen.ptx_matmul`
(:func:`matmul_dims` gives its extents and strides).  Other dtypes use
:func:`matmul_launch`: the reduction ``out[b, m, n] = sum_k a[b, m, k] * b[b, k, n]`` over the
iteration space ``(B, M, N, K)`` with ``K`` as the reduce dim, lowered like every other row
reduction: one block per output element.  It is correct for any strides and dtype but far from
a tiled shared-memory GEMM (each block re-reads a row of ``a`` and a column of ``b`` from L2),
so it suits small or skinny products only.
"""
from __future__ import annotations

import numpy as np

from codegen import kir
from codegen.kir import Acc, Kernel, Load, Op, Operand, Reduce, Store


def layout_of(strides: tuple[int, ...]) -> tuple[str, ...]:
    """The kir layout pattern of concrete strides."""
    return tuple("b" if s == 0 else "c" if s == 1 else "s" for s in strides)


def _acc_dtype(dtype: str) -> str:
    if dtype in ("float16", "float32"):
        return "float32"
    if dtype == "float64":
        return "float64"
    return "int64"


Shape = tuple[int, ...]


def batch_slices(shapes: tuple[Shape, ...], strides: tuple[Shape, ...], offsets: tuple[int, ...]):
    """A matmul's operands (a, b, out) cut into products of at most one batch dim: yields
    ``(shapes, strides, offsets)`` per index of ``out``'s batch dims but the last (batch dims
    align from the right; a missing or size-1 one broadcasts)."""
    n_batch = len(shapes[2]) - 2
    if n_batch <= 1:
        yield shapes, strides, offsets
        return
    padded = []
    for shp, st in zip(shapes, strides, strict=True):
        missing = n_batch - (len(shp) - 2)
        padded.append(((1,) * missing + tuple(shp[:-2]), (0,) * missing + tuple(st[:-2])))
    for idx in np.ndindex(*shapes[2][:-3]):
        cut_shapes, cut_strides, cut_offsets = [], [], []
        for (bshape, bstrides), shp, st, off in zip(padded, shapes, strides, offsets, strict=True):
            off += sum(i * s for i, n, s in zip(idx, bshape, bstrides) if n > 1)
            cut_shapes.append((bshape[-1], *shp[-2:]))
            cut_strides.append((bstrides[-1], *st[-2:]))
            cut_offsets.append(off)
        yield tuple(cut_shapes), tuple(cut_strides), tuple(cut_offsets)


def matmul_dims(shapes: tuple[Shape, ...], strides: tuple[Shape, ...]) -> tuple[tuple[int, int, int, int],
                                                                                 list[Shape]]:
    """``((B, M, N, K), [a, b, out strides])`` of a batched matmul, every operand 3-d.

    ``shapes``/``strides``: a ``(B, M, K)``, b ``(B, K, N)``, out ``(B, M, N)``; a 2-d operand or
    a batch of 1 broadcasts (its batch stride becomes 0).
    """
    def three(shape, st):
        return ((1, *shape), (0, *st)) if len(shape) == 2 else (tuple(shape), tuple(st))

    (sa, ta), (sb, tb), (so, to) = (three(s, t) for s, t in zip(shapes, strides, strict=True))
    B, M, K = sa
    Bb, Kb, N = sb
    if Kb != K or so[1:] != (M, N) or (B != Bb and 1 not in (B, Bb)):
        raise ValueError(f"matmul shapes do not match: {shapes}")
    ta = (ta[0] if B > 1 else 0, *ta[1:])
    tb = (tb[0] if Bb > 1 else 0, *tb[1:])
    return (max(B, Bb), M, N, K), [ta, tb, to]


def tiled(dtype: str) -> bool:
    """Whether ``dtype`` matmuls run the tiled kernel of :mod:`codegen.ptx_matmul`."""
    from codegen.ptx_matmul import DTYPES
    return dtype in DTYPES


def matmul_launch(dtype: str, shapes: tuple[Shape, ...],
                  strides: tuple[Shape, ...]) -> tuple[Kernel, Shape, list[Shape]]:
    """(kernel, iteration shape, per-operand iteration strides) for a batched matmul as a kir
    reduction (see :func:`matmul_dims` for the operands)."""
    (B, M, N, K), (ta, tb, to) = matmul_dims(shapes, strides)
    # iteration dims (b, m, n, k)
    it_a = (ta[0], ta[1], 0, ta[2])
    it_b = (tb[0], 0, tb[2], tb[1])
    it_o = (to[0], to[1], to[2], 0)
    acc = _acc_dtype(dtype)

    def load(i: int) -> kir.Expr:
        return Load(i) if acc == dtype else Op("cast", (Load(i),), acc)
    prod = Op("mul", (load(0), load(1)), acc)
    result = Acc(0) if acc == dtype else Op("cast", (Acc(0),), dtype)
    kernel = Kernel("matmul", 4, 1,
                    (Operand(dtype, layout_of(it_a)), Operand(dtype, layout_of(it_b))),
                    (Operand(dtype, layout_of(it_o)),),
                    (Reduce("sum", prod, acc), Store(0, result)))
    return kernel, (B, M, N, K), [it_a, it_b, it_o]


def copy_kernel(dtype: str, src_strides: tuple[int, ...], dst_strides: tuple[int, ...]) -> Kernel:
    """Elementwise copy between two strided views of the same shape."""
    return Kernel("copy", len(src_strides), 0, (Operand(dtype, layout_of(src_strides)),),
                  (Operand(dtype, layout_of(dst_strides)),), (Store(0, Load(0)),))
