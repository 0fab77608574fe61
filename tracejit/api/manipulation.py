"""Manipulation functions of the Array API: views where possible (index arithmetic, no copies)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import prims as P
from ..tensors import Tensor
from ._convert import (
    as_int,
    as_shape,
    as_size,
    as_tensor,
    broadcast_shapes_for,
    int_sequence,
    normalize_axes,
    normalize_axis,
)


def _fresh(x: Tensor) -> Tensor:
    """A new tensor equal to ``x`` that shares no memory with it (and stays on the tape).

    For the functions NumPy documents as returning a new array (``roll``, ``tile``, ``repeat``,
    ``concat``, ``stack``): when there is nothing to move they must still not hand back ``x``
    or a view of it, or writing into the result would change the input.  A same-dtype cast is
    a copy on every device, eagerly and under jit."""
    return P.bind("cast", x, dtype=x.dtype)


def reshape(x: Tensor, /, shape: int | Sequence[int], *, copy: bool | None = None) -> Tensor:
    """Reshape (one dim may be -1)."""
    x = as_tensor(x)
    shape = int_sequence(shape, "shape", "reshape")
    for i, n in enumerate(shape):
        if n < -1:
            raise ValueError(f"reshape: shape[{i}] must be non-negative (or -1 for one inferred dim), "
                             f"got {n} in {shape}")
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one dimension can be -1, got {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or x.size % known:
            raise ValueError(f"reshape: cannot reshape {x.shape} ({x.size} elements) to {shape}")
        shape = tuple(x.size // known if s == -1 else s for s in shape)
    out = x if shape == x.shape else P.reshape(x, shape=shape)
    if copy is None or x.is_tracer and not x._trace.is_lazy:  # traced values are never aliased
        return out
    if copy:
        # an eager reshape views x's buffer: copy=True must not write through to x
        return P.placed_like(P.bind("constant", value=np.array(out.numpy(), copy=True)), x)
    if x.device.type == "cpu" and x.size and not np.shares_memory(out.numpy(), x.numpy()):
        raise ValueError(f"reshape(copy=False): {x.shape} -> {shape} needs a copy of this strided tensor")
    return out


def permute_dims(x: Tensor, /, axes: Sequence[int]) -> Tensor:
    x = as_tensor(x)
    if isinstance(axes, (str, bytes)) or not hasattr(axes, "__iter__"):
        raise TypeError(f"permute_dims: axes must be a sequence of {x.ndim} integers, got "
                        f"{type(axes).__name__} {axes!r:.60}")
    perm = tuple(normalize_axis(a, x.ndim, "permute_dims", "axes") for a in axes)
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"permute_dims: axes {tuple(axes)} is not a permutation of the {x.ndim} dims "
                         f"of shape {x.shape}")
    if perm == tuple(range(x.ndim)):
        return x
    return P.permute(x, perm=perm)


def matrix_transpose(x: Tensor, /) -> Tensor:
    if x.ndim < 2:
        raise ValueError(f"matrix_transpose needs at least 2 dims, got shape {x.shape}")
    return permute_dims(x, tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2))


def broadcast_to(x: Tensor, /, shape: Sequence[int]) -> Tensor:
    x = as_tensor(x)
    shape = as_shape(shape, "broadcast_to")
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
    axis = as_int(axis, "axis", "expand_dims")
    if not -x.ndim - 1 <= axis <= x.ndim:     # an IndexError, as the standard asks (AxisError is both)
        raise np.exceptions.AxisError(f"expand_dims: axis {axis} is out of range [{-x.ndim - 1}, {x.ndim}] "
                                      f"for a {x.ndim}-D tensor")
    axis %= x.ndim + 1
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
    try:
        want = dt.canonical(dtype)
    except TypeError as e:
        raise TypeError(f"astype: dtype: {e}") from None
    out = P.cast(x, want)
    if copy and out is x:
        out = _fresh(x)
    return out if device is None else out.to_device(device)


def flip(x: Tensor, /, *, axis: int | Sequence[int] | None = None) -> Tensor:
    x = as_tensor(x)
    for a in normalize_axes(axis, x.ndim, "flip"):
        x = P.flip(x, a)
    return x


def _flat(x: Tensor) -> Tensor:
    return reshape(x, (x.size,)) if x.ndim != 1 else x


def concat(arrays: Sequence[Tensor], /, *, axis: int | None = 0) -> Tensor:
    """Join tensors along an existing axis (``axis=None`` flattens them first); dtypes promote."""
    arrays = [as_tensor(a) for a in arrays]
    if not arrays:
        raise ValueError("concat needs at least one tensor")
    dtype = dt.promote_types(*(a.dtype for a in arrays))
    arrays = [P.cast(a, dtype) for a in arrays]
    if axis is None:
        arrays, axis = [_flat(a) for a in arrays], 0
    if any(a.ndim != arrays[0].ndim for a in arrays):
        raise ValueError(f"concat: tensors have different ranks: {[a.shape for a in arrays]}")
    if arrays[0].ndim == 0:
        raise ValueError("concat: zero-dimensional tensors cannot be concatenated; use stack")
    ax = normalize_axis(axis, arrays[0].ndim, "concat")
    _check_concat_shapes(arrays, ax)
    parts = [a for a in arrays if a.shape[ax]] or arrays[:1]   # empty parts add nothing
    return _fresh(parts[0]) if len(parts) == 1 else P.concat(*parts, axis=ax)


def _check_concat_shapes(arrays: list[Tensor], axis: int) -> None:
    """All dims but ``axis`` must agree, empty parts included (they are dropped before the primitive)."""
    want = arrays[0].shape[:axis] + arrays[0].shape[axis + 1:]
    for a in arrays[1:]:
        if a.shape[:axis] + a.shape[axis + 1:] != want:
            raise ValueError(f"concat: shapes {arrays[0].shape} and {a.shape} differ outside axis {axis}")


def stack(arrays: Sequence[Tensor], /, *, axis: int = 0) -> Tensor:
    """Join same-shaped tensors along a new axis."""
    arrays = [as_tensor(a) for a in arrays]
    if not arrays:
        raise ValueError("stack needs at least one tensor")
    for a in arrays[1:]:
        if a.shape != arrays[0].shape:
            raise ValueError(f"stack: shapes {arrays[0].shape} and {a.shape} differ")
    ax = normalize_axis(axis, arrays[0].ndim + 1, "stack")
    return concat([expand_dims(a, axis=ax) for a in arrays], axis=ax)


def unstack(x: Tensor, /, *, axis: int = 0) -> tuple[Tensor, ...]:
    """Split ``x`` into a tuple of tensors along ``axis`` (the inverse of :func:`stack`)."""
    x = as_tensor(x)
    ax = normalize_axis(axis, x.ndim, "unstack") if x.ndim else 0
    if x.ndim == 0:
        raise ValueError("unstack needs at least a 1-D tensor")
    from .indexing import getitem
    lead = (slice(None),) * ax
    return tuple(getitem(x, lead + (i,)) for i in range(x.shape[ax]))


def moveaxis(x: Tensor, source: int | Sequence[int], destination: int | Sequence[int], /) -> Tensor:
    """Move axes to new positions, keeping the order of the others."""
    x = as_tensor(x)
    src = int_sequence(source, "source", "moveaxis")
    dst = int_sequence(destination, "destination", "moveaxis")
    if len(src) != len(dst):
        raise ValueError(f"moveaxis: source {source} and destination {destination} differ in length")
    src = tuple(normalize_axis(a, x.ndim, "moveaxis", "source") for a in src)
    dst = tuple(normalize_axis(a, x.ndim, "moveaxis", "destination") for a in dst)
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise ValueError(f"moveaxis: repeated axis in {source} or {destination}")
    rest = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src)):
        rest.insert(d, s)
    return permute_dims(x, tuple(rest))


def roll(x: Tensor, /, shift: int | Sequence[int], *, axis: int | Sequence[int] | None = None) -> Tensor:
    """Shift elements cyclically along ``axis`` (all elements, flattened, when ``axis`` is None)."""
    x = as_tensor(x)
    if axis is None:
        return reshape(roll(_flat(x), as_int(shift, "shift (an int when axis is None)", "roll"), axis=0),
                       x.shape)
    shifts = int_sequence(shift, "shift", "roll")
    axes = int_sequence(axis, "axis", "roll")
    if len(shifts) == 1 and len(axes) > 1:
        shifts = shifts * len(axes)
    if len(shifts) != len(axes):
        raise ValueError(f"roll: shift {shift} and axis {axis} differ in length")
    out = x
    for s, a in zip(shifts, axes):
        a = normalize_axis(a, x.ndim, "roll")
        n = out.shape[a]
        k = s % n if n else 0
        if k:   # the last k elements move to the front: two slices and a concat
            head = _axis_slice(out, a, n - k, n)
            tail = _axis_slice(out, a, 0, n - k)
            out = P.concat(head, tail, axis=a)
    return _fresh(x) if out is x else out


PAD_MODES = ("constant", "edge", "reflect", "wrap")


def pad(x: Tensor, /, pad_width: int | Sequence, *, mode: str = "constant",
        constant_values: Any = 0) -> Tensor:
    """Pad ``x`` as :func:`numpy.pad` does, for the modes in ``PAD_MODES``.

    ``pad_width``: an int, one ``(before, after)`` pair for every axis, or one pair per axis.
    ``"reflect"`` and ``"wrap"`` take widths up to the axis' size (less one for reflect).
    Under jit the result is computed by the kernels that read it (a select by index range).
    """
    x = as_tensor(x)
    widths = _pad_widths(pad_width, x.ndim)
    if mode not in PAD_MODES:
        raise ValueError(f"pad: mode {mode!r} is not one of {PAD_MODES}")
    if mode == "constant":
        if isinstance(constant_values, Tensor) or np.ndim(constant_values) != 0:
            raise TypeError("pad: constant_values must be a Python or NumPy scalar")
        if not any(lo or hi for lo, hi in widths):
            return _fresh(x)
        return P.pad(x, pads=widths, value=np.asarray(constant_values).item())
    out = x
    for a, (lo, hi) in enumerate(widths):
        n = out.shape[a]
        if not (lo or hi):
            continue
        if n == 0:
            raise ValueError(f"pad: cannot pad the empty axis {a} in mode {mode!r}")
        limit = n - 1 if mode == "reflect" else n if mode == "wrap" else None
        if limit is not None and max(lo, hi) > limit:
            raise ValueError(f"pad: mode {mode!r} pads axis {a} of size {n} by at most {limit}, "
                             f"got {(lo, hi)}")
        parts = []
        if lo:
            parts.append(_edge(out, a, lo, first=True) if mode == "edge" else
                         P.flip(_axis_slice(out, a, 1, lo + 1), a) if mode == "reflect" else
                         _axis_slice(out, a, n - lo, n))
        parts.append(out)
        if hi:
            parts.append(_edge(out, a, hi, first=False) if mode == "edge" else
                         P.flip(_axis_slice(out, a, n - 1 - hi, n - 1), a) if mode == "reflect" else
                         _axis_slice(out, a, 0, hi))
        out = P.concat(*parts, axis=a)
    return _fresh(x) if out is x else out


def _edge(x: Tensor, axis: int, k: int, first: bool) -> Tensor:
    """The first (last) element along ``axis`` repeated ``k`` times (a broadcast)."""
    n = x.shape[axis]
    e = _axis_slice(x, axis, 0, 1) if first else _axis_slice(x, axis, n - 1, n)
    return P.broadcast_to(e, tuple(k if i == axis else m for i, m in enumerate(x.shape)))


def _pad_widths(pad_width: Any, ndim: int) -> tuple[tuple[int, int], ...]:
    arr = np.asarray(pad_width, dtype=object)
    if arr.ndim == 0:
        pairs = [(pad_width, pad_width)] * ndim
    elif arr.shape == (2,) or arr.shape == (1, 2):
        pairs = [tuple(arr.reshape(2))] * ndim
    elif arr.shape == (1,):
        pairs = [(arr[0], arr[0])] * ndim
    elif arr.shape == (ndim, 2):
        pairs = [tuple(r) for r in arr]
    else:
        raise ValueError(f"pad: pad_width {pad_width!r} does not fit {ndim} axes "
                         f"(an int, a pair or one pair per axis)")
    return tuple((as_size(lo, "pad_width", "pad"), as_size(hi, "pad_width", "pad")) for lo, hi in pairs)


def _axis_slice(x: Tensor, axis: int, start: int, stop: int) -> Tensor:
    return P.slice(x, start=tuple(start if i == axis else 0 for i in range(x.ndim)),
                   stop=tuple(stop if i == axis else n for i, n in enumerate(x.shape)),
                   step=(1,) * x.ndim)


def tile(x: Tensor, repetitions: Sequence[int], /) -> Tensor:
    """Repeat the whole tensor ``repetitions[i]`` times along dim ``i`` (a broadcast, no copies)."""
    x = as_tensor(x)
    if isinstance(repetitions, (str, bytes)) or not hasattr(repetitions, "__iter__"):
        # the Array API takes a tuple (NumPy also an int; being strict keeps the two apart)
        raise TypeError(f"tile: repetitions must be a sequence of integers, got "
                        f"{type(repetitions).__name__} {repetitions!r:.60}")
    reps = tuple(as_size(r, f"repetitions[{i}]", "tile") for i, r in enumerate(repetitions))
    nd = max(len(reps), x.ndim)
    reps = (1,) * (nd - len(reps)) + reps
    shape = (1,) * (nd - x.ndim) + x.shape
    # interleave a broadcast dim before each dim: (r0, n0, r1, n1, ...) -> (r0*n0, r1*n1, ...)
    inter = tuple(v for n in shape for v in (1, n))
    big = tuple(v for r, n in zip(reps, shape) for v in (r, n))
    if all(r == 1 for r in reps):   # nothing repeats: still a new tensor, as in NumPy
        return _fresh(reshape(x, shape))
    out = P.broadcast_to(reshape(x, inter), big)
    return reshape(out, tuple(r * n for r, n in zip(reps, shape)))


def repeat(x: Tensor, repeats: int | Tensor, /, *, axis: int | None = None) -> Tensor:
    """Repeat each element ``repeats`` times along ``axis`` (flattened when ``axis`` is None).

    An int ``repeats`` is a broadcast (jit-friendly); a tensor of per-element counts has a
    data-dependent output shape and works eagerly only.
    """
    x = as_tensor(x)
    if axis is None:
        x, axis = _flat(x), 0
    ax = normalize_axis(axis, x.ndim, "repeat")
    n = x.shape[ax]
    if not isinstance(repeats, (Tensor, np.ndarray, list, tuple)):   # one count for every element
        repeats = as_size(repeats, "repeats", "repeat")
        if repeats == 1:    # the reshapes below would only view x
            return _fresh(x)
        inner = reshape(x, x.shape[:ax + 1] + (1,) + x.shape[ax + 1:])
        big = P.broadcast_to(inner, x.shape[:ax + 1] + (repeats,) + x.shape[ax + 1:])
        return reshape(big, x.shape[:ax] + (n * repeats,) + x.shape[ax + 1:])
    from ._convert import eager_value
    counts = eager_value(as_tensor(repeats), "repeat with a tensor of repeats",
                         "pass repeats as a Python int, or make it a static argument")
    if counts.ndim > 1 or (counts.ndim == 1 and counts.size not in (1, n)):
        raise ValueError(f"repeat: repeats of shape {counts.shape} do not match axis {ax} of size {n}")
    if not np.issubdtype(counts.dtype, np.integer):
        raise TypeError(f"repeat: repeats must be integers, got {counts.dtype}")
    if (counts < 0).any():
        raise ValueError("repeat: repeats must be non-negative")
    if counts.size == 1:
        return repeat(x, int(counts.reshape(())), axis=ax)
    idx = np.repeat(np.arange(n, dtype=np.int64), counts)
    return P.take(x, P.placed_like(P.constant(idx), x), axis=ax)
