"""From an optimized graph to a runnable program: split reductions, fuse, schedule, plan buffers.

The result is a :class:`runtime.program.Program` (data) wrapped with the runtime that runs it.
Kernels are compiled through the structural kernel cache, so a new batch size re-traces but
reuses every compiled kernel.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from codegen import kir
from runtime import program as rp

from . import collector, fusion, kernel_reuse
from .graph import Graph
from .logs import topic
from .ops import PRIMS, AVal
from .passes import add_tree_leaves, dce
from .tensors import Device
from .views import View

log_fusion = topic("fusion")
log_kernels = topic("kernels")

SPLIT_MIN = 1 << 17       # a full reduction at least this long is split so every core takes part
SPLIT_PARTS = (64, 48, 32, 16, 8, 4, 2)
# Updates smaller than this are copied back rather than re-planned to be done in place.
IN_PLACE_MIN_BYTES = 1 << 16


def split_reductions(g: Graph) -> int:
    """Rewrite ``reduce(x)`` over everything into ``reduce(reduce(reshape(x, (P, N/P)), 1), 0)``.

    A kernel is parallel over its outer points only; a full reduction has one.
    """
    count = 0
    for nid in g.topo():
        n = g.node(nid)
        if n.op not in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod"):
            continue
        src = g.node(n.inputs[0])
        outer = math.prod(s for d, s in enumerate(src.shape) if d not in n.params["axes"])
        total = math.prod(src.shape)
        if outer != 1 or total < SPLIT_MIN:
            continue
        parts = next((p for p in SPLIT_PARTS if total % p == 0), None)
        if parts is None:
            continue
        dtype = n.dtype
        r = g.add("reshape", (n.inputs[0],), {"shape": (parts, total // parts)},
                  AVal((parts, total // parts), src.dtype))
        partial = g.add(n.op, (r,), {"axes": (1,)}, AVal((parts, 1), dtype))
        final = g.add(n.op, (partial,), {"axes": (0,)}, AVal((1, 1), dtype))
        out = g.add("reshape", (final,), {"shape": n.shape}, n.aval)
        g.replace_all_uses(nid, out)
        g.remove(nid)
        count += 1
    return count


def device_gathers(g: Graph) -> int:
    """``take(a, index_check(i))`` -> ``take_checked(a, index_check(i))``: where kernels have no
    indexed loads (PTX) a gather is a step of its own, the device's gather kernel (which needs
    the checked indices) or else the host's."""
    count = 0
    for nid in g.topo():
        n = g.node(nid)
        if n.op == "take" and g.node(n.inputs[1]).op == "index_check":
            new = g.add("take_checked", n.inputs, n.params, n.aval, n.source)
            g.replace_all_uses(nid, new)
            g.remove(nid)
            count += 1
    dce(g)
    return count


class CompiledProgram:
    """A fused program ready to run on one device: ``outputs = prog(list_of_input_arrays)``.

    On CUDA the inputs are dense ``runtime.cuda.DeviceArray`` objects.  Every kernel is compiled
    to PTX here (no GPU needed: that is what ``lower(..., device="cuda")`` shows); the GPU itself is
    first touched by the first call.
    """

    def __init__(self, g: Graph, plan: fusion.FusionPlan, program: rp.Program, device: Device) -> None:
        self.graph = g
        self.plan = plan
        self.program = program
        self.device = device
        # seconds per compile phase (fusion, schedule, codegen) and where the kernels came from
        # ({"compiled", "disk_hits", "memory_hits"}); filled in by compile_graph
        self.phase_times: dict[str, float] = {}
        self.kernel_sources: dict[str, int] = {}
        self.ptx: dict[str, Any] = {}       # kernel key -> codegen.ptx.PtxKernel (CUDA only)
        self._run: Any = None
        if device.type == "cuda":
            from .device import compile_ptx
            self.ptx = compile_ptx(program, device)
        else:
            from runtime.cpu import CpuProgram
            self._run = CpuProgram(program)

    @property
    def kernels(self) -> list[Any]:
        """The fused kernels in launch order, each with its generated code as ``.source``."""
        from .device import LoweredKernel
        return [LoweredKernel.of(s.kernel, self.ptx.get(s.kernel.key))
                for s in self.plan.steps if isinstance(s, fusion.KernelPlan)]

    @property
    def n_kernels(self) -> int:
        return sum(isinstance(s, fusion.KernelPlan) for s in self.plan.steps)

    def __call__(self, inputs: list[Any]) -> list[Any]:
        if self._run is None:
            from .device import cuda_device
            dev, program = cuda_device(self.device), self.program
            self._run = lambda *bufs: dev.run_program(program, [b.buffer for b in bufs])
        return self._run(*inputs)


