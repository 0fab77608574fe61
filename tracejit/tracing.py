"""Tracing: recording ops on tracer tensors into a :class:`~tracejit.graph.Graph`.

While a trace is active (per thread) every primitive bound goes into its graph, whatever its
inputs: tracers of the trace read their node, and eager tensors captured from outside the
function become extra graph inputs (bound by reference at every call, so in-place updates of
a captured parameter are seen, and written back when the function mutates it).
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import dtypes as dt
from .aliasing import VIEW_OPS, Aliasing
from .errors import TracejitError, source_line, user_frame
from .graph import Graph
from .guards import DataGuard, Guard, ScalarSource, ValueGuard, user_line
from .ops import AVal, Prim
from .tensors import CPU, Tensor


class _ThreadState(threading.local):
    """Per thread: the active traces (innermost last) and whether autograd records."""

    def __init__(self) -> None:      # runs once in each thread that touches it
        self.traces: list[Trace] = [] if _thread_default is None else [_thread_default()]
        self.grad_enabled = True


_thread_default: Any = None     # makes the trace every thread starts with (lazy mode for a program)
_local = _ThreadState()


def set_thread_default(make_trace: Any) -> None:
    """Every thread (this one now) starts with the trace ``make_trace()`` active at the bottom."""
    global _thread_default
    _thread_default = make_trace
    _local.traces.insert(0, make_trace())


def current_trace() -> Trace | None:
    stack = _local.traces        # read on every eager op: a plain attribute, no default lookup
    return stack[-1] if stack else None


@contextlib.contextmanager
def tracing(trace: Trace) -> Iterator[Trace]:
    stack = _local.traces
    stack.append(trace)
    try:
        yield trace
    finally:
        stack.pop()


def grad_enabled() -> bool:
    return _local.grad_enabled


def set_grad_enabled(flag: bool) -> bool:
    old = grad_enabled()
    _local.grad_enabled = flag
    return old


def settled(t: Tensor) -> Tensor:
    """``t`` as an eager tensor: a pending lazy value is computed (its graph flushed); a traced
    value used outside its trace is an error."""
    if t._trace is not None:
        if not t._trace.is_lazy:
            raise leaked_tracer_error(t)
        t._trace.flush()
    return t


def leaked_tracer_error(t: Tensor) -> TracejitError:
    return TracejitError(
        f"a traced value {t.aval} escaped from the jitted function it was traced in and was used "
        f"outside it at {user_frame()}; return it from the function instead of storing it")


def note_data_read(value: Any, what: str) -> None:
    """While tracing, the function read the elements of ``value`` (an eager tensor or a NumPy
    array) as data: they are baked into the program, so the trace is guarded on them."""
    trace = current_trace()
    if trace is None or trace.is_lazy or id(value) in trace._data_read:
        return
    if isinstance(value, Tensor):
        read, label = value._host_value, f"captured tensor {value.aval}"
    else:
        read, label = (lambda: value), f"NumPy array {value.dtype}{list(value.shape)}"
    nbytes = int(np.prod(value.shape, dtype=np.int64)) * value.dtype.itemsize
    if nbytes > DataGuard.MAX_BYTES:
        from .errors import ConcretizationError
        raise ConcretizationError(
            f"{what} reads the {nbytes} bytes of a {label} while tracing, which would bake them into "
            f"the compiled program\n  at {user_frame()}\nWays out: pass it to the jitted function as an "
            "argument, or use it as a tensor (tj.asarray(x) once, outside the function).")
    trace._data_read.add(id(value))
    trace._data_keep.append(value)
    trace.guards.append(DataGuard(label, user_line(), read))


class Trace:
    """One tracing of a Python function: the graph so far and the captured eager tensors."""

    is_lazy = False         # a lazy-mode pending graph (``tracejit.lazy``) says True

    def __init__(self, graph: Any = None) -> None:
        self.graph = Graph() if graph is None else graph     # (lazy mode records into a list)
        self.captures: list[Tensor] = []
        self._captured: dict[int, int] = {}   # id(tensor) -> input node
        self.mutated: dict[int, Tensor] = {}  # captured eager tensors updated in place
        self.guards: list[Guard] = []         # Python state read besides the arguments
        self.modules: dict[int, Any] = {}     # modules called while tracing (their state is guarded)
        self._state_reads: dict[tuple[int, Any], Any] = {}
        self._data_read: set[int] = set()     # eager values whose elements the trace read (guarded)
        self._data_keep: list[Any] = []
        self.aliasing = Aliasing(self.graph)  # views, so writes through them reach their base
        # while a backward pass records a node's VJP: that node's source (its gradient ops came from it)
        self.source_override = ""

    def new_input(self, aval: AVal, name: str = "") -> Tensor:
        return Tensor._tracer(self, self.graph.add_input(aval, name), aval)

    def node_of(self, t: Tensor) -> int:
        if t._trace is self:
            if self.aliasing.views:
                self.aliasing.current_node(t, self.node_of)
            return t._node
        if t._trace is not None:
            settled(t)          # a pending lazy value read by a trace: computed first
        nid = self._captured.get(id(t))
        if nid is None:
            nid = self.graph.add_input(t.aval, name="captured")
            self._captured[id(t)] = nid
            self.captures.append(t)
        return nid

    def use_module(self, module: Any) -> None:
        """A module was called: the trace depends on its flags, attributes and parameters."""
        if id(module) not in self.modules:
            self.modules[id(module)] = (module, user_line())

    def read_state(self, container: Any, key: Any, value: Any, runtime: bool = False) -> Any:
        """``container[key]`` was read while tracing (an optimizer's hyperparameter).

        A number with ``runtime`` becomes a graph input read from the container at every call;
        anything else becomes a guard (a different value later re-traces).
        """
        k = (id(container), key)
        if k in self._state_reads:
            return self._state_reads[k]
        if runtime and type(value) in (int, float):
            aval = AVal((), dt.float64 if type(value) is float else dt.int64)
            src = ScalarSource(container, key, value, aval, CPU)
            nid = self.graph.add_input(aval, name=str(key))
            self._captured[id(src)] = nid
            self.captures.append(src)
            out = Tensor._tracer(self, nid, aval)
            out._weak = True            # promotes like the Python number it stands for
        else:
            self.guards.append(ValueGuard(f"{type(container).__name__}[{key!r}]", user_line(),
                                          lambda: dict.get(container, key), value))
            out = value
        self._state_reads[k] = out
        return out

    def record(self, prim: Prim, inputs: tuple[Tensor, ...], params: dict[str, Any], aval: AVal) -> Tensor:
        # nodes added on the way (captured inputs, re-derived views) come from the same line
        self.graph.default_source = self.source_override or source_line(3)     # (from bind's caller)
        nid = self.graph.add(prim.name, [self.node_of(x) for x in inputs], params, aval)
        out = Tensor._tracer(self, nid, aval)
        if prim.name in VIEW_OPS:
            self.aliasing.note_view(prim.name, params, inputs[0], out)
        return out

    def assign(self, target: Tensor, new: Tensor) -> None:
        """``target`` now holds ``new``'s value (an in-place op); remembered for write-back."""
        if not self.is_lazy:        # (a lazy graph names no sources: a replayed step never shows them)
            self.graph.default_source = self.source_override or source_line(2)
        nid = self.node_of(new)
        view_node = nid
        target_view = target
        target, nid = self.aliasing.write(target, nid, self.node_of)
        if target._trace is None:            # an eager tensor captured from outside
            self.node_of(target)
            self.mutated.setdefault(id(target), target)
            target._trace = self
        target._node = nid
        target_view._node = view_node        # (a view: its root was updated too)

    def finish(self) -> list[tuple[Tensor, int]]:
        """End of tracing: turn mutated eager tensors back into eager ones.

        Returns (captured tensor, final node) for each of them, for the write-back.
        """
        self.graph.default_source = ""      # later rewrites name their own sources
        out = []
        for t in self.mutated.values():
            out.append((t, t._node))
            t._trace, t._node = None, -1
        return out
