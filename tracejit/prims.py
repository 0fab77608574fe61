"""Binding primitives: the single path every op takes, eager or traced.

:func:`bind` applies the op table's shape/dtype rule, then either records the op in the
active trace (static mode) or runs its NumPy reference (dynamic mode), and finally lets
autograd record it on the tape.  The functions named after each primitive (``prims.add``,
``prims.reduce_sum``, …) are thin calls of :func:`bind`; the public API and the VJPs use them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import dtypes as dt
from . import eager_device, tracing
from .aliasing import VIEW_OPS
from .ops import PRIMS, AVal, Prim
from .tensors import CPU, Tensor

# While a profile records (``tracejit.profiler``): runs and times an eager CPU op in place of
# ``prim.impl``; None otherwise, so an eager op pays one check.
eager_hook: Callable[..., Any] | None = None


# Primitives that compute on their operands' values: on bfloat16 they run in float32 (see
# ``_bind_widened``).  Casts, movement ops and sources only move or make bits.
WIDENED = frozenset(n for n, p in PRIMS.items() if p.kind not in ("movement", "source") and n != "cast")
_BF16 = dt.bfloat16


def bind(name: str, *inputs: Tensor, **params: Any) -> Tensor:
    """Apply primitive ``name``: check shapes and dtypes, then record it (a trace or lazy mode is
    active) or run it now, and put it on the autograd tape when an input requires grad."""
    prim = PRIMS[name]
    if name in WIDENED:
        for x in inputs:
            if x._aval.dtype is _BF16 and not (name == "matmul" and _on_cpu(inputs)):
                return _bind_widened(name, inputs, params)
    aval = prim.infer(*[x._aval for x in inputs], **params)
    state = tracing._local          # (one thread-local read for both questions)
    traces = state.traces
    out = traces[-1].record(prim, inputs, params, aval) if traces else run_eager(prim, inputs, params, aval)
    if state.grad_enabled and prim.vjp is not None:
        for x in inputs:
            if x.requires_grad:
                _autograd().record(out, prim, inputs, params)
                break
    return out


def _on_cpu(inputs: tuple[Tensor, ...]) -> bool:
    """Whether every operand is on the host, where a bfloat16 matmul sums in float32 itself
    (``runtime.cpu_gemm``: AVX-512 BF16 dot products where the CPU has them)."""
    return all(x._device is CPU or x._device == CPU for x in inputs)


def _bind_widened(name: str, inputs: tuple[Tensor, ...], params: dict[str, Any]) -> Tensor:
    """``name`` on bfloat16 operands: computed in float32, a bfloat16 result rounded back once."""
    want = PRIMS[name].infer(*[x._aval for x in inputs], **params).dtype
    wide = [bind("cast", x, dtype=dt.float32) if x._aval.dtype is _BF16 else x for x in inputs]
    out = bind(name, *wide, **params)
    return bind("cast", out, dtype=want) if out._aval.dtype != want else out
def run_eager(prim: Prim, inputs: tuple[Tensor, ...], params: dict[str, Any], aval: AVal) -> Tensor:
    """Run ``prim`` now: NumPy on the host, a one-op kernel on a GPU."""
    for x in inputs:
        if x._trace is not None:
            x = tracing.settled(x)
        if x._device is not CPU and x._device != CPU:
            return eager_device.run(prim, inputs, params, aval)
    if eager_hook is None:
        value = prim.impl(*[x._value for x in inputs], **params)
    else:
        value = eager_hook(prim, inputs, params)
    if type(value) is not np.ndarray:
        value = np.asarray(value)
    elif not value.flags.c_contiguous and value.flags.writeable and prim.name not in VIEW_OPS:
        # NumPy keeps an operand's layout (a transposed input's astype or x * 2 is column-major);
        # a computed value is row-major here, as traces assume, so a later reshape of it is a
        # view (or a copy) eagerly exactly when it is one under jit.  Read-only broadcasts (a
        # constant's stride-0 fill) cannot be written through, so they stay as they are
        value = np.ascontiguousarray(value)
    if value.shape != aval.shape or value.dtype != aval.dtype:
        aval = AVal(value.shape, value.dtype)
    return Tensor._new(value, None, -1, aval, CPU)


_autograd_module: Any = None


def _autograd() -> Any:
    """``tracejit.autograd`` (it imports this module, so it is looked up once, on first use)."""
    global _autograd_module
    if _autograd_module is None:
        from . import autograd
        _autograd_module = autograd
    return _autograd_module


def _make(name: str):
    def call(*inputs: Tensor, **params: Any) -> Tensor:
        return bind(name, *inputs, **params)
    call.__name__ = name
    call.__doc__ = f"The ``{name}`` primitive (see tracejit.ops)."
    return call


for _name in PRIMS:
    globals()[_name] = _make(_name)


def take(a: Tensor, idx: Tensor, *, axis: int) -> Tensor:  # noqa: F811  (the primitive, indices checked)
    """The ``take`` primitive.  Traced, its indices are checked first (``index_check``: in range,
    negative ones wrapped), which lets fusion turn the gather into indexed loads inside the
    kernel that reads it (on the CPU) and its gradient's scatter_add run without bounds checks."""
    # (whenever a trace records, eager operands included: in lazy mode the take may never run)
    if tracing.current_trace() is not None:
        idx = bind("index_check", idx, size=a.shape[axis])
    return bind("take", a, idx, axis=axis)