def _joined(g: Graph, xs: list[int], axis: int) -> int:
    """``concat(xs, axis)`` of 2-D values; transposed views joined as the transpose of their
    sources joined the other way (the copy then writes and reads rows); rows a concatenation
    in the graph already holds in this order, a view of it (no copy)."""
    nodes = [g.node(x) for x in xs]
    if all(n.op == "permute" and n.params["perm"] == (1, 0) for n in nodes):
        inner = _joined(g, [n.inputs[0] for n in nodes], 1 - axis)
        shape = g.node(inner).shape
        return g.add("permute", (inner,), {"perm": (1, 0)}, AVal((shape[1], shape[0]), nodes[0].dtype))
    if axis == 0:
        found = _concatenated(g, xs)
        if found is not None:
            return _rows_of(g, *found, len(xs))
    shape = list(nodes[0].shape)
    shape[axis] = sum(n.shape[axis] for n in nodes)
    return g.add("concat", tuple(xs), {"axis": axis}, AVal(tuple(shape), nodes[0].dtype))


def _is_zero(g: Graph, x: int) -> bool:
    """Is ``x`` a constant of zeros (through reshapes and broadcasts)?"""
    n = g.node(x)
    while n.op in ("reshape", "expand"):
        n = g.node(n.inputs[0])
    return n.op == "constant" and not n.params.get("runtime") and not np.any(n.params["value"])


def _piece_source(g: Graph, piece: int) -> int:
    """The 2-D value a concatenation's piece copies: through a reshape to a leading unit dim
    and an added zero (the pieces of a sum of pads, see :mod:`tracejit.passes`)."""
    n = g.node(piece)
    if n.op == "add" and _is_zero(g, n.inputs[1]):
        piece, n = n.inputs[0], g.node(n.inputs[0])
    if n.op == "reshape" and len(n.shape) == 3 and n.shape[0] == 1 \
            and g.node(n.inputs[0]).shape == n.shape[1:]:
        piece = n.inputs[0]
    return piece


def _concatenations_near(g: Graph, x: int, depth: int = 3) -> list[int]:
    """Concatenations along dim 0 reading ``x`` within ``depth`` nodes (through a piece's
    reshape and added zero)."""
    found, frontier = [], [x]
    for _ in range(depth):
        frontier = [u for y in frontier for u in g.users(y)]
        found += [u for u in frontier if g.node(u).op == "concat" and g.node(u).params["axis"] == 0]
    return list(dict.fromkeys(found))


def _concatenated(g: Graph, xs: list[int]) -> tuple[int, int] | None:
    """(concatenation, first piece) of one in the graph whose pieces from ``first`` on copy
    ``xs`` in this order (2-D values of one shape), or None."""
    shape = g.node(xs[0]).shape
    if any(g.node(x).shape != shape for x in xs):
        return None
    for c in _concatenations_near(g, xs[0]):
        pieces = g.node(c).inputs
        if any(g.node(p).shape[-2:] != shape or len(g.node(p).shape) != len(g.node(c).shape) for p in pieces):
            continue
        sources = [_piece_source(g, p) for p in pieces]
        for i in (i for i, src in enumerate(sources) if src == xs[0]):
            if sources[i:i + len(xs)] == xs:
                return c, i
    return None


