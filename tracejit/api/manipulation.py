"""Manipulation functions of the Array API: views where possible (index arithmetic, no copies)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import dtypes as dt
from .. import prims as P
from ..tensor import Tensor
from ._convert import as_tensor, broadcast_shapes_for, normalize_axes, normalize_axis


def reshape(x: Tensor, /, shape: int | Sequence[int], *, copy: bool | None = None) -> Tensor:
    """Reshape (one dim may be -1)."""
    x = as_tensor(x)
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one dimension can be -1, got {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or x.size % known:
            raise ValueError(f"reshape: cannot reshape {x.shape} ({x.size} elements) to {shape}")
        shape = tuple(x.size // known if s == -1 else s for s in shape)
    if shape == x.shape:
        return x
    return P.reshape(x, shape=shape)


def permute_dims(x: Tensor, /, axes: Sequence[int]) -> Tensor:
    x = as_tensor(x)
    perm = tuple(normalize_axis(a, x.ndim, "permute_dims") for a in axes)
    if perm == tuple(range(x.ndim)):
        return x
    return P.permute(x, perm=perm)


def matrix_transpose(x: Tensor, /) -> Tensor:
    if x.ndim < 2:
        raise ValueError(f"matrix_transpose needs at least 2 dims, got shape {x.shape}")
    return permute_dims(x, tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2))


def broadcast_to(x: Tensor, /, shape: Sequence[int]) -> Tensor:
    x = as_tensor(x)
    shape = tuple(shape)
    broadcast_shapes_for("broadcast_to", x.shape, shape)
    if broadcast_shapes_for("broadcast_to", x.shape, shape) != shape:
        raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {shape}")
    return P.broadcast_to(x, shape)


def broadcast_arrays(*arrays: Tensor) -> list[Tensor]:
    shape = broadcast_shapes_for("broadcast_arrays", *(a.shape for a in arrays))
    return [P.broadcast_to(a, shape) for a in arrays]


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    return broadcast_shapes_for("broadcast_shapes", *shapes)


def expand_dims(x: Tensor, /, axis: int = 0) -> Tensor:
    x = as_tensor(x)
    axis = normalize_axis(axis, x.ndim + 1, "expand_dims")
    return P.reshape(x, shape=x.shape[:axis] + (1,) + x.shape[axis:])


def squeeze(x: Tensor, /, axis: int | Sequence[int]) -> Tensor:
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim, "squeeze")
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} of shape {x.shape} has size {x.shape[a]}, not 1")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def astype(x: Tensor, dtype: Any, /, *, copy: bool = True, device: Any = None) -> Tensor:
    x = as_tensor(x)
    out = P.cast(x, dt.canonical(dtype))
    if copy and out is x:
        out = P.bind("cast", x, dtype=x.dtype) if x.is_tracer else P.constant(x.numpy().copy())
    return out if device is None else out.to_device(device)


def flip(x: Tensor, /, *, axis: int | Sequence[int] | None = None) -> Tensor:
    x = as_tensor(x)
    for a in normalize_axes(axis, x.ndim, "flip"):
        x = P.flip(x, a)
    return x
