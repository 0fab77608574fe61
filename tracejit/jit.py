"""``jit``: trace a Python function once per signature, optimize the graph, run it compiled.

The trace cache key is the argument tree structure, each tensor's (shape, dtype, device) and
the static arguments' values.  Compiled kernels are cached separately by structure (see
``tracejit.compiler``), so a new batch size costs a re-trace, not a new LLVM compile.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import aliasing, collector, grad_state, passes
from . import dtypes as dt
from . import prims as P
from .debug import check_outputs
from .debug import flags as debug_flags
from .device import write_back
from .differentiable import GradPlan, attach, freed_results, mark_freed, record_backward, split
from .errors import (
    ConcretizationError,
    InternalCompilerError,
    TracejitError,
    UnsupportedUnderJitError,
)
from .grad_state import ArgumentGrad, GradOf, GradWatch
from .graph import Graph
from .guards import (
    CaptureGuard,
    CodeGuards,
    ContentsGuard,
    Guard,
    SnapshotGuard,
    function_location,
    has_contents,
)
from .logs import topic
from .nn.modules import Module
from .ops import PRIMS, AVal
from .optim import Optimizer
from .pytree import LEAF, flatten, unflatten
from .random import is_generator_state
from .tensors import CPU, Device, Tensor, is_host_number
from .tracing import Trace, current_trace, grad_enabled, tracing

log_compiles = topic("compiles")
log_recompiles = topic("recompiles")

DEFAULT_MAX_TRACES = 8


@dataclass(frozen=True)
class Spec:
    """Shape, dtype and device of an argument, for ``lower``/``explain`` without data.  A shape
    entry may be a name (``"batch"``): a symbolic dimension, which only :func:`tracejit.export` takes."""
    shape: tuple[int | str, ...]
    dtype: np.dtype
    device: Device = CPU

    @property
    def aval(self) -> AVal:
        return AVal(self.shape, self.dtype)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(s for s in self.shape if isinstance(s, str))


def spec(shape: Sequence[int | str], dtype: Any = None, device: Any = "cpu") -> Spec:
    """An argument's shape, dtype and device; names in ``shape`` are symbolic dimensions (export)."""
    dims: list[int | str] = []
    for s in shape:
        if isinstance(s, str):
            if not s.isidentifier():
                raise ValueError(f"spec: symbolic dimension {s!r} is not a name (letters, digits, _)")
            dims.append(s)
        elif isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0:
            dims.append(int(s))
        else:
            raise ValueError(f"spec: shape entries are non-negative ints or names, got {s!r} "
                             f"in {tuple(shape)}")
    return Spec(tuple(dims), dt.canonical(dtype or dt.default_float), Device.parse(device))


def _is_static_leaf(x: Any, specialize: bool) -> bool:
    """Leaves passed to the traced function as themselves: Python bools always (flags pick code
    paths), ints and floats once the function branched on one (``specialize``)."""
    return type(x) in (bool, str) or (specialize and type(x) in (int, float))


def _is_stateful(x: Any) -> bool:
    """Modules, optimizers and other objects (a method's ``self``): passed to the traced function
    as themselves (their tensors are read as captured tensors), keyed by identity, their state
    guarded."""
    if isinstance(x, (Module, Optimizer)):
        return True
    return not (x is None or isinstance(x, (Tensor, Spec, np.ndarray, bool, int, float, str, complex,
                                            tuple, list, dict))
                or (dataclasses.is_dataclass(x) and not isinstance(x, type)))    # (pytree nodes)


def _is_leaf(x: Any) -> bool:
    return isinstance(x, (Tensor, Spec, np.ndarray)) or _is_stateful(x)


def _signature(leaf: Any) -> Any:
    if isinstance(leaf, Tensor):
        # (whether .grad is set decides whether a backward() inside adds to it)
        return (leaf.shape, leaf.dtype, leaf.device, leaf.requires_grad,
                leaf.requires_grad and leaf.grad is not None, _strides_key(leaf))
    if _is_stateful(leaf):
        return ("object", type(leaf), id(leaf))     # kept alive by the entry's guards: ids are not reused
    if isinstance(leaf, Spec):
        if leaf.symbols:
            raise TypeError(f"jit: spec{leaf.shape} has symbolic dimensions {leaf.symbols}; only "
                            "tj.export takes them (lower and explain need sizes)")
        return (leaf.shape, leaf.dtype, leaf.device, False, False, None)
    if isinstance(leaf, np.ndarray):      # (copied in: its own strides do not matter)
        return (leaf.shape, dt.canonical(leaf.dtype), CPU, False, False, None)
    if type(leaf) in (bool, str):
        return ("static", type(leaf), leaf)  # a flag or a mode name: its value selects the trace
    if isinstance(leaf, (bool, int, float)):
        return ("scalar", type(leaf))
    raise TypeError(f"jit: argument leaf of type {type(leaf).__name__} is not a tensor, array or Python "
                    f"scalar; pass it through static_argnames/static_argnums")


def _strides_key(t: Tensor) -> tuple[int, ...] | None:
    """A strided CPU argument's element strides (None when row-major): which of its reshapes
    are views, and so which writes reach it, depends on them."""
    a = t._value if t._trace is None else None
    if not isinstance(a, np.ndarray) or a.flags.c_contiguous:
        return None
    return aliasing.array_layout(a).strides