def _rows_of(g: Graph, c: int, first: int, count: int) -> int:
    """Pieces ``first .. first + count - 1`` of concatenation ``c`` as 2-D rows (a view of it)."""
    n = g.node(c)
    rows, cols = n.shape if len(n.shape) == 2 else (n.shape[0] * n.shape[1], n.shape[2])
    flat = c if len(n.shape) == 2 else \
        g.add("reshape", (c,), {"shape": (rows, cols)}, AVal((rows, cols), n.dtype))
    per = rows // len(n.inputs)
    if count * per == rows:
        return flat
    lo, hi = first * per, (first + count) * per
    return g.add("slice", (flat,), {"start": (lo, 0), "stop": (hi, cols), "step": (1, 1)},
                 AVal((hi - lo, cols), n.dtype))


def _in_concatenation_order(g: Graph, products: list[int]) -> list[int]:
    """``products`` ordered as a concatenation in the graph holds their left (else right)
    operands' rows, so that joining them reads that concatenation instead of copying again."""
    for side in (0, 1):
        xs = [g.node(p).inputs[side] for p in products]
        xs = [g.node(x).inputs[0] if g.node(x).op == "permute" else x for x in xs]
        for c in _concatenations_near(g, xs[0]):
            position = {_piece_source(g, q): i for i, q in enumerate(g.node(c).inputs)}
            if all(x in position for x in xs):
                return [p for _, p in sorted(zip((position[x] for x in xs), products))]
    return products


def _joining_pays(g: Graph, products: list[int]) -> bool:
    """Whether the products' results (each written, then read by the sum) outweigh the copies
    joining their operands makes: ``P * M * N > K * (M + N)`` elements, ``K`` the joined inner
    dim.  Many products over a short inner dim each (one per time step) join; two products
    with weight matrices as operands do not (the weights would be copied every call)."""
    m, n = g.node(products[0]).shape
    k = sum(g.node(g.node(x).inputs[0]).shape[1] for x in products)
    return len(products) * m * n > k * (m + n)


def join_summed_products(g: Graph) -> int:
    """Rewrite ``a1 @ b1 + a2 @ b2 + ...`` (2-D float products of one shape, each read only by
    the sum) into ``concat(a_i, axis=1) @ concat(b_i, axis=0)`` where that moves less memory
    (:func:`_joining_pays`): one GEMM over the joined inner dim instead of many small ones and
    a pass adding their results (a recurrent layer's weight
    gradient, one product per time step, becomes one product over the sequence).  Like
    :func:`split_reductions`, it reassociates a sum: results differ from eager code in rounding.
    Products with a zero operand (the initial state's) are left out, and the products are
    ordered as a concatenation in the graph already holds their operands (the layer's output
    sequence, its gate gradients), which the joined product then reads in place: those may be
    the pieces plus zero (a sum of pads'), which differ from them in the sign of zero only.
    """
    count = 0
    for nid in reversed(g.topo()):
        if nid not in g:
            continue
        n = g.node(nid)
        if n.op != "add" or len(n.shape) != 2 or n.dtype.kind != "f":
            continue
        leaves = add_tree_leaves(g, nid)
        products = [x for x in leaves if g.node(x).op == "matmul" and len(g.users(x)) == 1
                    and x not in g.outputs and leaves.count(x) == 1]
        zeros = [x for x in products if any(_is_zero(g, y) for y in g.node(x).inputs)]
        products = [x for x in products if x not in zeros]
        if len(products) < 2 or not _joining_pays(g, products):
            continue
        products = _in_concatenation_order(g, products)
        leaves = [x for x in leaves if x not in zeros]
        a = _joined(g, [g.node(x).inputs[0] for x in products], 1)
        b = _joined(g, [g.node(x).inputs[1] for x in products], 0)
        out = g.add("matmul", (a, b), {}, n.aval)
        for x in leaves:
            if x not in products:
                out = g.add("add", (out, x), {}, n.aval)
        g.replace_all_uses(nid, out)
        dce(g)
        count += 1
    return count


def compile_graph(g: Graph, device: Device, updates: dict[int, int] | None = None) -> CompiledProgram:
    """Fuse and compile an optimized graph (the graph is copied; the caller's stays as traced).

    ``updates`` maps graph output index -> graph input index for in-place updates: where it is
    safe (see :func:`_in_place_outputs`), the kernel computing the output writes the input's
    buffer itself instead of a new one that the caller would copy back (CPU only).
    """
    with collector.paused():
        return _compile_graph(g, device, updates)


