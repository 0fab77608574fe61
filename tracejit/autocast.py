"""``tj.autocast``: matrix products in reduced precision, accumulated in float32.

Inside ``with tj.autocast(dtype=tj.bfloat16):`` (or ``tj.float16``) the float32 operands of
``matmul`` (so also of ``linear``, ``tensordot``, ``@``; float64 is left alone) are rounded to
the reduced dtype and the product is computed from those values in float32 (the product of two
bfloat16 or float16 numbers is exact in float32; only the float32 sum rounds); the result comes
back in the reduced dtype, as ``torch.autocast`` gives (``linear`` adds its bias in the reduced
dtype too, so the layer's output is reduced as in PyTorch).  Other ops keep their dtypes;
promotion brings a reduced result back to float32 where it meets float32 (a residual).
Gradients flow through the casts, so backward runs the same reduced-precision products.

The mode is per thread.  Under ``jit`` the mode a matmul saw is a guard on the trace: the same
function called inside and outside ``autocast`` keeps one compiled program for each.
"""
from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any

from . import dtypes as dt
from . import prims as P
from .guards import ValueGuard, user_line
from .tensors import Tensor
from .tracing import current_trace

__all__ = ["autocast", "autocast_dtype", "autocast_operands"]

REDUCED = (dt.bfloat16, dt.float16)
_local = threading.local()
_guarded: weakref.WeakSet = weakref.WeakSet()       # traces that already hold the mode's guard


def _stack() -> list[Any]:
    s = getattr(_local, "stack", None)
    if s is None:
        s = _local.stack = []
    return s


def _mode() -> Any:
    s = _stack()
    return s[-1][0] if s else None


def _mode_outside(trace: Any) -> Any:
    """The mode the traced function was called in: blocks it entered itself are part of its code."""
    for mode, entered_in in reversed(_stack()):
        if entered_in is not trace:
            return mode
    return None


def autocast_dtype() -> Any:
    """The reduced dtype of the innermost enabled ``autocast`` on this thread, else None."""
    trace = current_trace()
    # (a lazy recording has no guards: the mode shapes the ops it records, and so its key)
    if trace is not None and not trace.is_lazy and trace not in _guarded:
        trace.guards.append(ValueGuard("tj.autocast mode", user_line(), _mode, _mode_outside(trace)))
        _guarded.add(trace)
    return _mode()


def autocast_operands(*xs: Tensor) -> tuple[tuple[Tensor, ...], Any]:
    """The operands of a matmul-like op under the current mode, and the mode's dtype (None when
    no ``autocast`` is on: operands unchanged).  Floating operands other than float64 (PyTorch
    leaves float64 alone too) are rounded to the reduced dtype; float16 ones are widened to
    float32, the accumulation dtype (bfloat16 matmuls accumulate in float32 themselves); the
    caller casts its result to the returned dtype."""
    low = autocast_dtype()
    if low is None or not all(dt.is_float(x.dtype) and x.dtype != dt.float64 for x in xs):
        return xs, None
    if low == dt.bfloat16:
        # a bfloat16 matmul sums its products in float32 (AVX-512 BF16 dot products where the
        # CPU has them), so the operands go in as they are rounded
        return tuple(P.cast(x, dtype=low) for x in xs), low
    return tuple(P.cast(P.cast(x, dtype=low), dtype=dt.float32) for x in xs), low


class autocast:  # noqa: N801 - PyTorch's name
    """Context manager (and decorator): matmuls in ``dtype`` (bfloat16 by default, or float16)
    with float32 accumulation.  ``device_type`` is accepted for PyTorch's signature ("cpu" or
    "cuda"; the mode applies to both); ``enabled=False`` turns an enclosing mode off."""

    def __init__(self, device_type: str | None = None, dtype: Any = None, enabled: bool = True,
                 cache_enabled: bool | None = None) -> None:
        if device_type is not None and str(device_type).split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"autocast: device_type must be 'cpu' or 'cuda', got {device_type!r}")
        low = dt.bfloat16 if dtype is None else dt.canonical(dtype)
        if low not in REDUCED:
            raise ValueError(f"autocast: dtype must be bfloat16 or float16, got {low.name}")
        self.dtype, self.enabled = low, bool(enabled)

    def __enter__(self) -> autocast:
        _stack().append((self.dtype if self.enabled else None, current_trace()))
        return self

    def __exit__(self, *exc: Any) -> None:
        _stack().pop()

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with autocast(dtype=self.dtype, enabled=self.enabled):
                return fn(*args, **kwargs)
        return wrapper
