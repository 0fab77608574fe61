"""Fusion: decide which values live in memory, and build one kernel per remaining group.

The rules, in the order they are applied (each materialized value records its reason, which
``explain`` prints):

1. Graph outputs live in memory.
2. Matmul, host ops (sort, take, …) and the ops on complex values that kernels do not compute
   (``_touches_complex``; in kernels complex values are pairs of float lanes) run as extern
   steps; their operands live in memory,
   read through strided views when a movement chain allows it.  Concatenation, pad and slice
   assignment are selects by index range inside kernels (:class:`codegen.kir.Piecewise`): each
   operand is an ordinary fused expression read shifted to its position (a ``window`` step).
3. A value read by several kernels is recomputed in each of them when its expression is
   cheap (``RECOMPUTE_LIMIT``) or when it feeds a reduction (the row kernel that absorbs the
   reduction recomputes it instead of a round trip through memory), else materialized once.
   A value used several times inside one kernel is computed once there.
4. Every other value is computed inside the kernel of the materialized value that needs it:
   elementwise chains, broadcasts and views fuse, and movement ops become index arithmetic
   on the kernel's loads.
5. A reduction whose result is read back broadcast over the reduced axes, by a consumer of
   the same shape, becomes a *stage* of that consumer's kernel (softmax and layer_norm are
   one kernel).  Read in any other way, it is materialized by a kernel of its own (which
   still fuses its elementwise producers).
6. A reshape that no strides can express materializes its operand.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from codegen import kir, kir_complex
from codegen.kir_complex import Pair

from .graph import Graph
from .ops import PRIMS, REDUCTIONS
from .views import View, contiguous_strides

VIEW_OPS = ("reshape", "permute", "expand", "slice")
PIECEWISE_OPS = ("concat", "pad", "slice_scatter")    # selects by index range inside kernels
EXTERN_MOVEMENT = ("slice_scatter",)   # extern steps when not a select by range (steps other than ±1)
RECOMPUTE_LIMIT = 6          # cost units; a transcendental costs 4, other ops 1, views 0
_EXPENSIVE = {"exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "asin", "acos",
              "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "pow", "atan2", "div",
              "sqrt", "rsqrt", "logaddexp", "hypot"}

Path = tuple[tuple[str, tuple, tuple[int, ...], int], ...]   # (op, params, shape, node) from the root down


class NeedsMaterialization(Exception):
    def __init__(self, node: int, reason: str) -> None:
        super().__init__(reason)
        self.node, self.reason = node, reason


@dataclass
class KernelPlan:
    """One fused kernel: the kir kernel, its launch shape and which buffers its operands view."""
    kernel: kir.Kernel
    shape: tuple[int, ...]
    inputs: list[tuple[int, View]]           # (buffer node, view in iteration order)
    outputs: list[tuple[int, View]]          # (node stored, view)
    members: set[int]                        # graph nodes computed inside
    root: int
    # the iteration space before extent-1 dims were dropped and dims merged, and each operand's
    # strides over it (inputs, then outputs): what lets a batch of one reuse a batch-N kernel
    space: tuple[int, ...] = ()
    space_strides: list[tuple[int, ...]] = field(default_factory=list)
    space_reduce: int = 0                    # how many of ``space``'s dims (the last) are reduced
    merge: bool = True


@dataclass
class ExternPlan:
    node: int
    inputs: list[tuple[int, View]]           # (buffer node, view in the operand's logical shape)


@dataclass
class FusionPlan:
    materialized: dict[int, str]             # node -> why it lives in memory
    aliases: dict[int, tuple[int, View]]     # view nodes that are strided views of another buffer
    steps: list[Any] = field(default_factory=list)   # KernelPlan | ExternPlan, in execution order
    constants: dict[int, np.ndarray] = field(default_factory=dict)


def _is_buffer_source(g: Graph, nid: int) -> bool:
    n = g.node(nid)
    return n.op == "input" or (n.op == "constant" and _inline(n) is None)


def _inline(n: Any) -> Any:
    """The single value of a constant node that kernels compile in, else None (an array, or a
    run-time count, which they load)."""
    value = n.params["value"]
    return None if n.params.get("runtime") else _uniform(value)


def _uniform(v: np.ndarray) -> Any:
    if v.size == 0:
        return 0
    first = v.reshape(-1)[0]
    return first.item() if np.all(v == first) or (np.all(np.isnan(v)) if v.dtype.kind == "f" else False) \
        else None


def _cost(g: Graph, nid: int, materialized: dict[int, str], memo: dict[int, int],
          cap: int = RECOMPUTE_LIMIT + 1) -> int:
    """What computing ``nid`` again costs (its expression as a tree, down to stored values),
    counted up to ``cap``: beyond it the count stops (every decision only compares it with
    RECOMPUTE_LIMIT), so asking for each node costs a few nodes, not the whole graph above it."""
    if nid in memo:
        return memo[nid]
    n = g.node(nid)
    if nid in materialized or n.op in ("input", "constant", "iota"):
        c = 0
    elif n.op in REDUCTIONS:
        c = 1       # a reduction is computed once per kernel (a stage or a load), never per use
    elif n.op == "expand" and _is_scalar_source(g, n.inputs[0]):
        c = 0       # a broadcast number: loop-invariant arithmetic
    elif PRIMS[n.op].kind not in ("elementwise", "movement"):
        c = RECOMPUTE_LIMIT + 1
    else:
        c = _own_cost(n)
        for i in n.inputs:
            if c >= cap:
                break
            c += _cost(g, i, materialized, memo, cap)
    c = min(c, cap)
    memo[nid] = c
    return c


def _own_cost(n: Any) -> int:
    """What an elementwise or movement node costs by itself (views are index arithmetic; an op
    on complex pairs is a few float ops)."""
    if n.op in VIEW_OPS:
        return 0
    return (4 if n.op in _EXPENSIVE else 1) * (2 if n.dtype.kind == "c" else 1)


def _cost_text(g: Graph, nid: int, materialized: dict[int, str]) -> str:
    """The cost for a boundary's reason (counted further, up to 100)."""
    c = _cost(g, nid, materialized, {}, 100)
    return f"cost {c}" if c < 100 else "cost >= 100"


def _broadcast_by_users(g: Graph, nid: int) -> bool:
    """Whether some consumer reads ``nid`` (through views) broadcast to more elements."""
    stack = list(g.users(nid))
    while stack:
        uid = stack.pop()
        op = g.node(uid).op
        if op == "expand":
            return True
        if op in VIEW_OPS:
            stack.extend(g.users(uid))
    return False


def _reads_reduction(g: Graph, nid: int, materialized: dict[int, str]) -> bool:
    """Whether ``nid`` is computed (within its kernel) from a reduction's result."""
    stack, seen = [nid], set()
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        n = g.node(i)
        if n.op in REDUCTIONS:
            return True
        if i == nid or i not in materialized:
            stack.extend(n.inputs)
    return False


def _is_scalar_source(g: Graph, nid: int) -> bool:
    """Whether ``nid`` is a number at every batch size: a 0-d value or a one-element constant,
    through reshapes (not a row's reduction that a batch of one makes one-element)."""
    while g.node(nid).op == "reshape":
        nid = g.node(nid).inputs[0]
    n = g.node(nid)
    return not n.shape or (n.op == "constant" and math.prod(n.shape) == 1)


def _is_fused_gather(g: Graph, nid: int) -> bool:
    """A ``take`` computed inside the kernel that reads it: its indices were checked
    (``index_check``, which traced CPU code inserts) and its table is a buffer, not a view."""
    n = g.node(nid)
    return n.op == "take" and g.node(n.inputs[1]).op == "index_check" and \
        g.node(n.inputs[0]).op not in VIEW_OPS