# ---------------------------------------------------------------------------- small composites
# used by VJPs and the API layer; each is a couple of primitives

def constant(value: Any, dtype: np.dtype | None = None) -> Tensor:
    arr = np.asarray(value, dtype=dtype)
    return bind("constant", value=arr)


def size_constant(n: int | float, dtype: np.dtype) -> Tensor:
    """A count derived from shapes (a mean's divisor) as a 0-d value kernels read at run time:
    the compiled kernels are the same for every batch size."""
    return bind("constant", value=np.asarray(n, dtype=dtype), runtime=True)


def placed(t: Tensor, device: Any) -> Tensor:
    """``t`` moved to ``device`` when eager (in lazy mode, see ``LazyTrace.place``).  Traced
    values stay as they are: a traced program runs on one device."""
    trace = tracing.current_trace()
    if t.device != device:
        if trace is None:
            return t.to_device(device)
        if trace.is_lazy:
            return trace.place(t, device)
    return t


def placed_like(t: Tensor, like: Tensor) -> Tensor:
    """``t`` (made on the host) on ``like``'s device: a GPU op takes host operands only as
    broadcast scalars."""
    return placed(t, like.device)


def iota(shape: tuple[int, ...], axis: int, dtype: np.dtype, like: Tensor) -> Tensor:
    """Indices along ``axis`` of ``shape``, on ``like``'s device."""
    return placed_like(bind("iota", shape=tuple(shape), axis=axis, dtype=dtype), like)


def full(shape: tuple[int, ...], value: Any, dtype: np.dtype) -> Tensor:
    c = constant(np.asarray(value, dtype=dtype))
    if not shape:
        return c
    return bind("expand", bind("reshape", c, shape=(1,) * len(shape)), shape=tuple(shape))


def full_like(x: Tensor, value: Any) -> Tensor:
    return full(x.shape, value, x.dtype)


def zeros_like(x: Tensor) -> Tensor:
    return full_like(x, 0)


def flip(x: Tensor, axis: int) -> Tensor:
    n = x.shape[axis]
    start = tuple(n - 1 if i == axis else 0 for i in range(x.ndim))
    stop = tuple(-1 if i == axis else s for i, s in enumerate(x.shape))
    step = tuple(-1 if i == axis else 1 for i in range(x.ndim))
    return bind("slice", x, start=start, stop=stop, step=step)


def broadcast_to(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Right-aligned broadcast: reshape to add leading 1s, then expand."""
    shape = tuple(shape)
    if x.shape == shape:
        return x
    if x.ndim > len(shape):
        raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {shape}")
    if x.ndim < len(shape):
        x = bind("reshape", x, shape=(1,) * (len(shape) - x.ndim) + x.shape)
    return bind("expand", x, shape=shape)


def cast(x: Tensor, dtype: np.dtype) -> Tensor:
    return x if x.dtype == dtype else bind("cast", x, dtype=dtype)


def sum_to_shape(g: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Reduce a broadcast gradient back to ``shape`` (the VJP of right-aligned broadcasting)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    if axes:
        g = bind("reduce_sum", g, axes=axes)
    return bind("reshape", g, shape=tuple(shape))


def is_float(x: Tensor) -> bool:
    return dt.is_float(x.dtype)
