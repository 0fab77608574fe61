"""Views while tracing: writes through a view reach its base, and every view sees them.

Eagerly a view (``x[1:]``, ``x.T``, ``x.reshape(...)`` where NumPy can) shares memory with its
base, so ``v = x[1:]; v *= 10`` changes ``x``.  A trace is functional: each value is a node.
This module keeps, for every traced view, its *root* (the tensor whose memory it shares) and
the chain of view ops from the root.  A write into a view becomes a new value of the root
(the write scattered back through the chain: ``slice_scatter`` for a slice, the inverse
reshape or permutation), which bumps the root's version; any view whose node was derived
from an older version is re-derived from the root (the chain replayed) the next time it is
read.  Which ops make views follows NumPy, which eager mode runs: slices, permutations and
reshapes that strides can express are views; any other reshape copies (and writes into the
copy stay there); broadcast views are read-only (a write raises, as NumPy does).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .errors import UnsupportedUnderJitError, user_frame
from .graph import Graph
from .ops import PRIMS, AVal

VIEW_OPS = frozenset({"slice", "reshape", "permute", "expand"})


class Layout(NamedTuple):
    """Where a view's elements sit in its root's row-major memory: element strides and offset.
    (A named tuple: one is made for every view recorded.)"""
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @staticmethod
    def contiguous(shape: tuple[int, ...]) -> Layout:
        strides, acc = [], 1
        for n in reversed(shape):
            strides.append(acc)
            acc *= max(n, 1)
        return Layout(shape, tuple(reversed(strides)))

    def apply(self, op: str, params: dict[str, Any], out_shape: tuple[int, ...]) -> Layout | None:
        """The layout after a view op, or None when NumPy would copy (a reshape strides cannot express)."""
        if op == "slice":
            offset = self.offset + sum(b * s for b, s in zip(params["start"], self.strides))
            return Layout(out_shape, tuple(s * k for s, k in zip(self.strides, params["step"])), offset)
        if op == "permute":
            return Layout(out_shape, tuple(self.strides[p] for p in params["perm"]), self.offset)
        if op == "expand":
            return Layout(out_shape, tuple(0 if n != m else s for n, m, s in
                                           zip(self.shape, out_shape, self.strides)), self.offset)
        strides = reshape_strides(self.shape, self.strides, out_shape)
        return None if strides is None else Layout(out_shape, strides, self.offset)

    @property
    def broadcast(self) -> bool:
        return any(s == 0 and n > 1 for n, s in zip(self.shape, self.strides))


def array_layout(a: Any) -> Layout:
    """The layout of a NumPy array's elements (strides in elements)."""
    return Layout(tuple(a.shape), tuple(st // a.itemsize for st in a.strides))


def reshape_strides(shape: tuple[int, ...], strides: tuple[int, ...],
                    new_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Strides of ``new_shape`` over the same memory, or None when a reshape must copy (NumPy's rule)."""
    if math.prod(shape) == 0:
        return Layout.contiguous(new_shape).strides
    old = [(n, s) for n, s in zip(shape, strides) if n != 1]
    new_strides = [0] * len(new_shape)
    oi = ni = 0
    while ni < len(new_shape) and oi < len(old):
        oj, nj = oi + 1, ni + 1
        np_, op = new_shape[ni], old[oi][0]
        while np_ != op:
            if np_ < op:
                np_ *= new_shape[nj]
                nj += 1
            else:
                op *= old[oj][0]
                oj += 1
        for k in range(oi, oj - 1):     # the old dims merged here must be contiguous with each other
            if old[k][1] != old[k + 1][0] * old[k + 1][1]:
                return None
        new_strides[nj - 1] = old[oj - 1][1]
        for k in range(nj - 1, ni, -1):
            new_strides[k - 1] = new_strides[k] * new_shape[k]
        ni, oi = nj, oj
    return tuple(new_strides)


@dataclass
class View:
    """A traced view: its root tensor, the ops from the root, and the root version it reflects."""
    tensor: Any
    root: Any
    chain: tuple[tuple[str, dict[str, Any]], ...]
    layout: Layout
    version: int


class Aliasing:
    """The views of one trace and the versions of their roots."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.views: dict[int, View] = {}        # id(view tensor) -> View
        self.versions: dict[int, int] = {}      # id(root tensor) -> writes so far
        self.root_layouts: dict[int, Layout] = {}   # id(argument tracer) -> the caller's strides

    def root_layout(self, x: Any) -> Layout:
        """How a root's elements sit in memory: the caller's strides (a transposed argument's
        reshape copies, eagerly and so here), row-major for values computed in the trace."""
        known = self.root_layouts.get(id(x))
        if known is not None:
            return known
        # (an eager tensor the trace has written still has its own memory: writes go back there)
        value = getattr(x, "_value", None)
        if isinstance(value, np.ndarray) and not value.flags.c_contiguous:
            return array_layout(value)
        return Layout.contiguous(x.shape)

    def note_view(self, op: str, params: dict[str, Any], x: Any, out: Any) -> None:
        """``out = op(x)`` was recorded: remember ``out`` as a view when NumPy would make one."""
        self.note_views(((op, params, out.shape),), x, out)

    def note_views(self, ops: Sequence[tuple[str, dict[str, Any], tuple[int, ...]]], x: Any,
                   out: Any) -> None:
        """``out`` is ``x`` through the view ``ops`` (op, params, result shape) in turn: remember
        it as a view when NumPy would make each of them one."""
        base = self.views.get(id(x))
        root, chain = (base.root, base.chain) if base else (x, ())
        layout = base.layout if base else self.root_layout(x)
        for op, params, shape in ops:
            layout = layout.apply(op, params, shape)
            if layout is None:
                return                      # a copy: writes into it stay in it
        chain += tuple([(op, params) for op, params, _ in ops])
        self.views[id(out)] = View(out, root, chain, layout, self.versions.get(id(root), 0))

    def current_node(self, t: Any, node_of: Any) -> None:
        """Re-derive ``t``'s node from its root if the root was written since (call before reading it)."""
        v = self.views.get(id(t))
        if v is None or v.version == self.versions.get(id(v.root), 0):
            return
        nid = node_of(v.root)
        for op, params in v.chain:
            nid = self._add(op, params, [nid])
        t._node = nid
        v.version = self.versions.get(id(v.root), 0)

    def write(self, target: Any, new_node: int, node_of: Any) -> tuple[Any, int]:
        """``target`` (maybe a view) now holds ``new_node``: returns (root, the root's new node)."""
        v = self.views.get(id(target))
        if v is None:
            self.versions[id(target)] = self.versions.get(id(target), 0) + 1
            return target, new_node
        if v.layout.broadcast:
            raise UnsupportedUnderJitError(
                f"in-place update of a broadcast view (expand/broadcast_to) at {user_frame()}: its "
                "elements share memory, so NumPy refuses the write eagerly too; copy it first (x = x + 0)")
        new_root = self._scatter(node_of(v.root), v.chain, new_node)
        self.versions[id(v.root)] = self.versions.get(id(v.root), 0) + 1
        v.version = self.versions[id(v.root)]
        return v.root, new_root

    def _scatter(self, base: int, chain: tuple[tuple[str, dict[str, Any]], ...], value: int) -> int:
        """``base`` with the view ``chain`` of it replaced by ``value``."""
        if not chain:
            return value
        (op, params), rest = chain[0], chain[1:]
        inner = self._scatter(self._add(op, params, [base]), rest, value) if rest else value
        base_aval = self.graph.node(base).aval
        if op == "slice":
            return self.graph.add("slice_scatter", [base, inner], params, base_aval)
        if op == "reshape":
            return self._add("reshape", {"shape": base_aval.shape}, [inner])
        if op == "permute":
            perm = params["perm"]
            return self._add("permute", {"perm": tuple(perm.index(i) for i in range(len(perm)))}, [inner])
        raise AssertionError(f"no write-back through {op}")

    def _add(self, op: str, params: dict[str, Any], inputs: list[int]) -> int:
        aval: AVal = PRIMS[op].infer(*(self.graph.node(i).aval for i in inputs), **params)
        return self.graph.add(op, inputs, params, aval)