def _leaf_aval(leaf: Any) -> tuple[AVal, Device]:
    if isinstance(leaf, (Tensor, Spec)):
        return AVal(leaf.shape, leaf.dtype), leaf.device
    if isinstance(leaf, np.ndarray):
        return AVal(leaf.shape, dt.canonical(leaf.dtype)), CPU
    # A Python number keeps its full value: traced weakly typed at its widest dtype, it is cast to
    # the dtype of the tensors it meets (``x_f64 + 0.001`` is exact, ``x_f32 + 0.001`` rounds as
    # it does eagerly).  (A NumPy scalar is traced at the default dtype of its kind.)
    return AVal((), dt.PY_SCALAR_WIDTHS.get(type(leaf)) or dt.scalar_dtype(leaf)), CPU


def _duplicates(leaves: list[Any]) -> tuple[int, ...]:
    """For each leaf, the index of the first leaf that is the same tensor object (``f(x, x)``)."""
    first: dict[int, int] = {}
    return tuple(first.setdefault(id(x), i) if isinstance(x, Tensor) else i for i, x in enumerate(leaves))


def _leaf_array(leaf: Any, aval: AVal, device: Device = CPU) -> Any:
    """A program input: a dense host array, or for a GPU program a dense device array."""
    if device.type != "cpu":
        from .device import device_input
        return device_input(leaf, aval, device)
    if isinstance(leaf, Tensor):
        a = leaf._value if leaf._trace is None else leaf._concrete("jit argument")
    else:
        a = np.asarray(leaf, dtype=aval.dtype)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


@dataclass
class Traced:
    """One trace: the optimized graph and how its inputs and outputs map to Python values."""
    graph: Graph
    in_avals: list[AVal]
    captures: list[Tensor]
    out_tree: Any
    out_is_tensor: list[bool]
    out_static: list[Any]
    n_outputs: int                          # graph outputs that are user results
    writebacks: list[Any]                   # (target, graph output index): target is an arg index or Tensor
    pass_stats: dict[str, int] = field(default_factory=dict)
    guards: list[Guard] = field(default_factory=list)
    dynamic: list[int] = field(default_factory=list)   # leaves that are graph inputs (not modules)
    arg_grads: list[tuple[int, int]] = field(default_factory=list)   # (argument, output): new .grad
    grad_plan: GradPlan | None = None       # how results get a tape node (grad mode, inputs need grad)
    where: str = ""                         # the traced function's file:line
    phase_times: dict[str, float] = field(default_factory=dict)   # trace, optimize[, partition]: seconds
    pass_times: dict[str, float] = field(default_factory=dict)    # optimize's seconds by pass
    # (result, root, view ops) for each result that eagerly shares memory with an argument (root:
    # its index among the graph's arguments) or a captured tensor (root: that tensor)
    result_views: list[tuple[int, Any, tuple]] = field(default_factory=list)
    grad_rebinds: list[tuple[Tensor, Any]] = field(default_factory=list)   # .grad set after each call
    # results whose tape the function's own backward freed (they get a released node)
    freed_results: list[int] = field(default_factory=list)


def _arg_grad_nodes(trace: Trace, tracers: list[Tensor], before: list[Any]) -> list[tuple[int, int]]:
    """(argument, node) for each argument whose ``.grad`` a ``backward()`` inside changed."""
    out = []
    for i, (t, g0) in enumerate(zip(tracers, before)):
        if t.grad is not g0 and isinstance(t.grad, Tensor):
            out.append((i, trace.node_of(t.grad)))
    return out


