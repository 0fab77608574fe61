"""A jitted call on the tape: the joint trace of forward and backward, cut in two.

When grad mode is on and an input of a jitted call requires grad, tracing goes on past the
function's return: one cotangent input per differentiable result, and the tape walked back to
the inputs (:func:`tracejit.autograd.run_backward`), all recorded into the same graph
(:func:`record_backward`).  :func:`split` cuts that joint graph into

- a **forward** graph: the function's results, its in-place updates, and the *residuals*, the
  forward values the backward reads;
- a **backward** graph: residuals and cotangents in, one gradient per input out.

At run time the forward program runs, and the call's differentiable results share one
:class:`~tracejit.autograd.CompiledNode` whose VJP runs the compiled backward program on the
saved residuals.  Nothing of the forward is computed twice, so a dropout mask in the backward
is the one the forward drew.  Views and constants read by the backward are recomputed there
rather than saved (a broadcast never becomes a residual buffer).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import dtypes as dt
from .autograd import CompiledNode, OutputOf, run_backward
from .errors import UnsupportedUnderJitError
from .graph import Graph
from .tensors import Device, Tensor

# ops the backward recomputes from their operands instead of saving their result
RECOMPUTED = frozenset({"constant", "iota", "reshape", "expand", "permute", "slice"})


@dataclass
class GradPlan:
    """How a differentiable trace's results get their tape node."""
    diff_outputs: list[int]          # graph outputs (user results) that require grad
    wrt: list[Any]                   # per gradient: an argument index (int) or a captured Tensor
    backward: Graph                  # residuals + cotangents -> gradients
    residuals: list[tuple[str, int]]  # ("input", forward input position) | ("output", forward output index)


def _differentiable(t: Tensor) -> bool:
    if not (t.requires_grad and dt.is_float(t.dtype)):
        return False
    return t._grad_fn is None or not t._grad_fn.released


def _reaches_released(t: Tensor) -> bool:
    """Does ``t``'s tape reach a node whose graph a ``backward`` already freed?"""
    seen: set[int] = set()
    stack = [t._grad_fn]
    while stack:
        node = stack.pop()
        if node is None or isinstance(node, Tensor) or id(node) in seen:
            continue
        seen.add(id(node))
        if node.released:
            return True
        stack.extend(node.edges)
    return False


def freed_results(results: list[Tensor]) -> list[int]:
    """Positions of the results that require grad through a graph the function's own
    ``backward`` freed: eagerly they keep ``requires_grad`` and a backward through them raises."""
    return [k for k, t in enumerate(results)
            if t.requires_grad and dt.is_float(t.dtype) and t._grad_fn is not None and _reaches_released(t)]


def mark_freed(tensors: list[Tensor], positions: Sequence[int], name: str) -> None:
    """Give ``tensors[k]`` a tape node that was released: a backward through it raises as the
    eager one does (see :func:`freed_results`)."""
    node = CompiledNode(name, lambda cotangents: [], (), [tensors[k].aval for k in positions])
    node.release()
    for slot, k in enumerate(positions):
        tensors[k]._grad_fn = OutputOf(node, slot)
        tensors[k].requires_grad = True


def record_backward(trace: Any, results: list[Tensor], args: list[Tensor], freed: Sequence[int] = ()
                    ) -> tuple[list[int], list[Any], list[int], list[int]] | None:
    """Trace the backward pass of ``results`` into ``trace``'s graph (inside the trace).

    Returns (differentiable result positions, wrt, cotangent input nodes, gradient nodes), or
    None when no result requires grad.  The ``freed`` results are left out.
    """
    diff = [k for k, t in enumerate(results) if _differentiable(t) and k not in freed]
    if not diff:
        return None
    wrt: list[Any] = [i for i, t in enumerate(args) if t.requires_grad and dt.is_float(t.dtype)]
    captured = [c for c in trace.captures if isinstance(c, Tensor) and c.requires_grad
                and c._trace is None and dt.is_float(c.dtype)]
    wrt_tensors = [args[i] for i in wrt] + captured
    cots = [trace.new_input(results[k].aval, name="cotangent") for k in diff]
    grads = run_backward([results[k] for k in diff], cots, inputs=wrt_tensors)
    keep = [j for j, g in enumerate(grads) if g is not None]
    wrt_all = wrt + captured
    return (diff, [wrt_all[j] for j in keep], [c._node for c in cots],
            [trace.node_of(grads[j]) for j in keep])