def _compile_graph(g: Graph, device: Device, updates: dict[int, int] | None) -> CompiledProgram:
    t0 = time.perf_counter()
    g = _copy(g)
    split_reductions(g)
    join_summed_products(g)
    if device.type != "cpu":
        device_gathers(g)
    plan = fusion.plan(g)
    if device.type == "cpu":
        kernel_reuse.reuse_known_kernels(plan)
    t1 = time.perf_counter()
    updates = updates if device.type == "cpu" else None
    program = _to_program(g, plan, updates)
    t_fusion, t_schedule = t1 - t0, time.perf_counter() - t1
    if updates:
        # Later kernels that recompute an update from the old input block it from being done
        # in place: plan again with those (large) updates read back from memory instead.
        refused = frozenset(g.outputs[k] for k in updates if k not in program.inplace
                            and math.prod(g.node(g.outputs[k]).shape) * g.node(g.outputs[k]).dtype.itemsize
                            >= IN_PLACE_MIN_BYTES)
        if refused:
            t0 = time.perf_counter()
            plan2 = fusion.plan(g, refused)
            kernel_reuse.reuse_known_kernels(plan2)
            t1 = time.perf_counter()
            program2 = _to_program(g, plan2, updates)
            t_fusion, t_schedule = t_fusion + t1 - t0, t_schedule + time.perf_counter() - t1
            if len(program2.inplace) > len(program.inplace):
                plan, program = plan2, program2
    if log_fusion.isEnabledFor(logging.INFO):
        names = g.names()
        for node, why in plan.materialized.items():
            if node in names:
                log_fusion.info("%s (%s) lives in memory: %s%s", names[node], g.node(node).op, why,
                                at_source(g, node))
        log_fusion.info("%d steps: %d kernels", len(plan.steps),
                        sum(isinstance(s, fusion.KernelPlan) for s in plan.steps))
    if log_kernels.isEnabledFor(logging.INFO):
        for step in plan.steps:
            if isinstance(step, fusion.KernelPlan):
                log_kernels.info("%s\n  launch shape %s%s", kir.format_kernel(step.kernel), step.shape,
                                 at_source(g, step.root))
    cache = _kernel_cache(device)
    before = dict(cache.stats) if cache is not None else {}
    t0 = time.perf_counter()
    compiled = CompiledProgram(g, plan, program, device)
    if device.type == "cpu":
        kernel_reuse.remember(plan)
    compiled.phase_times = {"fusion": t_fusion, "schedule": t_schedule, "codegen": time.perf_counter() - t0}
    if cache is not None:
        compiled.kernel_sources = {k: cache.stats.get(k, 0) - before.get(k, 0)
                                   for k in ("compiled", "disk_hits", "memory_hits")}
    return compiled


def at_source(g: Graph, nid: int) -> str:
    """``"  (file.py:line)"``: the user's line that made node ``nid``, or ``""`` when unknown."""
    where = g.node(nid).source if nid in g else ""
    return f"  ({where})" if where else ""


def _kernel_cache(device: Device) -> Any:
    """The cache ``CompiledProgram`` compiles ``device``'s kernels through (its ``stats``)."""
    try:
        if device.type == "cuda":
            from runtime.ptx_cache import default_ptx_cache
            return default_ptx_cache()
        from runtime.kernel_cache import default_cache
        return default_cache()
    except ImportError:
        return None


def _copy(g: Graph) -> Graph:
    import copy
    new = Graph(g.g.copy(), list(g.inputs), list(g.outputs))
    for nid in new.g:
        node = new.g.nodes[nid]["node"]
        new.g.nodes[nid]["node"] = copy.copy(node)
    new._ids = iter(range(max(g.g.nodes, default=-1) + 1, 1 << 62))
    return new


