"""Reverse-mode autodiff: an eager tape built from the op table's VJPs.

Every primitive bound while grad mode is on and some input requires grad gets a
:class:`Node` on its output's ``_grad_fn`` (``prims.bind`` calls :func:`record`).  A node
remembers the primitive, its inputs, its parameters and, per input, the *edge* the gradient
flows along: the input's own node at record time, or the input itself if it is a leaf.
``backward`` walks the nodes reachable from the root in reverse topological order, calls each
primitive's VJP and adds up the results; leaves accumulate into ``.grad``.

The VJPs are written with primitives, so the same walk works eagerly and under ``jit``: with a
trace active the backward pass is recorded into the same graph as the forward pass.  With
``create_graph=True`` the walk runs with grad mode on, so the gradients have a tape of their
own and can be differentiated again.

Known limit: there is no version counter.  Updating in place a tensor that a VJP reads
(``y = x.exp(); y *= 2``) makes that VJP read the new value, where PyTorch raises an error.
"""
from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import dtypes as dt
from . import prims as P
from . import tracing
from .ops import Prim
from .tensors import Tensor

Edge = Any   # a Node, a leaf Tensor, or None (no gradient flows to that input)

# While a checkpointed function runs its forward pass (``tracejit/checkpoint.py``): the set that
# collects every tape node made meanwhile, to tell its own nodes from those it reads; else None.
node_collector: set[Any] | None = None


class Node:
    """One recorded primitive: what its VJP needs, and where each input's gradient goes."""

    __slots__ = ("prim", "params", "inputs", "edges", "_out", "_retained", "__weakref__")

    def __init__(self, prim: Prim, inputs: tuple[Tensor, ...], params: dict[str, Any], out: Tensor) -> None:
        self.prim = prim
        self.params = params
        self.inputs: tuple[Tensor, ...] | None = inputs
        self.edges: tuple[Edge, ...] = tuple([
            x._grad_fn if x._grad_fn is not None else (x if x.requires_grad else None) for x in inputs])
        # weak: the output points at its node; a strong link back would make a cycle per op.
        # The output is alive while the node is reachable (a consumer or the caller holds it).
        self._out = weakref.ref(out)
        self._retained: weakref.ref | None = None
        if node_collector is not None:
            node_collector.add(self)

    @classmethod
    def restored(cls, prim: Prim, params: dict[str, Any], inputs: tuple[Tensor, ...],
                 edges: tuple[Edge, ...], out: Tensor) -> Node:
        """A node of a recorded tape rebuilt over other tensors: its edges are given, not derived
        from its inputs (lazy mode's replays; never collected by a checkpoint)."""
        n = cls.__new__(cls)
        n.prim, n.params, n.inputs, n.edges, n._retained = prim, params, inputs, edges, None
        n._out = weakref.ref(out)
        return n

    @property
    def out(self) -> Tensor:
        out = self._out()
        if out is None:
            raise RuntimeError(f"the output of {self.prim.name} was freed before backward")
        return out

    def set_output(self, t: Tensor) -> None:
        """An in-place op made ``t`` this node's output (``x += y`` keeps ``x``, drops the temporary)."""
        self._out = weakref.ref(t)

    @property
    def released(self) -> bool:
        return self.inputs is None

    def release(self) -> None:
        self.inputs = None

    def __repr__(self) -> str:
        return f"<{self.prim.name}Backward>"


class CompiledNode:
    """A whole jitted call on the tape: one node whose VJP runs a compiled backward program.

    ``backward(cotangents)`` takes one cotangent per differentiable output (``None`` where no
    gradient reached it) and returns one gradient per edge.  Outputs point at their own
    :class:`OutputOf` node, so a call with several outputs is still one backward run.
    """

    __slots__ = ("name", "backward", "edges", "out_avals", "records_tape", "_released", "_retained",
                 "__weakref__")

    def __init__(self, name: str, backward: Callable[[list[Tensor | None]], Sequence[Tensor | None]],
                 edges: tuple[Edge, ...], out_avals: list[Any], records_tape: bool = False) -> None:
        self.name = name
        # a backward written with primitives (checkpoint's recomputation) records a tape of its
        # own under create_graph; a compiled one cannot
        self.records_tape = records_tape
        if node_collector is not None:
            node_collector.add(self)
        self.backward = backward
        self.edges = edges
        self.out_avals = out_avals
        self._released = False
        self._retained = None

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        self._released = True
        self.backward = None   # frees the saved residuals

    def __repr__(self) -> str:
        return f"<CompiledBackward of {self.name}>"


