"""The graph IR's own bookkeeping: its topological order and the collector pause around compiles."""
import gc

import networkx as nx
import numpy as np
import pytest

import tracejit as tj
from tracejit.graph import Graph
from tracejit.ops import AVal

F32 = np.dtype(np.float32)


def _chain_rewritten() -> Graph:
    """Inputs a, b; c = a + b; d = exp(c); then a newer node e = neg(a) replaces a in c, so c
    reads a node younger than itself (the case the id order alone gets wrong)."""
    g = Graph()
    a = g.add_input(AVal((4,), F32))
    b = g.add_input(AVal((4,), F32))
    c = g.add("add", (a, b), {}, AVal((4,), F32))
    d = g.add("exp", (c,), {}, AVal((4,), F32))
    e = g.add("neg", (b,), {}, AVal((4,), F32))
    g.replace_all_uses(a, e)
    g.remove(a)
    g.inputs.remove(a)
    g.outputs = [d]
    return g


def test_topo_is_the_lexicographic_topological_sort():
    g = _chain_rewritten()
    order = g.topo()
    assert order == list(nx.lexicographical_topological_sort(g.g))
    position = {n: k for k, n in enumerate(order)}
    assert all(position[i] < position[n] for n in order for i in g.node(n).inputs)


def test_topo_of_a_random_rewritten_graph_matches_networkx():
    rng = np.random.default_rng(0)
    g = Graph()
    nodes = [g.add_input(AVal((3,), F32)) for _ in range(3)]
    for _ in range(200):
        x, y = rng.choice(nodes, 2)
        nodes.append(g.add("add", (int(x), int(y)), {}, AVal((3,), F32)))
    for _ in range(40):  # point readers of old nodes at newer ones, keeping it acyclic
        old = int(rng.choice(nodes[3:100]))
        new = g.add("neg", (int(rng.choice(nodes[:3])),), {}, AVal((3,), F32))
        g.replace_all_uses(old, new)
    assert g.topo() == list(nx.lexicographical_topological_sort(g.g))


def test_topo_refuses_a_cycle():
    g = Graph()
    a = g.add_input(AVal((2,), F32))
    b = g.add("neg", (a,), {}, AVal((2,), F32))
    c = g.add("neg", (b,), {}, AVal((2,), F32))
    g.g.add_edge(c, b)  # (never made by the mutators; the order must still not hide it)
    with pytest.raises(nx.NetworkXUnfeasible):
        g.topo()


def test_compiling_leaves_the_collector_as_it_was():
    f = tj.jit(lambda x: (x * 2).sum())
    assert gc.isenabled()
    f(tj.ones(3))
    assert gc.isenabled()
    gc.disable()
    try:
        f(tj.ones(5))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_failed_trace_leaves_the_collector_enabled():
    @tj.jit
    def bad(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        bad(tj.ones(2))
    assert gc.isenabled()