def _is_extern(g: Graph, nid: int) -> bool:
    n = g.node(nid)
    if n.op == "input":
        return False
    if _touches_complex(g, n):
        return True
    if n.op == "take" and _is_fused_gather(g, nid):
        return False
    return PRIMS[n.op].kind in ("matmul", "host") or (n.op in EXTERN_MOVEMENT and not _is_piecewise(n))


COMPLEX_REDUCTIONS = frozenset({"reduce_sum"})     # a complex sum is a sum per part


def _touches_complex(g: Graph, n: Any) -> bool:
    """Whether ``n`` makes or reads a complex value that kernels cannot compute: kernels hold a
    complex value as a pair of float lanes (:mod:`codegen.kir_complex`), for the ops whose
    every special case there is NumPy's; any other op on complex values is a host step through
    its NumPy reference, so compiled code means what eager code does."""
    if not (n.dtype.kind == "c" or any(g.node(i).dtype.kind == "c" for i in n.inputs)):
        return False
    return not (n.op in VIEW_OPS or n.op == "constant" or n.op in kir_complex.FUSED_OPS
                or n.op in COMPLEX_REDUCTIONS)


def _is_piecewise(n: Any) -> bool:
    """A movement op computed inside kernels as a select by index range."""
    if n.op == "slice_scatter":     # x[a:b:s] = v with |s| > 1 writes no range: an extern step
        return all(abs(st) == 1 for st in n.params["step"])
    return n.op in PIECEWISE_OPS


def plan(g: Graph, read_back: frozenset[int] = frozenset()) -> FusionPlan:
    """Group the graph's nodes into kernels and extern steps.

    Graph outputs in ``read_back`` are never recomputed by other kernels: they are in-place
    updates, and recomputing one would read the old value after it was overwritten.
    """
    materialized: dict[int, str] = {o: "graph output updated in place" for o in read_back}
    for o in g.outputs:
        materialized.setdefault(o, "graph output")
    order = g.topo()
    for nid in order:
        if _is_extern(g, nid):
            materialized.setdefault(nid, f"result of {g.node(nid).op} (extern step)")
    # multi-use values: recompute when cheap (consumers first, so their decisions are known)
    for nid in reversed(order):
        n = g.node(nid)
        if n.op in REDUCTIONS and nid not in materialized and _restaged_elsewhere(g, nid, materialized):
            materialized[nid] = STORED_REDUCTION
            continue
        if nid in materialized or n.op in ("input", "constant", "iota") or n.op in REDUCTIONS:
            continue
        users = g.users(nid)
        if (_broadcast_by_users(g, nid) and _cost(g, nid, materialized, {}) > RECOMPUTE_LIMIT
                and not _reads_reduction(g, nid, materialized)):
            # a kernel reading it through a broadcast would compute it once per copy (a
            # convolution's input gradient under a max pool's gradient: four times per window);
            # one made from a reduction is a row value of the kernel that absorbs the reduction
            materialized[nid] = ("broadcast by a consumer; too costly to recompute per copy "
                                 f"({_cost_text(g, nid, materialized)})")
            continue
        # a value that feeds a reduction over its own shape is recomputed by the row kernel
        # that absorbs the reduction: recomputing beats a round trip through memory
        feeds_row = any(g.node(u).op in REDUCTIONS for u in users)
        if len(users) <= 1 or n.op in VIEW_OPS or feeds_row:
            continue
        # read through k different views (a stencil's shifted reads), a kernel computes it k times
        views = _recomputing_views(g, users)
        if len(_sinks(g, nid, materialized)) > 1 or views > 1:
            cost = _cost(g, nid, materialized, {})
            if cost > RECOMPUTE_LIMIT or cost * (views - 1) > RECOMPUTE_LIMIT:
                materialized[nid] = (f"used by {len(users)} consumers; too costly to recompute "
                                     f"({_cost_text(g, nid, materialized)})")
    return _build(g, order, dict(materialized))


def _recomputing_views(g: Graph, users: list[int]) -> int:
    """How many times a kernel reading a value through these users computes each element: once
    per view user, except that slices of disjoint ranges (an LSTM's four gates of one
    pre-activation) between them compute each element once."""
    views = [g.node(u) for u in users if g.node(u).op in VIEW_OPS]
    if len(views) > 1 and all(v.op == "slice" and all(st == 1 for st in v.params["step"]) for v in views):
        boxes = [tuple(zip(v.params["start"], v.params["stop"])) for v in views]
        if all(any(a1 <= b0 or b1 <= a0 for (a0, a1), (b0, b1) in zip(x, y))
               for i, x in enumerate(boxes) for y in boxes[i + 1:]):
            return 1
    return len(views)


STORED_REDUCTION = "reduction read by kernels that do not read its input: stored once, not recomputed in each"


def _restaged_elsewhere(g: Graph, red: int, materialized: dict[int, str]) -> bool:
    """Whether some kernel reading reduction ``red`` does not read ``red``'s input otherwise.

    A reduction is computed as a stage of each kernel that reads it.  In a kernel that reads
    the reduced input anyway (softmax's ``exp(x - max(x))``) that costs no extra pass; in one
    that does not (the running maximum of an online softmax, read in every later block), the
    stage drags the whole input back in and keeps it alive until that kernel runs.
    """
    sinks = _sinks(g, red, materialized)
    if len(sinks) < 2:
        return False
    source = g.node(red).inputs[0]
    for sink in sinks:
        stack, seen, found = [sink], {red}, False
        while stack and not found:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            if u == source:
                found = True
            elif u == sink or (u not in materialized and not _is_extern(g, u)):
                stack.extend(g.node(u).inputs)
        if not found:
            return True
    return False


def _produce(g: Graph, nid: int, fp: FusionPlan, produced: set[int], named: set[int]) -> None:
    """Plan the step that makes ``nid``'s buffer (or note it as an input, constant or alias).

    A view some step already reads as a buffer of its own is copied into one, not aliased."""
    materialized = fp.materialized
    n = g.node(nid)
    alias = _view_alias(g, nid, materialized) if n.op in VIEW_OPS and nid not in named else None
    if n.op == "input":
        produced.add(nid)
    elif n.op == "constant" and _inline(n) is None:
        fp.constants[nid] = np.ascontiguousarray(n.params["value"])
        produced.add(nid)
    elif alias is not None:
        fp.aliases[nid] = alias
        produced.add(nid)
    elif _is_extern(g, nid):
        ins = [(n.op == "scatter_add" and k == 0 and _broadcast_number(g, i))
               or _operand_view(g, i, materialized, f"operand of {n.op}") for k, i in enumerate(n.inputs)]
        fp.steps.append(ExternPlan(nid, ins))
        produced.add(nid)
        named.update(i for i, _ in ins)
    else:
        kp = KernelBuilder(g, materialized, nid).build()
        fp.steps.append(kp)
        produced.update(node for node, _ in kp.outputs)
        named.update(i for i, _ in kp.inputs)


def _store_too(materialized: dict[int, str], e: NeedsMaterialization) -> None:
    """A kernel asked for ``e.node`` as a buffer: mark it (or re-mark a view as a copy)."""
    old = materialized.get(e.node)
    if old is None:
        materialized[e.node] = e.reason
    elif e.reason.startswith(COPIED) and not old.startswith(COPIED):
        materialized[e.node] = f"{COPIED}{old}; {e.reason[len(COPIED):]}"   # stored, not just viewed
    else:
        raise e


