"""Debugging jitted code: printing from inside it, running it eagerly, and finding NaNs.

* ``tj.debug.print("loss {} at {}", loss, step)``: prints when the program runs (every call of
  a jitted function, not once while tracing), in program order; eagerly it prints at once.
* ``TRACEJIT_DISABLE_JIT=1`` or ``with tj.disable_jit():`` — jitted functions run their Python
  as plain eager code, so ``breakpoint()``, pdb and ``print`` work inside them.
* ``TRACEJIT_DEBUG_NANS=1`` or ``tj.debug.debug_nans(True)`` — every compiled CPU program checks
  its float outputs; on a NaN or infinity it runs its graph again op by op through the op
  table's NumPy references, on copies of the inputs the call received, and raises
  :class:`NonFiniteError` naming the first op that produced the bad value and the user's line
  that recorded it.  (In-place updates the compiled call made, an optimizer step's, have
  already happened by then.)
"""
from __future__ import annotations

import builtins
import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import dtypes as dt
from . import prims
from .custom_ops import custom_op
from .errors import TracejitError
from .graph import Graph
from .ops import PRIMS
from .tensors import Tensor
from .tracing import current_trace


class NonFiniteError(TracejitError, FloatingPointError):
    """A compiled program produced a NaN or an infinity (``TRACEJIT_DEBUG_NANS``)."""


class _Flags:
    """The switches; ``jit.apply_debug_flags`` makes a change take effect."""

    def __init__(self) -> None:
        self.jit_disabled = 1 if os.environ.get("TRACEJIT_DISABLE_JIT", "") not in ("", "0") else 0
        self.nans = os.environ.get("TRACEJIT_DEBUG_NANS", "") not in ("", "0")


flags = _Flags()
_lock = threading.Lock()


def _apply() -> None:
    # (imported here: jit imports this module)
    from .jit import apply_debug_flags
    apply_debug_flags()


@contextlib.contextmanager
def disable_jit() -> Iterator[None]:
    """Run jitted functions eagerly inside the block (for every thread, as the variable does)."""
    with _lock:
        flags.jit_disabled += 1
        _apply()
    try:
        yield
    finally:
        with _lock:
            flags.jit_disabled -= 1
            _apply()


def debug_nans(enabled: bool = True) -> bool:
    """Turn the NaN/infinity check of compiled programs on or off; returns the previous setting."""
    with _lock:
        old, flags.nans = flags.nans, bool(enabled)
        _apply()
    return old


# ---------------------------------------------------------------------------- print

_replaying = threading.local()       # set while debug_nans re-runs a graph: its prints stay quiet


def _format(fmt: str, layout: tuple, names: tuple[str, ...], arrays: Sequence[np.ndarray]) -> str:
    it = iter(arrays)
    values = [next(it) if kind == "tensor" else v for kind, v in layout]
    n_pos = len(values) - len(names)
    return fmt.format(*values[:n_pos], **dict(zip(names, values[n_pos:])))


def _print_impl(token: np.ndarray, *arrays: np.ndarray, fmt: str, layout: tuple, names: tuple) -> np.ndarray:
    if not getattr(_replaying, "on", False):
        builtins.print(_format(fmt, layout, names, arrays), flush=True)
    return np.asarray(token + 1, dtype=np.int64)


# A host op taking a token that each print updates in place: a jitted function's prints are
# chained through it in the order they were made, and its final value is written back after
# every call, so no pass can drop a print or move one before another.
_print_op = custom_op("debug_print", _print_impl, rule=lambda token, *avals, **p: ((), dt.int64),
                      doc="tj.debug.print at run time")
_token = Tensor._from_array(np.zeros((), np.int64))


