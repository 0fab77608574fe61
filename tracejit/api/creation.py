"""Creation functions of the Array API."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import prims as P
from ..tensors import Device, Tensor
from ..tracing import current_trace, note_data_read
from ._convert import _infer_dtype, as_int, as_shape, as_size


def _dtype(dtype: Any, op: str) -> np.dtype:
    """``dt.canonical(dtype)``, its error naming the function and the argument."""
    try:
        return dt.canonical(dtype)
    except TypeError as e:
        raise TypeError(f"{op}: dtype: {e}") from None


def _real_number(value: Any, name: str, op: str) -> None:
    """Bounds and steps of ``arange``/``linspace`` are real Python or NumPy numbers (or 0-d tensors)."""
    if isinstance(value, Tensor) and value.ndim == 0 and not dt.is_bool(value.dtype):
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: {name} must be a real number, got {type(value).__name__} {value!r:.60}")


def _placed(t: Tensor, device: Any) -> Tensor:
    """``t`` on ``device`` (default: the default device; see :func:`prims.placed`)."""
    if device is None:
        from ..device import default_device
        device = default_device()
    return P.placed(t, _device(device))


def _device(device: Any) -> Device:
    """``Device.parse``, which rejects unknown kinds and indices (``cpu:7``, ``cuda:x``)."""
    return Device.parse(device)


def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: bool | None = None,
            requires_grad: bool = False) -> Tensor:
    """A tensor from a tensor, NumPy array, DLPack producer, Python scalar or nested sequence;
    new data goes to ``device`` (default: :func:`tracejit.default_device`), a tensor stays
    where it is unless ``device`` is given."""
    want = None if dtype is None else _dtype(dtype, "asarray")
    if device is not None:
        _device(device)     # a bad device fails before any data is converted
    if isinstance(obj, Tensor):
        out = obj if want is None else P.cast(obj, want)
        if copy and out is obj:
            out = P.placed_like(P.bind("constant", value=np.array(obj.numpy(), copy=True)), obj) \
                if not obj.is_tracer else \
                P.add(obj, P.zeros_like(obj))
        if copy is False and out is not obj:
            raise ValueError("asarray(copy=False) would need a copy to change the dtype")
        if device is not None:
            out = _placed(out, device)
    else:
        if not isinstance(obj, np.ndarray) and hasattr(obj, "__dlpack__"):
            obj = np.from_dlpack(obj)
        if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
            arr = np.asarray(obj)
            trace = current_trace()
            if isinstance(obj, np.ndarray) and trace is not None and not trace.is_lazy:   # a program constant
                note_data_read(obj, "asarray of a NumPy array")
                arr = arr.copy()
            if want is None and arr.dtype not in dt.ALL_DTYPES:
                want = dt.canonical(arr.dtype)
        else:
            if copy is False and isinstance(obj, (bool, int, float, list, tuple)):
                # Python scalars and sequences have no buffer to share: a tensor from them is a copy
                raise ValueError(f"asarray(copy=False) would need a copy of a {type(obj).__name__}")
            if want is None:
                want = _infer_dtype(obj)
            if isinstance(obj, (list, tuple)):
                obj = [np.asarray(o) if isinstance(o, Tensor) else o for o in obj]
            arr = np.asarray(obj)
        if copy is False and want is not None and arr.dtype != want:
            raise ValueError("asarray(copy=False) would need a copy to change the dtype")
        if want is not None and arr.dtype != want:
            if dt.is_int(want) and arr.dtype.kind in "iu":
                info = np.iinfo(want)
                if arr.size and (arr.min() < info.min or arr.max() > info.max):
                    raise OverflowError(f"values out of range for {want.name}")
            arr = arr.astype(want)
        elif copy:
            arr = arr.copy()
        out = _placed(P.bind("constant", value=arr), device)    # (None: the default device)
    if requires_grad:
        out.requires_grad = True
    return out


def full(shape: int | Sequence[int], fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    """A new tensor of ``shape`` filled with ``fill_value``."""
    return _full(shape, fill_value, dtype, device, "full")


def _full(shape: Any, fill_value: Any, dtype: Any, device: Any, op: str) -> Tensor:
    """``full`` for ``op`` (zeros, ones, empty, the *_like functions), whose errors name it."""
    shape = as_shape(shape, op)
    if dtype is None:
        value = fill_value.item() if isinstance(fill_value, Tensor) else fill_value
        try:
            dtype = dt.scalar_dtype(value)
        except TypeError as e:
            raise TypeError(f"{op}: fill_value: {e}") from None
    dtype = _dtype(dtype, op)
    if isinstance(fill_value, complex) and not dt.is_complex(dtype):
        raise TypeError(f"{op}: fill_value {fill_value!r} is complex, dtype {dtype.name} is not")
    if device is not None:
        _device(device)
    arr = np.empty(shape, dtype=dtype)
    arr.fill(fill_value)
    return _placed(P.bind("constant", value=arr), device)


def zeros(shape: int | Sequence[int], *, dtype: Any = None, device: Any = None) -> Tensor:
    return _full(shape, 0, dt.default_float if dtype is None else dtype, device, "zeros")


def ones(shape: int | Sequence[int], *, dtype: Any = None, device: Any = None) -> Tensor:
    return _full(shape, 1, dt.default_float if dtype is None else dtype, device, "ones")


def empty(shape: int | Sequence[int], *, dtype: Any = None, device: Any = None) -> Tensor:
    return _full(shape, 0, dt.default_float if dtype is None else dtype, device, "empty")


def _like(x: Tensor, fill_value: Any, dtype: Any, device: Any, op: str) -> Tensor:
    return _full(x.shape, fill_value, x.dtype if dtype is None else dtype,
                 x.device if device is None else device, op)


def zeros_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _like(x, 0, dtype, device, "zeros_like")


def ones_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _like(x, 1, dtype, device, "ones_like")


def empty_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _like(x, 0, dtype, device, "empty_like")


def full_like(x: Tensor, /, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    return _like(x, fill_value, dtype, device, "full_like")


def arange(start: Any, /, stop: Any = None, step: Any = 1, *, dtype: Any = None,
           device: Any = None) -> Tensor:
    """Evenly spaced values in ``[start, stop)``; integers give int64, any float the default float."""
    if stop is None:
        start, stop = 0, start
    for name, value in (("start", start), ("stop", stop), ("step", step)):
        _real_number(value, name, "arange")
    if step == 0:
        raise ValueError("arange: step must not be zero")
    if dtype is None:
        is_f = any(isinstance(v, (float, np.floating)) for v in (start, stop, step))
        dtype = dt.default_float if is_f else dt.default_int
    dtype = _dtype(dtype, "arange")
    n = max(0, math.ceil((stop - start) / step))
    arr = (start + step * np.arange(n, dtype=np.float64 if dt.is_inexact(dtype) else np.int64)).astype(dtype)
    return _placed(P.bind("constant", value=arr), device)


def linspace(start: Any, stop: Any, /, num: int, *, dtype: Any = None, device: Any = None,
             endpoint: bool = True) -> Tensor:
    for name, value in (("start", start), ("stop", stop)):
        _real_number(value, name, "linspace")
    num = as_size(num, "num", "linspace")
    dtype = _dtype(dt.default_float if dtype is None else dtype, "linspace")
    arr = np.linspace(start, stop, num, endpoint=endpoint, dtype=np.float64).astype(dtype)
    return _placed(P.bind("constant", value=arr), device)


def eye(n_rows: int, n_cols: int | None = None, /, *, k: int = 0, dtype: Any = None,
        device: Any = None) -> Tensor:
    n_rows = as_size(n_rows, "n_rows", "eye")
    n_cols = n_rows if n_cols is None else as_size(n_cols, "n_cols", "eye")
    k = as_int(k, "k", "eye")
    dtype = _dtype(dt.default_float if dtype is None else dtype, "eye")
    return _placed(P.bind("constant", value=np.eye(n_rows, n_cols, k=k, dtype=dtype)), device)


def from_dlpack(x: Any, /, *, device: Any = None, copy: bool | None = None) -> Tensor:
    """A tensor sharing memory with a DLPack producer (NumPy, PyTorch, JAX, another tensor)."""
    if isinstance(x, Tensor):    # copy=True must still copy, and device= still move
        return asarray(x, copy=copy, device=device)
    arr = np.from_dlpack(x)
    return asarray(arr, copy=copy, device=device)


def meshgrid(*arrays: Tensor, indexing: str = "xy") -> list[Tensor]:
    from .manipulation import _fresh, broadcast_to, reshape
    if indexing not in ("xy", "ij"):
        raise ValueError(f"meshgrid: indexing must be 'xy' or 'ij', got {indexing!r}")
    n = len(arrays)
    sizes = [a.size for a in arrays]
    if indexing == "xy" and n >= 2:
        sizes[0], sizes[1] = sizes[1], sizes[0]
    out = []
    for i, a in enumerate(arrays):
        view = [1] * n
        axis = i
        if indexing == "xy" and n >= 2 and i < 2:
            axis = 1 - i
        view[axis] = a.size
        # NumPy's grids are new, writable arrays, not broadcast views of (or the very) inputs
        out.append(_fresh(broadcast_to(reshape(a, tuple(view)), tuple(sizes))))
    return out


def _tri_mask(x: Tensor, k: int, upper: bool) -> Tensor:
    from .elementwise import greater_equal, less_equal, subtract, where
    op = "triu" if upper else "tril"
    k = as_int(k, "k", op)
    if x.ndim < 2:
        raise ValueError(f"{op} needs at least a 2-D tensor, got shape {x.shape}")
    rows, cols = x.shape[-2], x.shape[-1]
    i = P.iota((rows, cols), 0, dt.int64, like=x)
    j = P.iota((rows, cols), 1, dt.int64, like=x)
    d = subtract(j, i)
    keep = greater_equal(d, k) if upper else less_equal(d, k)
    return where(keep, x, P.zeros_like(x) if x.ndim == 2 else 0)


def tril(x: Tensor, /, k: int = 0, *, diagonal: int | None = None) -> Tensor:
    """Lower triangle of the last two dims (above diagonal ``k`` zeroed; ``diagonal`` is
    PyTorch's name for ``k``, and ``x.tril(1)`` passes it by position)."""
    return _tri_mask(x, _diagonal(k, diagonal, "tril"), upper=False)


def triu(x: Tensor, /, k: int = 0, *, diagonal: int | None = None) -> Tensor:
    """Upper triangle of the last two dims (below diagonal ``k`` zeroed; ``diagonal`` as for
    :func:`tril`)."""
    return _tri_mask(x, _diagonal(k, diagonal, "triu"), upper=True)


def _diagonal(k: int, diagonal: int | None, op: str) -> int:
    if diagonal is None:
        return k
    if k != 0:
        raise TypeError(f"{op}() got both k={k!r} and diagonal={diagonal!r}: they name the same offset")
    return diagonal