def _sinks(g: Graph, nid: int, materialized: dict[int, str]) -> set[int]:
    """The kernels (their stored or reduced values) that read ``nid`` through fused nodes.

    A value read by one kernel only is computed once inside it, however often it is used.
    """
    sinks: set[int] = set()
    stack = g.users(nid)
    seen: set[int] = set()
    while stack:
        u = stack.pop()
        if u in seen:
            continue
        seen.add(u)
        if u in materialized or g.node(u).op in REDUCTIONS or _is_extern(g, u):
            sinks.add(u)
        else:
            stack.extend(g.users(u))
    return sinks


def _build(g: Graph, order: list[int], materialized: dict[int, str]) -> FusionPlan:
    fp = FusionPlan(materialized, {})
    produced: set[int] = set()
    named: set[int] = set()     # nodes a planned step reads as buffers of their own
    while True:     # building a kernel may ask for more buffers (read through views, say)
        pending = [n for n in order if n in materialized and n not in produced]
        if not pending:
            break
        for nid in pending:
            if nid in produced:
                continue
            try:
                _produce(g, nid, fp, produced, named)
            except NeedsMaterialization as e:
                # store what this step could not compute and retry it in the next round; the
                # steps built already stay valid (they compute that value inline, or read the
                # view's base), so one pass over the graph suffices, not one per request
                _store_too(materialized, e)
                if e.node in fp.aliases:        # a view that must now be a copy
                    del fp.aliases[e.node]
                    produced.discard(e.node)
    _merge_siblings(fp)
    _merge_chains(fp)
    _order_steps(fp)
    return fp


MAX_OPERANDS = 24    # horizontal fusion stops before kernels grow unwieldy
# vertical fusion's limit on the joined kernel's arrays: an LSTM step's gates (four slices of
# two projections and of two biases, four outputs) and its cell (six outputs) are 27
MAX_CHAIN_OPERANDS = 32


def _n_arrays(k: KernelPlan) -> int:
    """Operands a kernel walks (a broadcast number, such as a learning rate, is not one)."""
    return sum(1 for _, v in k.inputs if any(v.strides)) + len(k.outputs)


def _n_chained_arrays(a: KernelPlan, b: KernelPlan) -> int:
    """Operands of ``a`` and ``b`` joined vertically: ``b``'s loads of what ``a`` stores are
    no operands, nor are its inputs ``a`` reads already."""
    stored = {node for node, _ in a.outputs}
    extra = {op for op in b.inputs if op[0] not in stored and op not in a.inputs and any(op[1].strides)}
    return _n_arrays(a) + len(extra) + len(b.outputs)


def _step_dag(fp: FusionPlan):
    """Steps as a networkx DAG: an edge when one step reads a buffer another writes."""
    producer: dict[int, int] = {}
    for k, step in enumerate(fp.steps):
        for o in ([step.node] if isinstance(step, ExternPlan) else [o for o, _ in step.outputs]):
            producer[o] = k
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(fp.steps)))
    for k, step in enumerate(fp.steps):
        for node, _ in step.inputs:
            while node in fp.aliases:
                node = fp.aliases[node][0]
            src = producer.get(node)
            if src is not None and src != k:
                dag.add_edge(src, k)
    return dag


def _program_position(fp: FusionPlan, k: int) -> int:
    """Where step ``k``'s first value comes in the program: node ids follow the order the
    traced code made them (a topological order would put every value that depends only on
    the inputs, each block's scores say, before anything that reads a folded constant)."""
    step = fp.steps[k]
    return min([step.node] if isinstance(step, ExternPlan) else [o for o, _ in step.outputs])


def _merge_siblings(fp: FusionPlan) -> None:
    """Horizontal fusion: elementwise kernels over the same launch shape that do not depend on
    each other become one kernel with several outputs (an optimizer's updates of m, v and the
    step counters; the outputs of a multi-output function).  One pass over the data, one launch.
    Kernels with an extern step (a matmul) between them in the program are not merged: the
    merged kernel would run after it, keeping the earlier kernel's inputs alive across it (code
    written in blocks, like attention over key blocks, would hold every block at once).

    Dependence is read from ancestor bitsets (one walk of the step DAG, updated per merge), so
    the pass stays near-linear in the number of steps instead of a path search per pair.
    """
    pos = [_program_position(fp, k) for k in range(len(fp.steps))]
    externs = sorted(p for p, st in zip(pos, fp.steps) if isinstance(st, ExternPlan))
    span = [(p, p) for p in pos]         # program positions a (merged) kernel covers

    def extern_between(lo: int, hi: int) -> bool:
        i = bisect.bisect_right(externs, lo)
        return i < len(externs) and externs[i] < hi
    dag = _step_dag(fp)
    anc = [0] * len(fp.steps)            # step -> bitset of the steps it depends on
    for k in nx.topological_sort(dag):
        for p in dag.predecessors(k):
            anc[k] |= anc[p] | (1 << p)
    merged_into: dict[int, int] = {}
    steps = list(fp.steps)
    parts: dict[int, list[KernelPlan]] = {}     # merged step -> the kernels it is made of
    # grouped by the uncollapsed space too: (1, 512) and (512,) collapse alike, but merging them
    # at batch 1 only would give a batch of one kernels no other batch size has
    by_shape: dict[tuple, list[int]] = {}
    for k, st in enumerate(steps):
        if isinstance(st, KernelPlan) and not st.kernel.n_reduce:
            by_shape.setdefault((st.shape, st.space), []).append(k)
    arrays = {k: _n_arrays(steps[k]) for ks in by_shape.values() for k in ks}
    for group in by_shape.values():
        for ai, a in enumerate(group):
            if a in merged_into:
                continue
            for b in group[ai + 1:]:
                if b in merged_into:
                    continue
                sa, sb = steps[a], steps[b]
                if arrays[a] + arrays[b] > MAX_OPERANDS:
                    continue
                if (anc[b] >> a) & 1 or (anc[a] >> b) & 1:
                    continue
                lo, hi = min(span[a][0], span[b][0]), max(span[a][1], span[b][1])
                if extern_between(lo, hi):
                    continue
                span[a] = (lo, hi)
                steps[a] = _concat_kernels(sa, sb)
                arrays[a] = _n_arrays(steps[a])
                parts.setdefault(a, [sa]).append(sb)
                merged_into[b] = a
                # the merged step depends on what either did; whatever depended on either
                # depends on it (and so on everything it depends on)
                both = anc[a] | anc[b]
                anc[a] = anc[b] = both
                ab = (1 << a) | (1 << b)
                for x in range(len(anc)):
                    if anc[x] & ab:
                        anc[x] |= both | ab
    # the parts in one canonical order (by root node), whatever order the steps came in: the
    # same kernel at every batch size, so it is compiled once
    for a, ks in parts.items():
        ks = sorted(ks, key=lambda k: k.root)
        merged = ks[0]
        for k in ks[1:]:
            merged = _concat_kernels(merged, k)
        steps[a] = merged
    fp.steps = [s for k, s in enumerate(steps) if k not in merged_into]


