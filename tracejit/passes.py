"""Graph passes: dead-code elimination, CSE, constant folding and algebraic simplification.

Floating-point semantics are kept bit for bit: ``x + -0.0`` and ``x - 0.0`` fold to ``x``, but
``x + 0.0`` stays an addition (it turns ``-0.0`` into ``+0.0``); ``x - x`` and ``x * 0`` fold
only for integers (``inf - inf`` and ``nan * 0`` are nan), and nothing is reassociated.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from . import dtypes as dt
from .graph import Graph, freeze
from .ops import CHECKS, PRIMS, AVal

FOLD_LIMIT = 4096   # fold only results this small (or no larger than the constants they read)


def dce(g: Graph) -> int:
    """Remove nodes that no output depends on (graph inputs are kept: they are the signature;
    checks are kept: an index out of range raises under jit where eager raises, used or not)."""
    live = g.live(n for n in g.g if g.node(n).op in CHECKS) | set(g.inputs)
    dead = [n for n in g.g if n not in live]
    g.remove_nodes(dead)
    return len(dead)


def cse(g: Graph) -> int:
    """Merge nodes computing the same op on the same inputs with the same params."""
    seen: dict[tuple, int] = {}
    merged = 0
    for nid in g.topo():
        n = g.node(nid)
        if n.op == "input":
            continue
        key = (n.op, n.inputs, freeze(n.params))
        other = seen.get(key)
        if other is None:
            seen[key] = nid
        else:
            g.replace_all_uses(nid, other)
            merged += 1
    dce(g)
    return merged


def constant_value(g: Graph, nid: int) -> np.ndarray | None:
    """The value of a node built only from constants through views, else None."""
    n = g.node(nid)
    if n.op == "constant":
        return n.params["value"]
    if n.op in ("reshape", "expand", "permute", "slice") and g.node(n.inputs[0]).op in (
            "constant", "reshape", "expand", "permute", "slice"):
        inner = constant_value(g, n.inputs[0])
        return None if inner is None else PRIMS[n.op].impl(inner, **n.params)
    return None


def _is_runtime(g: Graph, nid: int) -> bool:
    """Whether a constant-valued node derives from a run-time constant (see ops ``constant``)."""
    n = g.node(nid)
    return bool(n.params.get("runtime")) if n.op == "constant" else \
        any(_is_runtime(g, i) for i in n.inputs)


def _uniform(g: Graph, nid: int) -> float | int | bool | None:
    """The single value of a node that is one constant broadcast everywhere, else None."""
    while g.node(nid).op in ("reshape", "expand", "permute"):   # views of a uniform value are uniform
        nid = g.node(nid).inputs[0]
    if g.node(nid).op != "constant" or g.node(nid).params.get("runtime"):
        return None
    v = g.node(nid).params["value"]
    if v is None or v.size == 0:
        return None
    first = v.reshape(-1)[0]
    if not np.all(v == first) or (isinstance(first, np.floating) and np.isnan(first)):
        return None
    return first.item()


def fold_constants(g: Graph) -> int:
    """Evaluate ops whose inputs are all constants, when the result stays small."""
    folded = 0
    for nid in g.topo():
        n = g.node(nid)
        prim = PRIMS.get(n.op)
        if prim is None or prim.kind in ("source", "host") or n.op in ("expand",) or not n.inputs:
            continue
        values = [constant_value(g, i) for i in n.inputs]
        if any(v is None for v in values):
            continue
        size = int(np.prod(n.shape, dtype=np.int64))
        if size > FOLD_LIMIT and size > max(v.size for v in values):
            continue
        if all(g.node(i).op != "constant" for i in n.inputs) and prim.kind == "movement":
            continue  # views of constants stay views
        out = np.asarray(prim.impl(*values, **n.params))
        if not out.flags.c_contiguous:      # (np.ascontiguousarray would make a 0-d result 1-d)
            out = out.copy()
        # (a value computed from a run-time constant stays one: kernels load it)
        params = {"value": out, "runtime": True} if any(_is_runtime(g, i) for i in n.inputs) \
            else {"value": out}
        new = g.add("constant", (), params, AVal(out.shape, out.dtype))
        g.replace_all_uses(nid, new)
        folded += 1
    dce(g)
    return folded


def _same_as(g: Graph, nid: int, other: int) -> int | None:
    return other if g.node(other).aval == g.node(nid).aval else None


def _rule_identity_operand(g: Graph, nid: int) -> int | None:
    n = g.node(nid)
    if n.op not in ("add", "sub", "mul", "div", "or", "and", "xor"):
        return None
    a, b = n.inputs
    ua, ub = _uniform(g, a), _uniform(g, b)
    # IEEE: x + -0.0 and x - +0.0 are x for every x; x + +0.0 turns x = -0.0 into +0.0
    floating = dt.is_float(n.dtype)
    if n.op in ("add", "or", "xor"):
        if ub is not None and ub == 0 and not (floating and not np.signbit(ub)):
            return _same_as(g, nid, a)
        if ua is not None and ua == 0 and not (floating and not np.signbit(ua)):
            return _same_as(g, nid, b)
    if n.op == "sub" and ub is not None and ub == 0 and not (floating and np.signbit(ub)):
        return _same_as(g, nid, a)
    if n.op in ("mul", "div") and ub is not None and ub == 1 and not dt.is_bool(n.dtype):
        return _same_as(g, nid, a)
    if n.op == "mul" and ua is not None and ua == 1 and not dt.is_bool(n.dtype):
        return _same_as(g, nid, b)
    if n.op == "and" and dt.is_bool(n.dtype):
        if ub is True:
            return _same_as(g, nid, a)
        if ua is True:
            return _same_as(g, nid, b)
    return None


def _zeros(g: Graph, nid: int) -> int:
    n = g.node(nid)
    c = g.add("constant", (), {"value": np.zeros((), n.dtype)}, AVal((), n.dtype))
    r = g.add("reshape", (c,), {"shape": (1,) * len(n.shape)}, AVal((1,) * len(n.shape), n.dtype))
    return g.add("expand", (r,), {"shape": n.shape}, n.aval) if n.shape else c


def _rule_integer_zero(g: Graph, nid: int) -> int | None:
    n = g.node(nid)
    if not dt.is_int(n.dtype):
        return None
    if n.op == "sub" and n.inputs[0] == n.inputs[1]:
        return _zeros(g, nid)
    if n.op == "mul" and any(_uniform(g, i) == 0 for i in n.inputs):
        return _zeros(g, nid)
    return None


def _rule_involution(g: Graph, nid: int) -> int | None:
    n = g.node(nid)
    if n.op in ("neg", "logical_not", "bitwise_invert"):
        inner = g.node(n.inputs[0])
        if inner.op == n.op:
            return inner.inputs[0]
    return None


def _rule_movement(g: Graph, nid: int) -> int | None:
    n = g.node(nid)
    src = n.inputs[0] if n.inputs else None
    if n.op in ("reshape", "expand") and g.node(src).shape == n.shape:
        return src
    if n.op == "cast" and g.node(src).dtype == n.dtype:
        return src
    if n.op == "permute" and n.params["perm"] == tuple(range(len(n.shape))):
        return src
    if n.op == "slice":
        s = g.node(src).shape
        p = n.params
        if all(b == 0 and e == k and st == 1 for b, e, st, k in zip(p["start"], p["stop"], p["step"], s)):
            return src
    if n.op == "slice_scatter" and g.node(n.inputs[1]).aval == n.aval \
            and all(b == 0 and st == 1 for b, st in zip(n.params["start"], n.params["step"])):
        return n.inputs[1]      # x[...] = v overwrites all of x
    inner = g.node(src) if src is not None else None
    if n.op == "reshape" and inner.op == "reshape":
        return g.add("reshape", inner.inputs, {"shape": n.shape}, n.aval)
    if n.op == "permute" and inner.op == "permute":
        perm = tuple(inner.params["perm"][p] for p in n.params["perm"])
        return g.add("permute", inner.inputs, {"perm": perm}, n.aval)
    return None


def _single_element(g: Graph, nid: int) -> int | None:
    """The number (a 0-d node) ``nid`` broadcasts through reshapes and expands, else None.

    Only a 0-d one: a value with one element by chance (a row's statistic at batch 1) is left
    as it is, so that the graph at batch 1 has the structure, and the kernels, of batch N."""
    while g.node(nid).shape and g.node(nid).op in ("reshape", "expand"):
        nid = g.node(nid).inputs[0]
    return nid if not g.node(nid).shape else None


def _rule_scalar_math_before_broadcast(g: Graph, nid: int) -> int | None:
    """``op(broadcast(a), broadcast(b)) -> broadcast(op(a, b))`` for one-element ``a``, ``b``:
    arithmetic on numbers (a mean's ``1/n`` in its gradient) is done once, not per element
    (folded, when they are constants), and costs the kernels that read it nothing."""
    n = g.node(nid)
    # (one-element results too: at batch 1, ``-(1/n)`` broadcast to a batch of one)
    if n.op not in PRIMS or PRIMS[n.op].kind != "elementwise" or not n.shape or not n.inputs:
        return None
    sources = [_single_element(g, i) for i in n.inputs]
    if any(s is None for s in sources):
        return None
    r = g.add(n.op, sources, n.params, AVal((), n.dtype))
    r = g.add("reshape", (r,), {"shape": (1,) * len(n.shape)}, AVal((1,) * len(n.shape), n.dtype))
    return g.add("expand", (r,), {"shape": n.shape}, n.aval)


def _rule_transpose_of_matmul(g: Graph, nid: int) -> int | None:
    """``(a @ b).mT -> b.mT @ a.mT`` when nothing else reads ``a @ b``.

    Gradients of linear layers come out transposed; computing them in the layout their
    consumers read keeps every later kernel's loads contiguous (BLAS takes transposed operands
    for free).
    """
    n = g.node(nid)
    if n.op != "permute":
        return None
    nd = len(n.shape)
    if nd < 2 or n.params["perm"] != tuple(range(nd - 2)) + (nd - 1, nd - 2):
        return None
    mm = g.node(n.inputs[0])
    if mm.op != "matmul" or len(g.users(n.inputs[0])) != 1 or n.inputs[0] in g.outputs:
        return None
    a, b = mm.inputs
    perm = n.params["perm"]

    def transposed(x: int) -> int:
        shape = g.node(x).shape
        return g.add("permute", (x,), {"perm": perm}, AVal(tuple(shape[p] for p in perm), g.node(x).dtype))
    return g.add("matmul", (transposed(b), transposed(a)), {}, n.aval)


def add_tree_leaves(g: Graph, root: int) -> list[int]:
    """The terms of the sum rooted at ``root`` (an ``add``), left to right, through the inner
    adds that nothing else reads."""
    leaves, stack = [], [root]
    while stack:
        x = stack.pop()
        if g.node(x).op == "add" and (x == root or (len(g.users(x)) == 1 and x not in g.outputs)):
            stack.extend(reversed(g.node(x).inputs))
        else:
            leaves.append(x)
    return leaves


def _rule_sum_of_disjoint_pads(g: Graph, nid: int) -> int | None:
    """``pad(a0) + pad(a1) + ...`` with zero fill, each padded along one axis into disjoint,
    adjacent ranges -> ``pad(concat(a0 + 0, a1 + 0, ...))``: the gradient of slicing a tensor
    into pieces (an LSTM's time steps, split gates) is one copy, not a sum of many padded
    copies.  The ``+ 0`` keeps the sum's value exactly (it turns -0.0 into +0.0, as adding zeros
    does); on each piece it is computed by the concatenation's kernel as it copies, where on the
    concatenation a kernel reading it through a view (a matmul's operand) or reducing it needed
    one more pass over the whole."""
    n = g.node(nid)
    if n.op != "add":
        return None
    users = g.users(nid)
    if len(users) == 1 and g.node(users[0]).op == "add" and nid not in g.outputs:
        return None                     # an inner add: the root of its sum takes it
    leaves = add_tree_leaves(g, nid)
    if len(leaves) < 2:
        return None
    axis, ranges = None, []
    for leaf in leaves:
        p = g.node(leaf)
        if p.op != "pad" or p.params["value"] != 0:
            return None
        padded = [d for d, (lo, hi) in enumerate(p.params["pads"]) if lo or hi]
        if len(padded) != 1 or axis not in (None, padded[0]):
            return None
        axis = padded[0]
        lo = p.params["pads"][axis][0]
        ranges.append((lo, lo + g.node(p.inputs[0]).shape[axis], p.inputs[0]))
    ranges.sort(key=lambda r: r[:2])
    if any(a[1] != b[0] for a, b in zip(ranges, ranges[1:])):
        return None                     # overlapping or apart: a real sum
    start, end = ranges[0][0], ranges[-1][1]
    shape = n.shape[:axis] + (end - start,) + n.shape[axis + 1:]
    pieces = tuple(g.add("add", (r[2], _zeros(g, r[2])), {}, g.node(r[2]).aval) for r in ranges)
    joined = g.add("concat", pieces, {"axis": axis}, AVal(shape, n.dtype))
    if (start, end) != (0, n.shape[axis]):
        pads = tuple((start, n.shape[axis] - end) if d == axis else (0, 0) for d in range(len(n.shape)))
        joined = g.add("pad", (joined,), {"pads": pads, "value": 0.0}, n.aval)
    return joined


RULES: list[Callable[[Graph, int], int | None]] = [
    _rule_identity_operand, _rule_integer_zero, _rule_involution, _rule_movement, _rule_transpose_of_matmul,
    _rule_scalar_math_before_broadcast, _rule_sum_of_disjoint_pads]


def simplify(g: Graph) -> int:
    """Apply the algebraic rules until nothing changes."""
    total = 0
    changed = True
    while changed:
        changed = False
        for nid in g.topo():
            if nid not in g or g.node(nid).op == "input":
                continue
            for rule in RULES:
                new = rule(g, nid)
                if new is not None and new != nid:
                    g.replace_all_uses(nid, new)
                    total += 1
                    changed = True
                    break
        dce(g)
    return total


def optimize(g: Graph, times: dict[str, float] | None = None) -> dict[str, int]:
    """The standard pipeline; returns how much each pass changed (for logging and explain).

    ``times``, when given, receives the seconds each pass took (and ``verify``)."""
    stats: dict[str, int] = {}
    spent: dict[str, float] = {} if times is None else times
    for name, run in (("dce", dce), ("simplify", simplify), ("fold", fold_constants), ("cse", cse),
                      ("simplify", simplify), ("verify", g.verify)):
        t0 = time.perf_counter()
        changed = run(g) if name != "verify" else run()
        spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        if changed is not None:
            stats[name] = stats.get(name, 0) + changed
    return stats
