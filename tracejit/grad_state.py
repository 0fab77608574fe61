"""The ``.grad`` of eager tensors while jit traces: read as state, written as results.

A traced function that reads ``p.grad`` (an optimizer's step, a manual update, ``backward()``
adding to an existing gradient) reads Python state: which tensor object ``p.grad`` is, or
whether it is ``None``, changes between calls (an eager ``backward`` makes a new gradient
tensor each step, ``zero_grad`` sets it to ``None``).  Capturing the gradient seen while
tracing would make every later call read that first tensor.  So, for each eager tensor whose
``.grad`` the trace touched (a :class:`GradWatch` records the first access of each):

- first access a read: a guard that ``.grad`` is still ``None``, or still not ``None``; and when
  the gradient was read as data, the program reads the tensor's *current* ``.grad`` at every
  call (:class:`GradOf`, a capture like a run-time scalar), and writes into it;
- written during the trace (``zero_grad``, ``backward`` making a new gradient): every call
  sets ``.grad`` as the trace left it (``None``, or the gradient tensor the trace made, which
  each call's program writes into).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UnsupportedUnderJitError
from .guards import CaptureSource, Guard, ValueGuard
from .ops import AVal
from .tensors import Tensor, set_grad_watch


@dataclass
class GradAccess:
    tensor: Tensor
    read_first: bool
    initial: Tensor | None      # the gradient before the first access
    written: bool = False


class GradWatch:
    """Records, during one trace, the first access to each eager tensor's ``.grad``."""

    def __init__(self, trace: Any) -> None:
        self.trace = trace
        self.accesses: dict[int, GradAccess] = {}
        self._previous: Any = None

    def note(self, t: Tensor, read: bool) -> None:
        if t._trace is not None and id(t) not in self.trace.mutated:
            return                  # a value of the trace (an argument's tracer): not Python state
        acc = self.accesses.get(id(t))
        if acc is None:
            acc = self.accesses[id(t)] = GradAccess(t, read, t._grad)
        if not read:
            acc.written = True

    def __enter__(self) -> GradWatch:
        self._previous = set_grad_watch(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        set_grad_watch(self._previous)


class GradOf:
    """A trace's capture standing for ``owner.grad`` as it is at each call."""

    __slots__ = ("owner",)
    requires_grad = False

    def __init__(self, owner: Tensor) -> None:
        self.owner = owner

    @property
    def current(self) -> Tensor | None:
        return self.owner._grad

    @property
    def _aval(self) -> AVal | None:
        g = self.owner._grad
        return None if g is None else g._aval

    aval = _aval

    @property
    def _device(self) -> Any:
        g = self.owner._grad
        return None if g is None else g._device

    @property
    def device(self) -> Any:
        return self.owner._grad._device

    @property
    def _value(self) -> Any:
        return self.owner._grad._value


def resolve(watch: GradWatch, captures: list[Any], writebacks: list[tuple[Any, int]],
            where: str) -> tuple[list[Guard], list[tuple[Tensor, Any]]]:
    """Turn the recorded ``.grad`` accesses into guards, per-call captures (``captures`` and
    ``writebacks`` are edited in place) and what each call assigns after its program ran:
    (tensor, value) for each ``.grad`` the function assigned, ``None`` or the gradient tensor
    the trace made (the program writes each call's gradient into it, so it is reused)."""
    guards: list[Guard] = []
    rebinds: list[tuple[Tensor, Any]] = []
    for acc in watch.accesses.values():
        t = acc.tensor
        if acc.read_first:
            was_none = acc.initial is None
            guards.append(ValueGuard(f".grad of a captured tensor {t._aval} is None", where,
                                     lambda t=t: t._grad is None, was_none))
            if not was_none:
                _read_at_each_call(t, acc.initial, captures, writebacks)
        if not acc.written:
            continue
        final = t._grad
        if acc.read_first and final is acc.initial:
            continue                # updated in place, through GradOf
        if final is not None and final._trace is not None:
            _restore(watch)             # (the traced value must not outlive the trace)
            raise UnsupportedUnderJitError(
                f"jit: a value computed by the traced function was stored in the .grad of a tensor "
                f"{t._aval} at {where}; assign it outside the function, or return it")
        rebinds.append((t, final))
    _restore(watch)
    return guards, rebinds


def _restore(watch: GradWatch) -> None:
    """Put every ``.grad`` back as it was before tracing: the program's first run starts from
    the state the trace started from (tracing ran ``zero_grad`` and the like in Python), and
    the run sets what the function assigns."""
    for acc in watch.accesses.values():
        acc.tensor._grad = acc.initial


def _read_at_each_call(owner: Tensor, seen: Tensor, captures: list[Any],
                       writebacks: list[tuple[Any, int]]) -> None:
    source = None
    for i, c in enumerate(captures):
        if c is seen:
            source = captures[i] = GradOf(owner)
    for i, (w, k) in enumerate(writebacks):
        if w is seen:
            writebacks[i] = (source or GradOf(owner), k)


class ArgumentGrad(CaptureSource):
    """A trace's capture standing for the ``.grad`` of argument ``index`` at each call (the
    trace read the gradient an argument had; the next call's argument has its own)."""

    __slots__ = ("index",)
    _value = None           # filled in from the call's arguments (``CompiledEntry.run``)

    def __init__(self, index: int, seen: Tensor) -> None:
        super().__init__(seen._aval, seen._device)
        self.index = index

    def of(self, leaves: list[Any]) -> Tensor:
        g = leaves[self.index]._grad
        if g is None or g._aval != self._aval or g._device != self._device:
            raise UnsupportedUnderJitError(
                f"jit: argument {self.index}'s .grad was {self._aval} when the function was traced and "
                f"is now {None if g is None else g._aval}; clear the cache (f.clear_cache()) to re-trace")
        return g


def argument_grads(initial: list[tuple[int, Tensor]], captures: list[Any]) -> None:
    """Replace each captured argument gradient (``initial``: argument index, its ``.grad`` when
    traced) by an :class:`ArgumentGrad`, in place."""
    for j, seen in initial:
        for i, c in enumerate(captures):
            if c is seen:
                captures[i] = ArgumentGrad(j, seen)
