"""Turning user inputs into tensors, and the promotion/broadcast prelude of elementwise ops."""
from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import prims as P
from ..tensors import Tensor
from ..tracing import current_trace, grad_enabled, note_data_read

PY_SCALARS = (bool, int, float, complex)


def is_scalar(x: Any) -> bool:
    return isinstance(x, PY_SCALARS) or (isinstance(x, np.generic) and x.ndim == 0 and not
                                         isinstance(x, np.ndarray))


def as_tensor(x: Any, dtype: np.dtype | None = None) -> Tensor:
    """A tensor for ``x`` (tensors pass through; arrays and nested lists become constants)."""
    if isinstance(x, Tensor):
        return x if dtype is None else P.cast(x, dtype)
    if isinstance(x, np.generic):
        x = np.asarray(x)
    if isinstance(x, np.ndarray):
        if current_trace() is not None:       # a constant of the program: guard and copy it
            note_data_read(x, "using a NumPy array")
            x = x.copy()
        arr = x if dtype is None else x.astype(dtype)
        if arr.dtype not in dt.ALL_DTYPES:
            arr = arr.astype(dt.canonical(arr.dtype))
        return P.constant(arr)
    if dtype is None:
        dtype = _infer_dtype(x)
    return P.constant(np.asarray(x, dtype=dtype))


def _infer_dtype(x: Any) -> np.dtype:
    """Default dtype of Python data (lists of bools/ints/floats), by the standard's rules."""
    flat = np.asarray(x)
    if flat.dtype.kind == "b":
        return dt.bool_
    if flat.dtype.kind in "iu":
        return dt.default_int
    if flat.dtype.kind == "f":
        return dt.default_float
    if flat.dtype.kind == "c":
        return dt.default_complex
    if flat.dtype == object or flat.dtype.kind in "UO":
        raise TypeError(f"cannot make a tensor from {type(x).__name__} data")
    return dt.canonical(flat.dtype)


def all_weak(*args: Any) -> bool:
    """Every operand is a Python number or a traced one, and one is traced: the result of an
    op on them stands for a Python number too (it promotes weakly)."""
    return all(_is_weak(a) for a in args) and any(isinstance(a, Tensor) for a in args)


def _is_weak(a: Any) -> bool:
    """A Python scalar, or a jit argument that was one (traced as a weakly typed 0-d tensor)."""
    return is_scalar(a) or (isinstance(a, Tensor) and a._weak)


_KIND_EXAMPLE = {"b": False, "i": 0, "u": 0, "f": 0.0, "c": 0j}


def operands(op: str, *args: Any) -> list[Tensor]:
    """Promote (weak Python scalars included) and broadcast ``args`` to one dtype and shape."""
    if len(args) == 2:      # two strong tensors of one dtype and shape: nothing to do (most eager ops)
        a, b = args
        ta, tb = type(a), type(b)
        if ta is Tensor and tb is Tensor:
            if not a._weak and not b._weak:
                if a._aval == b._aval:
                    return [a, b]
                if a._aval.dtype == b._aval.dtype:      # one dtype: only broadcasting to do
                    shape = broadcast_shapes_for(op, a._aval.shape, b._aval.shape)
                    taped = (a.requires_grad or b.requires_grad) and grad_enabled()
                    return [_broadcast_operand(a, shape, taped), _broadcast_operand(b, shape, taped)]
        elif ta is Tensor and tb in _FAST_NUMBERS and a._aval.dtype.kind in "fc" and not a._weak:
            return [a, _number_like(b, a)]
        elif tb is Tensor and ta in _FAST_NUMBERS and b._aval.dtype.kind in "fc" and not b._weak:
            return [_number_like(a, b), b]
    vals = [a if is_scalar(a) or isinstance(a, Tensor) else as_tensor(a) for a in args]
    strong = [v for v in vals if not _is_weak(v)]
    weak = [v if is_scalar(v) else _KIND_EXAMPLE[v.dtype.kind] for v in vals if _is_weak(v)]
    if strong:
        dtype = dt.promote_types(*(t.dtype for t in strong))
        for w in weak:
            dtype = dt.weak_scalar_dtype(w, dtype)
    elif any(isinstance(v, Tensor) for v in vals):
        # only traced Python numbers (a jit argument, an optimizer's hyperparameter) and Python
        # numbers: computed as Python computes them, at the traced numbers' full width
        # (``1 - beta2`` in float64, not rounded to float32 first)
        dtype = dt.promote_types(*(v.dtype if isinstance(v, Tensor) else dt.python_width(v) for v in vals))
    else:
        dtype = dt.promote_types(*(dt.scalar_dtype(w) for w in weak))
    shape = broadcast_shapes_for(op, *(() if is_scalar(v) else v.shape for v in vals))
    trace = current_trace()
    eager = trace is None
    taped = any(isinstance(v, Tensor) and v.requires_grad for v in vals) and grad_enabled()
    out = []
    for v in vals:
        if is_scalar(v):
            value = np.asarray(v, dtype=dtype)
            if eager:       # one constant already of the full shape (a free NumPy view)
                out.append(P.constant(np.broadcast_to(value, shape)))
                continue
            if trace.is_lazy:
                out.append(trace.broadcast_number(value, shape))
                continue
            t = _traced_number(value)   # a 0-d constant and a broadcast, read by fusion
        else:
            t = P.cast(v, dtype)
        out.append(_broadcast_operand(t, shape, taped))
    return out