class OutputOf:
    """Output ``index`` of a :class:`CompiledNode`: routes its gradient into the node's slot."""

    __slots__ = ("parent", "index", "_retained", "__weakref__")

    def __init__(self, parent: CompiledNode, index: int) -> None:
        self.parent = parent
        self.index = index
        self._retained = None
        if node_collector is not None:
            node_collector.add(self)

    @property
    def edges(self) -> tuple[Edge, ...]:
        return (self.parent,)

    @property
    def released(self) -> bool:
        return self.parent.released

    def release(self) -> None:
        pass

    def set_output(self, t: Tensor) -> None:
        pass

    def __repr__(self) -> str:
        return f"<OutputOf {self.parent.name}[{self.index}]>"


_TAPE_NODES = (Node, CompiledNode, OutputOf)


def record(out: Tensor, prim: Prim, inputs: tuple[Tensor, ...], params: dict[str, Any]) -> None:
    """Put ``prim``'s node on ``out`` (called by ``prims.bind``)."""
    if not dt.is_inexact(out.dtype):     # integer and boolean results carry no gradient
        return
    out._grad_fn = Node(prim, tuple(inputs), params, out)
    out.requires_grad = True


# ----------------------------------------------------------------------------- grad mode

class _GradMode:
    """Context manager and decorator that sets grad mode for its body, per thread."""

    enabled = True

    def __enter__(self) -> None:
        self._prev = tracing.set_grad_enabled(self.enabled)

    def __exit__(self, *exc: Any) -> None:
        tracing.set_grad_enabled(self._prev)

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with type(self)():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):  # noqa: N801
    """``with tj.no_grad():`` / ``@tj.no_grad()``: ops in the body are not recorded for autograd."""

    enabled = False


class enable_grad(_GradMode):  # noqa: N801
    """``with tj.enable_grad():`` / ``@tj.enable_grad()``: record ops even inside ``no_grad``."""

    enabled = True


class set_grad_enabled(_GradMode):  # noqa: N801
    """``tj.set_grad_enabled(False)``: sets grad mode now; as a context manager, only for the body."""

    def __init__(self, mode: bool) -> None:
        self.enabled = bool(mode)
        self._prev = tracing.set_grad_enabled(self.enabled)

    def __enter__(self) -> None:
        pass

    def __call__(self, fn: Callable) -> Callable:
        tracing.set_grad_enabled(self._prev)
        mode = self.enabled

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)
        return wrapper


def is_grad_enabled() -> bool:
    return tracing.grad_enabled()


# ----------------------------------------------------------------------------- gradient hooks

# id(leaf) -> (weak reference to the leaf, its hooks); an entry goes when its leaf is freed
_POST_ACCUMULATE_HOOKS: dict[int, tuple[weakref.ref, list[Callable[[Tensor], None]]]] = {}
_callbacks = threading.local()


class RemovableHandle:
    """``handle.remove()`` unregisters the hook it was returned for."""

    def __init__(self, hooks: list, hook: Callable) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def register_post_accumulate_grad_hook(self: Tensor, hook: Callable[[Tensor], None]) -> RemovableHandle:
    """Call ``hook(leaf)`` during ``backward`` as soon as this leaf's ``.grad`` is final for that pass.

    A leaf's gradient is final once every tape node with an edge to it has run, which is well
    before the walk ends for the parameters of the last layers: data-parallel training starts
    reducing those gradients while the backward pass goes on.
    """
    if self._grad_fn is not None or not self.requires_grad:
        raise RuntimeError("register_post_accumulate_grad_hook needs a leaf tensor that requires grad")
    key = id(self)
    if key not in _POST_ACCUMULATE_HOOKS:
        forget = lambda _ref, k=key: _POST_ACCUMULATE_HOOKS.pop(k, None)  # noqa: E731
        _POST_ACCUMULATE_HOOKS[key] = (weakref.ref(self, forget), [])
    hooks = _POST_ACCUMULATE_HOOKS[key][1]
    hooks.append(hook)
    return RemovableHandle(hooks, hook)


