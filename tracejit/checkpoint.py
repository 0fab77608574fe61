"""Gradient checkpointing: ``tj.checkpoint(fn, *args)`` keeps ``fn``'s inputs, not its activations.

The forward call runs ``fn`` once and keeps only its outputs; their tape is a single node whose
backward runs ``fn`` again on the saved inputs, with grad enabled, and backpropagates the
cotangents through that recomputation.  The gradients reach ``fn``'s tensor arguments and every
tensor ``fn`` read that requires grad (a module's parameters), exactly as without checkpointing.
The global random generator is rewound for the recomputation, so dropout draws the same masks.

Under ``jit`` the recomputation is traced into the same graph as the forward pass; the compiler
then decides what to keep (common-subexpression elimination merges the two copies).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import autograd, tracing
from . import dtypes as dt
from . import prims as P
from . import random as R
from .autograd import CompiledNode, OutputOf, run_backward
from .errors import UnsupportedUnderJitError
from .tensors import Tensor

__all__ = ["checkpoint"]


def _differentiable(x: Any) -> bool:
    return isinstance(x, Tensor) and x.requires_grad and dt.is_float(x.dtype)


def _edge(t: Tensor) -> Any:
    return t._grad_fn if t._grad_fn is not None else t


class _CheckpointNode(CompiledNode):
    """The tape node of one checkpointed call; ``inputs`` are the tensors behind its edges (what an
    enclosing checkpoint needs to see which outside tensors the call reads)."""

    __slots__ = ("inputs",)

    def __init__(self, name: str, backward: Callable, inputs: list[Tensor], out_avals: list[Any]) -> None:
        super().__init__(name, backward, tuple(_edge(t) for t in inputs), out_avals, records_tape=True)
        self.inputs = tuple(inputs)


def _outside_inputs(outputs: Sequence[Tensor], own: set[Any], skip: set[int]) -> list[Tensor]:
    """The tensors that the outputs' tape reaches outside ``fn``'s own nodes ``own``: leaves it
    read (a module's parameters) and non-leaf tensors computed before the call (closed over),
    besides its arguments' copies (``skip``)."""
    found: dict[int, Tensor] = {}
    stack = [t._grad_fn for t in outputs if t._grad_fn in own]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        inputs = getattr(node, "inputs", None)
        for i, e in enumerate(node.edges):
            if e is None:
                continue
            if e in own:
                stack.append(e)
            elif isinstance(e, Tensor):
                if id(e) not in skip:
                    found.setdefault(id(e), e)
            elif inputs is not None:          # a node made before the call: its output is the input
                found.setdefault(id(inputs[i]), inputs[i])
            else:
                raise UnsupportedUnderJitError(
                    "checkpoint: a jitted function called inside the checkpointed function reads a tensor "
                    "with autograd history from outside it; pass that tensor as an argument of checkpoint")
    return list(found.values())


def _flat_outputs(out: Any, where: str) -> tuple[list[Tensor], Callable[[list[Tensor]], Any]]:
    if isinstance(out, Tensor):
        return [out], lambda ts: ts[0]
    if isinstance(out, (tuple, list)) and all(isinstance(t, Tensor) for t in out):
        return list(out), lambda ts: type(out)(ts)
    raise TypeError(f"checkpoint: {where} must return a tensor or a tuple/list of tensors, "
                    f"got {type(out).__name__}")


def _copy_rng_state() -> Tensor:
    # an op (traced under jit), so rewinding works on the generator's value inside a trace too
    return P.add(R.default_generator.state, P.constant(np.zeros(2, dtype=np.int64)))


def checkpoint(fn: Callable[..., Any], *args: Any, preserve_rng_state: bool = True, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, recomputed in backward instead of keeping its intermediate values.

    ``fn`` must return a tensor or a tuple/list of tensors and must compute the same function
    when called again (it may draw from the global random generator: with ``preserve_rng_state``
    the recomputation replays the same draws).  ``create_graph=True`` (``tj.grad``) differentiates
    the recomputation, so higher derivatives work too.
    """
    name = getattr(fn, "__qualname__", type(fn).__name__)
    if not tracing.grad_enabled():
        return fn(*args, **kwargs)
    rng_before = _copy_rng_state() if preserve_rng_state else None
    # forward with a throw-away tape: it tells which tensors from outside fn reads (a module's
    # parameters, closed-over values); dropping it frees the activations
    inputs = [a for a in args if _differentiable(a)]
    fresh = {id(a): a.detach().requires_grad_() for a in inputs}
    call_args = [fresh.get(id(a), a) if isinstance(a, Tensor) else a for a in args]
    outer, own = autograd.node_collector, set()
    autograd.node_collector = own
    try:
        out = fn(*call_args, **kwargs)
    finally:
        autograd.node_collector = outer
        if outer is not None:        # a checkpoint inside a checkpoint: the outer one reaches them too
            outer.update(own)
    outs, rebuild = _flat_outputs(out, name)
    leaves = _outside_inputs(outs, own, {id(t) for t in fresh.values()})
    diff = [i for i, t in enumerate(outs) if t.requires_grad and dt.is_float(t.dtype)]
    results = [t.detach() for t in outs]
    del outs, out, call_args, fresh, own
    if not diff:
        return rebuild(results)
    wrt = inputs + leaves

    def backward(cotangents: Sequence[Tensor | None]) -> list[Tensor | None]:
        # grad mode on here means backward(create_graph=True): the gradients must then have a tape
        # back to the real inputs, so the recomputation starts from them instead of copies
        create_graph = tracing.grad_enabled()
        rng_after = None
        if rng_before is not None:
            rng_after = _copy_rng_state()
            R.default_generator.state._assign(rng_before)
        again = {id(a): a if create_graph else a.detach().requires_grad_() for a in inputs}
        prev = tracing.set_grad_enabled(True)
        try:
            outs, _ = _flat_outputs(fn(*[again.get(id(a), a) if isinstance(a, Tensor) else a for a in args],
                                       **kwargs), name)
        finally:
            tracing.set_grad_enabled(prev)
            if rng_after is not None:
                R.default_generator.state._assign(rng_after)
        roots, cots = [], []
        for slot, i in enumerate(diff):
            if cotangents[slot] is not None and outs[i].requires_grad:
                roots.append(outs[i])
                cots.append(cotangents[slot])
        if not roots:
            return [None] * len(wrt)
        return run_backward(roots, cots, inputs=[again[id(a)] for a in inputs] + leaves,
                            create_graph=create_graph, retain_graph=create_graph)

    node = _CheckpointNode(f"checkpoint({name})", backward, wrt, [results[i].aval for i in diff])
    for slot, i in enumerate(diff):
        results[i]._grad_fn = OutputOf(node, slot)
        results[i].requires_grad = True
    return rebuild(results)
