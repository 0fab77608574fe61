"""The graph IR: a DAG of primitive ops on a networkx DiGraph.

Nodes are integers.  Each carries a :class:`Node` (op, ordered inputs, params, abstract
value); edges ``u -> v`` mean "v reads u" and are kept in sync with ``Node.inputs`` by
:meth:`Graph.add` and :meth:`Graph.replace_all_uses`, the only two mutators besides
:meth:`Graph.remove`.  ``inputs`` holds the ``input`` nodes in argument order, ``outputs``
the nodes returned (a node may be returned more than once).

The text form reads like a jaxpr::

    { lambda a:f32[8,4] b:f32[4] .
      c:f32[1,4] = reshape[shape=(1, 4)] b
      ...
      in (e) }
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from .ops import PRIMS, AVal


@dataclass
class Node:
    op: str                       # a primitive name, or "input"
    inputs: tuple[int, ...]
    params: dict[str, Any]
    aval: AVal
    # the user's ``file:line`` that recorded it (for explain and logs; never part of a key)
    source: str = field(default="", compare=False, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.aval.shape

    @property
    def dtype(self) -> np.dtype:
        return self.aval.dtype


def freeze(value: Any) -> Any:
    """A hashable stand-in for a param value (NumPy arrays by content)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    return value


@dataclass
class Graph:
    g: nx.DiGraph = field(default_factory=nx.DiGraph)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    _ids: Iterable[int] = field(default_factory=itertools.count)
    # the topological order, kept until the structure changes (every mutator clears it)
    _topo: list[int] | None = field(default=None, repr=False, compare=False)
    _topo_index: tuple[Any, dict[int, int]] | None = field(default=None, repr=False, compare=False)
    # the source location given to nodes added without one (set by the trace while it records)
    default_source: str = field(default="", repr=False, compare=False)

    # ------------------------------------------------------------------ building
    def add(self, op: str, inputs: Iterable[int], params: dict[str, Any], aval: AVal,
            source: str | None = None) -> int:
        nid = next(self._ids)  # type: ignore[call-overload]
        inputs = tuple(inputs)
        self._topo = None
        self.g.add_node(nid, node=Node(op, inputs, dict(params), aval,
                                       self.default_source if source is None else source))
        for i in inputs:
            self.g.add_edge(i, nid)
        return nid

    def add_input(self, aval: AVal, name: str = "") -> int:
        nid = self.add("input", (), {"name": name} if name else {}, aval)
        self.inputs.append(nid)
        return nid

    def node(self, nid: int) -> Node:
        # ``_node`` is the DiGraph's own node -> attributes dict (what ``g.nodes[nid]`` reads
        # through a view); the passes ask for nodes some hundred times per graph node.
        return self.g._node[nid]["node"]

    def __contains__(self, nid: int) -> bool:
        return nid in self.g

    def __len__(self) -> int:
        return self.g.number_of_nodes()

    def users(self, nid: int) -> list[int]:
        return list(self.g.successors(nid))

    def topo(self) -> list[int]:
        """Nodes in a deterministic topological order (ties broken by creation order).

        Computed once per structure: analyses that ask for it per node stay linear."""
        if self._topo is None or len(self._topo) != self.g.number_of_nodes():
            self._topo = self._lexicographic_order()
        return list(self._topo)

    def _lexicographic_order(self) -> list[int]:
        """Kahn's algorithm taking the smallest ready id first: networkx's lexicographical
        topological sort, over the DiGraph's own adjacency dicts (a few times faster)."""
        pred, succ = self.g._pred, self.g._succ
        waiting = {nid: len(p) for nid, p in pred.items()}
        ready = [nid for nid, k in waiting.items() if k == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            nid = heapq.heappop(ready)
            order.append(nid)
            for user in succ[nid]:
                waiting[user] -= 1
                if waiting[user] == 0:
                    heapq.heappush(ready, user)
        if len(order) != len(pred):
            raise nx.NetworkXUnfeasible("graph contains a cycle")
        return order

    def topo_index(self) -> dict[int, int]:
        """node -> its position in :meth:`topo` (shared, do not modify)."""
        order = self.topo()
        if getattr(self, "_topo_index", None) is None or self._topo_index[0] is not self._topo:
            self._topo_index = (self._topo, {nid: k for k, nid in enumerate(order)})
        return self._topo_index[1]

    def live(self, roots: Iterable[int] = ()) -> set[int]:
        """The nodes some output (or one of ``roots``) depends on (one walk back from them all)."""
        seen = set(self.outputs) | set(roots)
        stack = list(seen)
        while stack:
            for i in self.node(stack.pop()).inputs:
                if i not in seen:
                    seen.add(i)
                    stack.append(i)
        return seen

    def remove_nodes(self, nids: Iterable[int]) -> None:
        """Remove nodes together (their users must be among them)."""
        self._topo = None
        self.g.remove_nodes_from(list(nids))

    # ------------------------------------------------------------------ rewriting
    def replace_all_uses(self, old: int, new: int) -> None:
        """Make every reader of ``old`` (and the outputs) read ``new`` instead."""
        if old == new:
            return
        self._topo = None
        replacement = self.node(new)
        if not replacement.source and replacement.op != "input":
            # a rewrite's result stands for the node it replaces
            replacement.source = self.node(old).source
        for user in list(self.g.successors(old)):
            n = self.node(user)
            n.inputs = tuple(new if i == old else i for i in n.inputs)
            self.g.remove_edge(old, user)
            self.g.add_edge(new, user)
        if old in self.outputs:         # (a step's outputs are hundreds: test before copying)
            self.outputs = [new if o == old else o for o in self.outputs]

    def remove(self, nid: int) -> None:
        if self.g.out_degree(nid):
            raise ValueError(f"node %{nid} still has users")
        self._topo = None
        self.g.remove_node(nid)

    # ------------------------------------------------------------------ checking and printing
    def verify(self) -> None:
        """Check the invariants every pass must keep; raise AssertionError naming the node."""
        if not nx.is_directed_acyclic_graph(self.g):
            raise AssertionError(f"graph has a cycle: {nx.find_cycle(self.g)}")
        for nid in self.g:
            n = self.node(nid)
            preds = set(self.g.predecessors(nid))
            if preds != set(n.inputs):
                raise AssertionError(f"%{nid} ({n.op}): edges {sorted(preds)} != inputs {n.inputs}")
            if n.op == "input":
                if nid not in self.inputs:
                    raise AssertionError(f"%{nid} is an input node missing from graph.inputs")
                continue
            prim = PRIMS.get(n.op)
            if prim is None:
                raise AssertionError(f"%{nid}: unknown op {n.op!r}")
            expect = prim.infer(*(self.node(i).aval for i in n.inputs), **n.params)
            if expect != n.aval:
                raise AssertionError(f"%{nid} ({n.op}): recorded {n.aval}, rule gives {expect}")
        for o in self.outputs:
            if o not in self.g:
                raise AssertionError(f"output %{o} is not in the graph")

    def names(self) -> dict[int, str]:
        """Short readable names (a, b, …, z, ba, …) in topological order."""
        def name(i: int) -> str:
            s = ""
            while True:
                s = chr(ord("a") + i % 26) + s
                i //= 26
                if i == 0:
                    return s
        return {nid: name(i) for i, nid in enumerate(self._print_order())}

    def _print_order(self) -> list[int]:
        inputs = set(self.inputs)
        rest = [n for n in self.topo() if n not in inputs]
        return list(self.inputs) + rest

    def format(self) -> str:
        names = self.names()

        def typed(nid: int) -> str:
            return f"{names[nid]}:{_short(self.node(nid).aval)}"

        lines = ["{ lambda " + " ".join(typed(i) for i in self.inputs) + " ."]
        for nid in self._print_order():
            n = self.node(nid)
            if n.op == "input":
                continue
            args = " ".join(names[i] for i in n.inputs)
            lines.append(f"    {typed(nid)} = {n.op}{_format_params(n.params)}{' ' + args if args else ''}")
        lines.append("  in (" + ", ".join(names[o] for o in self.outputs) + ") }")
        return "\n".join(lines)

    __str__ = format

    def to_dot(self, clusters: dict[int, int] | None = None) -> str:
        """Graphviz DOT text; ``clusters`` maps node -> kernel group to draw fused kernels as boxes."""
        names = self.names()
        lines = ["digraph tracejit {", "  rankdir=TB; node [shape=box, fontname=monospace];"]
        groups: dict[int, list[int]] = {}
        for nid in self.g:
            groups.setdefault((clusters or {}).get(nid, -1), []).append(nid)
        for gid, members in sorted(groups.items()):
            indent = "  "
            if gid >= 0:
                lines.append(f'  subgraph cluster_{gid} {{ label="kernel {gid}"; style=rounded;')
                indent = "    "
            for nid in members:
                n = self.node(nid)
                label = f"{names[nid]} = {n.op}\\n{_short(n.aval)}"
                shape = ", shape=ellipse" if n.op == "input" else ""
                lines.append(f'{indent}n{nid} [label="{label}"{shape}];')
            if gid >= 0:
                lines.append("  }")
        for u, v in self.g.edges:
            lines.append(f"  n{u} -> n{v};")
        for k, o in enumerate(self.outputs):
            lines.append(f'  out{k} [label="out {k}", shape=plaintext]; n{o} -> out{k};')
        lines.append("}")
        return "\n".join(lines)


_SHORT = {"float16": "f16", "float32": "f32", "float64": "f64", "int8": "i8", "int16": "i16",
          "int32": "i32", "int64": "i64", "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64",
          "complex64": "c64", "complex128": "c128", "bool": "bool", "bfloat16": "bf16"}


def _short(aval: AVal) -> str:
    return f"{_SHORT.get(aval.dtype.name, aval.dtype.name)}[{','.join(map(str, aval.shape))}]"


def _format_params(params: dict[str, Any]) -> str:
    if not params:
        return ""
    parts = []
    for k, v in params.items():
        if isinstance(v, np.ndarray):
            v = np.array2string(v, threshold=6, precision=4, separator=",") if v.size <= 6 else \
                f"<{v.dtype.name}{list(v.shape)}>"
        elif isinstance(v, np.dtype):
            v = v.name
        parts.append(f"{k}={v}")
    return "[" + " ".join(parts) + "]"