def _merge_chains(fp: FusionPlan) -> None:
    """Vertical fusion: an elementwise kernel that reads a value stored by another elementwise
    kernel over the same launch shape, at the same point it was written, is computed by that
    kernel, right after it (the value is still stored, for its other readers).  A chain of
    small kernels, such as an LSTM step's gates, cell and hidden state each read again by the
    backward pass, becomes one launch and one pass.

    ``b`` joins its producer ``a`` when every buffer of ``a`` it reads it reads pointwise, no
    step between them (``b`` reading another step that reads ``a``) would make a cycle, and no
    extern step lies between them in the program (as for :func:`_merge_siblings`).  Kernels
    of one space whose operands collapsed it differently (a step's gates, read from strided
    slices over (batch, hidden), and its cell over batch * hidden contiguous elements) are both
    launched over the collapse their operands share (:func:`_over_one_shape`).
    """
    pos = [_program_position(fp, k) for k in range(len(fp.steps))]
    externs = sorted(p for p, st in zip(pos, fp.steps) if isinstance(st, ExternPlan))
    steps: list[Any] = list(fp.steps)
    dag = _step_dag(fp)
    order = list(nx.topological_sort(dag))
    anc = [0] * len(steps)               # step -> bitset of the steps it depends on
    for k in order:
        for p in dag.predecessors(k):
            anc[k] |= anc[p] | (1 << p)
    alive = set(range(len(steps)))
    for b in order:
        sb = steps[b]
        if not _chainable(sb):
            continue
        for a in sorted(dag.predecessors(b)):
            sa = steps[a]
            if not (_chainable(sa) and sa.space == sb.space):
                continue
            pair = (sa, sb) if sa.shape == sb.shape else _over_one_shape(sa, sb)
            if pair is None:
                continue
            sa, sb_a = pair
            if _n_chained_arrays(sa, sb_a) > MAX_CHAIN_OPERANDS or _reads_elsewhere(sa, sb_a, fp.aliases):
                continue
            lo, hi = sorted((pos[a], pos[b]))
            i = bisect.bisect_right(externs, lo)
            if i < len(externs) and externs[i] < hi:
                continue
            if any(p != a and (anc[p] >> a) & 1 for p in dag.predecessors(b)):
                continue                # b also reads a step that reads a: a cycle
            steps[a] = _chain_kernels(sa, sb_a)
            pos[a] = min(pos[a], pos[b])
            # a takes b's place in the step DAG, and in every step's ancestors
            for p in list(dag.predecessors(b)):
                if p != a:
                    dag.add_edge(p, a)
            for u in list(dag.successors(b)):
                dag.add_edge(a, u)
            dag.remove_node(b)
            anc[a] |= anc[b] & ~(1 << a)
            for x in range(len(anc)):
                if (anc[x] >> b) & 1:
                    anc[x] |= anc[a] | (1 << a)
            alive.discard(b)
            break
    fp.steps = [s for k, s in enumerate(steps) if k in alive]


def _chainable(k: Any) -> bool:
    return isinstance(k, KernelPlan) and not k.kernel.n_reduce and k.merge


def _over_one_shape(a: KernelPlan, b: KernelPlan) -> tuple[KernelPlan, KernelPlan] | None:
    """``a`` and ``b`` (elementwise, of one uncollapsed space) launched over the collapse of
    that space all their operands allow, or None when either's strides over it are unknown."""
    n_a, n_b = len(a.inputs) + len(a.outputs), len(b.inputs) + len(b.outputs)
    if len(a.space_strides) != n_a or len(b.space_strides) != n_b:
        return None
    shape, strides, _ = _collapse(a.space, list(a.space_strides) + list(b.space_strides), 0, merge=True)
    return _relaunched(a, shape, strides[:n_a]), _relaunched(b, shape, strides[n_a:])


def _relaunched(k: KernelPlan, shape: tuple[int, ...], strides: list[tuple[int, ...]]) -> KernelPlan:
    """Elementwise kernel ``k`` over launch ``shape``, its operands (inputs, then outputs) at
    ``strides``: its stages name no dim (no index, select by range or gather), so only the
    operands' layouts change."""
    if shape == k.shape:
        return k
    n_in = len(k.inputs)
    views = [View(shape, st, v.offset) for (_, v), st in zip(k.inputs + k.outputs, strides)]

    def operand(old: kir.Operand, v: View) -> kir.Operand:
        return kir.Operand(old.dtype, tuple(_layout(st) for st in v.strides))
    ops = k.kernel.inputs + k.kernel.outputs
    kernel = kir.Kernel(k.kernel.name, len(shape), 0,
                        tuple(operand(o, v) for o, v in zip(ops[:n_in], views[:n_in])),
                        tuple(operand(o, v) for o, v in zip(ops[n_in:], views[n_in:])), k.kernel.stages)
    return KernelPlan(kernel, shape, [(node, v) for (node, _), v in zip(k.inputs, views[:n_in])],
                      [(node, v) for (node, _), v in zip(k.outputs, views[n_in:])], k.members, k.root,
                      k.space, k.space_strides, 0, k.merge)


def _reads_elsewhere(a: KernelPlan, b: KernelPlan, aliases: dict[int, tuple[int, View]]) -> bool:
    """Whether ``b`` reads a buffer ``a`` writes other than at the point ``a`` writes it."""
    written = set(a.outputs)
    written_nodes = {node for node, _ in a.outputs}
    for node, view in b.inputs:
        if node in written_nodes:
            if (node, view) not in written:
                return True
            continue
        while node in aliases:
            node = aliases[node][0]
            if node in written:
                return True
    return False


def _chain_kernels(a: KernelPlan, b: KernelPlan) -> KernelPlan:
    """``a`` followed by ``b``, ``b``'s loads of what ``a`` stores replaced by ``a``'s
    expressions for them (computed once per point)."""
    stored = {out: st.expr for out, st in zip(a.outputs, _stores_by_output(a.kernel))}
    return _join_kernels(a, b, stored)


def _stores_by_output(k: kir.Kernel) -> list[kir.Store]:
    """The store of each output of an elementwise kernel, in output order."""
    by_output = {st.output: st for st in k.stages if isinstance(st, kir.Store)}
    return [by_output[i] for i in range(len(k.outputs))]


def _concat_kernels(a: KernelPlan, b: KernelPlan) -> KernelPlan:
    """One kernel running ``a``'s stages, then ``b``'s (horizontal fusion)."""
    return _join_kernels(a, b, {})


def _join_kernels(a: KernelPlan, b: KernelPlan, stored: dict[tuple[int, View], kir.Expr]) -> KernelPlan:
    """``a``'s stages then ``b``'s over one launch, operands shared; ``b``'s loads of a (node,
    view) in ``stored`` become that expression instead."""
    inputs = list(a.inputs)
    n_a = len(a.inputs)
    raw = list(a.space_strides[:n_a])
    replace: dict[int, kir.Expr] = {}
    remap: dict[int, int] = {}
    for i, operand in enumerate(b.inputs):
        if operand in stored:
            replace[i] = stored[operand]
            continue
        if operand not in inputs:
            inputs.append(operand)
            raw.extend(b.space_strides[i:i + 1])
        remap[i] = inputs.index(operand)
    raw += a.space_strides[n_a:] + b.space_strides[len(b.inputs):]
    memo: dict[int, kir.Expr] = {}

    def rewrite(e: kir.Expr) -> kir.Expr:
        if id(e) in memo:
            return memo[id(e)]
        if isinstance(e, kir.Load):
            out: kir.Expr = replace[e.input] if e.input in replace else kir.Load(remap[e.input])
        elif isinstance(e, kir.Gather):
            out = kir.Gather(remap[e.input], e.dim, rewrite(e.index))
        elif isinstance(e, kir.Op):
            out = kir.Op(e.op, tuple(rewrite(x) for x in e.args), e.dtype)
        elif isinstance(e, kir.Piecewise):
            out = kir.Piecewise(e.dim, e.cuts, tuple(rewrite(x) for x in e.pieces))
        else:
            out = e
        memo[id(e)] = out
        return out

    n_out = len(a.outputs)
    stages = a.kernel.stages + tuple(kir.Store(st.output + n_out, rewrite(st.expr), st.over_reduce)
                                     for st in b.kernel.stages)
    ka, kb = a.kernel, b.kernel
    operands = {id(v): op for v, op in zip([v for _, v in a.inputs], ka.inputs)}
    operands.update({id(v): op for v, op in zip([v for _, v in b.inputs], kb.inputs)})
    kernel = kir.Kernel(name=f"{ka.name}+{kb.name}"[:60], ndim=ka.ndim, n_reduce=0,
                        inputs=tuple(operands[id(v)] for _, v in inputs),
                        outputs=ka.outputs + kb.outputs, stages=stages)
    return KernelPlan(kernel, a.shape, inputs, a.outputs + b.outputs, a.members | b.members, a.root,
                      a.space, raw if len(raw) == len(inputs) + len(a.outputs) + len(b.outputs) else [],
                      0, a.merge and b.merge)


