"""Fragments: a computation recorded once on placeholders, spliced into later lazy recordings.

Lazy mode runs a step's Python for every op, every step.  Where a computation is known to read
nothing but given tensors and numbers kept in known places (a built-in optimizer's update:
its parameters, their gradients, its state tensors and its hyperparameters), it can be
recorded once by a :class:`FragmentTrace` on placeholders and afterwards spliced in as it is
(:meth:`tracejit.lazy_mode.LazyTrace.splice`): the same ops, reading the tensors it is given
now, its writes done as the in-place ops that made them would be.

Numbers read through ``read_state`` are located by the caller (``locate``): a run-time number
(a learning rate) becomes an input, read again at every splice; any other value is one the
fragment depends on, which the caller checks before splicing.  A computation that observes a
value (a flush), writes a tensor it was not given, or reads a tensor other than a number is
:class:`Unreplayable`: the caller runs it as usual instead.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from . import dtypes as dt
from .lazy_mode import LazyTrace
from .ops import AVal
from .tensors import CPU, Tensor


class Unreplayable(Exception):
    """The computation cannot be recorded as a fragment (it is run as usual instead)."""


class Fragment(NamedTuple):
    """Recorded ops whose inputs are slots: the given tensors, then the run-time numbers, then
    ``constants``.  An op's reference ``r >= 0`` is the fragment's op ``r``, ``r < 0`` slot ``~r``."""
    ops: tuple[tuple[str, tuple[int, ...], tuple, AVal], ...]
    params: tuple[dict[str, Any], ...]
    number_avals: tuple[AVal, ...]
    constants: tuple[Tensor, ...]       # eager numbers the computation made (read as inputs)
    outputs: tuple[tuple[int, int], ...]    # (tensor slot, reference of its new value)
    results: tuple[int, ...]                # references of the values it returns
    # its identity in a recording's structural key (compared by identity: cheap to hash, and
    # a cached program's key keeps it alive)
    token: object


class StateRead(NamedTuple):
    """A value the fragment read where ``locate`` put it: a run-time ``NUMBER`` (``expected``:
    its type), a ``VALUE`` it depends on, or (the caller's) something else about it."""
    where: Hashable
    kind: str
    expected: Any


NUMBER, VALUE = "number", "value"


class FragmentTrace(LazyTrace):
    """Records a computation on placeholders, for :class:`Fragment`; never flushes."""

    records_fragment = True

    def __init__(self, locate: Callable[[Any, Any], Hashable]) -> None:
        super().__init__(max_nodes=sys.maxsize)
        self.locate = locate            # (container, key) -> where the value is read from
        self.reads: list[StateRead] = []
        self._read_values: dict[Hashable, Any] = {}
        self._slots: dict[int, int] = {}    # placeholder node -> slot
        self._number_avals: list[AVal] = []     # the run-time numbers', in slot order

    def placeholder(self, aval: AVal) -> Tensor:
        """A pending tensor standing for the fragment's next given tensor."""
        if self._number_avals:
            raise AssertionError("placeholders come before the numbers read")
        nid = self.graph.add_input(aval)
        self._slots[nid] = len(self._slots)
        return Tensor._tracer(self, nid, aval)

    def stand_ins(self, tensors: list[Tensor]) -> list[Tensor]:
        """A placeholder for each of ``tensors``, promoting and taking gradients as it does."""
        given = []
        for t in tensors:
            p = self.placeholder(t._aval)
            p._weak, p.requires_grad = t._weak, t.requires_grad
            given.append(p)
        return given

    def flush(self, reset: bool = True) -> None:
        raise Unreplayable("the computation observes a value")

    def read_state(self, container: Any, key: Any, value: Any, runtime: bool = False) -> Any:
        """A run-time number becomes an input (a weak 0-d tensor, promoting like the Python
        number, as under ``jit``); any other value is read as itself and remembered."""
        where = self.locate(container, key)
        if where in self._read_values:
            return self._read_values[where]
        if runtime and type(value) in (int, float):
            aval = AVal((), dt.float64 if type(value) is float else dt.int64)
            nid = self.graph.add_input(aval)
            self._slots[nid] = len(self._slots)
            self._number_avals.append(aval)
            out = Tensor._tracer(self, nid, aval)
            out._weak = True
            self.reads.append(StateRead(where, NUMBER, type(value)))
        else:
            out = value
            self.reads.append(StateRead(where, VALUE, value))
        self._read_values[where] = out
        return out

    def fragment(self, given: list[Tensor], results: list[Tensor] = (), checks: bool = False) -> Fragment:
        """What was recorded, as a fragment; ``given`` are the placeholders, whose last values
        are its outputs, and ``results`` the values it returns (tensors of this trace).
        ``checks``: the caller keeps the data checks (``refs`` maps each node to its reference)."""
        if self.mutated or (self._checks and not checks) or self.device not in (None, CPU):
            raise Unreplayable("the computation writes a tensor it was not given, or checks data")
        captured = {self._captured[id(c)]: c for c in self.captures}
        constants: list[Tensor] = []
        refs: dict[int, int] = {}
        ops: list[tuple] = []
        params: list[dict[str, Any]] = []
        for nid, (entry, prm) in enumerate(zip(self.graph.entries(), self.graph.params)):
            op, inputs, items, aval = entry
            if op != "input":
                refs[nid] = len(ops)
                ops.append((op, tuple([refs[i] for i in inputs]), items, aval))
                params.append(prm)
                continue
            slot = self._slots.get(nid)
            if slot is None:
                c = captured[nid]
                if getattr(c._value, "size", 2) > 1:
                    raise Unreplayable("the computation reads a tensor it was not given")
                slot = len(self._slots) + len(constants)
                constants.append(c)
            refs[nid] = ~slot
        self.refs = refs
        outputs = tuple((k, refs[t._node]) for k, t in enumerate(given) if refs[t._node] != ~k)
        if any(t._trace is not self for t in results):
            raise Unreplayable("a result that is not a value of the computation")
        return Fragment(tuple(ops), tuple(params), tuple(self._number_avals), tuple(constants), outputs,
                        tuple([refs[t._node] for t in results]), object())


def reads_no_state(container: Any, key: Any) -> Any:
    """The ``locate`` of a computation that reads its arguments only: any state read refuses it."""
    raise Unreplayable("the computation reads state")