def _in_place_outputs(g: Graph, plan: fusion.FusionPlan, updates: dict[int, int]) -> dict[int, int]:
    """The subset of ``updates`` (output index -> input index) a kernel can compute in place.

    Both buffers hold the same shape and dtype in C order, so the output's view is valid on the
    input's buffer.  Writing over the input is safe when a kernel (a matmul, a scatter_add) stores the output
    and every read of the input happens before that store (in earlier steps, or in the same kernel at the
    same element and in the same or an earlier stage), and no other program output sees the
    input's buffer.
    """
    out_count: dict[int, int] = {}
    for o in g.outputs:
        out_count[o] = out_count.get(o, 0) + 1
    seen_by_outputs = {plan.aliases.get(o, (o, None))[0] for o in g.outputs}
    step_of = {}
    for k, s in enumerate(plan.steps):
        if isinstance(s, fusion.KernelPlan):
            step_of.update((o, k) for o, _ in s.outputs)
        elif PRIMS[g.node(s.node).op].kind == "matmul" or g.node(s.node).op == "scatter_add":
            # (a scatter_add writes its output only once it cannot fail: its indices were
            # checked by an earlier step, or NumPy computed the result aside first)
            step_of[s.node] = k
    chosen: dict[int, int] = {}
    for out_index, in_index in updates.items():
        o, x = g.outputs[out_index], g.inputs[in_index]
        k = step_of.get(o)
        if k is None or out_count[o] != 1 or x in seen_by_outputs or o in plan.aliases \
                or g.node(o).aval != g.node(x).aval:
            continue
        step = plan.steps[k]
        later = plan.steps[k + 1:]
        if any(n == x for s in later for n, _ in s.inputs):
            continue
        if any(isinstance(s, fusion.ExternPlan) and PRIMS[g.node(s.node).op].kind == "host" for s in later):
            continue        # a host op may raise (bad index): the caller's tensor must stay as it was
        reads = [i for i, (n, _) in enumerate(step.inputs) if n == x]
        if isinstance(step, fusion.ExternPlan):
            if reads:
                continue        # a library call may read any element after writing another
        elif any(step.inputs[i][1] != next(v for n, v in step.outputs if n == o) for i in reads) \
                or _read_after_store(step, o, reads):
            continue
        chosen[out_index] = in_index
    return chosen


def _read_after_store(step: fusion.KernelPlan, o: int, reads: list[int]) -> bool:
    """Does a stage after the one storing ``o`` load one of the operands ``reads`` afresh?

    Without reduce dims every stage runs at each point in turn and an operand is loaded once
    per point (codegen memoizes loads), so a later stage reusing a load of an earlier one still
    sees the old value.  Row kernels make a separate pass per stage: any later load is fresh.
    """
    stages = step.kernel.stages
    s = next(j for j, st in enumerate(stages)
             if isinstance(st, kir.Store) and step.outputs[st.output][0] == o)

    def loaded(sts, pieces: bool) -> set[int]:
        return {e.input for st in sts for e in kir.walk(st.expr, pieces)
                if isinstance(e, kir.Load) and e.input in reads}
    later = loaded(stages[s + 1:], pieces=True)
    if step.kernel.n_reduce:
        return bool(later)
    # a load inside one piece of a Piecewise happens only in that piece's range: elsewhere a
    # later stage's load of the operand is the first, after the store
    return bool(later - loaded(stages[:s + 1], pieces=False))