def _order_steps(fp: FusionPlan) -> None:
    """Execution order: a step runs after the steps producing every buffer it reads; among the
    steps that are ready, the one whose first value comes first in the program.  Following the
    program's order keeps code written in blocks (attention over key blocks, a loop over time)
    block by block, so each block's temporaries are free for the next one to reuse."""
    dag = _step_dag(fp)
    if not nx.is_directed_acyclic_graph(dag):
        raise AssertionError("fusion created a cycle between kernels")
    pos = [_program_position(fp, k) for k in range(len(fp.steps))]
    fp.steps = [fp.steps[k] for k in nx.lexicographical_topological_sort(dag, key=lambda k: (pos[k], k))]


def _chain(g: Graph, nid: int) -> tuple[int, Path]:
    """Follow view ops down from ``nid``: (the first non-view node, the path of view ops)."""
    path: list = []
    while g.node(nid).op in VIEW_OPS:
        n = g.node(nid)
        path.append(_step(n, nid))
        nid = n.inputs[0]
    return nid, tuple(path)


def _step(n: Any, nid: int) -> tuple[str, tuple, tuple[int, ...], int]:
    return (n.op, tuple(sorted(n.params.items())), n.shape, nid)


def _apply_path(view: View, path: Path) -> View | None:
    for op, params, shape, _ in reversed(path):
        view = view.apply(op, dict(params), shape)
        if view is None:
            return None
    return view


def _failing_view_op(view: View, path: Path) -> int:
    """The node of the first view op (from the bottom) that strides cannot express."""
    for op, params, shape, nid in reversed(path):
        nxt = view.apply(op, dict(params), shape)
        if nxt is None:
            return nid
        view = nxt
    raise AssertionError("path is expressible")


COPIED = "copied: "     # reason prefix of values that must be real buffers, not views


def _view_alias(g: Graph, nid: int, materialized: dict[int, str]) -> tuple[int, View] | None:
    if materialized.get(nid, "").startswith(COPIED):
        return None
    base, path = _chain(g, nid)
    if base not in materialized and g.node(base).op != "input":
        if g.node(base).op == "iota" or (g.node(base).op == "constant" and not _is_buffer_source(g, base)):
            return None      # a broadcast constant: computed by a kernel, not stored
        # a stored constant (an array, a run-time number) is bound once; others are computed
        materialized[base] = f"read through a view by %{nid}"
    v = _apply_path(View.contiguous(g.node(base).shape), path)
    if v is None:
        return None
    return base, v


def _broadcast_number(g: Graph, nid: int) -> tuple[int, View] | None:
    """A one-element constant broadcast by views (a gradient's zeros) as a stride-0 view of the
    stored number: what a scatter_add's base is read as, so no kernel fills a buffer with it
    first (the scatter copies the base into its output anyway)."""
    base, path = _chain(g, nid)
    n = g.node(base)
    if not path or n.op != "constant" or math.prod(n.shape) != 1 or n.dtype.kind == "c":
        return None
    v = _apply_path(View.contiguous(n.shape), path)
    return None if v is None else (base, v)


def _operand_view(g: Graph, nid: int, materialized: dict[int, str], why: str) -> tuple[int, View]:
    base, path = _chain(g, nid)
    for k, (_, _, _, below) in enumerate(path[1:], 1):     # a view stored for a reshape above it
        if materialized.get(below, "").startswith(COPIED):
            v = _apply_path(View.contiguous(g.node(below).shape), path[:k])
            if v is not None:
                return below, v
    if base in materialized or _is_buffer_source(g, base):
        v = _apply_path(View.contiguous(g.node(base).shape), path)
        if v is not None:
            return base, v
    if nid not in materialized:
        base_view = View.contiguous(g.node(base).shape)
        if path and _apply_path(base_view, path) is None:
            # a reshape no strides can express (a gradient permuted to (O, N*P) for a GEMM):
            # store what that reshape reads, computed by one kernel; the rest is a view of it
            failing = _failing_view_op(base_view, path)
            stored = g.node(failing).inputs[0]
            if stored not in materialized:
                raise NeedsMaterialization(stored, f"{COPIED}read by reshape %{failing}, which no strides "
                                                   "can express")
        raise NeedsMaterialization(nid, why)
    return nid, View.contiguous(g.node(nid).shape)