def trace_function(fn: Callable, leaves: list[Any], treedef: Any, static: dict[int | str, Any],
                   differentiable: bool = False, specialize: bool = False) -> Traced:
    """Trace ``fn`` on tracers for ``leaves``; with ``differentiable``, its backward too (see
    ``tracejit.differentiable``)."""
    t_start = time.perf_counter()
    trace = Trace()
    code = CodeGuards()          # globals and closures, read before the function runs
    code.visit_callable(fn)
    same = _duplicates(leaves)
    with tracing(trace):
        # one graph input per distinct argument: the same tensor passed twice is one value
        dynamic = [i for i, leaf in enumerate(leaves) if not _is_stateful(leaf) and same[i] == i
                   and not _is_static_leaf(leaf, specialize)]
        avals = [_leaf_aval(leaves[i]) for i in dynamic]
        tracers = [Tensor._tracer(trace, trace.graph.add_input(a), a, d) for a, d in avals]
        grads_before, argument_grads = [], []
        for j, (t, i) in enumerate(zip(tracers, dynamic)):
            leaf = leaves[i]
            t.requires_grad = bool(getattr(leaf, "requires_grad", False))   # backward() reaches arguments
            t._weak = isinstance(leaf, (bool, int, float))                     # scalars promote weakly
            if t.requires_grad:
                t.grad = leaf.grad       # a backward() inside adds to it, as eagerly
                if leaf.grad is not None:
                    argument_grads.append((j, leaf.grad))
            grads_before.append(t.grad)
        for t, i in zip(tracers, dynamic):
            if isinstance(leaves[i], Tensor) and _strides_key(leaves[i]) is not None:
                trace.aliasing.root_layouts[id(t)] = aliasing.array_layout(leaves[i]._value)
        input_nodes = [t._node for t in tracers]
        call_leaves = list(leaves)
        for t, i in zip(tracers, dynamic):
            call_leaves[i] = t
        for i, j in enumerate(same):
            call_leaves[i] = call_leaves[j]
        args, kwargs = unflatten(treedef, call_leaves)
        args = list(args)
        for k, v in sorted((k, v) for k, v in static.items() if isinstance(k, int)):
            args.insert(k, v)
        kwargs.update({k: v for k, v in static.items() if isinstance(k, str)})
        watch = GradWatch(trace)
        host_rng = _host_rng_states()
        try:
            with watch:
                out = fn(*args, **kwargs)
            _refuse_host_random(host_rng, fn)
            out_leaves, out_tree = flatten(out, is_leaf=lambda x: isinstance(x, Tensor))
            out_is_tensor = [isinstance(x, Tensor) for x in out_leaves]
            # a result computed from Python numbers alone is returned at their default dtype
            results = [P.cast(x, dt.default_of_kind(x.dtype)) if x._weak else x
                       for x in out_leaves if isinstance(x, Tensor)]
            out_nodes = [trace.node_of(x) for x in results]
            views = _result_views(trace, results, tracers)
            arg_grads = _arg_grad_nodes(trace, tracers, grads_before)
            freed = freed_results(results) if differentiable else []
            joint = record_backward(trace, results, tracers, freed) if differentiable else None
        finally:
            mutated = trace.finish()
    g = trace.graph
    g.outputs = list(out_nodes)
    writebacks: list[Any] = []
    for i, (t, start) in enumerate(zip(tracers, input_nodes)):
        if t._node != start:
            writebacks.append((i, len(g.outputs)))
            g.outputs.append(t._node)
    for t, node in mutated:
        writebacks.append((t, len(g.outputs)))
        g.outputs.append(node)
    arg_grad_outputs = []
    for i, node in arg_grads:
        arg_grad_outputs.append((i, len(g.outputs)))
        g.outputs.append(node)
    _refuse_aliased_updates([t for t, _ in mutated], trace.captures)
    grad_guards, grad_rebinds = grad_state.resolve(watch, trace.captures, writebacks, function_location(fn))
    grad_state.argument_grads(argument_grads, trace.captures)
    n_forward = len(g.outputs)
    if joint is not None:
        g.outputs.extend(joint[3])
    t_traced = time.perf_counter()
    pass_times: dict[str, float] = {}
    stats = passes.optimize(g, pass_times)
    phases = {"trace": t_traced - t_start, "optimize": time.perf_counter() - t_traced}
    plan = None
    if joint is not None:
        t0 = time.perf_counter()
        diff, wrt, cotangents, _ = joint
        g, plan = split(g, n_forward, cotangents)
        plan.diff_outputs, plan.wrt = diff, wrt
        phases["partition"] = time.perf_counter() - t0
    stateful = [leaf for leaf in leaves if _is_stateful(leaf)]
    t0 = time.perf_counter()
    guards = _guards(fn, trace, stateful, code) + grad_guards
    phases["trace"] += time.perf_counter() - t0
    return Traced(g, [a for a, _ in avals], list(trace.captures), out_tree, out_is_tensor,
                  [None if isinstance(x, Tensor) else x for x in out_leaves], len(out_nodes), writebacks,
                  stats, guards, dynamic, arg_grad_outputs, plan,
                  function_location(fn), phases, pass_times, views, grad_rebinds, freed)


def _host_rng_states() -> tuple:
    s = np.random.get_state(legacy=False)
    state = s["state"]
    return random.getstate(), (s["bit_generator"], state.get("pos"), np.asarray(state.get("key")).tobytes(),
                               s.get("has_gauss"), s.get("gauss"))


def _refuse_host_random(before: tuple, fn: Callable) -> None:
    """A function that draws from Python's ``random`` or NumPy's global generator while traced
    would reuse the numbers drawn then at every compiled call: refused, not run differently."""
    after = _host_rng_states()
    for name, b, a in zip(("random", "numpy.random"), before, after):
        if a != b:
            raise UnsupportedUnderJitError(
                f"jit: the function at {function_location(fn)} drew random numbers from {name} while "
                "being traced; a compiled call does not run Python, so every call would reuse the "
                "numbers drawn once. Use tracejit.rand / randn / randint / dropout (random numbers "
                "in the program), or draw them outside and pass them as arguments.")


def _result_views(trace: Trace, results: list[Tensor], tracers: list[Tensor]) -> list[tuple[int, Any, tuple]]:
    """The results that are (views of) an argument or a captured tensor, with the view ops from it.

    Eagerly ``return x[1:]`` shares the argument's memory: a later write to ``x`` shows in the
    result and a write into the result reaches ``x``.  A program's results are fresh arrays, so a
    call rebuilds each of these results by applying the same view ops to the caller's array."""
    argument = {id(t): j for j, t in enumerate(tracers)}
    out = []
    for r, x in enumerate(results):
        v = trace.aliasing.views.get(id(x)) if x._trace is trace else None
        root, chain = (v.root, v.chain) if v is not None else (x, ())
        j = argument.get(id(root))
        if j is not None:
            out.append((r, j, chain))
        elif root._trace is None and root.device.type == "cpu":     # a captured tensor
            out.append((r, root, chain))
    return out


def _view_of(base: np.ndarray, chain: tuple) -> np.ndarray:
    """``base`` through the view ops ``chain`` (NumPy makes the same views eager mode did)."""
    for op, params in chain:
        base = PRIMS[op].impl(base, **params)
    return base


def _shares_memory(a: Tensor, b: Tensor) -> bool:
    return a.device.type == "cpu" and b.device.type == "cpu" and np.may_share_memory(a._value, b._value)


