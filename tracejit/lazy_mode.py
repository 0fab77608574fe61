"""Lazy mode: eager code records its ops into a pending graph, compiled and run when observed.

``with tj.lazy():`` (or ``TRACEJIT_LAZY=1`` for a whole program) makes every op bound on the
host record a node instead of running.  Shapes and dtypes are inferred as the op is recorded,
so errors are raised at the user's line, as eagerly.  The pending graph is *flushed* —
optimized, fused and compiled by the same pipeline as ``jit``, then run — when a value is
observed (``.numpy()``, ``.item()``, ``bool()``, ``repr``, DLPack, Python control flow on a
value), when the context is left, or when it grows past ``max_nodes``.

Flushed programs are cached by the graph's structure (ops, params, shapes, dtypes, which
tensors are read and written, which results are still referenced), never by data: a training
loop whose steps record the same ops compiles once and then replays.  Tensors made from data
(NumPy arrays, non-trivial Python floats such as a learning rate) are inputs of the program,
not constants in it, so new data does not make a new program.

Eager meaning is kept: results still referenced when the graph is flushed become eager
tensors; in-place writes of eager tensors are written back into their memory; views made while
recording are NumPy views of their base again once it is flushed; writes of a tensor that
shares memory with another one the graph reads flush first.  A pending graph lives on one
device, that of its data (numbers and values made without data go wherever they are used);
a CUDA graph compiles to PTX like a jitted one.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import passes, tracing
from . import prims as P
from .aliasing import VIEW_OPS
from .api._convert import _INLINE_NUMBERS
from .device import device_input, host_array, write_back
from .graph import Graph, Node, freeze
from .logs import topic
from .ops import CHECKS, PRIMS, AVal, Prim
from .prims import run_eager
from .tensors import CPU, Device, Tensor, check_same_device, is_host_number
from .tracing import Trace

if TYPE_CHECKING:
    from .lazy_fragments import Fragment

log_compiles = topic("compiles")

DEFAULT_MAX_NODES = 20000       # a pending graph this large is flushed (compile time grows with it)
CACHE_SIZE = 64                 # flushed programs kept, least recently used dropped

_programs: OrderedDict[Any, Any] = OrderedDict()   # structural key -> compiled program
stats = {"flushes": 0, "compiles": 0, "hits": 0}


def _base_array(a: Any) -> Any:
    """The array that owns ``a``'s memory (views chain through ``.base``)."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a