def print(fmt: str, *args: Any, **kwargs: Any) -> None:  # noqa: A001
    """``fmt.format(*args, **kwargs)`` printed when the code runs, tensors as NumPy arrays.

    Under ``jit`` the tensors are the values at run time and the print happens on every call,
    in program order; format specs work on 0-d tensors (``"{:.3f}"``)."""
    if not isinstance(fmt, str):
        raise TypeError(f"tj.debug.print: the format must be a str, got {type(fmt).__name__}")
    values = list(args) + list(kwargs.values())
    names = tuple(kwargs)
    if current_trace() is None:
        shown = [np.asarray(v) if isinstance(v, Tensor) else v for v in values]
        builtins.print(fmt.format(*shown[:len(args)], **dict(zip(names, shown[len(args):]))), flush=True)
        return
    try:
        fmt.format(*values[:len(args)], **dict(zip(names, values[len(args):])))
    except (IndexError, KeyError) as e:        # a missing field: say so now, not at every call
        raise ValueError(f"tj.debug.print: format {fmt!r} does not match its arguments: {e!r}") from None
    except Exception:  # noqa: BLE001  (a format spec on a traced value: it is checked when it runs)
        pass
    layout = []
    tensors = []
    for v in values:
        if isinstance(v, Tensor):
            layout.append(("tensor", None))
            tensors.append(v)
        else:
            try:
                hash(v)
            except TypeError:
                v = str(v)           # static: its text at trace time
            layout.append(("value", v))
    new = prims.bind(_print_op.name, _token, *tensors, fmt=fmt, layout=tuple(layout), names=names)
    _token._assign(new)


# ---------------------------------------------------------------------------- NaN checks

def _bad(a: Any) -> bool:
    a = np.asarray(a)
    return a.dtype.kind == "f" and a.size > 0 and not bool(np.isfinite(a).all())


def _kind_of_bad(a: np.ndarray) -> str:
    return "NaN" if np.isnan(a).any() else "infinity"


def check_outputs(graph: Graph, inputs: Sequence[np.ndarray], outputs: Sequence[Any], label: str,
                  input_names: Sequence[str] = ()) -> None:
    """Raise :class:`NonFiniteError` if a float output of ``graph`` (run on ``inputs``, giving
    ``outputs``) is not finite, naming the first op that produced such a value."""
    bad_out = next((i for i, o in enumerate(outputs) if _bad(o)), None)
    if bad_out is None:
        return
    env: dict[int, np.ndarray] = dict(zip(graph.inputs, (np.asarray(x) for x in inputs)))
    topo = graph.topo()
    _replaying.on = True
    try:
        for nid in topo:
            n = graph.node(nid)
            if n.op != "input":
                env[nid] = np.asarray(PRIMS[n.op].impl(*(env[i] for i in n.inputs), **n.params))
    finally:
        _replaying.on = False
    # walk back from the output through non-finite values to where they first appeared
    out_node = graph.outputs[bad_out]
    seen, stack, origins = set(), [out_node], []
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        bad_inputs = [i for i in graph.node(nid).inputs if _bad(env[i])]
        if bad_inputs:
            stack += bad_inputs
        else:
            origins.append(nid)
    order = {nid: k for k, nid in enumerate(topo)}
    first = min(origins, key=order.__getitem__) if origins else out_node
    n = graph.node(first)
    what = _kind_of_bad(env[first]) if _bad(env[first]) else "a non-finite value"
    found = _kind_of_bad(np.asarray(outputs[bad_out]))
    head = f"TRACEJIT_DEBUG_NANS: output {bad_out} of {label} contains {found}"
    if n.op == "input":
        k = graph.inputs.index(first)
        name = input_names[k] if k < len(input_names) else f"input {k}"
        raise NonFiniteError(f"{head}; it was already in {name} ({n.aval}) when the program was called")
    operands = ", ".join(str(graph.node(i).aval) for i in n.inputs)
    params = ", ".join(f"{k}={v}" for k, v in n.params.items() if not isinstance(v, np.ndarray))
    raise NonFiniteError(f"{head}; the first op that produced {what}: {n.op}"
                         f"{'[' + params + ']' if params else ''}({operands}) -> {n.aval}"
                         f"{' at ' + n.source if n.source else ''} (operands finite)")


__all__ = ["print", "disable_jit", "debug_nans", "NonFiniteError", "check_outputs", "flags"]