def _hooks_of(t: Any) -> list[Callable[[Tensor], None]] | None:
    entry = _POST_ACCUMULATE_HOOKS.get(id(t))
    if entry is None or entry[0]() is not t or not entry[1]:
        return None
    return entry[1]


def queue_callback(fn: Callable[[], None]) -> None:
    """Run ``fn()`` when the ``backward`` now running has accumulated every gradient."""
    queue = getattr(_callbacks, "queue", None)
    if queue is None:
        raise RuntimeError("queue_callback is only valid while backward() runs")
    queue.append(fn)


# ----------------------------------------------------------------------------- the backward walk

def _topo_order(roots: list[Node], stop: set[Node]) -> list[Node]:
    """Nodes reachable from ``roots`` (not past ``stop``), producers before consumers."""
    order: list[Node] = []
    seen: set[int] = set()
    for root in roots:
        if id(root) in seen:
            continue
        seen.add(id(root))
        stack = [(root, iter(() if root in stop else root.edges))]
        while stack:   # iterative DFS: deep graphs (long loops) must not hit the recursion limit
            node, children = stack[-1]
            for e in children:
                if isinstance(e, _TAPE_NODES) and id(e) not in seen:
                    seen.add(id(e))
                    stack.append((e, iter(() if e in stop else e.edges)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def _add(acc: Tensor | None, g: Tensor) -> Tensor:
    return g if acc is None else P.add(acc, g)


def _check_grad(t: Tensor, g: Tensor, what: str) -> Tensor:
    if g.shape != t.shape:
        raise RuntimeError(f"{what}: gradient has shape {g.shape}, but the tensor has shape {t.shape}")
    return P.cast(g, t.dtype)


def run_backward(roots: Sequence[Tensor], grads: Sequence[Tensor | None], *, retain_graph: bool = False,
                 create_graph: bool = False, inputs: Sequence[Tensor] | None = None
                 ) -> list[Tensor | None] | None:
    """Backpropagate ``grads`` from ``roots``.

    Without ``inputs``: accumulate into the ``.grad`` of every leaf reached (``Tensor.backward``).
    With ``inputs``: return the gradients of those tensors (leaves or not) and touch no ``.grad``.
    """
    if inputs is None and not create_graph and len(roots) == 1 and grads[0] is None:
        trace = tracing.current_trace()
        if trace is not None and trace.is_lazy and _replay_backward(roots[0], retain_graph, trace):
            return None         # lazy mode: a walk of this tape's structure recorded before, spliced in
    node_grads: dict[Any, Any] = {}   # a Tensor per node; a list per CompiledNode (one per output)
    leaf_grads: dict[int, tuple[Tensor, Tensor]] = {}
    want_nodes: dict[Node, Tensor | None] = {}
    if inputs is not None:
        for x in inputs:
            if x._grad_fn is not None:
                want_nodes[x._grad_fn] = None
    root_nodes = []
    for i, (r, g) in enumerate(zip(roots, grads)):
        if not r.requires_grad:
            raise RuntimeError(f"element {i} of the outputs does not require grad and has no grad_fn; "
                               "mark an input with tj.asarray(..., requires_grad=True)")
        if g is None:
            if r.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for outputs with one element; "
                                   f"this one has shape {r.shape}: pass gradient=")
            g = P.placed_like(P.full_like(r, 1.0), r)
        g = _check_grad(r, g, "backward")
        if r._grad_fn is None:
            leaf_grads[id(r)] = (r, _add(leaf_grads.get(id(r), (r, None))[1], g))
        else:
            node_grads[r._grad_fn] = _add(node_grads.get(r._grad_fn), g)
            root_nodes.append(r._grad_fn)

    order = _topo_order(root_nodes, set(want_nodes))
    # hold every output while walking: releasing a consumer drops the last reference to its inputs
    outs = {id(n): n._out() for n in order if isinstance(n, Node)}
    # leaves with post-accumulate hooks: how many nodes still have to send them a gradient
    pending: dict[int, int] = {}
    if inputs is None and _POST_ACCUMULATE_HOOKS:
        for node in order:
            for e in node.edges:
                if isinstance(e, Tensor) and _hooks_of(e) is not None:
                    pending[id(e)] = pending.get(id(e), 0) + 1
    outer_queue = getattr(_callbacks, "queue", None)
    _callbacks.queue = [] if inputs is None else None
    prev = tracing.set_grad_enabled(create_graph)
    done: Any = None
    try:
        for node in reversed(order):
            if pending and done is not None:
                _finish_leaves(done, pending, leaf_grads, create_graph)
            done = node
            g = node_grads.pop(node, None)
            if g is None:
                continue
            if node in want_nodes:
                want_nodes[node] = g
                continue
            if node.released:
                raise RuntimeError(
                    "trying to backward through the graph a second time (or to use its tensors after "
                    "it was freed); pass retain_graph=True to the first backward() if you need to")
            if node._retained is not None and (t := node._retained()) is not None:
                t.grad = _detached(_add(t.grad, g), create_graph)
            if isinstance(node, OutputOf):     # a compiled call's output: gather its cotangents
                slots = node_grads.setdefault(node.parent, [None] * len(node.parent.out_avals))
                slots[node.index] = _add(slots[node.index], g)
                continue
            if isinstance(node, CompiledNode):
                if create_graph and not node.records_tape:
                    raise RuntimeError(
                        f"backward(create_graph=True) through the jitted function {node.name}: its backward "
                        "is compiled and records no tape. Differentiate inside the function (tj.grad "
                        "under jit), or call the function without jit for higher derivatives")
                in_grads = node.backward(g)
            else:
                out = outs[id(node)] if outs[id(node)] is not None else node.out
                trace = tracing.current_trace()
                if trace is None or out._trace is not trace or trace.is_lazy:   # (lazy: no sources)
                    in_grads = node.prim.vjp(g, out, *node.inputs, **node.params)
                else:       # while tracing: the gradient's nodes come from the forward op's line
                    before = trace.source_override
                    trace.source_override = trace.graph.node(out._node).source \
                        if out._node in trace.graph else before
                    try:
                        in_grads = node.prim.vjp(g, out, *node.inputs, **node.params)
                    finally:
                        trace.source_override = before
            for edge, gx in zip(node.edges, in_grads):
                if edge is None or gx is None:
                    continue
                if isinstance(edge, _TAPE_NODES):
                    node_grads[edge] = _add(node_grads.get(edge), gx)
                else:
                    leaf_grads[id(edge)] = (edge, _add(leaf_grads.get(id(edge), (edge, None))[1], gx))
            if not retain_graph:
                node.release()
        if pending and done is not None:
            _finish_leaves(done, pending, leaf_grads, create_graph)

        if inputs is not None:
            return [want_nodes.get(x._grad_fn) if x._grad_fn is not None else
                    leaf_grads.get(id(x), (x, None))[1] for x in inputs]
        for t, g in leaf_grads.values():
            _accumulate(t, g, create_graph)
            _run_hooks(t)
        queue = _callbacks.queue
        while queue:
            queue.pop(0)()
        return None
    finally:
        _callbacks.queue = outer_queue
        tracing.set_grad_enabled(prev)


def _replay_backward(root: Tensor, retain_graph: bool, trace: Any) -> bool:
    from .lazy_backward import replay_backward
    return replay_backward(root, retain_graph, trace)


def _finish_leaves(node: Any, pending: dict[int, int], leaf_grads: dict[int, tuple[Tensor, Tensor]],
                   create_graph: bool) -> None:
    """``node`` has run: accumulate the hooked leaves it was the last to reach, then run their hooks."""
    for e in node.edges:
        if isinstance(e, Tensor) and id(e) in pending:
            pending[id(e)] -= 1
            if pending[id(e)] == 0:
                del pending[id(e)]
                if id(e) in leaf_grads:
                    _accumulate(e, leaf_grads.pop(id(e))[1], create_graph)
                    _run_hooks(e)


def _run_hooks(t: Tensor) -> None:
    hooks = _hooks_of(t)
    for hook in list(hooks or ()):
        hook(t)


def _detached(g: Tensor, create_graph: bool) -> Tensor:
    if create_graph or g._trace is not None or g.device.type != "cpu":
        return g
    a = g._value
    # a leaf's .grad is updated in place later (zero_grad, jit write-back): give it its own writable memory
    if not (a.flags.writeable and a.flags.c_contiguous and a.flags.owndata):
        a = np.array(a)
    return Tensor._from_array(a, g.device)


def _accumulate(t: Tensor, g: Tensor, create_graph: bool) -> None:
    """``t.grad += g``, also when ``t`` is an eager tensor captured by a jitted function.

    Inside a trace the new gradient is a traced value.  Storing it in ``t.grad`` would leak it
    out of the trace, so an eager ``.grad`` buffer is updated in place instead: the jit writes
    the result back into it after every call.
    """
    trace = tracing.current_trace()
    if trace is not None and trace.is_lazy:       # lazy mode: as eagerly, a new .grad value
        t.grad = _detached(trace.detached(_add(t.grad, g)), create_graph)
        return
    if trace is not None and t._trace is None and not create_graph:
        if t.grad is None:
            buf = Tensor._from_array(np.zeros(t.shape, t.dtype))
            t.grad = buf if t.device.type == "cpu" else buf.to_device(t.device)
            t.grad._assign(g)
        else:
            t.grad._assign(P.add(t.grad, g))
        return
    t.grad = _detached(_add(t.grad, g), create_graph)


def reset_grad(t: Tensor, set_to_none: bool = True) -> None:
    """``zero_grad`` of one tensor.  Setting ``None`` does not read ``.grad`` first: under jit a
    read is state the trace depends on (whether it was ``None``), and here the outcome is the
    same either way."""
    if set_to_none:
        t.grad = None
    elif t.grad is not None:
        t.grad._assign(P.zeros_like(t.grad))


# ----------------------------------------------------------------------------- Tensor methods

def backward(self: Tensor, gradient: Tensor | None = None, retain_graph: bool | None = None,
             create_graph: bool = False, inputs: Sequence[Tensor] | None = None) -> None:
    """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

    ``gradient`` is needed unless ``self`` has one element.  The graph is freed afterwards
    unless ``retain_graph`` (default: ``create_graph``).  ``inputs``: accumulate only into these.
    """
    retain = create_graph if retain_graph is None else retain_graph
    if inputs is None:
        run_backward([self], [gradient], retain_graph=retain, create_graph=create_graph)
        return
    inputs = list(inputs)
    for t, g in zip(inputs, run_backward([self], [gradient], retain_graph=retain,
                                         create_graph=create_graph, inputs=inputs)):
        if g is not None:
            _accumulate(t, g, create_graph)


def detach(self: Tensor) -> Tensor:
    """The same values (shared memory) without autograd history."""
    if self._trace is not None and self._trace.is_lazy:
        with no_grad():      # lazy mode: a view of the pending value, sharing its memory when flushed
            return P.reshape(self, shape=self.shape)
    if self._trace is not None:
        return Tensor._tracer(self._trace, self._node, self._aval, self._device)
    return Tensor._from_array(self._value, self._device)


def requires_grad_(self: Tensor, requires_grad: bool = True) -> Tensor:
    """Mark a leaf as requiring grad (in place); returns ``self``."""
    if requires_grad and not dt.is_inexact(self.dtype):
        raise RuntimeError(f"only floating-point tensors can require gradients, got {self.dtype.name}")
    if not requires_grad and self._grad_fn is not None:
        raise RuntimeError("requires_grad_(False) on a non-leaf tensor; use detach() instead")
    self.requires_grad = requires_grad
    return self


def retain_grad(self: Tensor) -> None:
    """Keep ``.grad`` for this non-leaf tensor after backward (leaves always keep it)."""
    if not self.requires_grad:
        raise RuntimeError("retain_grad() on a tensor that does not require grad")
    if self._grad_fn is not None:
        self._grad_fn._retained = weakref.ref(self)
        self._retains_grad = True


def _is_leaf(self: Tensor) -> bool:
    return self._grad_fn is None


def _grad_fn(self: Tensor) -> Node | None:
    return self._grad_fn


def zero_(self: Tensor) -> Tensor:
    """Fill with zeros in place."""
    self._assign(P.zeros_like(self))
    return self


Tensor.backward = backward
Tensor.detach = detach
Tensor.requires_grad_ = requires_grad_
Tensor.retain_grad = retain_grad
Tensor.is_leaf = property(_is_leaf)
Tensor.grad_fn = property(_grad_fn)
Tensor.retains_grad = property(lambda self: self._retains_grad)
Tensor.zero_ = zero_
Tensor.register_post_accumulate_grad_hook = register_post_accumulate_grad_hook

__all__ = ["Node", "CompiledNode", "OutputOf", "record", "run_backward", "no_grad", "enable_grad",
           "set_grad_enabled", "is_grad_enabled", "queue_callback", "register_post_accumulate_grad_hook",
           "RemovableHandle"]