def _to_program(g: Graph, plan: fusion.FusionPlan, updates: dict[int, int] | None = None) -> rp.Program:
    slot_of: dict[int, int] = {}
    nbytes: list[int] = []
    dtypes: list[str] = []

    def new_slot(nid: int) -> int:
        n = g.node(nid)
        slot_of[nid] = len(nbytes)
        nbytes.append(math.prod(n.shape) * n.dtype.itemsize)
        dtypes.append(n.dtype.name)
        return slot_of[nid]

    for nid in g.inputs:
        new_slot(nid)
    constants = {}
    for nid, value in plan.constants.items():
        constants[new_slot(nid)] = value
    in_place = _in_place_outputs(g, plan, updates) if updates else {}
    for out_index, in_index in in_place.items():
        slot_of[g.outputs[out_index]] = in_index
    for step in plan.steps:
        outs = [step.node] if isinstance(step, fusion.ExternPlan) else [o for o, _ in step.outputs]
        for o in outs:
            if o not in slot_of:
                new_slot(o)

    def resolve(nid: int, view: View) -> rp.View:
        if nid in plan.aliases:
            raise AssertionError("kernel operands never name view nodes")
        if nid not in slot_of and g.node(nid).op == "constant":     # a constant a kernel loads
            constants[new_slot(nid)] = np.ascontiguousarray(g.node(nid).params["value"])
        return rp.View(slot_of[nid], view.offset, view.strides)

    steps: list[Any] = []
    for step in plan.steps:
        if isinstance(step, fusion.KernelPlan):
            steps.append(rp.Launch(step.kernel, step.shape,
                                   tuple(resolve(n, v) for n, v in step.inputs),
                                   tuple(resolve(n, v) for n, v in step.outputs)))
        else:
            n = g.node(step.node)
            out = View.contiguous(n.shape)
            steps.append(rp.Extern(n.op, tuple(resolve(b, v) for b, v in step.inputs),
                                   (rp.View(slot_of[step.node], 0, out.strides),),
                                   tuple(v.shape for _, v in step.inputs) + (n.shape,), n.dtype.name,
                                   tuple(sorted(n.params.items())), n.source))
    outputs = []
    for o in g.outputs:
        n = g.node(o)
        base, view = plan.aliases.get(o, (o, View.contiguous(n.shape)))
        outputs.append((rp.View(slot_of[base], view.offset, view.strides), n.shape, n.dtype.name))
    program = rp.Program(len(g.inputs), nbytes, dtypes, constants, steps, outputs, inplace=in_place)
    program.aliases = _buffer_plan(program)
    return program


def _buffer_plan(p: rp.Program) -> dict[int, int]:
    """Let a temporary reuse the buffer of one whose last reader has run (greedy, best fit)."""
    outputs = {v.slot for v, _, _ in p.outputs}
    last_use: dict[int, int] = {}
    for k, step in enumerate(p.steps):
        for v in step.inputs:
            last_use[v.slot] = k
    free: list[int] = []
    aliases: dict[int, int] = {}
    owner: dict[int, int] = {}
    for k, step in enumerate(p.steps):
        for v in step.outputs:
            s = v.slot
            if s in outputs or s < p.n_inputs or s in p.constants:
                continue
            # best fit, and at most twice the size: a small long-lived value parked in a large
            # free buffer would leave the next large value (the next block's scores) without one
            need = p.slot_nbytes[s]
            fit = min((f for f in free if need <= p.slot_nbytes[f] <= 2 * need),
                      key=lambda f: p.slot_nbytes[f], default=None)
            if fit is not None:
                free.remove(fit)
                aliases[s] = owner.get(fit, fit)
            owner[s] = aliases.get(s, s)
        written = {o.slot for o in step.outputs}
        # each slot once: a kernel reading one buffer through several views (a stencil) must not
        # put it on the free list several times, or two later values would share it
        for s in dict.fromkeys(v.slot for v in step.inputs):
            if last_use.get(s) == k and s not in outputs and s >= p.n_inputs and s not in p.constants \
                    and s not in written:
                free.append(s)
    return aliases


def peak_bytes(p: rp.Program) -> int:
    """Bytes of temporaries and outputs the program allocates, after buffer reuse."""
    return sum(p.slot_nbytes[s] for s in range(p.n_inputs, len(p.slot_nbytes))
               if s not in p.constants and s not in p.aliases)


def kernel_cache_stats() -> dict[str, int]:
    from runtime.kernel_cache import default_cache
    return {f"kernels_{k}": v for k, v in default_cache().stats.items()}


def _register_externs() -> None:
    """Host ops run as extern steps through the op table's NumPy references."""
    from runtime import cpu
    register = getattr(cpu, "register_extern", None)
    if register is None:
        return
    for name, prim in PRIMS.items():
        # (host ops, and the ops on complex values kernels do not compute: fusion._touches_complex)
        if name != "matmul" and prim.kind != "source":
            register(name, prim.impl)


_register_externs()