class KernelBuilder:
    """Builds the kir kernel computing materialized node ``root`` (and its fused stages)."""

    def __init__(self, g: Graph, materialized: dict[int, str], root: int) -> None:
        self.g = g
        self.materialized = materialized
        self.root = root
        self.members: set[int] = set()
        self.loads: dict[tuple[int, View], int] = {}
        self.stage_of: dict[int, int] = {}     # absorbed reduction -> stage index
        self._memo: dict[tuple[int, Path], kir.Expr] = {}
        self._cost_memo: dict[int, int] = {}        # _cost with this build's (fixed) stored set
        self._recomputed: dict[int, bool] = {}

    # ------------------------------------------------------------------ planning
    def build(self) -> KernelPlan:
        g, root = self.g, self.root
        rn = g.node(root)
        space = g.node(rn.inputs[0]).shape if rn.op in REDUCTIONS else rn.shape
        prefix: Path = ()
        absorbed = self._absorbable(root, space, prefix)
        axes = None
        if rn.op in REDUCTIONS:
            axes = rn.params["axes"]
        elif absorbed:
            axes = g.node(absorbed[0]).params["axes"]
        else:
            space, prefix, absorbed, axes = self._epilogue(root)
        absorbed = [r for r in absorbed if g.node(r).params["axes"] == axes]
        ndim = len(space)
        reduce_dims = list(axes) if axes is not None else []
        self.perm = [d for d in range(ndim) if d not in reduce_dims] + reduce_dims
        self.space = tuple(space)
        self.n_reduce = len(reduce_dims)
        stages: list[Any] = []
        outputs: list[tuple[int, View]] = []
        for r in absorbed:
            self._reduce_stage(r, stages)
            self.members.add(r)      # (if r is also stored, its own kernel stores it: one producer each)
        if rn.op in REDUCTIONS:
            self._reduce_stage(root, stages)
            self._store(root, self._reduced_view(root), self._acc(root), False, stages, outputs)
        else:
            # with a prefix, the root is an epilogue stored once per outer point
            view = _apply_path(View.contiguous(rn.shape), prefix)
            over = self.n_reduce > 0 and not prefix
            self._store(root, self._iter_view(view), self.expr(root, prefix), over, stages, outputs)
        self.members.add(root)
        return self._finish(stages, outputs)

    def _reduce_stage(self, r: int, stages: list) -> None:
        """The stage(s) folding reduction ``r``'s input: one per part of a complex value."""
        self.stage_of[r] = len(stages)
        op, dtype = REDUCTIONS[self.g.node(r).op], self._reduce_dtype(r)
        expr = self.expr(self.g.node(r).inputs[0], ())
        stages.extend(kir.Reduce(op, e, dtype) for e in (expr if isinstance(expr, Pair) else (expr,)))

    def _acc(self, r: int) -> kir.Expr | Pair:
        """Reduction ``r``'s result at the current outer point."""
        s = self.stage_of[r]
        return Pair(kir.Acc(s), kir.Acc(s + 1)) if self.g.node(r).dtype.kind == "c" else kir.Acc(s)

    @staticmethod
    def _store(node: int, view: View, expr: kir.Expr | Pair, over: bool, stages: list,
               outputs: list[tuple[int, View]]) -> None:
        """Store ``expr`` into ``node``'s buffer at ``view`` (a complex pair: each part through
        its float view of the interleaved memory)."""
        parts = zip(_part_views(view), expr) if isinstance(expr, Pair) else ((view, expr),)
        for v, e in parts:
            outputs.append((node, v))
            stages.append(kir.Store(len(outputs) - 1, e, over))

    def _epilogue(self, root: int) -> tuple[tuple[int, ...], Path, list[int], tuple[int, ...] | None]:
        """Try computing ``root`` from a reduction's result in the reduction's own kernel.

        ``root`` (shape T, with as many elements as the reduction's result) is viewed as the
        reduction's keep-dims shape broadcast over its input space S; if every reduction it
        reads then reads back broadcast, the kernel iterates S and stores ``root`` once per
        outer point (``mean = sum * (1/n)``, a loss after its reduction).
        """
        g = self.g
        rn = g.node(root)
        for r in self._reductions_below(root):
            node = g.node(r)
            if math.prod(node.shape) != math.prod(rn.shape):
                continue
            space = g.node(node.inputs[0]).shape
            prefix: Path = (("expand", (("shape", space),), space, root),
                            ("reshape", (("shape", node.shape),), node.shape, root))
            if _apply_path(View.contiguous(rn.shape), prefix) is None:
                continue
            absorbed = self._absorbable(root, space, prefix)
            if r in absorbed:
                return space, prefix, absorbed, node.params["axes"]
        return rn.shape, (), [], None

    def _reductions_below(self, root: int) -> list[int]:
        """Reductions the root's fused expression reads (through unmaterialized nodes)."""
        found, stack, seen = [], [root], set()
        while stack:
            nid = stack.pop()
            if nid in seen:
                continue
            seen.add(nid)
            n = self.g.node(nid)
            if n.op in REDUCTIONS and nid != root and not _is_extern(self.g, nid):
                found.append(nid)      # (an extern one, a complex prod, is a buffer read as such)
                continue
            if nid != root and nid in self.materialized and n.op not in VIEW_OPS:
                continue
            if n.op in ("input", "constant", "iota") or _is_extern(self.g, nid) or _is_piecewise(n):
                continue
            stack.extend(n.inputs)
        return found

    def _reduce_dtype(self, r: int) -> str:
        return kir_complex.lane_dtype(self.g.node(r).dtype.name)

    def _absorbable(self, root: int, space: tuple[int, ...], prefix: Path) -> list[int]:
        """Reductions over ``space`` that the root's expression reads broadcast back (topo order)."""
        found: list[int] = []
        seen: set[tuple[int, Path]] = set()

        def walk(nid: int, path: Path, top: bool) -> None:
            if (nid, path) in seen:
                return
            seen.add((nid, path))
            n = self.g.node(nid)
            if not top and nid in self.materialized and (n.op not in REDUCTIONS or
                                                         self.materialized[nid] == STORED_REDUCTION
                                                         or _is_extern(self.g, nid)):
                return
            if n.op in REDUCTIONS:
                if not top:
                    same_space = self.g.node(n.inputs[0]).shape == space
                    if not same_space or not self._is_broadcast_back(nid, path, space):
                        return
                    if nid not in found:
                        found.append(nid)
                walk(n.inputs[0], (), False)
                return
            if n.op in VIEW_OPS:
                walk(n.inputs[0], path + (_step(n, nid),), False)
                return
            if n.op in ("input", "constant", "iota") or _is_extern(self.g, nid) or _is_piecewise(n):
                return      # (a select by range is computed in elementwise kernels only)
            for i in n.inputs:
                walk(i, path, False)

        walk(root, prefix, True)
        return sorted(found, key=self.g.topo_index().__getitem__)

    def _is_broadcast_back(self, r: int, path: Path, space: tuple[int, ...]) -> bool:
        rshape = self.g.node(r).shape
        v = _apply_path(View.contiguous(rshape), path)
        if v is None or v.shape != tuple(space) or v.offset != 0:
            return False
        axes = self.g.node(r).params["axes"]
        want = contiguous_strides(rshape)
        # an extent-1 dim is broadcast whatever its stride (batch 1 reads back as batch N does)
        return all(space[d] == 1 or ((s == 0) if d in axes else s == want[d])
                   for d, s in enumerate(v.strides))

    # ------------------------------------------------------------------ expressions
    def expr(self, nid: int, path: Path) -> kir.Expr:
        key = (nid, path)
        e = self._memo.get(key)
        if e is None:
            e = self._memo[key] = self._expr(nid, path)
        return e

    def _expr(self, nid: int, path: Path) -> kir.Expr:
        g = self.g
        n = g.node(nid)
        if nid in self.stage_of and self._is_broadcast_back(nid, path, self.space):
            return self._acc(nid)
        if n.op == "constant":
            u = _inline(n)
            if u is not None and n.dtype.kind == "c":
                f = kir_complex.lane_dtype(n.dtype.name)
                return Pair(kir.Const(u.real, f), kir.Const(u.imag, f))
            if u is not None:
                return kir.Const(u, n.dtype.name)
        if n.op == "iota":
            return self._iota(n, path)
        if n.op in VIEW_OPS and nid != self.root and (
                nid not in self.materialized or _view_alias(g, nid, self.materialized) is not None):
            # views stay index arithmetic, even of buffers (unless the view had to be copied)
            self.members.add(nid)
            return self.expr(n.inputs[0], path + (_step(n, nid),))
        stored = nid in self.materialized and nid != self.root and not self._recompute(nid)
        if stored or n.op == "input" or n.op == "constant" or (
                n.op in REDUCTIONS and nid not in self.stage_of):
            if nid not in self.materialized and n.op not in ("input", "constant"):
                raise NeedsMaterialization(nid, "reduction read in a way no consumer kernel can fuse "
                                                "(not broadcast back over its axes)")
            return self._load(nid, path)
        self.members.add(nid)
        if n.op in VIEW_OPS:
            return self.expr(n.inputs[0], path + (_step(n, nid),))
        if n.op == "take":          # a fused gather (see _is_fused_gather)
            return self._gather(nid, path)
        if _is_piecewise(n):
            if self.n_reduce:
                raise NeedsMaterialization(nid, f"{n.op} read by a reduction kernel (selects by index "
                                                f"range are computed in elementwise kernels)")
            return getattr(self, f"_{n.op}")(nid, path)
        prim = PRIMS[n.op]
        if prim.kind != "elementwise" or prim.lower is None:
            raise NeedsMaterialization(nid, f"{n.op} cannot be computed inside a kernel")
        args = [self.expr(i, path) for i in n.inputs]
        if n.dtype.kind == "c" or any(isinstance(a, Pair) for a in args):
            out = kir_complex.lower(n.op, args, [g.node(i).dtype.name for i in n.inputs], n.dtype.name)
            if out is None:
                raise AssertionError(f"{n.op} on complex values has no kernel lowering (a host step)")
            return out
        params = {k: v for k, v in n.params.items() if k != "dtype"}   # the result dtype is passed as such
        return prim.lower(args, n.dtype.name, **params)

    def _recompute(self, nid: int) -> bool:
        """Whether to compute a stored graph output again here rather than read it back.

        Cheap elementwise outputs (an optimizer's new ``m`` and ``v``) are recomputed by the
        kernels that read them, which frees those kernels to be merged with the one storing them.
        """
        known = self._recomputed.get(nid)
        if known is not None:
            return known
        n = self.g.node(nid)
        elementwise = n.op in PRIMS and PRIMS[n.op].kind == "elementwise"
        if self.materialized[nid] != "graph output" or not elementwise \
                or _is_extern(self.g, nid):       # (a host step: complex round, say)
            again = False
        else:
            # its cost were it not stored: its own op and its inputs' (none of which reaches it)
            again = _own_cost(n) + sum(_cost(self.g, i, self.materialized, self._cost_memo)
                              for i in n.inputs) <= RECOMPUTE_LIMIT
        self._recomputed[nid] = again
        return again

    def _load(self, nid: int, path: Path) -> kir.Expr:
        v = _apply_path(View.contiguous(self.g.node(nid).shape), path)
        if v is None:
            # the reshape closest to the root cannot be expressed: store what it reads
            failing = _failing_view_op(View.contiguous(self.g.node(nid).shape), path)
            raise NeedsMaterialization(self.g.node(failing).inputs[0],
                                       f"{COPIED}read by reshape %{failing}, which no strides can express")
        if self.g.node(nid).dtype.kind == "c":
            re, im = (self._load_view(nid, part) for part in _part_views(v))
            return Pair(re, im)
        return self._load_view(nid, v)

    def _load_view(self, nid: int, v: View) -> kir.Load:
        key = (nid, self._iter_view(v))
        if key not in self.loads:
            self.loads[key] = len(self.loads)
        return kir.Load(self.loads[key])

    def _gather(self, nid: int, path: Path) -> kir.Expr:
        """``take(a, idx, axis)`` read at ``path``: ``a`` at the point with its ``axis`` coordinate
        from ``idx`` (a :class:`kir.Gather`, moved along the kernel's gather dim, see _finish)."""
        g = self.g
        n = g.node(nid)
        a, idx = n.inputs
        axis = n.params["axis"]
        table = g.node(a)
        if a not in self.materialized and table.op not in ("input", "constant"):
            raise NeedsMaterialization(a, "table of a gather (indexed loads read a buffer)")
        k = len(g.node(idx).shape)
        strides = contiguous_strides(table.shape)
        # the table over take's output: its axis replaced by idx's dims, which do not move it
        base = View(n.shape, strides[:axis] + (0,) * k + strides[axis + 1:], 0)
        v = _apply_path(base, path)
        if v is None:
            raise NeedsMaterialization(nid, "gather read by a reshape no strides can express")
        key = (a, _Gathered(self._iter_view(v), strides[axis]))
        if key not in self.loads:
            self.loads[key] = len(self.loads)
        lifted = (1,) * axis + g.node(idx).shape + (1,) * (len(n.shape) - axis - k)
        index = self.expr(idx, path + (("expand", (("shape", n.shape),), n.shape, nid),
                                       ("reshape", (("shape", lifted),), lifted, nid)))
        return kir.Gather(self.loads[key], GATHER_DIM, index)

    def _iota(self, n: Any, path: Path) -> kir.Expr:
        axis = n.params["axis"]
        base = View(n.shape, tuple(1 if d == axis else 0 for d in range(len(n.shape))), 0)
        v = _apply_path(base, path)
        if v is None:
            # an index ramp read through a reshape that strides cannot express (a 2-D ramp
            # flattened): store what the reshape reads, as for a load
            failing = _failing_view_op(base, path)
            raise NeedsMaterialization(self.g.node(failing).inputs[0],
                                       f"{COPIED}read by reshape %{failing}, which no strides can express")
        iv = self._iter_view(v)
        e: kir.Expr = kir.Const(iv.offset, "int64")
        for j, s in enumerate(iv.strides):
            if s:
                term: kir.Expr = kir.Index(j)
                if s != 1:
                    term = kir.Op("mul", (term, kir.Const(s, "int64")), "int64")
                e = term if (isinstance(e, kir.Const) and e.value == 0) else kir.Op("add", (e, term), "int64")
        return e if n.dtype.name == "int64" else kir.Op("cast", (e,), n.dtype.name)

    # ------------------------------------------------------------------ selects by index range
    def _select(self, nid: int, axis: int, path: Path, parts: list) -> kir.Expr:
        """The value that is ``make()`` where ``nid``'s index along ``axis`` lies in ``[lo, hi)``,
        for ``(lo, hi, make)`` in ``parts`` (which tile the axis): a :class:`kir.Piecewise` along
        the iteration dim that walks ``axis`` (through the views in ``path``)."""
        shape = self.g.node(nid).shape
        v = _apply_path(View(shape, tuple(int(d == axis) for d in range(len(shape))), 0), path)
        iv = None if v is None else self._iter_view(v)
        dims = [] if iv is None else [j for j, (n, s) in enumerate(zip(iv.shape, iv.strides)) if s and n > 1]
        if iv is None or len(dims) > 1:
            # a reshape that merges the axis with others: no single loop walks it
            raise NeedsMaterialization(nid, f"{self.g.node(nid).op} read through a reshape of its "
                                            f"axis {axis}")
        if not dims:        # one position along the axis (any, in an empty space)
            return next((make for lo, hi, make in parts if lo <= iv.offset < hi), parts[0][2])()
        j, off, s = dims[0], iv.offset, iv.strides[dims[0]]
        n = iv.shape[j]
        ranges = []
        for lo, hi, make in parts:     # iteration indices i with lo <= off + s * i < hi
            a, b = (-((off - lo) // s), -((off - hi) // s)) if s > 0 else \
                ((off - hi) // -s + 1, (off - lo) // -s + 1)
            a, b = max(a, 0), min(b, n)
            if a < b:
                ranges.append((a, make))
        ranges.sort(key=lambda r: r[0])
        if len(ranges) == 1:
            return ranges[0][1]()
        return kir.Piecewise(j, tuple(a for a, _ in ranges[1:]), tuple(make() for _, make in ranges))

    def _window(self, nid: int, path: Path, start: tuple[int, ...],
                step: tuple[int, ...] | None = None) -> Path:
        """``path`` extended to read an operand of ``nid`` at index ``start + step * i``."""
        step = step or (1,) * len(start)
        return path + (("window", (("start", start), ("step", step)), self.g.node(nid).shape, nid),)

    def _const(self, nid: int, value: Any) -> kir.Expr:
        dtype = self.g.node(nid).dtype
        return kir.Const(np.array(value).astype(dtype).item(), dtype.name)

    def _concat(self, nid: int, path: Path) -> kir.Expr:
        n = self.g.node(nid)
        axis, parts, at = n.params["axis"], [], 0
        for src in n.inputs:
            k = self.g.node(src).shape[axis]
            start = tuple(-at if d == axis else 0 for d in range(len(n.shape)))
            parts.append((at, at + k,
                          lambda src=src, start=start: self.expr(src, self._window(nid, path, start))))
            at += k
        return self._select(nid, axis, path, parts)

    def _pad(self, nid: int, path: Path) -> kir.Expr:
        n = self.g.node(nid)
        pads, src = n.params["pads"], n.inputs[0]
        box = [(d, lo, m - hi) for d, ((lo, hi), m) in enumerate(zip(pads, n.shape)) if lo or hi]
        fill = self._const(nid, n.params["value"])
        start = tuple(-lo for lo, _ in pads)
        return self._box(nid, path, box, lambda: self.expr(src, self._window(nid, path, start)), lambda: fill)

    def _slice_scatter(self, nid: int, path: Path) -> kir.Expr:
        n = self.g.node(nid)
        base, src = n.inputs
        p, sshape = n.params, self.g.node(src).shape
        if not math.prod(sshape):
            return self.expr(base, path)
        # step 1 writes [b, b + k) from src[i - b]; step -1 writes (b - k, b] from src[b - i]
        start = tuple(-b if st > 0 else b for b, st in zip(p["start"], p["step"]))
        box = []
        for d, (b, st, k) in enumerate(zip(p["start"], p["step"], sshape)):
            lo = b if st > 0 else b - k + 1
            if lo or k != n.shape[d]:
                box.append((d, lo, lo + k))
        return self._box(nid, path, box, lambda: self.expr(src, self._window(nid, path, start, p["step"])),
                         lambda: self.expr(base, path))

    def _box(self, nid: int, path: Path, box: list, inside, outside) -> kir.Expr:
        """``inside()`` where ``nid``'s index lies in ``box`` (a ``(dim, lo, hi)`` per dim it
        bounds), ``outside()`` elsewhere: one select by range per bounded dim, nested."""
        if not box:
            return inside()
        (d, lo, hi), rest = box[0], box[1:]
        within = (lo, hi, lambda: self._box(nid, path, rest, inside, outside))
        n = self.g.node(nid).shape[d]
        return self._select(nid, d, path, [(0, lo, outside), within, (hi, n, outside)])

    def _iter_view(self, v: View) -> View:
        """A view over the root's logical space, reordered to the kernel's iteration order."""
        return View(tuple(v.shape[p] for p in self.perm), tuple(v.strides[p] for p in self.perm), v.offset)

    def _reduced_view(self, r: int) -> View:
        shape = self.g.node(r).shape
        strides = contiguous_strides(shape)
        axes = self.g.node(r).params["axes"]
        v = View(self.space, tuple(0 if d in axes else strides[d] for d in range(len(shape))), 0)
        return self._iter_view(v)

    # ------------------------------------------------------------------ the kernel
    def _finish(self, stages: list, outputs: list[tuple[int, View]]) -> KernelPlan:
        g = self.g
        shape = tuple(self.space[p] for p in self.perm)
        inputs = sorted(self.loads, key=self.loads.__getitem__)
        steps = {i: v.step for i, (_, v) in enumerate(inputs) if isinstance(v, _Gathered)}
        inputs = [(node, v.view if isinstance(v, _Gathered) else v) for node, v in inputs]
        views = [v for _, v in inputs] + [v for _, v in outputs]
        uses_index = any(isinstance(e, (kir.Index, kir.Piecewise))
                         for st in stages for e in kir.walk(st.expr))
        space, space_strides = shape, [v.strides for v in views]
        shape, strides, n_reduce = _collapse(shape, space_strides, self.n_reduce, merge=not uses_index)
        if steps:
            # the gather dim: first, extent 1; only a gathered table moves along it, by its row
            # stride, which the kernel reads as it reads every stride (not compiled in)
            shape = (1,) + shape
            strides = [(steps.get(i, 0),) + s for i, s in enumerate(strides)]
            stages = [_with_gather_dim(st) for st in stages]
            space_strides = []              # (a batch of one reuses no gathering kernel)
        views = [View(shape, s, v.offset) for v, s in zip(views, strides)]
        n_in = len(inputs)

        def operand(node: int, v: View) -> kir.Operand:
            # (a complex buffer is read and written through float views of its parts)
            dtype = kir_complex.lane_dtype(g.node(node).dtype.name)
            return kir.Operand(dtype, tuple(_layout(s) for s in v.strides))

        kernel = kir.Kernel(
            name=f"{g.node(self.root).op}_{self.root}",
            ndim=len(shape), n_reduce=n_reduce,
            inputs=tuple(operand(node, v) for (node, _), v in zip(inputs, views[:n_in])),
            outputs=tuple(operand(node, v) for (node, _), v in zip(outputs, views[n_in:])),
            stages=tuple(stages))
        return KernelPlan(kernel, shape, [(node, v) for (node, _), v in zip(inputs, views[:n_in])],
                          [(node, v) for (node, _), v in zip(outputs, views[n_in:])], self.members, self.root,
                          space, space_strides, self.n_reduce, not uses_index)


GATHER_DIM = -1      # a Gather's dim while its kernel is built; dim 0 of the finished kernel


@dataclass(frozen=True)
class _Gathered:
    """A gathered table's operand: its view (the gathered axis not moving it) and its step along
    that axis, in elements."""
    view: View
    step: int


def _with_gather_dim(st: Any) -> Any:
    """A stage of a gathering kernel with dim 0 inserted: every dim moves up one."""
    memo: dict[int, kir.Expr] = {}

    def shift(e: kir.Expr) -> kir.Expr:
        if id(e) in memo:
            return memo[id(e)]
        if isinstance(e, kir.Index):
            out: kir.Expr = kir.Index(e.dim + 1)
        elif isinstance(e, kir.Gather):
            out = kir.Gather(e.input, 0 if e.dim == GATHER_DIM else e.dim + 1, shift(e.index))
        elif isinstance(e, kir.Piecewise):
            out = kir.Piecewise(e.dim + 1, e.cuts, tuple(shift(p) for p in e.pieces))
        elif isinstance(e, kir.Op):
            out = kir.Op(e.op, tuple(shift(a) for a in e.args), e.dtype)
        else:
            out = e
        memo[id(e)] = out
        return out

    if isinstance(st, kir.Reduce):
        return kir.Reduce(st.op, shift(st.expr), st.dtype)
    return kir.Store(st.output, shift(st.expr), st.over_reduce)


def _part_views(v: View) -> tuple[View, View]:
    """The real and imaginary parts of a view of complex memory, as views of its float lanes
    (strides and offset in part elements: two per complex element)."""
    strides = tuple(2 * s for s in v.strides)
    return View(v.shape, strides, 2 * v.offset), View(v.shape, strides, 2 * v.offset + 1)


def _layout(stride: int) -> str:
    return "b" if stride == 0 else "c" if stride == 1 else "s"


def _collapse(shape: tuple[int, ...], strides: list[tuple[int, ...]], n_reduce: int, merge: bool,
              keep: frozenset[int] = frozenset()) -> tuple[tuple[int, ...], list[tuple[int, ...]], int]:
    """Drop extent-1 dims (except those in ``keep``) and merge adjacent dims that every operand
    walks contiguously."""
    n_outer = len(shape) - n_reduce
    regions = [(list(range(n_outer))), list(range(n_outer, len(shape)))]
    new_shape: list[int] = []
    new_strides: list[list[int]] = [[] for _ in strides]
    new_reduce = 0
    for r, dims in enumerate(regions):
        kept = [d for d in dims if shape[d] != 1 or d in keep] if merge else list(dims)
        if r == 1 and dims and not kept:
            kept = [dims[-1]]              # a reduce space keeps at least one dim
        groups: list[list[int]] = []
        for d in kept:
            if merge and groups and all(s[groups[-1][-1]] == s[d] * shape[d] for s in strides):
                groups[-1].append(d)
            else:
                groups.append([d])
        for grp in groups:
            new_shape.append(int(np.prod([shape[d] for d in grp])))
            for k, s in enumerate(strides):
                new_strides[k].append(s[grp[-1]])
            if r == 1:
                new_reduce += 1
    return tuple(new_shape), [tuple(s) for s in new_strides], new_reduce