def _broadcast_operand(t: Tensor, shape: tuple[int, ...], taped: bool) -> Tensor:
    """``t`` broadcast to ``shape`` for one op; in lazy mode without view bookkeeping unless
    the op goes on the autograd tape (which keeps its operands; see ``LazyTrace.broadcast_operand``)."""
    if t._aval.shape == shape:
        return t
    if not taped:
        trace = current_trace()
        if trace is not None and trace.is_lazy:
            return trace.broadcast_operand(t, shape)
    return P.broadcast_to(t, shape)


_FAST_NUMBERS = (int, float)     # Python numbers that take a float tensor's dtype as they are


def _number_like(v: int | float, t: Tensor) -> Tensor:
    """Python number ``v`` as the other operand of strong float tensor ``t`` (its dtype and
    shape): what the general path of :func:`operands` makes of it, without the promotion."""
    shape, dtype = t._aval
    trace = current_trace()
    if trace is None:       # one constant already of the full shape (a free NumPy view)
        return P.constant(np.broadcast_to(np.asarray(v, dtype=dtype), shape))
    if trace.is_lazy:
        return trace.number_operand(v, dtype, shape)
    return P.broadcast_to(_traced_number(np.asarray(v, dtype=dtype)), shape)


# Numbers the passes simplify with (x * 1, x + 0, x ** 0.5, x * 2) or that have no ordinary value
_INLINE_NUMBERS = frozenset({0.0, 1.0, -1.0, 2.0, 0.5, -0.5})


def _traced_number(value: np.ndarray) -> Tensor:
    """A Python number met while tracing.  A float other than the few the passes simplify with
    is a run-time constant: kernels load it instead of compiling it in, so functions that differ
    only in such a number (a learning rate, a scale in a closure) share their kernels."""
    if dt.is_float(value.dtype) and np.isfinite(value) and float(value) not in _INLINE_NUMBERS:
        return P.bind("constant", value=value, runtime=True)
    return P.constant(value)


def broadcast_shapes_for(op: str, *shapes: Sequence[int]) -> tuple[int, ...]:
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for s in shapes:
        for i, n in enumerate(s):
            j = ndim - len(s) + i
            if n != out[j] and n != 1 and out[j] != 1:
                listed = " and ".join(str(tuple(x)) for x in shapes)
                raise ValueError(f"{op}: shapes {listed} cannot be broadcast together "
                                 f"(dim {j - ndim}: {out[j]} vs {n})")
            if n != 1:
                out[j] = n
    return tuple(out)


def as_int(value: Any, name: str, op: str) -> int:
    """``value`` as a Python int, for sizes, axes and counts.

    Like NumPy: ints, NumPy integers and other ``__index__`` types pass; floats (even 2.0),
    strings, None and bools (an axis or size of True is a mistake, not 1) raise TypeError
    naming ``op`` and the argument."""
    if type(value) is int:      # the common case, kept cheap for eager dispatch
        return value
    if isinstance(value, (bool, np.bool_)) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{op}: {name} must be an integer, got {type(value).__name__} {value!r:.60}")
    return operator.index(value)


def as_size(value: Any, name: str, op: str) -> int:
    """A non-negative integer (a dimension, a count)."""
    n = as_int(value, name, op)
    if n < 0:
        raise ValueError(f"{op}: {name} must be non-negative, got {n}")
    return n


def int_sequence(value: Any, name: str, op: str) -> tuple[int, ...]:
    """An int or a sequence of ints as a tuple (a string or a float is not a sequence of ints)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        if hasattr(type(value), "__index__") and not isinstance(value, (bool, np.bool_)):
            return (operator.index(value),)
        raise TypeError(f"{op}: {name} must be an integer or a sequence of integers, "
                        f"got {type(value).__name__} {value!r:.60}")
    return tuple(as_int(v, f"{name}[{i}]", op) for i, v in enumerate(value))


def as_shape(shape: Any, op: str, name: str = "shape") -> tuple[int, ...]:
    """A shape: an int or a sequence of non-negative ints."""
    dims = int_sequence(shape, name, op)
    for i, n in enumerate(dims):
        if n < 0:
            raise ValueError(f"{op}: negative dimensions are not allowed: {name}[{i}] is {n} in {dims}")
    return dims


def normalize_axis(axis: int, ndim: int, op: str, name: str = "axis") -> int:
    axis = as_int(axis, name, op)
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ValueError(f"{op}: {name} {axis} is out of range for a {ndim}-D tensor")
    return axis % max(ndim, 1)


def normalize_axes(axis: int | Sequence[int] | None, ndim: int, op: str,
                   name: str = "axis") -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(sorted(normalize_axis(a, ndim, op, name) for a in int_sequence(axis, name, op)))
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: repeated {name} in {axis}")
    return axes


def eager_value(x: Tensor, op: str, way_out: str) -> np.ndarray:
    """``x``'s NumPy value for an op whose output shape depends on data (eager mode only).

    Under ``jit`` the shape would have to be known at trace time, so this raises
    :class:`~tracejit.errors.ConcretizationError` naming the user's line and ``way_out``.
    """
    from ..errors import ConcretizationError, user_frame
    from ..tracing import current_trace
    trace = current_trace()
    if trace is not None and trace.is_lazy:
        return x.numpy()                 # lazy mode: the pending graph is run to read it
    if x.is_tracer or trace is not None:
        raise ConcretizationError(
            f"{op} has a data-dependent output shape and cannot be traced by tracejit.jit\n"
            f"  at {user_frame()}\nWays out: {way_out}, or call {op} outside the jitted function "
            "(run it eagerly).")
    return x.numpy()