def _base_array(a: Any) -> Any:
    """The object that owns ``a``'s memory (views chain through ``.base``, memoryviews ``.obj``)."""
    while True:
        nxt = getattr(a, "base", None)
        if nxt is None and isinstance(a, memoryview):
            nxt = a.obj
        if nxt is None:
            return a
        a = nxt


def _refuse_aliased_updates(updated: list[Tensor], captures: list[Any]) -> None:
    """A captured tensor updated in place must not share memory with another one the function reads:
    eagerly the other would see the update, while the program reads them as separate inputs."""
    by_base: dict[int, list[Tensor]] = {}    # only arrays over the same buffer can overlap
    for c in captures:
        if isinstance(c, Tensor) and c.device.type == "cpu":
            by_base.setdefault(id(_base_array(c._value)), []).append(c)
    for t in updated:
        if t.device.type != "cpu":
            continue
        for c in by_base.get(id(_base_array(t._value)), ()):
            if c is not t and _shares_memory(t, c):
                raise UnsupportedUnderJitError(
                    f"jit: the function updates a captured tensor {t.aval} in place and also reads "
                    f"{c.aval}, a view sharing its memory, captured separately; a compiled program "
                    "cannot keep them in step. Pass the base tensor and take the view inside the function.")


def _check_argument_aliasing(leaves: list[Any], written: list[int]) -> None:
    """An argument updated in place must not share memory with another argument (``f(x, x[1:])``)."""
    for i in written:
        for j, other in enumerate(leaves):
            if j != i and isinstance(other, Tensor) and other._trace is None \
                    and _shares_memory(leaves[i], other):
                raise UnsupportedUnderJitError(
                    f"jit: argument {i} is updated in place and shares memory with argument {j}; eagerly "
                    "the update would show through both, a compiled program reads them as separate "
                    "inputs. Pass one of them, or a copy.")


def _guards(fn: Callable, trace: Trace, stateful_args: list[Any], code: CodeGuards) -> list[Guard]:
    """Everything the trace read besides its arguments, as guards (see ``tracejit.guards``)."""
    changed = [g for g in code.guards if not g.holds()]
    if changed:
        # the function itself rebinds or mutates this state: a cached call does not run Python,
        # so the change happens once, when tracing, and never again
        code.guards = [g for g in code.guards if g not in changed]
        warnings.warn(
            f"jit({getattr(fn, '__name__', fn)}): the function changed Python state while being traced "
            f"({'; '.join(g.what + ' at ' + g.where for g in changed)}); compiled calls do not run "
            "Python code, so that change happened once, not at every call. Return the value instead, "
            "or run the function without jit.", stacklevel=5)
    extra: list[Guard] = []
    for i, obj in enumerate(stateful_args):
        code.add_root(f"argument {type(obj).__name__}#{i}", obj)
        if has_contents(obj):
            extra.append(ContentsGuard(f"argument {type(obj).__name__}", function_location(fn),
                                       lambda obj=obj: obj))
    for module, _where in trace.modules.values():
        code.add_root(type(module).__name__, module)
    guards: list[Guard] = list(code.guards) + list(trace.guards) + extra
    if code.snapshot_roots:
        # (a module's state is named where the user called it, not where its forward is)
        where = next(iter(trace.modules.values()))[1] if trace.modules else function_location(fn)
        guards.append(SnapshotGuard(code.snapshot_roots, where))
    tensors = [c for c in trace.captures if isinstance(c, Tensor)]
    if tensors:
        guards.append(CaptureGuard(tensors))
    return guards


def _arguments_device(name: str, leaves: list[Any]) -> Device | None:
    """The device of a call's tensor arguments (None: it has none); they must share one."""
    # Python scalars have no device: they go wherever the tensors are
    devices = {_leaf_aval(x)[1] for x in leaves
               if not isinstance(x, (bool, int, float, str)) and not _is_stateful(x)}
    if len(devices) > 1:
        raise ValueError(f"jit({name}): arguments are on different devices: "
                         f"{', '.join(sorted(map(str, devices)))}")
    return next(iter(devices), None)


def _pins_device(capture: Any, declared: bool) -> bool:
    """Whether a captured value decides the program's device: a tensor, unless it is a number on
    the host (a GPU op reads one from the host eagerly too), a random generator's state (host
    memory by design) or, for a ``declared`` target, any host tensor (uploaded at each call).
    Run-time numbers and gradients read per call follow the program."""
    if not isinstance(capture, Tensor):
        return False
    if capture._device.type != "cpu":
        return True
    return not (declared or is_host_number(capture._value) or is_generator_state(capture))


def _program_device(name: str, arguments: Device | None, captures: list[Any],
                    declared: bool = False) -> Device:
    """The device a trace's program runs on: that of its tensor arguments and of the captured
    tensors it read (the CPU when there are none); they must share one, as an eager op's do.
    ``declared``: the arguments are specs, a target to compile for (export compiles a model's
    host parameters into a GPU program)."""
    pinned = [c for c in captures if _pins_device(c, declared)]
    devices = {c._device for c in pinned} | ({arguments} if arguments is not None else set())
    if len(devices) <= 1:
        return next(iter(devices), CPU)
    seen = [f"{arguments} (the arguments)"] if arguments is not None else []
    for d in sorted(devices - {arguments}, key=str):
        c = next(c for c in pinned if c._device == d)
        seen.append(f"{d} (a captured tensor {c.aval})")
    raise ValueError(f"jit({name}): the function reads tensors on different devices: {', '.join(seen)}; "
                     "a program runs on one device: move them with .to(device)")


