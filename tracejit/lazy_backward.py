"""Lazy mode: a backward pass over a tape seen before, spliced in as one recorded fragment.

``loss.backward()`` in lazy mode walks the tape and records every node's VJP through the API
layers, every step.  What it records depends only on the tape's structure: each node's
primitive and params, which tensors it read (their shapes, dtypes, and which are the same
tensor), where its gradients go, and which leaves already hold a ``.grad``.  So the walk is
recorded once, by the real walk (``autograd.run_backward``) on a shadow tape whose tensors are
placeholders (:mod:`tracejit.lazy_fragments`), and a later tape of the same structure splices
that recording in, reading its own tensors; each leaf's ``.grad`` becomes the new value, as
eagerly.

Only the plain case is replayed: ``backward()`` of one element without ``gradient``,
``inputs`` or ``create_graph``, on a tape of built-in primitives whose tensors are on the host,
with no gradient hooks, retained non-leaf gradients, checkpointing or autocast active.  Any
other backward walks the tape op by op as before.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

from . import autograd
from .autocast import _stack as _autocast_stack
from .autograd import Node, _topo_order
from .lazy_fragments import Fragment, FragmentTrace, Unreplayable, reads_no_state
from .ops import PRIMS
from .tensors import Tensor
from .tracing import tracing

CACHE_SIZE = 32         # recorded walks kept, least recently used dropped


class _Tape(NamedTuple):
    """The tape below a root: its nodes (producers first), the tensors they read (each once),
    the leaves reached (their slots among the tensors), and its structure (the key of its
    recorded walk)."""
    order: list[Node]
    tensors: list[Tensor]
    leaves: list[int]
    key: tuple


class _Walk(NamedTuple):
    """A recorded walk: its fragment, and the leaves (indices into ``_Tape.leaves``) whose
    ``.grad`` its results are."""
    fragment: Fragment
    leaves: tuple[int, ...]


_recorded: OrderedDict[Any, _Walk | None] = OrderedDict()    # tape structure -> its walk


def replay_backward(root: Tensor, retain_graph: bool, trace: Any) -> bool:
    """Record ``root.backward()`` into lazy ``trace`` as one fragment; False where it must be
    walked op by op (nothing was recorded then)."""
    if trace.records_fragment or not _plain_backward(root):
        return False
    tape = _tape(root, trace)
    if tape is None:
        return False
    try:
        walk = _recorded.get(tape.key)
    except TypeError:           # a param that does not hash (a list): op by op
        return False
    if walk is None:
        if tape.key in _recorded:
            return False        # (this structure could not be recorded)
        walk = _recorded[tape.key] = _record(tape)
        if len(_recorded) > CACHE_SIZE:
            _recorded.popitem(last=False)
        if walk is None:
            return False
    else:
        _recorded.move_to_end(tape.key)
    grads = trace.splice(walk.fragment, tape.tensors, [])
    if grads is None:
        return False
    for i, g in zip(walk.leaves, grads):
        tape.tensors[tape.leaves[i]].grad = g
    if not retain_graph:
        for node in tape.order:
            node.release()
    return True


def _plain_backward(root: Tensor) -> bool:
    """Nothing observes the walk but its results: no callbacks, checkpoint or autocast (hooks
    on the tape's own leaves are checked with the tape)."""
    return (type(root._grad_fn) is Node and root.requires_grad and root.size == 1
            and autograd.node_collector is None
            and getattr(autograd._callbacks, "queue", None) is None and not _autocast_stack())


def _builtin(prim: Any) -> bool:
    """A primitive of the op table whose VJP is tracejit's own (not a custom op's, which may
    read anything)."""
    known = _BUILTIN.get(id(prim))
    if known is None:
        module = getattr(prim.vjp, "__module__", "") or ""
        known = PRIMS.get(prim.name) is prim and module.startswith("tracejit.") \
            and module != "tracejit.custom_ops"
        if PRIMS.get(prim.name) is prim:     # (an op table entry lives as long as the program)
            _BUILTIN[id(prim)] = known
    return known


_BUILTIN: dict[int, bool] = {}      # id(prim) -> whether its walk may be recorded


def _tape(root: Tensor, trace: Any) -> _Tape | None:
    order = _topo_order([root._grad_fn], set())
    slots: dict[int, int] = {}
    tensors: list[Tensor] = []

    def slot(t: Tensor) -> int:
        k = slots.get(id(t))
        if k is None:
            k = slots[id(t)] = len(tensors)
            tensors.append(t)
        return k

    index: dict[int, int] = {}
    leaves: list[int] = []
    key: list[Any] = [slot(root)]
    for i, node in enumerate(order):
        if type(node) is not Node or node.inputs is None or node._retained is not None \
                or not _builtin(node.prim):
            return None
        out = node._out()
        if out is None:
            return None
        index[id(node)] = i
        edges = []
        for e in node.edges:
            if e is None:
                edges.append(None)
            elif type(e) is Node:
                edges.append(index[id(e)])
            else:
                k = slot(e)
                if k not in leaves:
                    leaves.append(k)
                edges.append(~k)
        key.append((node.prim.name, tuple(node.params.items()), slot(out),
                    tuple([slot(x) for x in node.inputs]), tuple(edges)))
    hooked = autograd._POST_ACCUMULATE_HOOKS
    if hooked and any(id(tensors[k]) in hooked for k in leaves):
        return None                 # a leaf's hook observes its accumulation: op by op
    key.append(tuple([None if tensors[k].grad is None else slot(tensors[k].grad) for k in leaves]))
    for t in tensors:
        if t._device.type != "cpu" or (t._trace is not None and t._trace is not trace):
            return None
    key.append(tuple([(t._aval, t._weak, t.requires_grad) for t in tensors]))
    return _Tape(order, tensors, leaves, tuple(key))


def _record(tape: _Tape) -> _Walk | None:
    """The walk of ``tape``'s structure, recorded on a shadow tape of placeholders."""
    sub = FragmentTrace(reads_no_state)
    given = sub.stand_ins(tape.tensors)
    shadow: list[Node] = []
    for node, (_, _, out, inputs, edges) in zip(tape.order, tape.key[1:]):
        shadow.append(Node.restored(
            node.prim, node.params, tuple([given[k] for k in inputs]),
            tuple([None if e is None else shadow[e] if e >= 0 else given[~e] for e in edges]), given[out]))
    root_node = tape.tensors[tape.key[0]]._grad_fn
    root = given[tape.key[0]]
    root._grad_fn = next(s for s, n in zip(shadow, tape.order) if n is root_node)
    old_grads = tape.key[len(tape.order) + 1]
    for k, g in zip(tape.leaves, old_grads):
        given[k].grad = None if g is None else given[g]
    try:
        with tracing(sub):
            autograd.run_backward([root], [None], retain_graph=True)
        changed = [i for i, (k, g) in enumerate(zip(tape.leaves, old_grads))
                   if given[k].grad is not None and (g is None or given[k].grad is not given[g])]
        fragment = sub.fragment(given, [given[tape.leaves[i]].grad for i in changed])
        if fragment.outputs:
            raise Unreplayable("the walk writes a tensor it reads")
        return _Walk(fragment, tuple(changed))
    except Exception:       # (op by op instead: the same error, if any, is raised there)
        return None

