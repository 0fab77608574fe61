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

from . import dtypes as dt
from . import prims as P
from . import random as R
from . import tracing
from .autograd import CompiledNode, OutputOf, _topo_order, run_backward
from .tensors import Tensor

__all__ = ["checkpoint"]


def _differentiable(x: Any) -> bool:
    return isinstance(x, Tensor) and x.requires_grad and dt.is_float(x.dtype)


def _edge(t: Tensor) -> Any:
    return t._grad_fn if t._grad_fn is not None else t


def _leaf_inputs(outputs: Sequence[Tensor], inputs: Sequence[Tensor]) -> list[Tensor]:
    """The leaves (parameters, captured tensors) that the outputs' tape reaches, besides ``inputs``."""
    skip = {id(t) for t in inputs}
    roots = [t._grad_fn for t in outputs if t._grad_fn is not None]
    leaves: dict[int, Tensor] = {}
    for node in _topo_order(roots, set()):
        for e in node.edges:
            if isinstance(e, Tensor) and id(e) not in skip:
                leaves.setdefault(id(e), e)
    return list(leaves.values())


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
    the recomputation replays the same draws).  Higher-order gradients (``create_graph=True``)
    through a checkpoint are not supported.
    """
    name = getattr(fn, "__qualname__", type(fn).__name__)
    if not tracing.grad_enabled():
        return fn(*args, **kwargs)
    rng_before = _copy_rng_state() if preserve_rng_state else None
    # forward with a throw-away tape: it tells which leaves fn reads; dropping it frees the activations
    inputs = [a for a in args if _differentiable(a)]
    fresh = {id(a): a.detach().requires_grad_() for a in inputs}
    call_args = [fresh.get(id(a), a) if isinstance(a, Tensor) else a for a in args]
    outs, rebuild = _flat_outputs(fn(*call_args, **kwargs), name)
    leaves = _leaf_inputs(outs, list(fresh.values()))
    diff = [i for i, t in enumerate(outs) if t.requires_grad and dt.is_float(t.dtype)]
    results = [t.detach() for t in outs]
    del outs, call_args, fresh
    if not diff:
        return rebuild(results)
    wrt = inputs + leaves

    def backward(cotangents: Sequence[Tensor | None]) -> list[Tensor | None]:
        rng_after = None
        if rng_before is not None:
            rng_after = _copy_rng_state()
            R.default_generator.state._assign(rng_before)
        again = {id(a): a.detach().requires_grad_() for a in inputs}
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
        return run_backward(roots, cots, inputs=[again[id(a)] for a in inputs] + leaves)

    node = CompiledNode(f"checkpoint({name})", backward, tuple(_edge(t) for t in wrt),
                        [results[i].aval for i in diff])
    for slot, i in enumerate(diff):
        results[i]._grad_fn = OutputOf(node, slot)
        results[i].requires_grad = True
    return rebuild(results)