class Recording:
    """The pending graph as a flat list of ops, with its structural key built as it grows.

    It answers what tracing and views ask of a :class:`~tracejit.graph.Graph` while recording
    (``add``, ``add_input``, ``node``); the networkx graph is built only when a flush misses
    the cache (:meth:`to_graph`), so a replayed step pays for a list append per op. The key's
    entries are the ops themselves (no ``Node`` is made unless asked for); a spliced fragment is
    one entry (its identity and the nodes it reads), its ops resolved only when asked for.
    """

    def __init__(self) -> None:
        self.key: list[tuple] = []      # per op: (op, input ids, params as items, aval); per splice one
        self.ops: list[Any] = []        # per node: its key entry, or the _Splice it is an op of
        self.params: list[dict[str, Any]] = []
        self.sources: dict[int, str] = {}   # the ops recorded with a source line
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.default_source = ""

    def add(self, op: str, inputs: Any, params: dict[str, Any], aval: AVal, source: str | None = None) -> int:
        nid = len(self.ops)
        inputs = tuple(inputs)
        # (params: the fresh keyword dict of one bind, or a view's own; not shared with a caller)
        self.params.append(params)
        source = self.default_source if source is None else source
        if source:
            self.sources[nid] = source
        # params as items (hashed once, when the flush looks the key up); a constant's array by content
        entry = (op, inputs, (freeze(params) if "value" in params else tuple(params.items()))
                 if params else (), aval)
        self.key.append(entry)
        self.ops.append(entry)
        return nid

    def extend(self, fragment: Fragment, inputs: list[int]) -> int:
        """Append ``fragment``'s ops, reading ``inputs`` where it reads its inputs; returns the
        node of its first op (op ``k`` of the fragment is node ``base + k``)."""
        base = len(self.ops)
        splice = _Splice(fragment, base, tuple(inputs))
        self.key.append((fragment.token, splice.inputs))
        self.ops.extend([splice] * len(fragment.ops))
        self.params.extend(fragment.params)
        return base

    def entry(self, nid: int) -> tuple:
        """Node ``nid`` as (op, input ids, params as items, aval)."""
        e = self.ops[nid]
        return e.entry(nid) if type(e) is _Splice else e

    def aval(self, nid: int) -> AVal:
        e = self.ops[nid]
        return e.fragment.ops[nid - e.base][3] if type(e) is _Splice else e[3]

    def entries(self) -> Iterator[tuple]:
        for nid in range(len(self.ops)):
            yield self.entry(nid)

    def structure_key(self) -> tuple:
        """The recorded ops as one hashable tuple (params that do not hash are frozen)."""
        key = tuple(self.key)
        try:
            hash(key)
        except TypeError:           # an unhashable param (a list): frozen, as rarely as that happens
            key = tuple(e if len(e) == 2 else (e[0], e[1], freeze(dict(e[2])), e[3]) for e in key)
        return key

    def add_input(self, aval: AVal, name: str = "") -> int:
        nid = self.add("input", (), {"name": name} if name else {}, aval)
        self.inputs.append(nid)
        return nid

    def node(self, nid: int) -> Node:
        op, inputs, _, aval = self.entry(nid)
        return Node(op, inputs, self.params[nid], aval, self.sources.get(nid, ""))

    def __contains__(self, nid: int) -> bool:
        return 0 <= nid < len(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def to_graph(self) -> Graph:
        g = Graph()
        sources = self.sources
        for nid, ((op, inputs, _, aval), params) in enumerate(zip(self.entries(), self.params)):
            g.g.add_node(nid, node=Node(op, inputs, dict(params), aval, sources.get(nid, "")))
            for i in inputs:
                g.g.add_edge(i, nid)
        g.inputs = list(self.inputs)
        g.outputs = list(self.outputs)
        g._ids = itertools.count(len(self.ops))
        return g


class _Splice(NamedTuple):
    """A fragment's ops in a recording, from node ``base``, reading ``inputs`` for its slots."""
    fragment: Fragment
    base: int
    inputs: tuple[int, ...]

    def entry(self, nid: int) -> tuple:
        op, refs, items, aval = self.fragment.ops[nid - self.base]
        base, inputs = self.base, self.inputs
        return op, tuple([base + r if r >= 0 else inputs[~r] for r in refs]), items, aval


class LazyTrace(Trace):
    """The pending graph of lazy mode: a trace whose tracers become eager tensors when flushed."""

    is_lazy = True
    records_fragment = False        # (a FragmentTrace records one: no fragment is spliced into it)

    def __init__(self, max_nodes: int = DEFAULT_MAX_NODES) -> None:
        super().__init__(Recording())       # (a list, not networkx: see Recording)
        self.max_nodes = max_nodes
        self._live: list[weakref.ref] = []        # every tracer made, to find those still referenced
        self._bases: dict[int, list[Tensor]] = {}  # id(owning array) -> captured tensors over it
        self._flushing = False
        # numbers the API turned into tensors, and their broadcasts, by value (see record)
        self._numbers: dict[tuple, Tensor] = {}
        self._number_ids: set[int] = set()
        self.device: Device | None = None       # where the graph's data lives (None: numbers only)
        self._free: set[int] = set()            # nodes that are number broadcasts
        self._synthetic: set[int] = set()       # nodes made without data (numbers, iota, ops on them)
        # checks (indices in range) run at the flush even when nothing reads what they guard,
        # so that an error eager code raises is raised here too: held, they stay results
        self._checks: list[Tensor] = []

    # ------------------------------------------------------------------ recording
    def track(self, t: Tensor) -> None:
        self._live.append(weakref.ref(t))

    def record(self, prim: Prim, inputs: tuple[Tensor, ...], params: dict[str, Any], aval: AVal) -> Tensor:
        name = prim.name
        if name == "constant" and _is_data(params):
            # data, not structure: an eager tensor, read by the program as an input
            if not params.get("runtime"):
                return run_eager(prim, inputs, params, aval)
            # a number the API made (a learning rate, a count): one input per distinct value
            value = params["value"]
            key = ("number", value.dtype.str, value.tobytes())
            t = self._numbers.get(key)
            if t is None:
                t = self._numbers[key] = run_eager(prim, inputs, params, aval)
                self._number_ids.add(id(t))
            return t
        if name in ("reshape", "expand") and id(inputs[0]) in self._number_ids:
            # (the broadcasts of such a number, shared the same way: they are never written)
            key = (name, id(inputs[0]), _params_key(params))
            t = self._numbers.get(key)
            if t is None:
                t = self._numbers[key] = self._record(prim, inputs, params, aval)
                self._number_ids.add(id(t))
            return t
        return self._record(prim, inputs, params, aval)

    def _record(self, prim: Prim, inputs: tuple[Tensor, ...], params: dict[str, Any], aval: AVal,
                view: bool = True) -> Tensor:
        name = prim.name
        device = self._op_device(name, inputs)
        if device is not self.device and device is not None and self.device is not None \
                and device != self.device:
            self.flush()                # the pending graph runs on one device: run it first
            return self.record(prim, inputs, params, aval)
        aliasing = self.aliasing
        nodes = []
        for x in inputs:
            if x._trace is self:
                if aliasing.views:
                    aliasing.current_node(x, self.node_of)
                nodes.append(x._node)
            elif x._trace is None and id(x) not in self._captured and self._aliases_written(x):
                self.flush()            # it shares memory with a tensor written here: run that first
                return self.record(prim, inputs, params, aval)
            else:
                nodes.append(self.node_of(x))
        # (as Trace.record, less the user's line: a replayed step never shows it)
        nid = self.graph.add(name, nodes, params, aval)
        full = nid >= self.max_nodes            # the recording has reached its bound: flush it
        if device is None:              # made without data (numbers, iota): pins no device
            self._synthetic.add(nid)
            if name in _NUMBER_OPS and self._reads_free(inputs):
                self._free.add(nid)     # a number broadcast (eagerly a stride-0 view): any device
            device = CPU
        else:
            self.device = device
        out = Tensor._new(None, self, nid, aval, device)
        if view and name in VIEW_OPS and device.type == "cpu":   # (eager GPU views are copies)
            views = self.aliasing.views
            self.aliasing.note_view(name, params, inputs[0], out)
            view = views.get(id(out))
            if view is not None:
                # the view must not keep itself (or its base) pending: forgotten when it dies
                view.tensor = None
                self._live.append(weakref.ref(out, lambda _, k=id(out): views.pop(k, None)))
                return self._bounded(out) if full else out
        self._live.append(weakref.ref(out))
        if name in CHECKS:
            self._checks.append(out)
        return self._bounded(out) if full else out

    def _reads_free(self, inputs: tuple[Tensor, ...]) -> bool:
        """Every pending input is a number broadcast (eager ones are numbers here)."""
        for x in inputs:
            if x._trace is self and x._node not in self._free:
                return False
        return True

    def broadcast_operand(self, x: Tensor, shape: tuple[int, ...]) -> Tensor:
        """``x`` broadcast to ``shape`` (valid: checked by the caller) as the operand of one op,
        which nothing else reads (no tape holds it): ``prims.broadcast_to``'s ops, not kept as a
        view of ``x``, since no write can reach it before it dies."""
        if id(x) in self._number_ids:       # (a shared number's broadcasts are shared)
            return P.broadcast_to(x, shape)
        dtype = x._aval.dtype
        if len(x._aval.shape) < len(shape):
            ones = (1,) * (len(shape) - len(x._aval.shape)) + x._aval.shape
            x = self._record(PRIMS["reshape"], (x,), {"shape": ones}, AVal(ones, dtype), view=False)
        return self._record(PRIMS["expand"], (x,), {"shape": shape}, AVal(shape, dtype), view=False)

    def _bounded(self, out: Tensor) -> Tensor:
        if len(self.graph) > self.max_nodes:
            self.flush()
        return out

    def _op_device(self, op: str, inputs: tuple[Tensor, ...]) -> Device | None:
        """The device an op's data lives on; None when it reads only numbers (constants, a
        host scalar broadcast), which a GPU op takes from the host as eagerly."""
        made = True                     # every input made without data
        for x in inputs:                # (host operands only, the common case: no device to compare)
            if x._device.type != "cpu":
                return self._op_device_of(op, inputs)
            if made:
                if x._trace is self:
                    made = x._node in self._synthetic      # (number broadcasts are synthetic too)
                elif x._trace is not None or not is_host_number(x._value):
                    made = False
        return None if made else CPU

    def _op_device_of(self, op: str, inputs: tuple[Tensor, ...]) -> Device | None:
        """:meth:`_op_device` where an operand is on a GPU."""
        found: list[Tensor] = []
        made = True                     # every input made without data
        for x in inputs:
            if x._trace is self:
                if x._node in self._free and x._device.type == "cpu":
                    continue
                made = made and x._node in self._synthetic and x._device.type == "cpu"
            elif x._trace is None and x._device.type == "cpu" and is_host_number(x._value):
                continue
            else:
                made = False
            found.append(x)
        if not found:
            return None
        device = check_same_device(op, tuple(found))    # (mixing devices names both, as eagerly)
        return None if made and device.type == "cpu" else device

    def node_of(self, t: Tensor) -> int:
        if t._trace is None and id(t) not in self._captured and isinstance(t._value, np.ndarray):
            self._bases.setdefault(id(_base_array(t._value)), []).append(t)
        return super().node_of(t)

    def _aliases_written(self, t: Tensor) -> bool:
        """Whether eager ``t`` shares memory with a captured tensor the pending graph writes
        (the program reads its inputs as separate buffers)."""
        if not self.mutated or not isinstance(t._value, np.ndarray):
            return False
        others = self._bases.get(id(_base_array(t._value)), ())
        return any(id(o) in self.mutated and o is not t for o in others)

    def assign(self, target: Tensor, new: Tensor) -> None:
        if target._trace is None and isinstance(target._value, np.ndarray):
            others = self._bases.get(id(_base_array(target._value)), ())
            if any(o is not target for o in others):
                self.flush()        # an aliased eager tensor is written: earlier reads run first
        super().assign(target, new)

    def splice(self, fragment: Fragment, tensors: list[Tensor], numbers: list[Any]) -> list[Tensor] | None:
        """Record ``fragment`` (see :mod:`tracejit.lazy_fragments`) reading ``tensors`` (host
        tensors, one per placeholder) and the run-time ``numbers``: its ops are appended as they
        are, its outputs written into the tensors they stand for; returns its results. None
        (nothing recorded) where it writes tensors that share memory, which the op-by-op
        recording orders and this does not."""
        appended = self.append_fragment(fragment, tensors, numbers)
        if appended is None:
            return None
        base, inputs = appended
        views, versions, mutated = self.aliasing.views, self.aliasing.versions, self.mutated
        for slot, ref in fragment.outputs:
            target = tensors[slot]
            nid = base + ref if ref >= 0 else inputs[~ref]
            if id(target) in views:
                self.assign(target, Tensor._new(None, self, nid, target._aval, CPU))
                continue
            # what assign does for a tensor that is no view and (checked by _splices) shares no
            # memory: the write is a new version of it, an eager one is captured and mutated
            versions[id(target)] = versions.get(id(target), 0) + 1
            if target._trace is None:
                mutated.setdefault(id(target), target)
                target._trace = self
            target._node = nid
        results = []
        for ref in fragment.results:
            nid = base + ref if ref >= 0 else inputs[~ref]
            out = Tensor._new(None, self, nid, self.graph.aval(nid), CPU)
            self._live.append(weakref.ref(out))
            results.append(out)
        if len(self.graph) > self.max_nodes:
            self.flush()
        return results

    def append_fragment(self, fragment: Fragment, tensors: list[Tensor],
                        numbers: list[Any]) -> tuple[int, list[int]] | None:
        """Append ``fragment``'s ops reading ``tensors`` and ``numbers``: (the node of its op 0,
        the node of each of its slots), or None where :meth:`splice` must not (see there)."""
        if not self._splices(tensors, fragment.outputs):
            return None
        if self.device is not None and self.device != CPU:
            self.flush()                # the pending graph runs on one device: run it first
        views = self.aliasing.views
        inputs = [t._node if t._trace is self and id(t) not in views else self.node_of(t) for t in tensors]
        constant = PRIMS["constant"]
        for v, aval in zip(numbers, fragment.number_avals):
            number = self.record(constant, (), {"value": np.asarray(v, aval.dtype), "runtime": True}, aval)
            inputs.append(self.node_of(number))
        inputs += [self.node_of(c) for c in fragment.constants]
        base = self.graph.extend(fragment, inputs)
        self.device = CPU
        return base, inputs

    def _splices(self, tensors: list[Tensor], writes: Any) -> bool:
        """Whether ``tensors`` are distinct host tensors (eager or pending here) and, where a
        fragment ``writes``, share no memory with each other or with another tensor the pending
        graph reads (pending views included)."""
        seen: set[int] = set()
        views = self.aliasing.views if writes else {}
        for t in tensors:
            if t._device.type != "cpu" or id(t) in seen or id(t) in views:
                return False
            seen.add(id(t))
            if t._trace is None:
                if not isinstance(t._value, np.ndarray):
                    return False
                if not writes:
                    continue
                base = id(_base_array(t._value))
                if base in seen or any(o is not t for o in self._bases.get(base, ())):
                    return False
                seen.add(base)
            elif t._trace is not self:
                return False
        return True

    def read_state(self, container: Any, key: Any, value: Any, runtime: bool = False) -> Any:
        """State read as itself: a number an op meets becomes an input of the program anyway."""
        return value

    def use_module(self, module: Any) -> None:
        pass

    def number_operand(self, v: int | float, dtype: np.dtype, shape: tuple[int, ...]) -> Tensor:
        """:meth:`broadcast_number` of Python number ``v`` as ``dtype``, found by the number itself
        (no array made to look it up; zero by its bits: -0.0 is not 0.0)."""
        key = (v, dtype, shape)
        t = self._numbers.get(key) if v else None
        if t is None:
            t = self.broadcast_number(np.asarray(v, dtype=dtype), shape)
            if v:
                self._numbers[key] = t
        return t

    def broadcast_number(self, value: np.ndarray, shape: tuple[int, ...]) -> Tensor:
        """A Python number of an elementwise op, broadcast to ``shape`` (what ``operands`` makes
        of ``x * 2``): recorded straight into the graph, once per value and shape."""
        key = ("broadcast", value.dtype.str, value.tobytes(), shape)
        t = self._numbers.get(key)
        if t is not None:
            return t
        aval = AVal((), value.dtype)
        if _is_data({"value": value}):      # a run-time number: an input, as everywhere here
            src = self.record(PRIMS["constant"], (), {"value": value, "runtime": True}, aval)
            nid = self.node_of(src)
        else:
            nid = self.graph.add("constant", (), {"value": value}, aval)
        if shape:
            ones = (1,) * len(shape)
            nid = self.graph.add("reshape", (nid,), {"shape": ones}, AVal(ones, value.dtype))
            nid = self.graph.add("expand", (nid,), {"shape": shape}, AVal(shape, value.dtype))
        self._free.add(nid)
        self._synthetic.add(nid)
        t = self._numbers[key] = Tensor._new(None, self, nid, AVal(shape, value.dtype), CPU)
        self._live.append(weakref.ref(t))
        return t

    def place(self, t: Tensor, device: Device) -> Tensor:
        """``t`` on ``device``: a pending value made without data (an iota, a filled tensor)
        is computed there by the program; anything else is moved (flushed first)."""
        if t._trace is self and t._node in self._synthetic and device.type != "cpu" \
                and self.device in (None, device):
            out = Tensor._new(None, self, t._node, t._aval, device)
            self._live.append(weakref.ref(out))
            self.device = device
            return out
        return t.to_device(device)

    def detached(self, g: Tensor) -> Tensor:
        """``g`` as a value of its own (not a view): what a leaf's ``.grad`` holds."""
        self.aliasing.views.pop(id(g), None)
        return g

    # ------------------------------------------------------------------ flushing
    def flush(self, reset: bool = True) -> None:
        """Compile (or find in the cache) and run the pending graph; its tracers become eager.
        ``reset=False``: the trace is not used again (the end of a ``lazy()`` block), so a flush
        that succeeded leaves its state as it is."""
        if self._flushing:
            return
        self._flushing = True
        done = False
        try:
            self._flush()
            done = True
        finally:
            self._flushing = False
            if reset or not done:
                self._reset()

    def _reset(self) -> None:
        max_nodes = self.max_nodes
        self.__init__(max_nodes)

    def _flush(self) -> None:
        g = self.graph
        # the shared numbers and broadcasts are results only where something else holds them
        self._numbers.clear()
        mutated = list(self.mutated.values())
        results: list[Tensor] = []
        views: list[Tensor] = []
        seen: set[int] = set()
        for ref in self._live:
            t = ref()
            if t is None or t._trace is not self or id(t) in seen or id(t) in self.mutated:
                continue
            seen.add(id(t))
            (views if id(t) in self.aliasing.views else results).append(t)
        for v in views:                 # a view is re-made over its base, which must be flushed too
            root = self.aliasing.views[id(v)].root
            if root._trace is self and id(root) not in seen and id(root) not in self.mutated:
                seen.add(id(root))
                results.append(root)
        if not results and not mutated:
            for v in views:
                self._settle_view(v)
            return
        stats["flushes"] += 1
        out_nodes = [self.node_of(t) for t in results] + [t._node for t in mutated]
        captures = self.captures
        key = (g.structure_key(), tuple(out_nodes), tuple([_capture_key(c) for c in captures]), self.device)
        program = _programs.get(key)
        if program is None:
            program = self._compile(out_nodes, captures, mutated)
            _programs[key] = program
            if len(_programs) > CACHE_SIZE:
                _programs.popitem(last=False)
            stats["compiles"] += 1
        else:
            _programs.move_to_end(key)
            stats["hits"] += 1
        device = self.device or CPU
        if device.type == "cpu":
            arrays = [c._value for c in captures]
        else:
            arrays = [device_input(c, c.aval, device) for c in captures]
        outs = program.run(arrays)
        given = {id(a) for a in arrays}
        for t, a in zip(results, outs):
            if t._device != device:
                a = host_array(a, device)       # a value of numbers only: a host tensor, as eagerly
            elif device.type != "cpu":
                if id(a) in given:
                    a = _device_copy(a, device)
            elif id(a) in given or id(_base_array(a)) in given:
                a = np.array(a)         # a result that is an input (x * 1): its own memory, as eagerly
            given.add(id(a))
            t._value, t._trace, t._node = a, None, -1
        for t, a in zip(mutated, outs[len(results):]):
            t._trace, t._node = None, -1
            if a is not t._value:
                write_back(t, a, device)
        for v in views:
            self._settle_view(v)

    def _settle_view(self, v: Tensor) -> None:
        """A view made while recording becomes a NumPy view of its (now eager) base."""
        view = self.aliasing.views[id(v)]
        value = view.root._value
        for op, params in view.chain:
            value = PRIMS[op].impl(value, **params)
        v._value, v._trace, v._node = value, None, -1

    def _compile(self, out_nodes: list[int], captures: list[Any], mutated: list[Tensor]) -> Any:
        from .compiler import compile_graph
        self.graph.outputs = out_nodes
        g = self.graph.to_graph()
        passes.optimize(g)
        index = {id(c): i for i, c in enumerate(captures)}
        first = len(out_nodes) - len(mutated)
        updates = {first + k: index[id(t)] for k, t in enumerate(mutated)}
        program = compile_graph(g, self.device or CPU, updates)
        log_compiles.info("lazy: compiled a pending graph of %d ops, %d inputs, %d results",
                          len(g), len(captures), len(out_nodes))
        run = program._run
        return _Flushed((lambda arrays: run(*arrays)) if run is not None else program, program)


class _Flushed(NamedTuple):
    """A cached flush: the call that runs it, and the compiled program (kernels, explain)."""
    run: Any
    program: Any


def programs() -> list[Any]:
    """The compiled programs of the cached flushes, least recently used first."""
    return [f.program for f in _programs.values()]


def _is_data(params: dict[str, Any]) -> bool:
    """A constant that holds data (an array, a run-time number, a float the passes do not
    simplify with) rather than structure (0, 1, 0.5, an int, a bool)."""
    value = params["value"]
    if params.get("runtime") or value.size > 1:
        return True
    return value.dtype.kind == "f" and value.size == 1 and float(value.reshape(())) not in _INLINE_NUMBERS


_NUMBER_OPS = frozenset({"constant", "reshape", "expand", "slice", "permute"})


def _device_copy(a: Any, device: Device) -> Any:
    from .device import cuda_device
    return cuda_device(device).copy(a)


def _params_key(params: dict[str, Any]) -> tuple:
    """A hashable key of an op's params: the items themselves when they hash (ints, tuples,
    dtypes; the order is the call site's, fixed for a given line), else ``freeze`` (arrays)."""
    items = tuple(params.items())
    try:
        hash(items)
    except TypeError:
        return freeze(params)
    return items


def _capture_key(c: Any) -> tuple:
    value = c._value if type(c) is Tensor else None
    strides = value.strides if isinstance(value, np.ndarray) and not value.flags.c_contiguous else None
    return (type(c), c._aval, c._device, strides)


# ----------------------------------------------------------------------------- the user API

@contextlib.contextmanager
def lazy(max_nodes: int = DEFAULT_MAX_NODES) -> Iterator[None]:
    """``with tj.lazy():`` — record eager ops into a pending graph, flushed through the ``jit``
    pipeline when a value is observed or the block ends (see ``tracejit.lazy``).

    Inside ``jit`` (already traced) or an enclosing lazy block it changes nothing."""
    if tracing.current_trace() is not None:
        yield
        return
    trace = LazyTrace(max_nodes)
    with tracing.tracing(trace):
        try:
            yield
        finally:
            trace.flush(reset=False)


def flush() -> None:
    """Run the pending lazy graph now (nothing to do outside lazy mode)."""
    trace = tracing.current_trace()
    if trace is not None and trace.is_lazy:
        trace.flush()


def is_lazy() -> bool:
    """Whether eager ops are being recorded lazily in this thread."""
    trace = tracing.current_trace()
    return trace is not None and trace.is_lazy


def cache_clear() -> None:
    _programs.clear()


def _lazy_by_default() -> bool:
    return os.environ.get("TRACEJIT_LAZY", "") not in ("", "0")


if _lazy_by_default():
    tracing.set_thread_default(LazyTrace)
