"""Sliding windows as strided views: what convolution and pooling are built from.

A window op over ``d`` spatial dims reads, for each of the kernel's ``prod(kernel)`` offsets,
one strided slice of the (padded) input: ``x[..., o*dilation : ... : stride]``.  Each slice is a
view, so under ``jit`` the slices are index arithmetic inside the kernel that reads them (the
im2col kernel of a convolution, the max or sum of a pooling), and their gradients are pads
summed in one kernel.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from .. import prims as P
from ..tensors import Tensor


def ntuple(value: Any, n: int, name: str, op: str, minimum: int = 0) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ``n`` ints, each ``>= minimum``) as an ``n``-tuple."""
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int or a tuple of {n} ints, got {value!r}")
    t = (value,) * n if isinstance(value, int) else tuple(value) if isinstance(value, Sequence) else None
    if t is None or len(t) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in t):
        raise TypeError(f"{op}: {name} must be an int or a tuple of {n} ints, got {value!r}")
    if any(v < minimum for v in t):
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return t


def check_input(x: Tensor, nd: int, op: str) -> None:
    """``x`` must be ``(N, C, *spatial)`` with ``nd`` spatial dims."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")
    if x.ndim != nd + 2:
        dims = "(N, C, L)" if nd == 1 else "(N, C, H, W)" if nd == 2 else f"(N, C, {nd} spatial dims)"
        raise ValueError(f"{op}: input must be {nd + 2}-D {dims}, got shape {x.shape}")


def pad_spatial(x: Tensor, pads: Sequence[tuple[int, int]], value: float = 0.0) -> Tensor:
    """Pad (positive widths) or crop (negative widths) the trailing ``len(pads)`` dims."""
    lead = x.ndim - len(pads)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        start = (0,) * lead + tuple(max(-lo, 0) for lo, _ in pads)
        stop = x.shape[:lead] + tuple(n - max(-hi, 0) for n, (_, hi) in zip(x.shape[lead:], pads))
        x = P.slice(x, start=start, stop=stop, step=(1,) * x.ndim)
        pads = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    if any(lo or hi for lo, hi in pads):
        x = P.pad(x, pads=((0, 0),) * lead + tuple(pads), value=value)
    return x


def output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> int:
    """Number of windows along one dim (floor mode)."""
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def windows(x: Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
            out: Sequence[int]) -> list[Tensor]:
    """The ``prod(kernel)`` strided views of the already padded ``x`` (``(..., *spatial)``), one
    per kernel offset in row-major order, each of shape ``(..., *out)``.

    A stride ``s`` is not a stepped slice (whose gradient is a scatter with a step, a host
    step under ``jit``): each spatial dim is cropped or zero-extended to ``s * m`` and split
    into ``(m, s)``, and offset ``o * dilation = q * s + r`` reads ``[q : q + out, r]``, so every
    view is a unit-step slice and every gradient a pad that fuses."""
    nd = len(kernel)
    lead = x.ndim - nd
    blocks = [(k - 1) * d // s + n for n, k, s, d in zip(out, kernel, stride, dilation)]
    x = pad_spatial(x, [(0, m * s - size) if s > 1 else (0, 0)
                        for m, s, size in zip(blocks, stride, x.shape[lead:])])
    split = x.shape[:lead] + tuple(v for m, s, size in zip(blocks, stride, x.shape[lead:])
                                   for v in ((m, s) if s > 1 else (size,)))
    x = P.reshape(x, shape=split) if split != x.shape else x
    views = []
    for offs in itertools.product(*(range(k) for k in kernel)):
        start, stop = [0] * lead, list(x.shape[:lead])
        for o, d, s, n in zip(offs, dilation, stride, out):
            q, r = divmod(o * d, s)
            start += [q, r] if s > 1 else [q]
            stop += [q + n, r + 1] if s > 1 else [q + n]
        view = P.slice(x, start=tuple(start), stop=tuple(stop), step=(1,) * x.ndim)
        views.append(P.reshape(view, shape=x.shape[:lead] + tuple(out)) if view.ndim != lead + nd else view)
    return views
