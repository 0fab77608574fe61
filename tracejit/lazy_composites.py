"""Lazy mode: a function of tensors (a loss, a normalization) recorded once per signature, then
spliced in with its autograd tape.

``F.cross_entropy`` is about 35 primitives; op by op, lazy mode runs the API layers for each of
them at every step.  A :func:`replayable` function computes from its arguments alone: what it
records depends only on their shapes, dtypes, weak flags and ``requires_grad``, on its other
arguments (numbers, strings, tuples and lists) and on the grad mode and default dtype.  So its first call
with a signature is recorded on placeholders (:mod:`tracejit.lazy_fragments`) and each later
call splices that recording into the pending graph and rebuilds the tape it made: the same
nodes, primitives and params over the tensors of the moment, so ``backward`` (and its own replay,
:mod:`tracejit.lazy_backward`) sees what the op-by-op recording would have made.

The views the recording made are noted again over the real arguments at each splice, as
recording them would (whether a reshape is a view depends on the argument's memory layout), so
writes through them reach what they view.  It is refused (the call runs op by op) where the
recording cannot stand for the call: an argument on a GPU or of another type, an autocast region
or checkpoint active, or a recording that reads other tensors or state or writes a tensor.
"""
from __future__ import annotations

import functools
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from . import autograd
from . import dtypes as dt
from . import tracing as _tracing
from .autocast import _stack as _autocast_stack
from .autograd import Node
from .lazy_fragments import Fragment, FragmentTrace, Unreplayable, reads_no_state
from .tensors import CPU, Tensor

CACHE_SIZE = 64         # recordings kept per function, least recently used dropped

F = TypeVar("F", bound=Callable[..., Any])
_REFUSED = object()     # a call that must run op by op
_PLAIN = (type(None), bool, int, str)   # argument types keyed by value (floats by their bits)
_SEQUENCES = (tuple, list)              # keyed by their items (a shape)
stats = {"recorded": 0, "spliced": 0, "refused": 0}
enabled = True          # False: every call runs op by op (to compare against)


class _TapeNode(NamedTuple):
    """A node the recording put on the tape, by references (``r >= 0`` op, ``r < 0`` slot ``~r``):
    its output, its inputs, and per input the node it came from (its index), a slot's own
    edge (``~slot``) or None."""
    prim: Any
    params: dict[str, Any]
    out: int
    inputs: tuple[int, ...]
    edges: tuple[int | None, ...]


class _Recorded(NamedTuple):
    fragment: Fragment
    values: tuple[int, ...]             # the op references a spliced call makes tensors for
    flags: tuple[tuple[bool, bool], ...]    # their (weak, requires_grad)
    tape: tuple[_TapeNode, ...]         # producers first
    checks: tuple[int, ...]             # references of data checks (indices in range)
    results: tuple[int, ...]            # indices into ``values``
    single: bool                        # the function returned one tensor, not a tuple
    views: tuple[tuple[int, int, tuple], ...]   # (index into values, root reference, view ops)


def replayable(fn: F) -> F:
    """Mark ``fn`` (tensors and plain values in, a tensor or a tuple of tensors out, computed
    from its arguments only) as recorded once per signature in lazy mode."""
    recorded: OrderedDict[tuple, _Recorded | None] = OrderedDict()

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        traces = _tracing._local.traces
        if traces:
            trace = traces[-1]
            if trace.is_lazy and not trace.records_fragment and enabled:
                out = _call(fn, recorded, trace, args, kwargs)
                if out is not _REFUSED:
                    stats["spliced"] += 1
                    return out
                stats["refused"] += 1
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _call(fn: Callable[..., Any], recorded: OrderedDict, trace: Any, args: tuple, kwargs: dict) -> Any:
    if autograd.node_collector is not None or _autocast_stack():
        return _REFUSED
    tensors: list[Tensor] = []
    key = _signature(args, kwargs, tensors)
    if key is None:
        return _REFUSED
    try:
        rec = recorded.get(key, _REFUSED)
    except TypeError:           # (a value that does not hash)
        return _REFUSED
    if rec is _REFUSED:
        rec = recorded[key] = _record(fn, args, kwargs, tensors)
        stats["recorded"] += rec is not None
        if len(recorded) > CACHE_SIZE:
            recorded.popitem(last=False)
    else:
        recorded.move_to_end(key)
    if rec is None:
        return _REFUSED
    return _splice(rec, trace, tensors)


