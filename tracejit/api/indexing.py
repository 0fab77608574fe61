"""Indexing: basic indexing as views (slice + reshape), integer/boolean arrays through ``take``."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import prims as P
from ..errors import ConcretizationError, UnsupportedUnderJitError, user_frame
from ..tensors import Tensor
from ._convert import as_tensor, normalize_axis

_INDEX_TYPES = (type(None), type(Ellipsis), slice, int, np.integer, np.bool_, Tensor, np.ndarray, list)


def _check_key_types(key: list[Any]) -> None:
    """NumPy's rule: a float or a string is no index (``x[1.5]`` must not silently read ``x[1]``)."""
    for k in key:
        if not isinstance(k, _INDEX_TYPES):
            raise IndexError(f"only integers, slices (`:`), ellipsis (`...`), None and integer or boolean "
                             f"arrays are valid indices, got {type(k).__name__} {k!r:.60}")


def _expand_key(key: Any, ndim: int) -> list[Any]:
    key = list(key) if isinstance(key, tuple) else [key]
    _check_key_types(key)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > ndim:
        raise IndexError(f"too many indices for a tensor of dimension {ndim}: {used}")
    if any(k is Ellipsis for k in key):  # not `in`: that would compare tensors with ==
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key[i:i + 1] = [slice(None)] * (ndim - used)
    else:
        key += [slice(None)] * (ndim - used)
    return key


def _is_basic(k: Any) -> bool:
    return k is None or isinstance(k, (slice, int, np.integer)) or (
        isinstance(k, Tensor) and k.ndim == 0 and dt.is_int(k.dtype) and not k.is_tracer)


def _basic_plan(shape: tuple[int, ...], key: list[Any]):
    """(start, stop, step) per dim, the final shape, and whether any dim really is sliced."""
    start, stop, step, out_shape = [], [], [], []
    dim = 0
    for k in key:
        if k is None:
            out_shape.append(1)
            continue
        n = shape[dim]
        if isinstance(k, slice):
            b, e, s = k.indices(n)
            if not len(range(b, e, s)):
                # an empty slice; slice.indices can give a start of -1 for negative steps
                # (x[-9::-2] on a short axis), which no primitive should see
                b, e, s = 0, 0, 1
            start.append(b)
            stop.append(e)
            step.append(s)
            out_shape.append(len(range(b, e, s)))
        else:
            i = int(k)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {dim} with size {n}")
            i %= n
            start.append(i)
            stop.append(i + 1)
            step.append(1)
        dim += 1
    trivial = all(b == 0 and s == 1 and e == n for b, e, s, n in zip(start, stop, step, shape))
    return tuple(start), tuple(stop), tuple(step), tuple(out_shape), trivial


def getitem(x: Tensor, key: Any) -> Tensor:
    """``x[key]``: ints, slices (any step), None, Ellipsis, integer arrays and boolean masks."""
    keys = key if isinstance(key, tuple) else (key,)
    if any(isinstance(k, (bool, np.bool_)) for k in keys):
        # a Python bool is a 0-d mask (as in NumPy), not the integer index 0 or 1
        keys = tuple(as_tensor(bool(k)) if isinstance(k, (bool, np.bool_)) else k for k in keys)
        key = keys if isinstance(key, tuple) else keys[0]
    if any(isinstance(k, (Tensor, np.ndarray, list)) and not _is_basic(k) for k in keys):
        return _advanced(x, key)
    k = _expand_key(key, x.ndim)
    start, stop, step, out_shape, trivial = _basic_plan(x.shape, k)
    out = x if trivial else P.slice(x, start=start, stop=stop, step=step)
    return out if out.shape == out_shape else P.reshape(out, shape=out_shape)


