"""Lazy mode: a built-in optimizer's ``step()`` recorded once, then spliced in as one fragment.

Op by op, an AdamW step records about 27 ops per parameter through the API layers, every
step.  A built-in optimizer's update reads nothing but its parameters, their gradients, its
state tensors and its param groups' hyperparameters, so lazy mode records the whole step once
on placeholders (:mod:`tracejit.lazy_fragments`) and afterwards splices it into the pending
graph, given the tensors of the moment: the same ops, in the same order.

What the recording depended on is checked at every step: the parameters' shapes and dtypes,
which have gradients, the state's keys and shapes, and every hyperparameter read (a different
``eps`` or a momentum that became zero records the step anew).  The learning rate and the
momentum terms (``ParamGroup.RUNTIME``) are inputs, read again at every step, so a scheduler
changes them without a new recording or program.  Anything else (a user optimizer, tensors
that share memory, a device) runs the update op by op as before.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any, NamedTuple

from ..guards import same
from ..lazy_fragments import NUMBER, VALUE, Fragment, FragmentTrace, StateRead, Unreplayable
from ..tensors import Tensor
from ..tracing import tracing
from .optimizer import Optimizer, ParamGroup, _NonzeroGuard, _TupleItems

MAX_RECORDED = 8        # recorded steps kept per optimizer (one per structure seen)
NONZERO = "nonzero"     # a read whose zero-ness chose the code path (``ParamGroup.is_nonzero``)
_MISSING = object()


class _RecordedStep(NamedTuple):
    fragment: Fragment
    reads: tuple[StateRead, ...]       # where: (group index, key, tuple index or None)


class _Layout(NamedTuple):
    """A step's tensors (per updated parameter: it, its gradient, its state values) and what
    the recording of it depends on besides the hyperparameters."""
    tensors: list[Tensor]
    structure: tuple
    updates: list[tuple[int, Any, tuple[str, ...]]]     # (group index, parameter, state keys)


def replay_step(opt: Optimizer, trace: Any) -> bool:
    """Record ``opt``'s update into lazy ``trace`` as one fragment; False where it must be
    recorded op by op (nothing was recorded then)."""
    if trace.records_fragment or type(opt)._update not in _replayable_updates():
        return False
    layout = _layout(opt)
    if layout is None:
        return False
    recorded = opt.__dict__.setdefault("_lazy_steps", {})
    step = recorded.get(layout.structure)
    numbers = _numbers(opt, step.reads) if step is not None else None
    if numbers is None:
        if step is None and layout.structure in recorded:
            return False            # (this structure could not be recorded: op by op)
        step = _record(opt, layout)
        if len(recorded) >= MAX_RECORDED:
            recorded.clear()
        recorded[layout.structure] = step
        numbers = _numbers(opt, step.reads) if step is not None else None
        if numbers is None:
            return False
    return trace.splice(step.fragment, layout.tensors, numbers) is not None


def _replayable_updates() -> frozenset:
    """The built-in updates: they read only their arguments and ``self.decoupled``."""
    global _REPLAYABLE
    if _REPLAYABLE is None:
        from .adagrad import Adagrad
        from .optimizer import SGD, Adam
        from .rmsprop import RMSprop
        _REPLAYABLE = frozenset(c._update for c in (SGD, Adam, Adagrad, RMSprop))
    return _REPLAYABLE


_REPLAYABLE: frozenset | None = None


def _layout(opt: Optimizer) -> _Layout | None:
    """The tensors a step reads, in update order (state made first where it is missing, as the
    step would make it); None where one is not a tensor."""
    tensors: list[Tensor] = []
    structure: list[Any] = [getattr(opt, "decoupled", None)]
    updates = []
    for gi, group in enumerate(opt.param_groups):
        if type(group) is not ParamGroup:
            return None         # (a plain dict's reads are not seen: its numbers would be frozen)
        params = group["params"]
        structure.append(len(params))
        for p in params:
            g = p.grad
            if g is None:
                structure.append(None)
                continue
            state = opt.state.get(id(p))
            if state is None:
                state = opt.state[id(p)] = opt._init_state(p, group)
            tensors += (p, g)
            structure.append((p._aval, g._aval))
            for k, s in state.items():
                if not isinstance(s, Tensor):
                    return None
                tensors.append(s)
                structure.append((k, s._aval))
            updates.append((gi, p, tuple(state)))
    return _Layout(tensors, tuple(structure), updates)


def _record(opt: Optimizer, layout: _Layout) -> _RecordedStep | None:
    """The step recorded on placeholders, its reads of the param groups located by group
    index; None where it cannot be."""
    groups = opt.param_groups
    index = {id(g): gi for gi, g in enumerate(groups)}

    def locate(container: Any, key: Any) -> Hashable:
        if type(container) is _TupleItems and id(container.group) in index:
            return (index[id(container.group)], container.key, key)
        if id(container) in index:
            return (index[id(container)], key, None)
        raise Unreplayable("a value read from outside the param groups")

    sub = FragmentTrace(locate)
    given = [sub.placeholder(t._aval) for t in layout.tensors]
    slots = iter(given)
    try:
        with tracing(sub):
            for gi, _, keys in layout.updates:
                p, g = next(slots), next(slots)
                state = {k: next(slots) for k in keys}
                opt._update(p, g, groups[gi], state)
                if tuple(state) != keys:
                    raise Unreplayable("the update made state")
        reads = list(sub.reads)
        for guard in sub.guards:
            if type(guard) is not _NonzeroGuard:
                raise Unreplayable("a guard other than a hyperparameter's zero-ness")
            reads.append(StateRead(locate(guard.group, guard.key), NONZERO, bool(guard.expected)))
        return _RecordedStep(sub.fragment(given), tuple(reads))
    except Exception:       # (op by op instead: the same error, if any, is raised there)
        return None


def _numbers(opt: Optimizer, reads: tuple[StateRead, ...]) -> list[Any] | None:
    """The run-time numbers of a recorded step, now; None where a value it depends on changed."""
    numbers = []
    groups = opt.param_groups
    for (gi, key, item), kind, expected in reads:
        value = dict.get(groups[gi], key, _MISSING) if gi < len(groups) else _MISSING
        if item is not None:
            value = value[item] if type(value) is tuple and item < len(value) else _MISSING
        if kind is NUMBER:
            if type(value) is not expected:
                return None
            numbers.append(value)
        elif kind is VALUE:
            if not same(expected, value):
                return None
        elif value is _MISSING or bool(value) != expected:
            return None
    return numbers