def _default_backend() -> str:
    return os.environ.get("TRACEJIT_BACKEND", "llvm")


def _update_inputs(traced: Traced) -> dict[int, int]:
    """Graph output index -> graph input index of each tensor the function updates in place."""
    n_args = len(traced.in_avals)
    capture_index = {id(c): n_args + j for j, c in enumerate(traced.captures)}
    updates = {}
    for target, k in traced.writebacks:
        i = target if isinstance(target, int) else capture_index.get(id(target))
        if i is not None:
            updates[k] = i
    return updates


def _compiling(build: Callable[[], Any], traced: Traced) -> Any:
    """Run ``build``; an error that is not the user's becomes an :class:`InternalCompilerError`
    that says so, names the traced function and the ways to keep working."""
    try:
        return build()
    except (TracejitError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:
        where = traced.where
        raise InternalCompilerError(
            f"tracejit failed to compile a traced program ({len(traced.graph)} nodes"
            f"{', function at ' + where if where else ''}): {type(e).__name__}: {e}\n"
            "This is a bug in tracejit, not in your code. Ways to keep working: "
            "jit(f, backend='interpret'), or run the function without jit.") from e


class CompiledEntry:
    """A trace plus its executable: the object a cache hit runs."""

    def __init__(self, traced: Traced, backend: str, device: Device) -> None:
        self.traced = traced
        self.backend = backend
        self.device = device
        if backend == "interpret":
            from .interpret import Interpreter, OnHost
            self.executable: Any = Interpreter(traced.graph)
            if device.type != "cpu":
                self.executable = OnHost(self.executable, device)
        elif backend == "llvm":
            from .compiler import compile_graph
            self.executable = _compiling(lambda: compile_graph(traced.graph, device, _update_inputs(traced)),
                                         traced)
        else:
            raise ValueError(f"unknown backend {backend!r}; use 'llvm' or 'interpret'")
        self._writeback_args = [(i, k) for i, k in traced.writebacks if isinstance(i, int)]
        self._argument_grads = [(len(traced.in_avals) + k, c) for k, c in enumerate(traced.captures)
                                if type(c) is ArgumentGrad]
        self._writeback_captures = [(t, k) for t, k in traced.writebacks if isinstance(t, (Tensor, GradOf))]
        # the common case, a single tensor result: its aval is known, no pytree work per call
        plain = traced.grad_plan is None and not traced.arg_grads
        plain = plain and not (traced.result_views and device.type == "cpu") and not traced.grad_rebinds
        plain = plain and not traced.freed_results
        self._single_out = traced.graph.node(traced.graph.outputs[0]).aval \
            if plain and backend == "llvm" and traced.out_tree is LEAF and traced.out_is_tensor[0] else None
        self._backward: Any = None       # the compiled backward program, built on first use
        self.name = ""
        # seconds per phase, tracing to code generation (explain's summary, benchmarks)
        self.phase_times: dict[str, float] = {**traced.phase_times,
                                              **getattr(self.executable, "phase_times", {})}
        plan = traced.grad_plan
        updated = set(_update_inputs(traced).values())
        # a residual the program also updates in place is saved before the call
        self._snapshot = [i for kind, i in plan.residuals if kind == "input" and i in updated] if plan else []
        # a CPU program is called directly (no adapter between)
        run = getattr(self.executable, "_run", None)
        self._call = (lambda arrays: run(*arrays)) if device.type == "cpu" and run is not None \
            else self.executable
        self.guards = traced.guards
        self.last_used = 0

    def failed_guard(self) -> Guard | None:
        for g in self.guards:
            if not g.holds():
                return g
        return None

    def run(self, leaves: list[Any]) -> Any:
        tr = self.traced
        dev = self.device
        if len(tr.dynamic) != len(leaves):      # modules and optimizers are not program inputs
            leaves = [leaves[i] for i in tr.dynamic]
        if self._writeback_args and len(leaves) > 1:
            _check_argument_aliasing(leaves, [i for i, _ in self._writeback_args])
        if dev.type == "cpu":       # (the program makes a strided input contiguous itself)
            arrays = [x._value if type(x) is Tensor and x._trace is None else _leaf_array(x, a, dev)
                      for x, a in zip(leaves, tr.in_avals)]
            arrays += [c._value for c in tr.captures]
        else:
            arrays = [_leaf_array(x, a, dev) for x, a in zip(leaves, tr.in_avals)]
            arrays += [None if type(c) is ArgumentGrad else
                       _leaf_array(c.current if type(c) is GradOf else c, c.aval, dev) for c in tr.captures]
        for k, c in self._argument_grads:       # the arguments' own gradients
            g = c.of(leaves)
            arrays[k] = g._value if dev.type == "cpu" else _leaf_array(g, c.aval, dev)
        if self._snapshot:
            arrays = list(arrays)
            for i in self._snapshot:
                arrays[i] = arrays[i].copy()
        outs = self._call(arrays)
        for i, k in tr.arg_grads:       # a backward() inside set the argument's .grad
            leaves[i].grad = Tensor._from_array(outs[k], dev)
        for i, k in self._writeback_args:       # (an output computed in place is the tensor's own array)
            if outs[k] is not leaves[i]._value:
                write_back(leaves[i], outs[k], dev)
        for t, k in self._writeback_captures:
            if outs[k] is not t._value:
                write_back(t, outs[k], dev)
        for t, value in tr.grad_rebinds:     # each .grad the function assigned
            t._grad = value
        if self._single_out is not None:
            return Tensor._new(outs[0], None, -1, self._single_out, dev)
        views = tr.result_views if dev.type == "cpu" else ()
        if tr.grad_plan is None and tr.out_tree is LEAF and tr.out_is_tensor[0] and not views \
                and not tr.freed_results:
            return Tensor._from_array(outs[0], dev)
        tensors = [Tensor._from_array(a, dev) for a in outs[:tr.n_outputs]]
        for r, root, chain in views:        # results sharing an argument's memory, as eagerly
            base = leaves[root] if isinstance(root, int) else root
            if isinstance(base, Tensor) and base._trace is None and base.device.type == "cpu":
                tensors[r] = Tensor._from_array(_view_of(base._value, chain), dev)
        if tr.grad_plan is not None:
            attach(self.name, tr.grad_plan, tensors, leaves, arrays, outs, dev, self._run_backward,
                   lambda x, aval: _leaf_array(x, aval, dev))
        if tr.freed_results:
            mark_freed(tensors, tr.freed_results, self.name)
        results, it = [], iter(tensors)
        for is_t, static in zip(tr.out_is_tensor, tr.out_static):
            results.append(next(it) if is_t else static)
        return unflatten(tr.out_tree, results)

    def _run_checking(self, leaves: list[Any]) -> Any:
        """:meth:`run` with its program's outputs checked (``TRACEJIT_DEBUG_NANS``; installed as
        ``run`` while the check is on, so an unchecked call pays nothing for it)."""
        with _checked_lock:         # (the entry's call is wrapped for the duration)
            call = self._call
            self._call = lambda arrays: self._run_checked(call, arrays)
            try:
                return _unchecked_run(self, leaves)
            finally:
                self._call = call

    def _run_checked(self, call: Callable, arrays: list[Any], backward: bool = False) -> list[Any]:
        """``TRACEJIT_DEBUG_NANS``: ``call(arrays)``, its outputs checked, on copies of its inputs."""
        if self.device.type != "cpu":
            return call(arrays)
        before = [np.array(a, copy=True) for a in arrays]
        outs = call(arrays)
        if backward:
            graph, names = self.traced.grad_plan.backward, ()
        else:
            graph, n_args = self.traced.graph, len(self.traced.in_avals)
            names = [f"argument {i}" for i in range(n_args)] + \
                ["a captured tensor (a parameter or state the function read)"] * (len(arrays) - n_args)
        where = self.traced.where
        label = (f"the jitted function at {where}" if where else "a jitted function") + \
            (" (its backward pass)" if backward else "")
        check_outputs(graph, before, outs, label, names)
        return outs

    def _run_backward(self, arrays: list[Any]) -> list[Any]:
        """Run the backward graph (compiled on first use, like the forward)."""
        if self._backward is None:
            graph = self.traced.grad_plan.backward
            if self.backend == "interpret":
                from .interpret import Interpreter, OnHost
                bwd: Any = Interpreter(graph)
                if self.device.type != "cpu":
                    bwd = OnHost(bwd, self.device)
            else:
                from .compiler import compile_graph
                bwd = _compiling(lambda: compile_graph(graph, self.device, {}), self.traced)
            self._backward = bwd
        if debug_flags.nans:
            return self._run_checked(self._backward, arrays, backward=True)
        return self._backward(arrays)


class Jitted:
    """A function compiled on first call for each new argument signature."""

    def __init__(self, fn: Callable, static_argnums: Sequence[int] = (), static_argnames: Sequence[str] = (),
                 backend: str | None = None, max_traces: int | None = None) -> None:
        functools.update_wrapper(self, fn)
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)     # modules and partials have none
        self.fn = fn
        self.backend = backend
        sig = None
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            pass
        params = list(sig.parameters) if sig else []
        self.static_argnums = set(static_argnums)
        self.static_argnames = set(static_argnames)
        for name in static_argnames:   # a static name may also be passed positionally
            if name in params:
                self.static_argnums.add(params.index(name))
        self._params = params
        self.max_traces = max_traces if max_traces is not None else \
            int(os.environ.get("TRACEJIT_MAX_TRACES", DEFAULT_MAX_TRACES))
        if self.max_traces < 1:
            raise ValueError(f"jit: max_traces must be at least 1, got {self.max_traces}")
        self._cache: dict[Any, list[CompiledEntry]] = {}   # key -> entries, most recent first
        self._fast: dict[Any, CompiledEntry] = {}    # (aval, device, requires_grad) per positional tensor
        self._lock = threading.Lock()
        self._stats = {"traces": 0, "hits": 0, "evictions": 0}
        self._tick = 0
        self._warned_evicting = False
        self._specialize = False     # numbers become part of the key once the function branched on one

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        """``@jit`` on a method: ``obj.method`` is the jitted function with ``obj`` bound first."""
        if instance is None:
            return self
        return functools.partial(self, instance)

    def _split(self, args: tuple, kwargs: dict) -> tuple[list, Any, dict, tuple]:
        static: dict[int | str, Any] = {}
        dyn_args = []
        for i, a in enumerate(args):
            if i in self.static_argnums:
                static[i] = a
            else:
                dyn_args.append(a)
        dyn_kwargs = {}
        for k, v in kwargs.items():
            if k in self.static_argnames:
                static[k] = v
            else:
                dyn_kwargs[k] = v
        leaves, treedef = flatten((tuple(dyn_args), dyn_kwargs), is_leaf=_is_leaf)
        try:
            static_key = tuple(sorted(static.items(), key=lambda kv: repr(kv[0])))
            hash(static_key)
        except TypeError:
            raise TypeError(f"jit({self.__name__}): static arguments must be hashable, got "
                            f"{ {k: type(v).__name__ for k, v in static.items()} }") from None
        return leaves, treedef, static, static_key

    def _entry(self, leaves: list, treedef: Any, static: dict, static_key: tuple,
               backend: str | None = None) -> CompiledEntry:
        arguments_device = _arguments_device(self.__name__, leaves)
        backend = backend or self.backend or _default_backend()
        grad_mode = grad_enabled()
        key = self._key(leaves, treedef, static_key, backend, grad_mode)
        entry, failed = self._valid_entry(key)
        if entry is not None:
            self._stats["hits"] += 1
            return entry
        with self._lock:
            entry, failed = self._valid_entry(key)
            if entry is None:
                if failed is not None:
                    reason = f"guard failed: {failed.change()}"
                elif self._stats["traces"]:
                    reason = f"new signature {_describe(key[1])} ({self._n_entries()} cached)"
                else:
                    reason = ""
                if reason:
                    log_recompiles.info("%s: re-tracing, %s", self.__name__, reason)
                t0 = time.perf_counter()
                with collector.paused():
                    entry, key = self._compile(key, leaves, treedef, static, static_key, backend, grad_mode,
                                               arguments_device, t0)
                self._cache.setdefault(key, []).insert(0, entry)
                self._stats["traces"] += 1
                self._evict(reason)
        self._touch(entry)
        return entry

    def _compile(self, key: tuple, leaves: list, treedef: Any, static: dict, static_key: tuple,
                 backend: str, grad_mode: bool, arguments_device: Device | None,
                 t0: float) -> tuple[CompiledEntry, tuple]:
        """Trace and compile a new entry; returns it with its cache key (which changes when the
        trace finds it must key Python numbers by value)."""
        try:
            traced = trace_function(self.fn, leaves, treedef, static, grad_mode, self._specialize)
        except ConcretizationError:
            if self._specialize or not any(type(x) in (int, float) for x in leaves):
                raise
            # Python control flow on a number argument: trace with numbers as constants
            # (keyed by value), as torch.compile specializes them
            self._specialize = True
            log_recompiles.info("%s: branched on a Python number argument; numbers are "
                                "now part of the cache key", self.__name__)
            key = self._key(leaves, treedef, static_key, backend, grad_mode)
            traced = trace_function(self.fn, leaves, treedef, static, grad_mode, True)
        t1 = time.perf_counter()
        declared = any(isinstance(x, Spec) for x in leaves)
        device = _program_device(self.__name__, arguments_device, traced.captures, declared)
        entry = CompiledEntry(traced, backend, device)
        entry.name = self.__name__
        log_compiles.info("%s%s: traced %d ops in %.1f ms, compiled (%s) in %.1f ms",
                          self.__name__, _describe(key[1]), len(traced.graph), (t1 - t0) * 1e3,
                          backend, (time.perf_counter() - t1) * 1e3)
        return entry, key

    def _key(self, leaves: list, treedef: Any, static_key: tuple, backend: str, grad_mode: bool) -> tuple:
        sig = tuple(("static", type(x), x) if _is_static_leaf(x, self._specialize) else _signature(x)
                    for x in leaves)
        return (treedef, sig, static_key, backend, grad_mode, _duplicates(leaves))

    def _valid_entry(self, key: Any) -> tuple[CompiledEntry | None, Guard | None]:
        """The most recent entry for ``key`` whose guards hold, else (None, a guard that failed)."""
        failed = None
        for e in self._cache.get(key, ()):
            g = e.failed_guard()
            if g is None:
                return e, None
            failed = failed or g
        return None, failed

    def _touch(self, entry: CompiledEntry) -> None:
        self._tick += 1
        entry.last_used = self._tick

    def entries(self) -> list[CompiledEntry]:
        """The cached traces (each with its program), most recently traced first per signature."""
        return [e for es in self._cache.values() for e in es]

    def _n_entries(self) -> int:
        return sum(len(v) for v in self._cache.values())

    def _evict(self, reason: str) -> None:
        """Keep at most ``max_traces`` traces: drop the least recently used ones, warning once."""
        while self._n_entries() > self.max_traces:
            key, victim = min(((k, e) for k, es in self._cache.items() for e in es),
                              key=lambda ke: ke[1].last_used)
            self._cache[key].remove(victim)
            if not self._cache[key]:
                del self._cache[key]
            self._fast = {k: e for k, e in self._fast.items() if e is not victim}
            self._stats["evictions"] += 1
            if not self._warned_evicting:
                self._warned_evicting = True
                warnings.warn(
                    f"jit({self.__name__}): more than {self.max_traces} traces; the least recently used "
                    f"are evicted and re-traced when needed. Last cause: {reason or 'a new signature'}. "
                    f"Make a value that changes every call a tensor argument, or raise the limit with "
                    f"jit(..., max_traces=N) or TRACEJIT_MAX_TRACES.", stacklevel=4)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if current_trace() is not None:     # called from inside another trace: inline it
            return self.fn(*args, **kwargs)
        # fast path: positional tensors only, a signature seen before
        fast_key = None
        if not kwargs and not self.static_argnums:
            try:
                # (strides: a strided argument's reshapes may copy where a row-major one's view)
                fast_key = tuple([(a._aval, a._device, a.requires_grad, a.grad is None,
                                   getattr(a._value, "strides", None)) for a in args])
            except AttributeError:
                fast_key = None
            else:
                if grad_enabled():
                    fast_key += (True,)
                if len(args) > 1 and len({id(a) for a in args}) < len(args):
                    fast_key = None      # the same tensor twice: the general path keys the pattern
            entry = self._fast.get(fast_key) if fast_key is not None else None
            if entry is not None:
                for g in entry.guards:
                    if not g.holds():
                        break
                else:
                    self._stats["hits"] += 1
                    self._tick += 1
                    entry.last_used = self._tick
                    return entry.run(args)
        leaves, treedef, static, static_key = self._split(args, kwargs)
        entry = self._entry(leaves, treedef, static, static_key)
        if fast_key is not None and all(isinstance(a, Tensor) and a._trace is None for a in args):
            self._fast[fast_key] = entry
        return entry.run(leaves)

    def _call_eagerly(self, *args: Any, **kwargs: Any) -> Any:
        """The function itself, run eagerly: ``__call__`` while ``tj.disable_jit`` is on."""
        return self.fn(*args, **kwargs)

    def lower(self, *args: Any, device: Any = None, backend: str | None = None, **kwargs: Any) -> Lowered:
        """Trace and compile for the given arguments or :func:`spec`\\ s without running."""
        if device is not None:
            d = Device.parse(device)
            args, kwargs = _with_device((args, kwargs), d)
        leaves, treedef, static, static_key = self._split(args, kwargs)
        return Lowered(self._entry(leaves, treedef, static, static_key, backend))

    def explain(self, *args: Any, **kwargs: Any) -> Any:
        """The graph, fusion groups and why each boundary is there, kernels and generated code."""
        from .explanation import Explanation
        return Explanation(self.lower(*args, **kwargs).entry)

    def cache_info(self) -> dict[str, Any]:
        """Traces, trace-cache hits, and kernel cache statistics."""
        info = dict(self._stats, entries=self._n_entries())
        try:
            from .compiler import kernel_cache_stats
            info.update(kernel_cache_stats())
        except ImportError:
            pass
        return info

    def clear_cache(self) -> None:
        self._cache.clear()
        self._fast.clear()