def _advanced(x: Tensor, key: Any) -> Tensor:
    if not isinstance(key, tuple):
        key = (key,)
    arrays = [i for i, k in enumerate(key) if not _is_basic(k) and k is not Ellipsis]
    if len(arrays) != 1 or any(k is Ellipsis or k is None for k in key):
        raise IndexError("tracejit supports one integer or boolean array in an index, with ints and slices "
                         "around it; use take() for more")
    pos = arrays[0]
    idx = as_tensor(key[pos])
    if dt.is_bool(idx.dtype):
        if idx.is_tracer and not idx._trace.is_lazy:
            raise ConcretizationError(
                f"boolean-mask indexing has a data-dependent shape and cannot be traced by jit\n"
                f"  at {user_frame()}\nuse tracejit.where(mask, x, 0) instead, or run eagerly")
        flat_axes = idx.ndim
        before = getitem(x, tuple(key[:pos]) + (Ellipsis,)) if pos else x
        axis = sum(1 for k in key[:pos] if isinstance(k, slice))  # ints before the mask drop their dims
        lead = before.shape[:axis]
        merged = P.reshape(before, shape=lead + (int(np.prod(before.shape[axis:axis + flat_axes])),)
                           + before.shape[axis + flat_axes:])
        nz = np.flatnonzero(idx.numpy()).astype(np.int64)
        out = P.take(merged, P.placed_like(P.constant(nz), merged), axis=axis)
        rest = key[pos + 1:]
        return getitem(out, (slice(None),) * (axis + 1) + tuple(rest)) if rest else out
    if not dt.is_int(idx.dtype):
        raise IndexError(f"arrays used as indices must be integer or boolean, got {idx.dtype.name}")
    head = getitem(x, tuple(key[:pos]) + (Ellipsis,)) if pos else x
    axis = sum(1 for k in key[:pos] if isinstance(k, slice))
    n = head.shape[axis]
    idx = P.bind("mod", idx, P.full(idx.shape, n, idx.dtype)) if _concrete(idx) and idx.size and \
        int(np.min(idx.numpy())) < 0 and int(np.min(idx.numpy())) >= -n else idx
    out = P.take(head, idx, axis=axis)
    rest = key[pos + 1:]
    if rest:
        out = getitem(out, (slice(None),) * (axis + idx.ndim) + tuple(rest))
    return out


def _concrete(t: Tensor) -> bool:
    """Whether ``t``'s values can be read now (eager, or pending in lazy mode)."""
    return not t.is_tracer or t._trace.is_lazy


def take(x: Tensor, indices: Tensor, /, *, axis: int | None = None) -> Tensor:
    """Elements of ``x`` at integer ``indices`` along ``axis`` (Array API ``take``)."""
    x = as_tensor(x)
    if axis is None:
        if x.ndim != 1:
            raise ValueError(f"take: axis is required for a {x.ndim}-D tensor")
        axis = 0
    return P.take(x, as_tensor(indices), axis=normalize_axis(axis, x.ndim, "take"))


def setitem(x: Tensor, key: Any, value: Any) -> None:
    """``x[key] = value``: in place on eager tensors; a functional update when traced."""
    if not x.is_tracer and not (isinstance(value, Tensor) and value.is_tracer):
        from ..tracing import current_trace
        if current_trace() is None:
            npkey = tuple(k.numpy() if isinstance(k, Tensor) else k for k in key) if isinstance(key, tuple) \
                else (key.numpy() if isinstance(key, Tensor) else key)
            if _on_tape(x, value):
                _update_on_tape(x, npkey, value)
                return
            v = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
            if x.device.type == "cpu":
                x._value[npkey] = v.astype(x.dtype, copy=False)
                return
            # a GPU tensor: the update is made on a host copy, which then replaces its memory
            from ..device import cuda_device, write_back
            host = x.numpy().copy()
            host[npkey] = v.astype(x.dtype, copy=False)
            write_back(x, cuda_device(x.device).upload(host))
            return
    mask = key[0] if isinstance(key, tuple) and len(key) == 1 else key
    if isinstance(mask, Tensor) and mask.dtype == dt.bool_:
        updated = _masked_update(x, mask, value)
        if updated is None:             # one entry per selected element: the mask is known here
            _update_on_tape(x, mask.numpy(), value)
        else:
            x._assign(updated)
        return
    k = _expand_key(key, x.ndim)
    known = [_known_index(i) for i in k]
    if not all(_is_basic(i) for i in k) and all(i is not None for i in known):
        _update_on_tape(x, tuple(known), value)     # (index arrays known now: constants, or lazy)
        return
    if not all(_is_basic(i) for i in k):
        raise UnsupportedUnderJitError(
            f"under jit, x[key] = value supports ints, slices, None and Ellipsis in key, not {key!r}\n"
            f"  at {user_frame()}\nuse tracejit.where(mask, value, x) for a masked update")
    start, stop, step, target, _ = _basic_plan(x.shape, k)
    slice_shape = tuple(len(range(b, e, s)) for b, e, s in zip(start, stop, step))
    v = _value_as(value, x.dtype)
    v = P.broadcast_to(_drop_leading_ones(v, len(target), target), target)
    v = P.reshape(v, shape=slice_shape) if v.shape != slice_shape else v
    x._assign(P.slice_scatter(x, v, start=start, stop=stop, step=step))