def split(g: Graph, n_forward: int, cotangents: list[int]) -> tuple[Graph, GradPlan]:
    """Cut an optimized joint graph whose outputs are ``n_forward`` forward values followed by
    gradients into the forward graph (residuals appended to its outputs) and a partial plan
    (``diff_outputs`` and ``wrt`` are the caller's to fill in)."""
    cot = set(cotangents)
    order = g.topo()
    depends: set[int] = set()          # nodes computed from a cotangent: backward only
    for nid in order:
        if nid in cot or any(i in depends for i in g.node(nid).inputs):
            depends.add(nid)
    backward_nodes: set[int] = set()
    residuals: list[int] = []
    seen: set[int] = set()
    stack = list(g.outputs[n_forward:])
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        n = g.node(nid)
        if nid in depends or n.op in RECOMPUTED:
            backward_nodes.add(nid)
            stack.extend(n.inputs)
        else:
            residuals.append(nid)
    residuals.sort(key={nid: i for i, nid in enumerate(order)}.__getitem__)

    forward_inputs = [i for i in g.inputs if i not in cot]
    saved = [r for r in residuals if g.node(r).op != "input"]
    forward = _subgraph(g, order, forward_inputs, g.outputs[:n_forward] + saved)
    position = {nid: p for p, nid in enumerate(forward_inputs)}
    sources = [("input", position[r]) if g.node(r).op == "input" else ("output", n_forward + saved.index(r))
               for r in residuals]
    backward = _subgraph(g, [n for n in order if n in backward_nodes and n not in cot],
                         residuals + list(cotangents), g.outputs[n_forward:])
    return forward, GradPlan([], [], backward, sources)


def _subgraph(g: Graph, order: list[int], inputs: list[int], outputs: list[int]) -> Graph:
    """A new graph with ``inputs`` as its inputs and the nodes ``outputs`` need, in ``order``."""
    new = Graph()
    ids = {old: new.add_input(g.node(old).aval, g.node(old).params.get("name", "")) for old in inputs}
    needed: set[int] = set()
    stack = list(outputs)
    while stack:
        nid = stack.pop()
        if nid in needed or nid in ids:
            continue
        needed.add(nid)
        stack.extend(g.node(nid).inputs)
    for nid in order:
        if nid in needed:
            n = g.node(nid)
            if n.op == "input":
                raise AssertionError(f"input %{nid} reached while cutting the joint graph")
            ids[nid] = new.add(n.op, [ids[i] for i in n.inputs], n.params, n.aval, n.source)
    new.outputs = [ids[o] for o in outputs]
    return new


def _edge(t: Tensor) -> Any:
    return t._grad_fn if t._grad_fn is not None else (t if t.requires_grad else None)


def attach(name: str, plan: GradPlan, results: list[Any], args: list[Any], arrays: list[Any],
           outs: list[Any], device: Device, run_backward_program: Callable[[list[Any]], list[Any]],
           to_array: Callable[[Any, Any], Any]) -> None:
    """Give the differentiable ``results`` of one call their tape node.

    ``arrays`` are the forward program's inputs and ``outs`` its outputs (residuals included);
    ``run_backward_program`` runs the backward graph on (residuals + cotangents) arrays.
    """
    saved = [arrays[i] if kind == "input" else outs[i] for kind, i in plan.residuals]
    wrt = [args[w] if isinstance(w, int) else w for w in plan.wrt]
    out_avals = [results[k].aval for k in plan.diff_outputs]

    def backward(cotangents: Sequence[Tensor | None]) -> list[Tensor | None]:
        cot_arrays = []
        for c, aval in zip(cotangents, out_avals):
            if c is not None and c._trace is not None:
                raise UnsupportedUnderJitError(
                    f"backward through the result of the jitted function {name} was traced by another "
                    "jit; call the function inside the traced one instead, so one trace holds both")
            cot_arrays.append(to_array(c, aval) if c is not None
                              else to_array(np.zeros(aval.shape, aval.dtype), aval))
        grads = run_backward_program(saved + cot_arrays)
        return [Tensor._from_array(g, device) for g in grads]

    node = CompiledNode(name, backward, tuple(_edge(t) for t in wrt), out_avals)
    for slot, k in enumerate(plan.diff_outputs):
        t = results[k]
        t._grad_fn = OutputOf(node, slot)
        t.requires_grad = True


__all__ = ["GradPlan", "record_backward", "split", "attach", "freed_results", "mark_freed"]