def _describe(signature: tuple) -> str:
    parts = [d.__name__ if s == "scalar" else f"{d.__name__}#{rest[0]:x}" if s == "object"
             else f"{d.__name__}={rest[0]!r}" if s == "static" else f"{d.name}{list(s)}"
             for s, d, *rest in signature]
    return "(" + ", ".join(parts) + ")"


def _with_device(tree: Any, device: Device) -> Any:
    leaves, td = flatten(tree, is_leaf=_is_leaf)
    return unflatten(td, [Spec(x.shape, x.dtype, device) if isinstance(x, (Spec, Tensor)) else x
                          for x in leaves])


class Lowered:
    """The result of :meth:`Jitted.lower`: the optimized graph and the compiled kernels."""

    def __init__(self, entry: CompiledEntry) -> None:
        self.entry = entry

    @property
    def graph(self) -> Graph:
        return self.entry.traced.graph

    @property
    def kernels(self) -> list[Any]:
        return list(getattr(self.entry.executable, "kernels", []))

    def as_text(self) -> str:
        return self.graph.format()

    def __str__(self) -> str:
        return self.as_text()


def jit(fn: Callable | None = None, *, static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (), backend: str | None = None,
        max_traces: int | None = None) -> Any:
    """Compile ``fn``: trace it once per argument signature, fuse, and run generated kernels.

    Usable as ``@jit``, ``@jit(static_argnames=("n",))``, ``jit(f, ...)``, ``jit(model)`` or on a
    method.  A cached trace is reused only while the Python state it read still holds (see
    ``tracejit.guards``); otherwise it is traced again (``TRACEJIT_LOG=recompiles`` says why).
    ``backend``: ``"llvm"`` (default; CPU machine code or PTX) or ``"interpret"`` (the reference
    executor, op by op through NumPy).  ``max_traces``: traces kept per function (default 8,
    ``TRACEJIT_MAX_TRACES``), least recently used evicted.
    """
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    if isinstance(static_argnames, str):
        static_argnames = (static_argnames,)

    def wrap(f: Callable) -> Jitted:
        return Jitted(f, static_argnums, static_argnames, backend, max_traces)

    return wrap if fn is None else wrap(fn)


# The debugging switches (``tracejit.debug``) swap these methods rather than being checked on
# every call: a jitted call costs the same with them off as without them.
_compiled_call = Jitted.__call__
_unchecked_run = CompiledEntry.run
_checked_lock = threading.RLock()


def apply_debug_flags() -> None:
    """Make ``debug_flags`` take effect: jitted calls run eagerly or compiled, checked or not."""
    Jitted.__call__ = Jitted._call_eagerly if debug_flags.jit_disabled else _compiled_call   # type: ignore
    CompiledEntry.run = CompiledEntry._run_checking if debug_flags.nans else _unchecked_run  # type: ignore


apply_debug_flags()


def explain(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``tj.explain(f, *args)``: like ``jit(f).explain(*args)``."""
    f = fn if isinstance(fn, Jitted) else jit(fn)
    return f.explain(*args, **kwargs)


__all__ = ["jit", "spec", "Spec", "Jitted", "Lowered", "explain", "TracejitError"]