def _signature(args: tuple, kwargs: dict, tensors: list[Tensor]) -> tuple | None:
    """What a recording depends on; the tensor arguments are appended to ``tensors``.  None: an
    argument it cannot stand for."""
    parts: list[Any] = [_tracing._local.grad_enabled, dt.default_float]
    for a in (*args, *kwargs.values()):
        if isinstance(a, Tensor):
            if a._device is not CPU and a._device != CPU:
                return None
            tensors.append(a)
            parts.append((a._aval, a._weak, a.requires_grad))
        else:
            parts.append(_plain_key(a))
    if _MISSING in parts:
        return None
    parts.append(tuple(kwargs))
    return tuple(parts)


_MISSING = object()


def _plain_key(a: Any) -> Any:
    t = type(a)
    if t is float:
        return (float, a.hex())     # (-0.0 and 0.0 differ, NaN equals itself)
    if t in _PLAIN:
        return (t, a)
    if t in _SEQUENCES:
        items = tuple([_plain_key(x) for x in a])
        return _MISSING if _MISSING in items else (t, items)
    return _MISSING


def _record(fn: Callable[..., Any], args: tuple, kwargs: dict, tensors: list[Tensor]) -> _Recorded | None:
    """``fn`` recorded on placeholders standing for ``tensors``; None where it cannot be."""
    sub = FragmentTrace(reads_no_state)
    given = sub.stand_ins(tensors)
    stand_in = iter(given)
    args = tuple([next(stand_in) if isinstance(a, Tensor) else a for a in args])
    kwargs = {k: next(stand_in) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
    try:
        with _tracing.tracing(sub):
            out = fn(*args, **kwargs)
        single = isinstance(out, Tensor)
        results = [out] if single else list(out) if isinstance(out, tuple) else None
        if not results or not all(isinstance(r, Tensor) and r._trace is sub for r in results):
            raise Unreplayable("a result that is not a value of the computation")
        fragment = sub.fragment(given, results, checks=True)
        if fragment.outputs or any(r < 0 for r in fragment.results):
            raise Unreplayable("the computation writes or returns a tensor it was given")
        return _describe(sub, fragment, given, results, single)
    except Exception:       # (op by op instead: the same error, if any, is raised there)
        return None


def _describe(sub: FragmentTrace, fragment: Fragment, given: list[Tensor], results: list[Tensor],
              single: bool) -> _Recorded:
    refs = sub.refs
    views = sub.aliasing.views
    seen: dict[int, int] = {}           # id(node) -> index in the tape
    tape: list[_TapeNode] = []
    kept: dict[int, Tensor] = {}        # op reference -> the recorded tensor
    slot_of = {id(p): k for k, p in enumerate(given)}
    constants = {id(c): len(given) + len(fragment.number_avals) + k for k, c in enumerate(fragment.constants)}

    def ref_of(t: Tensor) -> int:
        if id(t) in slot_of:
            return ~slot_of[id(t)]
        if t._trace is None:
            return ~constants[id(t)]
        ref = refs[t._node]
        if ref >= 0:
            kept[ref] = t
        return ref

    def visit(node: Any) -> None:       # producers first (the tape is a DAG: depth first)
        if id(node) in seen:
            return
        if type(node) is not Node or node.inputs is None:
            raise Unreplayable("a tape node of another kind")
        for e in node.edges:
            if type(e) is Node:
                visit(e)
            elif e is not None and id(e) not in slot_of:
                raise Unreplayable("a gradient edge to a tensor it was not given")
        edges = tuple([None if e is None else seen[id(e)] if type(e) is Node else ~slot_of[id(e)]
                       for e in node.edges])
        seen[id(node)] = len(tape)
        tape.append(_TapeNode(node.prim, node.params, ref_of(node.out),
                              tuple([ref_of(x) for x in node.inputs]), edges))

    reads_data = _reads_arguments(fragment, len(given))
    for r in results:
        if not reads_data[refs[r._node]]:
            raise Unreplayable("a result computed without the arguments' data (its device is open)")
        ref_of(r)
        if r._grad_fn is not None:
            visit(r._grad_fn)
    checks = tuple([refs[c._node] for c in sub._checks])
    view_chains = [(ref, _view_chain(fragment, ref, views[id(t)], ref_of))
                   for ref, t in list(kept.items()) if id(t) in views]
    values = tuple(sorted(kept))
    index = {ref: k for k, ref in enumerate(values)}
    return _Recorded(fragment, values, tuple([(kept[r]._weak, kept[r].requires_grad) for r in values]),
                     tuple(tape), checks, tuple([index[refs[r._node]] for r in results]), single,
                     tuple([(index[ref], root, ops) for ref, (root, ops) in view_chains]))


def _view_chain(fragment: Fragment, ref: int, view: Any,
                ref_of: Callable[[Tensor], int]) -> tuple[int, tuple]:
    """(the reference of the view's root, its view ops from the root as (op, params, shape))."""
    ops: list[tuple] = []
    r = ref
    for op, params in reversed(view.chain):
        if r < 0 or fragment.ops[r][0] != op:
            raise Unreplayable("a view made outside the recording")
        ops.append((op, params, fragment.ops[r][3].shape))
        r = fragment.ops[r][1][0]
    if r != ref_of(view.root):
        raise Unreplayable("a view made outside the recording")
    return r, tuple(reversed(ops))


def _reads_arguments(fragment: Fragment, n_given: int) -> list[bool]:
    """Per op, whether it reads one of the ``n_given`` arguments (directly or through other ops)."""
    reads: list[bool] = []
    for _, inputs, _, _ in fragment.ops:
        reads.append(any((reads[r] if r >= 0 else ~r < n_given) for r in inputs))
    return reads


def _splice(rec: _Recorded, trace: Any, tensors: list[Tensor]) -> Any:
    appended = trace.append_fragment(rec.fragment, tensors, [])
    if appended is None:
        return _REFUSED
    base, inputs = appended
    ops = rec.fragment.ops
    live = trace._live
    made: dict[int, Tensor] = {}
    for ref, (weak, requires_grad) in zip(rec.values, rec.flags):
        t = made[ref] = Tensor._new(None, trace, base + ref, ops[ref][3], CPU)
        t._weak, t.requires_grad = weak, requires_grad
    slots = list(tensors) + [None] * len(rec.fragment.number_avals) + list(rec.fragment.constants)
    aliasing = trace.aliasing
    views = aliasing.views
    viewed = set()
    for k, root, chain in rec.views:    # as op-by-op recording would note each (see LazyTrace._record)
        out = made[rec.values[k]]
        aliasing.note_views(chain, made[root] if root >= 0 else slots[~root], out)
        view = views.get(id(out))
        if view is not None:
            view.tensor = None
            viewed.add(id(out))
            live.append(weakref.ref(out, lambda _, k=id(out): views.pop(k, None)))
    for t in made.values():
        if id(t) not in viewed:
            live.append(weakref.ref(t))
    for ref in rec.checks:
        t = made.get(ref)
        if t is None:
            t = made[ref] = Tensor._new(None, trace, base + ref, ops[ref][3], CPU)
            live.append(weakref.ref(t))
        trace._checks.append(t)
    nodes: list[Node] = []
    for tn in rec.tape:
        out = made[tn.out]
        out._grad_fn = Node.restored(
            tn.prim, tn.params, tuple([made[r] if r >= 0 else slots[~r] for r in tn.inputs]),
            tuple([None if e is None else nodes[e] if e >= 0 else _edge(slots[~e]) for e in tn.edges]), out)
        nodes.append(out._grad_fn)
    if len(trace.graph) > trace.max_nodes:
        trace.flush()
    outs = [made[rec.values[k]] for k in rec.results]
    return outs[0] if rec.single else tuple(outs)


def _edge(t: Tensor) -> Any:
    """Where an argument's gradient goes (as :class:`~tracejit.autograd.Node` computes it)."""
    return t._grad_fn if t._grad_fn is not None else (t if t.requires_grad else None)