def _known_index(i: Any) -> Any:
    """A key part with its values known while recording (an index array made from constants,
    or any in lazy mode), as NumPy indexes with it; None for a traced one."""
    if not isinstance(i, Tensor):
        return i
    if _concrete(i):
        return i.numpy()
    node = i._trace.graph.node(i._node)
    # (a run-time constant may hold another number at the next call of the same trace)
    return node.params["value"] if node.op == "constant" and not node.params.get("runtime") else None


def _on_tape(x: Tensor, value: Any) -> bool:
    """Must ``x[key] = value`` be recorded for autograd (rather than written into the array)?"""
    from ..tracing import grad_enabled
    # (a leaf's own values written outside autograd, as a module's init does, stay a plain write)
    return grad_enabled() and (x._grad_fn is not None or isinstance(value, Tensor) and value.requires_grad)


def _update_on_tape(x: Tensor, npkey: Any, value: Any) -> None:
    """``x[key] = value`` as ops, for any NumPy key: ``where(selected, placed, x)``,
    ``placed`` taking each written element of the (broadcast) value, so the gradient of ``x``
    is zero where it was overwritten and the value's gradient is what reached its elements (the
    last write wins for a position written twice, as NumPy's assignment does)."""
    from .elementwise import where
    positions = np.arange(x.size, dtype=np.int64).reshape(x.shape)[npkey]
    if positions.size == 0:
        return
    v = _value_as(value, x.dtype)
    v = P.broadcast_to(_drop_leading_ones(v, positions.ndim, positions.shape), positions.shape)
    source = np.zeros(x.size, dtype=np.int64)
    source[positions.ravel()] = np.arange(positions.size)
    selected = np.zeros(x.size, dtype=bool)
    selected[positions.ravel()] = True
    placed = P.take(P.reshape(v, shape=(positions.size,)), P.placed_like(P.constant(source), x), axis=0)
    mask = P.placed_like(P.constant(selected.reshape(x.shape)), x)
    x._assign(where(mask, P.reshape(placed, shape=x.shape), x))


def _masked_update(x: Tensor, mask: Tensor, value: Any) -> Tensor | None:
    """``x[mask] = value`` recorded, as ``where(mask, value, x)``, for a value that fills every
    selected element (or row) alike; None for one with an entry per selected element, which
    needs the mask's values (lazy mode: :func:`_update_on_tape`)."""
    if mask.shape != x.shape[:mask.ndim]:
        raise IndexError(f"setitem: a boolean mask of shape {mask.shape} does not match the leading "
                         f"dims of a tensor of shape {x.shape}")
    rest = x.shape[mask.ndim:]
    v = _value_as(value, x.dtype)
    from .elementwise import where
    m = P.reshape(mask, shape=mask.shape + (1,) * len(rest)) if rest else mask
    if v.size == 1 or v.ndim <= len(rest) or all(n == 1 for n in v.shape[:v.ndim - len(rest)]):
        v = P.reshape(v, shape=()) if v.size == 1 else _drop_leading_ones(v, len(rest), rest)
        return where(m, P.broadcast_to(v, x.shape) if v.ndim else v, x)
    if not _concrete(mask):
        raise UnsupportedUnderJitError(
            f"under jit, x[mask] = value needs a value that fills every selected element alike (a "
            f"number, or one entry per trailing dim {rest}), not shape {v.shape}: how many elements "
            f"the mask selects is data\n  at {user_frame()}\nuse tracejit.where(mask, value, x)")
    return None


def _value_as(value: Any, dtype: Any) -> Tensor:
    """The value of an item assignment as a tensor of the target's dtype (a Python number wraps
    as it does eagerly)."""
    if isinstance(value, (bool, int, float, complex)):
        return P.constant(np.asarray(value).astype(dtype))
    return P.cast(as_tensor(value), dtype)


def _drop_leading_ones(v: Tensor, ndim: int, target: tuple[int, ...]) -> Tensor:
    """``v`` without the leading size-1 dims beyond ``ndim``: NumPy lets a value of shape
    (1, 2, 3) fill a (2, 3) selection, as it broadcasts the value to the selection's shape."""
    if v.ndim <= ndim:
        return v
    extra = v.shape[:v.ndim - ndim]
    if any(n != 1 for n in extra):
        raise ValueError(f"setitem: could not broadcast a value of shape {v.shape} into a selection of "
                         f"shape {target}")
    return P.reshape(v, shape=v.shape[v.ndim - ndim:])
