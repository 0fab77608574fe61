"""CPU code generation: a :class:`codegen.kir.Kernel` -> LLVM IR -> host object code.

Every kernel becomes one C-ABI function::

    void tj_<key>(int64 start, int64 end, const int64 *shape, const int64 *strides, void **ptrs)

which runs the outer (parallel) points ``[start, end)`` of the flattened outer space, so a
runtime can split the outer space across threads.  ``strides`` holds ``ndim`` element strides
per operand and ``ptrs`` one base pointer per operand, inputs first, then outputs.

Loops are vectorized explicitly (LLVM's loop vectorizer sees through none of the strided,
multi-stage structure): lanes run along one iteration dim, the *vector dim*:

* elementwise kernels: lanes along the innermost outer dim;
* *column* reductions (reduce dims strided, innermost outer dim contiguous): lanes along the
  innermost outer dim, over a *tile* of up to ``COLUMN_TILE`` outer points whose accumulators
  live in stack arrays (L1): the reduce space is streamed one contiguous tile-wide row at a
  time, which the prefetcher and the TLB like far better than a narrow strided column;
* *row* reductions (innermost reduce dim contiguous): lanes along the innermost reduce dim,
  several vector registers of accumulators, one outer point at a time.  float32 sums
  accumulate in float32 lanes over blocks of ``SUM_BLOCK`` elements, each block folded into
  float64 (float64 accuracy at float32 speed: no conversion per element).

Elementwise rows and row reductions finish with register-wide vector steps, the last one
masked (no lane past the data is read or written); column tiles with a scalar remainder
loop.  Sub-expressions that do not vary along the vector dim (broadcast loads and what is
computed from them) are hoisted out of it.  A division by such a value stays a division:
multiplying by the reciprocal is up to 1.5 ulp off, and a cast or comparison after it would
turn that into a different answer than NumPy's.
"""
from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import llvmlite.binding as llvm
from llvmlite import ir

from codegen import kir
from codegen.llvm_loops import FunctionBuilder
from codegen.scalar import (
    I1,
    I32,
    I64,
    INT_BITS,
    cast,
    const,
    emit_op,
    is_float,
    itemsize,
    splat,
    storage_type,
    type_suffix,
    value_type,
    width_of,
)

# Bump when the generated code changes, so on-disk caches do not serve stale kernels.
CODEGEN_VERSION = "cpu-13"

# Elementwise and column loops, in host vector registers per vector step: two independent
# chains per step keep long polynomial bodies (tanh, exp) from stalling on latency (GELU 1.4x
# faster than one with AVX-512); more spill with AVX2's 16 registers (W1 5% slower at four).
VECTOR_REGISTERS = 2
# Row reductions, in host vector registers: independent accumulators and chains per step.
# More than 4 spills with AVX2's 16 registers (softmax 10% slower at 8).
ROW_VECTOR_REGISTERS = 4
# Column reductions: outer points per tile.  Each reduce step streams this many contiguous
# elements of a row; the tile's accumulators (16 KiB of float64 per reduce stage) stay in L1.
COLUMN_TILE = 2048
# Column reductions: points of the last reduce dim folded per pass over a tile (independent
# row streams for the prefetcher, one load and store of the accumulators per pass).
COLUMN_UNROLL = 4
# Row kernels with several passes: prefetch the next row during the last pass.
PREFETCH_NEXT_ROW = True
# Row sums of float32: elements per float32 block (per lane: SUM_BLOCK / lanes additions)
# before the block's partial sums are folded into the float64 accumulator.
SUM_BLOCK = 4096

KernelFn = Callable[..., None]
_ARGTYPES = (ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
KERNEL_CFUNCTYPE = ctypes.CFUNCTYPE(None, *_ARGTYPES)


@dataclass(frozen=True)
class CpuArtifact:
    """Compiled kernel: relocatable host object code exporting ``symbol``."""
    symbol: str
    object_code: bytes
    llvm_ir: str = ""


def symbol_name(kernel: kir.Kernel) -> str:
    return f"tj_{kernel.key}"


# --------------------------------------------------------------------------- expression helpers




def _all_dtypes(k: kir.Kernel) -> set[str]:
    dts = {o.dtype for o in k.inputs + k.outputs}
    for st in k.stages:
        dts.update(n.dtype for n in kir.walk(st.expr) if isinstance(n, (kir.Op, kir.Const)))
        if isinstance(st, kir.Reduce):
            dts.add(st.dtype)
    return dts


def _reduce_acc_dtype(st: kir.Reduce) -> str:
    """Accumulator dtype: low-precision float sums accumulate in float64 (accurate, cheap)."""
    if st.op == "sum" and st.dtype in ("float16", "float32"):
        return "float64"
    if st.op == "prod" and st.dtype == "float16":
        return "float32"
    return st.dtype


def _loads(k: kir.Kernel, exprs) -> set[int]:
    return {n.input for e in exprs for n in kir.walk(e) if isinstance(n, (kir.Load, kir.Gather))}


def _row_mode(k: kir.Kernel) -> bool:
    """Reductions: lanes along the innermost reduce dim (True) or the innermost outer dim."""
    if k.n_reduce == 0:
        return False
    if k.n_outer == 0:
        return True
    rdim, odim = k.ndim - 1, k.n_outer - 1
    inner = [k.stages[i] for i in range(len(k.stages))
             if isinstance(k.stages[i], kir.Reduce) or k.stages[i].over_reduce]
    ops = [k.inputs[i] for i in _loads(k, [s.expr for s in inner])]
    ops += [k.outputs[s.output] for s in inner if isinstance(s, kir.Store)]
    row = sum(o.layout[rdim] == "c" for o in ops)
    col = sum(o.layout[odim] == "c" and o.layout[rdim] != "c" for o in ops)
    return row >= col


# --------------------------------------------------------------------------- evaluation context


@dataclass
class _Ctx:
    """Where an expression is evaluated: one point, or ``width`` points along ``vdim``."""
    width: int | None
    vdim: int | None
    offsets: list[ir.Value]                   # element offset of lane 0, per operand
    index: dict[int, ir.Value]                # loop index per iteration dim (absent = 0)
    accs: dict[int, ir.Value]
    hoisted: dict[kir.Expr, ir.Value] = field(default_factory=dict)
    memo: dict[kir.Expr, ir.Value] = field(default_factory=dict)
    # A masked vector step (the tail of a range): lanes < count are points, the rest are not
    # loaded, stored or folded into accumulators.
    mask: ir.Value | None = None
    count: ir.Value | None = None

    def at(self, width: int | None, vdim: int | None, offsets, index) -> _Ctx:
        return _Ctx(width, vdim, offsets, index, self.accs, dict(self.hoisted))


class _Lowering:
    def __init__(self, kernel: kir.Kernel, symbol: str):
        self.k = kernel
        self.module = ir.Module(name=kernel.name)
        fnty = ir.FunctionType(ir.VoidType(), [I64, I64, I64.as_pointer(), I64.as_pointer(),
                                               ir.IntType(8).as_pointer().as_pointer()])
        self.fn = ir.Function(self.module, fnty, name=symbol)
        self.fn.attributes.add("nounwind")
        # No library calls: the optimizer would turn zero-filling loops into memset, and MCJIT
        # mislinks the GOT of an object with external calls (later kernels read wrong constants).
        set.add(self.fn.attributes, '"no-builtins"')   # (llvmlite does not know string attributes)
        for a, n in zip(self.fn.args, ("start", "end", "shape", "strides", "ptrs")):
            a.name = n
        # Allocas get a block of their own (builders index into blocks: sharing one would
        # shift the main builder's position); it falls through to the body at the end.
        self.alloca_block = self.fn.append_basic_block("entry")
        self.alloca_b = ir.IRBuilder(self.alloca_block)
        self.b = ir.IRBuilder(self.fn.append_basic_block("start"))
        self.loops = FunctionBuilder(self.fn, self.b)
        self.operands = list(kernel.inputs) + list(kernel.outputs)
        big = max(itemsize(d) for d in _all_dtypes(kernel))
        self.vw = max(4, min(32, VECTOR_REGISTERS * native_vector_bytes() // big))
        self.row_vw = max(8, min(64, ROW_VECTOR_REGISTERS * native_vector_bytes() // big))
        self.lanes = max(4, native_vector_bytes() // big)     # one register
        self.row_mode = _row_mode(kernel)
        self.prefetch_ops: list[int] = []       # see prefetch_next

    # ----------------------------------------------------------------- small builders

    def i64(self, v: int) -> ir.Constant:
        return ir.Constant(I64, v)

    def alloca(self, ty: ir.Type, init: ir.Value, name: str = "") -> ir.AllocaInstr:
        slot = self.alloca_b.alloca(ty, name=name)
        self.b.store(init, slot)
        return slot

    @contextmanager
    def loop(self, lo: ir.Value, hi: ir.Value, step: int = 1, name: str = "i"):
        """``for i = lo; i + step <= hi; i += step``; yields i.  After it, ``self.last_i`` is
        the first index not run (for remainder loops)."""
        with self.loops.loop(lo, hi, step, name) as lp:
            yield lp.i
        self.last_i = lp.i

    @contextmanager
    def if_(self, cond: ir.Value):
        with self.b.if_then(cond):
            yield

    # ----------------------------------------------------------------- function body

    def build(self) -> ir.Module:
        k, b = self.k, self.b
        if k.n_reduce and any(isinstance(e, kir.Piecewise) for st in k.stages for e in kir.walk(st.expr)):
            raise ValueError(f"kernel {k.name}: Piecewise in a kernel with reduce dims")
        args = self.fn.args
        self.shape = [b.load(b.gep(args[2], [self.i64(d)]), name=f"n{d}") for d in range(k.ndim)]
        nops, nd = len(self.operands), k.ndim
        self.strides = [[b.load(b.gep(args[3], [self.i64(o * nd + d)])) for d in range(nd)]
                        for o in range(nops)]
        self.ptrs = [b.bitcast(b.load(b.gep(args[4], [self.i64(o)])),
                               storage_type(op.dtype).as_pointer(), name=f"p{o}")
                     for o, op in enumerate(self.operands)]
        start, end = args[0], args[1]
        zero_offsets = [self.i64(0)] * nops
        if k.n_outer == 0:
            with self.if_(b.icmp_signed("<", start, end)):
                self.point(_Ctx(None, None, zero_offsets, {}, {}))
        else:
            self.outer_rows(start, end)
        b.ret_void()
        self.alloca_b.branch(self.fn.basic_blocks[1])
        return self.module

    def outer_rows(self, start: ir.Value, end: ir.Value) -> None:
        """Walk [start, end) of the flattened outer space one row (innermost outer dim) at a time."""
        k, b = self.k, self.b
        last = k.n_outer - 1
        o_slot = self.alloca(I64, start, "o")
        head = self.fn.append_basic_block("row.head")
        body = self.fn.append_basic_block("row.body")
        done = self.fn.append_basic_block("row.done")
        b.branch(head)
        b.position_at_end(head)
        o = b.load(o_slot)
        b.cbranch(b.icmp_signed("<", o, end), body, done)
        b.position_at_end(body)
        n_last = self.shape[last]
        q = b.sdiv(o, n_last)
        j0 = b.sub(o, b.mul(q, n_last))
        j1 = b.add(j0, b.sub(end, o))
        j1 = b.select(b.icmp_signed("<", j1, n_last), j1, n_last)
        index: dict[int, ir.Value] = {}
        for d in range(last - 1, -1, -1):
            if d == 0:
                index[d] = q
            else:
                nq = b.sdiv(q, self.shape[d])
                index[d] = b.sub(q, b.mul(nq, self.shape[d]))
                q = nq
        offsets = []
        for op in range(len(self.operands)):
            off = self.i64(0)
            for d in range(last):
                off = b.add(off, b.mul(index[d], self.strides[op][d]))
            offsets.append(off)
        base = _Ctx(None, None, offsets, index, {})
        if self.row_mode:
            with self.loop(j0, j1, 1, "j") as j:
                self.point(self.shifted(base, last, j, None))
        elif k.n_reduce:
            tile = COLUMN_TILE
            with self.loop(j0, b.add(j1, self.i64(tile - 1)), tile, "tile") as t0:
                t1 = b.add(t0, self.i64(tile))
                self.column_tile(base, t0, b.select(b.icmp_signed("<", t1, j1), t1, j1))
        else:
            self.row_pieces(base, last, j0, j1, [st.expr for st in k.stages])
        b.store(b.add(o, b.sub(j1, j0)), o_slot)
        b.branch(head)
        b.position_at_end(done)

    def row_pieces(self, ctx: _Ctx, last: int, j0: ir.Value, j1: ir.Value, exprs: list) -> None:
        """The stages (``exprs``) over ``[j0, j1)`` of one row, every :class:`kir.Piecewise`
        resolved to its piece: along an outer dim by branching on the row's index, along the
        row by splitting it into one vectorized range per piece.  No select is evaluated per
        element, and a piece's loads run only inside its range."""
        b = self.b
        for d in range(last):
            cuts = kir.cuts_along(exprs, d)
            if cuts:
                self.rows_by_range(ctx, last, j0, j1, exprs, d, [0, *cuts, None])
                return
        cuts = kir.cuts_along(exprs, last)
        bounds = [0, *cuts, None]
        for lo, hi in zip(bounds, bounds[1:]):
            spec = [kir.specialize(e, last, lo, hi) for e in exprs] if cuts else exprs
            r0 = j0 if lo == 0 else b.select(b.icmp_signed("<", j0, self.i64(lo)), self.i64(lo), j0)
            r1 = j1 if hi is None else b.select(b.icmp_signed("<", j1, self.i64(hi)), j1, self.i64(hi))
            self.vector_range(ctx, last, r0, r1, self.vw, lambda c, spec=spec: self.point(c, spec), spec,
                              range(self.k.n_outer, self.k.ndim), masked_tail=True)

    def rows_by_range(self, ctx: _Ctx, last: int, j0, j1, exprs: list, d: int, bounds: list) -> None:
        """Branch on the row's index along outer dim ``d`` to the range of ``bounds`` holding it."""
        spec = [kir.specialize(e, d, bounds[0], bounds[1]) for e in exprs]
        if len(bounds) == 2:
            self.row_pieces(ctx, last, j0, j1, spec)
            return
        with self.b.if_else(self.b.icmp_signed("<", ctx.index[d], self.i64(bounds[1]))) as (then, other):
            with then:
                self.row_pieces(ctx, last, j0, j1, spec)
            with other:
                self.rows_by_range(ctx, last, j0, j1, exprs, d, bounds[1:])

    def shifted(self, ctx: _Ctx, dim: int, i: ir.Value, width: int | None) -> _Ctx:
        """``ctx`` moved to index ``i`` along ``dim`` (lanes along ``dim`` if ``width``)."""
        b = self.b
        offsets = [b.add(off, b.mul(i, self.strides[o][dim])) for o, off in enumerate(ctx.offsets)]
        index = dict(ctx.index)
        index[dim] = i
        vdim = dim if width else ctx.vdim
        return ctx.at(width if width else ctx.width, vdim, offsets, index)

    def step(self, ctx: _Ctx, dim: int, n: int) -> _Ctx:
        """``ctx`` moved ``n`` (a constant) further along ``dim``."""
        if n == 0:
            return ctx.at(ctx.width, ctx.vdim, ctx.offsets, ctx.index)
        b = self.b
        offsets = [b.add(off, b.mul(self.i64(n), self.strides[o][dim])) for o, off in enumerate(ctx.offsets)]
        index = dict(ctx.index)
        index[dim] = b.add(index.get(dim, self.i64(0)), self.i64(n))
        c = ctx.at(ctx.width, ctx.vdim, offsets, index)
        c.hoisted = ctx.hoisted
        return c

    def vector_range(self, ctx: _Ctx, dim: int, lo, hi, width: int, work, exprs, inner_dims=(),
                     block: tuple[int, Callable[[], None]] | None = None, masked_tail: bool = False) -> None:
        """Run ``work(ctx)`` for indices [lo, hi) along ``dim``: vector steps then a tail.

        ``exprs`` are what ``work`` evaluates; their parts that vary neither along ``dim`` nor
        along ``inner_dims`` (loops ``work`` runs itself) are computed once, before the loops.
        ``block = (n, flush)`` calls ``flush()`` after every ``n`` indices of vector steps (``n`` a
        multiple of ``width``) and after the last one.  With ``masked_tail`` (``work`` honours
        ``ctx.mask``) and no operand strided along ``dim``, the tail is register-wide steps, the
        last one masked; else a scalar loop.  A 10-wide softmax row costs one step per pass.
        """
        b = self.b
        with self.if_(b.icmp_signed("<", lo, hi)):
            hoisted = self.hoist(ctx, {dim, *inner_dims}, dim, lo, exprs)
            ctx = ctx.at(ctx.width, ctx.vdim, ctx.offsets, ctx.index)
            ctx.hoisted = hoisted
            if block is None:
                with self.loop(lo, hi, width, "v") as i:
                    work(self.shifted(ctx, dim, i, width))
                rest = self.last_i
            else:
                n, flush = block
                vend = b.sub(hi, b.srem(b.sub(hi, lo), self.i64(width)))
                with self.loop(lo, b.add(vend, self.i64(n - 1)), n, "blk") as blo:
                    bhi = b.add(blo, self.i64(n))
                    with self.loop(blo, b.select(b.icmp_signed("<", bhi, vend), bhi, vend), width, "v") as i:
                        work(self.shifted(ctx, dim, i, width))
                    flush()
                rest = vend
            if masked_tail and all(op.layout[dim] != "s" for op in self.operands):
                # one register at a time (a short row should not cost four registers' math)
                lanes = min(width, self.lanes)
                if lanes < width:
                    with self.loop(rest, hi, lanes, "t") as i:
                        work(self.shifted(ctx, dim, i, lanes))
                    rest = self.last_i
                with self.if_(b.icmp_signed("<", rest, hi)):
                    tail = self.shifted(ctx, dim, rest, lanes)
                    tail.count = b.sub(hi, rest)
                    tail.mask = b.icmp_signed("<", ir.Constant(ir.VectorType(I64, lanes), list(range(lanes))),
                                              splat(b, tail.count, lanes))
                    work(tail)
                if block is not None:
                    block[1]()
            else:
                with self.loop(rest, hi, 1, "s") as i:
                    work(self.shifted(ctx, dim, i, None))

    # ----------------------------------------------------------------- hoisting

    def varies(self, e: kir.Expr, dims: set[int], accs: dict[int, ir.Value], memo: dict) -> bool:
        if e in memo:
            return memo[e]
        if isinstance(e, kir.Load):
            r = any(self.k.inputs[e.input].layout[d] != "b" for d in dims)
        elif isinstance(e, kir.Gather):
            r = any(self.k.inputs[e.input].layout[d] != "b" for d in dims) or \
                self.varies(e.index, dims, accs, memo)
        elif isinstance(e, kir.Index):
            r = e.dim in dims
        elif isinstance(e, kir.Acc):
            r = e.stage not in accs or width_of(accs[e.stage]) is not None
        elif isinstance(e, kir.Const):
            r = False
        else:
            r = any([self.varies(a, dims, accs, memo) for a in e.args])
        memo[e] = r
        return r

    def hoist(self, ctx: _Ctx, dims: set[int], dim: int, lo: ir.Value, exprs) -> dict:
        """Evaluate, before a loop along ``dim``, the sub-expressions that vary along no ``dims``.
        """
        if ctx.width is not None:
            return dict(ctx.hoisted)        # lanes already run along another dim: keep it simple
        memo: dict = {}
        found: list[kir.Expr] = []

        def visit(e):
            if isinstance(e, kir.Const) or e in ctx.hoisted:
                return
            if not self.varies(e, dims, ctx.accs, memo):
                if isinstance(e, (kir.Load, kir.Op, kir.Gather)):
                    found.append(e)
                return
            if isinstance(e, (kir.Op, kir.Gather)):
                for a in e.args:
                    visit(a)

        for e in exprs:
            visit(e)
        at_lo = self.shifted(ctx, dim, lo, None)
        out = dict(ctx.hoisted)
        for e in found:
            out[e] = self.eval(e, at_lo)
        return out

    # ----------------------------------------------------------------- expressions

    def eval(self, e: kir.Expr, ctx: _Ctx) -> ir.Value:
        if e in ctx.memo:
            return ctx.memo[e]
        b, w = self.b, ctx.width
        if e in ctx.hoisted:
            v = splat(b, ctx.hoisted[e], w)
        elif isinstance(e, kir.Const):
            v = const(e.dtype, e.value, w)
        elif isinstance(e, kir.Load):
            v = self.load(e.input, ctx)
        elif isinstance(e, kir.Gather):
            v = self.gather(e, ctx)
        elif isinstance(e, kir.Acc):
            v = splat(b, ctx.accs[e.stage], w)
        elif isinstance(e, kir.Piecewise):
            raise AssertionError("a Piecewise is resolved before its stage is evaluated (row_pieces)")
        elif isinstance(e, kir.Index):
            i = ctx.index.get(e.dim, self.i64(0))
            v = splat(b, i, w)
            if w and e.dim == ctx.vdim:
                v = b.add(v, ir.Constant(ir.VectorType(I64, w), list(range(w))))
        else:
            args = [self.eval(a, ctx) for a in e.args]
            dts = [kir.expr_dtype(self.k, a) for a in e.args]
            v = emit_op(b, e.op, args, dts, e.dtype)
        ctx.memo[e] = v
        return v

    def _lane_ptrs(self, o: int, ctx: _Ctx):
        b = self.b
        base = b.gep(self.ptrs[o], [ctx.offsets[o]], inbounds=True)
        stride = self.strides[o][ctx.vdim]
        return [b.gep(base, [b.mul(self.i64(lane), stride)], inbounds=True) for lane in range(ctx.width)]

    def _vector_ptr(self, o: int, ctx: _Ctx, sty: ir.Type) -> ir.Value:
        """Operand ``o``'s lanes at ``ctx`` (contiguous along the vector dim) as a vector pointer."""
        p = self.b.gep(self.ptrs[o], [ctx.offsets[o]], inbounds=True)
        return self.b.bitcast(p, ir.VectorType(sty, ctx.width).as_pointer())

    def load(self, i: int, ctx: _Ctx) -> ir.Value:
        b, op, w = self.b, self.k.inputs[i], ctx.width
        sty = storage_type(op.dtype)
        layout = op.layout[ctx.vdim] if w else "b"
        if layout == "c":
            ptr = self._vector_ptr(i, ctx, sty)
            if ctx.mask is not None:
                v = masked_load(b, ptr, ctx.mask, itemsize(op.dtype))
            else:
                v = b.load(ptr, align=itemsize(op.dtype))
        elif layout == "s":
            v = ir.Constant(ir.VectorType(sty, w), ir.Undefined)
            for lane, p in enumerate(self._lane_ptrs(i, ctx)):
                v = b.insert_element(v, b.load(p), I32(lane))
        else:
            v = splat(b, b.load(b.gep(self.ptrs[i], [ctx.offsets[i]], inbounds=True)), w)
        if op.dtype == "bool":
            v = b.icmp_unsigned("!=", v, ir.Constant(v.type, None))
        return v

    def gather(self, e: kir.Gather, ctx: _Ctx) -> ir.Value:
        """Input ``e.input`` moved ``e.index`` steps along ``e.dim`` (see :class:`kir.Gather`)."""
        b, w, i = self.b, ctx.width, e.input
        op = self.k.inputs[i]
        sty = storage_type(op.dtype)
        step = self.strides[i][e.dim]
        index = self.eval(e.index, ctx)
        if w is None:
            v = b.load(b.gep(self.ptrs[i], [b.add(ctx.offsets[i], b.mul(index, step))], inbounds=True))
        elif op.layout[ctx.vdim] == "c" and not self.varies(e.index, {ctx.vdim}, ctx.accs, {}):
            # one index for every lane (a row of an embedding table): one vector load
            row = b.mul(b.extract_element(index, I32(0)), step)
            p = b.gep(self.ptrs[i], [b.add(ctx.offsets[i], row)], inbounds=True)
            ptr = b.bitcast(p, ir.VectorType(sty, w).as_pointer())
            v = masked_load(b, ptr, ctx.mask, itemsize(op.dtype)) if ctx.mask is not None \
                else b.load(ptr, align=itemsize(op.dtype))
        else:
            # lane by lane; a masked-off lane (past a row's end) reads lane 0's element instead
            v = ir.Constant(ir.VectorType(sty, w), ir.Undefined)
            lane_step = self.strides[i][ctx.vdim]
            for lane in range(w):
                row = b.mul(b.extract_element(index, I32(lane)), step)
                off = b.add(b.mul(self.i64(lane), lane_step), row)
                if ctx.mask is not None:
                    off = b.select(b.extract_element(ctx.mask, I32(lane)), off,
                                   b.mul(b.extract_element(index, I32(0)), step))
                p = b.gep(self.ptrs[i], [b.add(ctx.offsets[i], off)], inbounds=True)
                v = b.insert_element(v, b.load(p), I32(lane))
        if op.dtype == "bool":
            v = b.icmp_unsigned("!=", v, ir.Constant(v.type, None))
        return v

    def store(self, out: int, value: ir.Value, ctx: _Ctx) -> None:
        b, w = self.b, ctx.width
        o = len(self.k.inputs) + out
        op = self.k.outputs[out]
        sty = storage_type(op.dtype)
        if op.dtype == "bool":
            value = b.zext(value, ir.VectorType(sty, w) if w else sty)
        layout = op.layout[ctx.vdim] if w else None
        if layout == "c":
            ptr = self._vector_ptr(o, ctx, sty)
            if ctx.mask is not None:
                masked_store(b, value, ptr, ctx.mask, itemsize(op.dtype))
            else:
                b.store(value, ptr, align=itemsize(op.dtype))
        elif layout == "s":
            for lane, p in enumerate(self._lane_ptrs(o, ctx)):
                b.store(b.extract_element(value, I32(lane)), p)
        else:
            if w:                               # every lane writes one place: the last one wins
                last = I32(w - 1) if ctx.count is None else b.sub(ctx.count, self.i64(1))
                value = b.extract_element(value, last)
            b.store(value, b.gep(self.ptrs[o], [ctx.offsets[o]], inbounds=True))

    # ----------------------------------------------------------------- stages

    def point(self, ctx: _Ctx, exprs: list | None = None) -> None:
        """All stages at one outer point (or ``ctx.width`` outer points along ``ctx.vdim``);
        ``exprs``: the stores' expressions where they differ from the stages' (see row_pieces).

        Loads are memoized in ``ctx``: without reduce dims an operand is loaded once per point,
        before any stage stores there (in-place updates rely on this).
        """
        ctx.accs = {}
        prefetch_stage, self.prefetch_ops = self._prefetch_plan(), []
        for s, st in enumerate(self.k.stages):
            if prefetch_stage is not None and s == prefetch_stage[0]:
                self.prefetch_ops = prefetch_stage[1]
            if isinstance(st, kir.Reduce):
                acc = self.reduce(st, ctx)
                ctx.accs[s] = acc
            elif st.over_reduce:
                def work(c: _Ctx, st=st) -> None:
                    self.store(st.output, self._typed(st, c), c)
                    self.prefetch_next(c)
                self.reduce_space(ctx, work, st.expr)
            else:
                self.store(st.output, self._typed(st, ctx, None if exprs is None else exprs[s]), ctx)
            self.prefetch_ops = []

    def _prefetch_plan(self) -> tuple[int, list[int]] | None:
        """Row kernels with several passes over a row: during the last pass, prefetch the next
        row's inputs of the first pass (which would otherwise wait on memory with nothing to
        overlap): (stage, input operands), or None."""
        k = self.k
        passes = [s for s, st in enumerate(k.stages) if isinstance(st, kir.Reduce) or st.over_reduce]
        if not PREFETCH_NEXT_ROW or not self.row_mode or k.n_reduce != 1 or k.n_outer == 0 or len(passes) < 2:
            return None
        odim, rdim = k.n_outer - 1, k.ndim - 1
        ops = [i for i in sorted(_loads(k, [k.stages[passes[0]].expr]))
               if k.inputs[i].layout[rdim] == "c" and k.inputs[i].layout[odim] != "b"]
        return (passes[-1], ops) if ops else None

    def prefetch_next(self, c: _Ctx) -> None:
        """Prefetch, for the inputs in ``self.prefetch_ops``, the lines of this vector step one
        step along the innermost outer dim (out-of-bounds addresses are harmless)."""
        if c.width is None or not self.prefetch_ops:
            return
        b, odim = self.b, self.k.n_outer - 1
        for o in self.prefetch_ops:
            nbytes = c.width * itemsize(self.k.inputs[o].dtype)
            nxt = b.gep(self.ptrs[o], [b.add(c.offsets[o], self.strides[o][odim])])
            p8 = b.bitcast(nxt, ir.IntType(8).as_pointer())
            fn = self.module.globals.get("llvm.prefetch.p0")
            if fn is None:
                fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [p8.type, I32, I32, I32]),
                                 name="llvm.prefetch.p0")
            for line in range(0, nbytes, 64):   # (read, keep in all levels, data)
                b.call(fn, [b.gep(p8, [self.i64(line)]), I32(0), I32(3), I32(1)])

    def _typed(self, st: kir.Store, ctx: _Ctx, expr: kir.Expr | None = None) -> ir.Value:
        expr = st.expr if expr is None else expr
        v = self.eval(expr, ctx)
        return cast(self.b, v, kir.expr_dtype(self.k, expr), self.k.outputs[st.output].dtype)

    def reduce_space(self, ctx: _Ctx, work, expr: kir.Expr,
                     block: tuple[int, Callable[[], None]] | None = None, skip_last: bool = False) -> None:
        """Run ``work`` over the whole reduce space (row mode: vectorized along its last dim,
        with ``block`` as in :meth:`vector_range`); ``skip_last``: over all but its last dim
        (``work`` runs that one itself)."""
        k = self.k
        dims = list(range(k.n_outer, k.ndim - skip_last))
        if not dims:
            work(ctx.at(ctx.width, ctx.vdim, ctx.offsets, ctx.index))
            return

        def nest(c: _Ctx, rest: list[int]):
            d = rest[0]
            if len(rest) == 1 and self.row_mode:
                self.vector_range(c, d, self.i64(0), self.shape[d], self.row_vw, work, [expr], block=block,
                                  masked_tail=True)
            elif len(rest) == 1:
                with self.loop(self.i64(0), self.shape[d], 1, f"r{d}") as i:
                    work(self.shifted(c, d, i, None))
            else:
                with self.loop(self.i64(0), self.shape[d], 1, f"r{d}") as i:
                    nest(self.shifted(c, d, i, None), rest[1:])

        nest(ctx.at(ctx.width, ctx.vdim, ctx.offsets, ctx.index), dims)

    def reduce(self, st: kir.Reduce, ctx: _Ctx) -> ir.Value:
        """Row mode: fold ``st.expr`` over the reduce space of one outer point (a scalar)."""
        b, k, vw = self.b, self.k, self.row_vw
        arg = st.op in ("argmax", "argmin")
        edt = kir.expr_dtype(k, st.expr)
        adt = edt if arg else _reduce_acc_dtype(st)
        # float32 sums: vector lanes add in float32 for a block, then fold into float64 lanes.
        lane_dt = "float32" if st.op == "sum" and adt == "float64" and edt in ("float16", "float32") else adt
        # per width of step: the scalar tail, the main vector loop, a register-wide tail
        lanes = min(vw, self.lanes)
        slots = {None: self.alloca(_vt(adt, None), _init(st.op, adt, None)),
                 lanes: self.alloca(_vt(adt, lanes), _init(st.op, adt, lanes)),
                 vw: self.alloca(_vt(lane_dt, vw), _init(st.op, lane_dt, vw))}
        islots = {w: self.alloca(_vt("int64", w), const("int64", 0, w)) for w in slots} if arg else {}
        block = None
        if lane_dt != adt:
            wide = self.alloca(_vt(adt, vw), _init(st.op, adt, vw))

            def flush():
                b.store(b.fadd(b.load(wide), cast(b, b.load(slots[vw]), lane_dt, adt)), wide)
                b.store(_init(st.op, lane_dt, vw), slots[vw])
            block = (SUM_BLOCK, flush)

        def work(c: _Ctx):
            self.prefetch_next(c)
            w = c.width
            dt = lane_dt if w == vw else adt
            x = self.eval(st.expr, c)
            acc = b.load(slots[w])
            if not arg:
                new = _combine(b, st.op, acc, cast(b, x, edt, dt), dt)
                b.store(new if c.mask is None else b.select(c.mask, new, acc), slots[w])
                return
            take = _arg_better(b, st.op, x, acc, adt)
            if c.mask is not None:
                take = b.and_(take, c.mask)
            b.store(b.select(take, x, acc), slots[w])
            b.store(b.select(take, self._flat_index(c), b.load(islots[w])), islots[w])

        self.reduce_space(ctx, work, st.expr, block)
        # Fold the vector lanes, then the tails.
        if arg:
            v, i = _arg_hreduce(b, st.op, b.load(slots[vw]), b.load(islots[vw]), adt)
            if lanes != vw:
                tv, ti = _arg_hreduce(b, st.op, b.load(slots[lanes]), b.load(islots[lanes]), adt)
                take = _arg_better_full(b, st.op, tv, ti, v, i, adt)
                v, i = b.select(take, tv, v), b.select(take, ti, i)
            take = _arg_better_full(b, st.op, b.load(slots[None]), b.load(islots[None]), v, i, adt)
            return b.select(take, b.load(islots[None]), i)
        fold = lambda x, y: _combine(b, st.op, x, y, adt)  # noqa: E731
        v = _hreduce(b, b.load(wide if block else slots[vw]), fold)
        if lanes != vw:
            v = fold(v, _hreduce(b, b.load(slots[lanes]), fold))
        return cast(b, fold(v, b.load(slots[None])), adt, st.dtype)

    def _flat_index(self, c: _Ctx, lanes: bool = True) -> ir.Value:
        """Row-major flat index into the reduce space of ``c`` (per lane if vector and ``lanes``)."""
        b, k = self.b, self.k
        flat = self.i64(0)
        for d in range(k.n_outer, k.ndim):
            flat = b.add(b.mul(flat, self.shape[d]), c.index.get(d, self.i64(0)))
        if c.width:
            flat = splat(b, flat, c.width)
            if lanes:
                flat = b.add(flat, ir.Constant(ir.VectorType(I64, c.width), list(range(c.width))))
        return flat

    def column_tile(self, base: _Ctx, t0: ir.Value, t1: ir.Value) -> None:
        """Column mode: every stage for outer points [t0, t1) of the innermost outer dim.

        Each reduce stage keeps the tile's accumulators in a stack array and streams the reduce
        space point by point, each point a contiguous run of the tile; later stages read the
        accumulators back from the arrays.
        """
        k, b, vw = self.k, self.b, self.vw
        dim, rdim = k.n_outer - 1, k.ndim - 1
        arrays: dict[int, tuple[ir.Value, ir.Value | None, str]] = {}   # stage -> (acc, index, dtype)

        def ptr(arr, pos, width):
            p = b.gep(arr, [self.i64(0), pos], inbounds=True)
            return b.bitcast(p, ir.VectorType(p.type.pointee, width).as_pointer()) if width else p

        def with_accs(c: _Ctx) -> ir.Value:
            """Position of ``c`` in the tile; loads the finished stages' results into ``c.accs``."""
            pos = b.sub(c.index[dim], t0)
            c.accs = {}
            for s, (arr, iarr, adt) in arrays.items():
                if iarr is not None:
                    c.accs[s] = b.load(ptr(iarr, pos, c.width), align=8)
                else:
                    c.accs[s] = cast(b, b.load(ptr(arr, pos, c.width), align=itemsize(adt)), adt,
                                     k.stages[s].dtype)
            return pos

        def over_tile(c: _Ctx, work, expr: kir.Expr) -> None:
            self.vector_range(c, dim, t0, t1, vw, work, [expr])

        # the tile's width rounded up to whole vectors (narrow tiles: initialise only those)
        used = b.and_(b.add(b.sub(t1, t0), self.i64(vw - 1)), self.i64(-vw))

        def new_array(dtype: str, init: ir.Constant) -> ir.Value:
            arr = self.alloca_b.alloca(ir.ArrayType(value_type(dtype), COLUMN_TILE))
            with self.loop(self.i64(0), used, vw, "init") as i:
                b.store(init, ptr(arr, i, vw), align=itemsize(dtype))
            return arr

        for s, st in enumerate(k.stages):
            if isinstance(st, kir.Reduce):
                arg = st.op in ("argmax", "argmin")
                edt = kir.expr_dtype(k, st.expr)
                adt = edt if arg else _reduce_acc_dtype(st)
                if adt == "bool":
                    # a tile of i1 is bit-packed when read as a vector but byte-addressed when read
                    # per element: bool accumulators live in bytes
                    adt = "uint8"
                arr = new_array(adt, _init(st.op, adt, vw))
                iarr = new_array("int64", const("int64", 0, vw)) if arg else None

                def fold(c: _Ctx, n: int, st=st, arr=arr, iarr=iarr, edt=edt, adt=adt) -> None:
                    """Fold ``n`` consecutive points of the last reduce dim (from ``c``'s) into the
                    accumulators: one load and store of them per ``n`` points."""
                    pos = with_accs(c)
                    p = ptr(arr, pos, c.width)
                    ip = ptr(iarr, pos, c.width) if iarr is not None else None
                    acc = b.load(p, align=itemsize(adt))
                    idx = b.load(ip, align=8) if ip is not None else None
                    for u in range(n):
                        cu = self.step(c, rdim, u)
                        cu.accs = c.accs
                        x = self.eval(st.expr, cu)
                        if ip is None:
                            acc = _combine(b, st.op, acc, cast(b, x, edt, adt), adt)
                        else:
                            take = _arg_better(b, st.op, x, acc, adt)
                            acc = b.select(take, x, acc)
                            idx = b.select(take, self._flat_index(cu, lanes=False), idx)
                    b.store(acc, p, align=itemsize(adt))
                    if ip is not None:
                        b.store(idx, ip, align=8)

                def unrolled(c: _Ctx, fold=fold, st=st) -> None:
                    n = COLUMN_UNROLL
                    with self.loop(self.i64(0), self.shape[rdim], n, f"r{rdim}") as i:
                        self.vector_range(self.shifted(c, rdim, i, None), dim, t0, t1, vw,
                                          lambda cc: fold(cc, n), [st.expr], inner_dims=(rdim,))
                    with self.loop(self.last_i, self.shape[rdim], 1, f"r{rdim}") as i:
                        self.vector_range(self.shifted(c, rdim, i, None), dim, t0, t1, vw,
                                          lambda cc: fold(cc, 1), [st.expr])

                self.reduce_space(base, unrolled, st.expr, skip_last=True)
                arrays[s] = (arr, iarr, adt)
            else:
                def store(c: _Ctx, st=st) -> None:
                    with_accs(c)
                    self.store(st.output, self._typed(st, c), c)

                if st.over_reduce:
                    self.reduce_space(base, lambda c, w=store, e=st.expr: over_tile(c, w, e), st.expr)
                else:
                    over_tile(base, store, st.expr)


# --------------------------------------------------------------------------- masked memory access


def _masked_intrinsic(b: ir.IRBuilder, op: str, vty: ir.VectorType) -> ir.Function:
    name = f"llvm.masked.{op}.{type_suffix(vty)}.p0"
    fn = b.module.globals.get(name)
    if fn is None:
        mask = ir.VectorType(I1, vty.count)
        if op == "load":
            fty = ir.FunctionType(vty, [vty.as_pointer(), I32, mask, vty])
        else:
            fty = ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), I32, mask])
        fn = ir.Function(b.module, fty, name=name)
    return fn


def masked_load(b: ir.IRBuilder, ptr: ir.Value, mask: ir.Value, align: int) -> ir.Value:
    """The lanes of the vector at ``ptr`` where ``mask`` is set (others zero, never touched)."""
    vty = ptr.type.pointee
    return b.call(_masked_intrinsic(b, "load", vty), [ptr, I32(align), mask, ir.Constant(vty, None)])


def masked_store(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, mask: ir.Value, align: int) -> None:
    """Store the lanes of ``value`` where ``mask`` is set."""
    b.call(_masked_intrinsic(b, "store", value.type), [value, ptr, I32(align), mask])


# --------------------------------------------------------------------------- reduction helpers


def _vt(dtype: str, width: int | None) -> ir.Type:
    t = value_type(dtype)
    return ir.VectorType(t, width) if width else t


def _init(op: str, dtype: str, width: int | None) -> ir.Constant:
    if op == "sum":
        return const(dtype, 0, width)
    if op == "prod":
        return const(dtype, 1, width)
    high = op in ("min", "argmin")
    if is_float(dtype):
        return const(dtype, float("inf") if high else float("-inf"), width)
    if dtype == "bool":
        return const(dtype, 1 if high else 0, width)
    if dtype.startswith("uint"):
        return const(dtype, (1 << INT_BITS[dtype]) - 1 if high else 0, width)
    bits = INT_BITS[dtype]
    return const(dtype, (1 << (bits - 1)) - 1 if high else -(1 << (bits - 1)), width)


def _combine(b: ir.IRBuilder, op: str, x, y, dtype: str):
    """Accumulator ``x`` folded with value ``y``."""
    if op in ("max", "min") and is_float(dtype):
        # A compare and select (one maxps) keeps a NaN accumulator; a NaN value replaces it.
        # Cheaper than llvm.maximum, which also orders -0 below +0 (no matter in a reduction).
        m = b.select(b.fcmp_ordered(">" if op == "max" else "<", y, x), y, x)
        return b.select(b.fcmp_unordered("uno", y, y), y, m)
    name = {"sum": "add", "prod": "mul", "max": "max", "min": "min"}[op]
    return emit_op(b, name, [x, y], [dtype, dtype], dtype)


def _arg_better(b, op: str, x, acc, dtype: str):
    """Does candidate ``x`` (seen later) beat ``acc``?  NaN beats everything, as in NumPy."""
    better = emit_op(b, "gt" if op == "argmax" else "lt", [x, acc], [dtype, dtype], "bool")
    if is_float(dtype):
        nan_x = emit_op(b, "isnan", [x], [dtype], "bool")
        nan_a = emit_op(b, "isnan", [acc], [dtype], "bool")
        better = b.or_(better, b.and_(nan_x, b.not_(nan_a)))
    return better


def _arg_better_full(b, op: str, vx, ix, va, ia, dtype: str):
    """Order-free version of :func:`_arg_better`: ties (and two NaNs) go to the smaller index."""
    better = _arg_better(b, op, vx, va, dtype)
    worse = _arg_better(b, op, va, vx, dtype)
    earlier = b.icmp_signed("<", ix, ia)
    return b.or_(better, b.and_(b.not_(worse), earlier))


def _halves(b: ir.IRBuilder, v):
    n = v.type.count // 2
    lo = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n))))
    hi = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n, 2 * n))))
    return lo, hi


def _hreduce(b: ir.IRBuilder, v, combine):
    """Tree reduction of a vector's lanes (log2 steps instead of a serial chain)."""
    while v.type.count > 1:
        lo, hi = _halves(b, v)
        v = combine(lo, hi)
    return b.extract_element(v, I32(0))


def _arg_hreduce(b: ir.IRBuilder, op: str, v, idx, dtype: str):
    while v.type.count > 1:
        vlo, vhi = _halves(b, v)
        ilo, ihi = _halves(b, idx)
        take = _arg_better_full(b, op, vhi, ihi, vlo, ilo, dtype)
        v, idx = b.select(take, vhi, vlo), b.select(take, ihi, ilo)
    return b.extract_element(v, I32(0)), b.extract_element(idx, I32(0))


# --------------------------------------------------------------------------- lowering entry points


def lower(kernel: kir.Kernel) -> ir.Module:
    """The unoptimized LLVM module of ``kernel`` (one function named :func:`symbol_name`)."""
    return _Lowering(kernel, symbol_name(kernel)).build()


_lock = threading.RLock()
_target_machine: llvm.TargetMachine | None = None


def target_machine() -> llvm.TargetMachine:
    """The host TargetMachine (created once: building one per kernel costs milliseconds)."""
    global _target_machine
    with _lock:
        if _target_machine is None:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            llvm.initialize_native_asmparser()      # kernels with inline assembly (vdpbf16ps)
            target = llvm.Target.from_default_triple()
            _target_machine = target.create_target_machine(
                cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
                opt=3, reloc="pic", codemodel="jitdefault")
        return _target_machine


def native_vector_bytes() -> int:
    """Width of the host's vector registers (64 with AVX-512, 32 with AVX, else 16)."""
    global _native_bytes
    if _native_bytes is None:
        feats = llvm.get_host_cpu_features()
        _native_bytes = 64 if feats.get("avx512f") else 32 if feats.get("avx") else 16
    return _native_bytes


_native_bytes: int | None = None


def host_id() -> str:
    """Everything about the host that decides the object code (part of cache keys)."""
    return "|".join((CODEGEN_VERSION, ".".join(map(str, llvm.llvm_version_info)), llvm.get_process_triple(),
                     llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()))


def optimize(module_text: str) -> llvm.ModuleRef:
    tm = target_machine()
    mod = llvm.parse_assembly(module_text)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    # Loops are vectorized by construction; LLVM's vectorizers would only re-vectorize the
    # scalar remainder loops, costing compile time and code size.
    pto.loop_vectorization = False
    pto.slp_vectorization = False
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


def assemble(module_text: str) -> bytes:
    """Optimize (O3, host CPU features) and assemble LLVM IR text to host object code.

    Raises :class:`LinkError` when the code would call a function outside itself (a
    compiler-runtime routine LLVM reaches for, such as ``__truncdfhf2``): nothing links those
    into a JIT-loaded kernel, so the call would jump to address 0.
    """
    with _lock:     # LLVM's global context and the shared TargetMachine are not thread-safe
        obj = target_machine().emit_object(optimize(module_text))
    missing = sorted(undefined_symbols(obj) - _LINKER_SYMBOLS)
    if missing:
        raise LinkError(f"generated code calls {', '.join(missing)}, which tracejit does not link; "
                        f"the op or conversion that needs it has no inline lowering on this host "
                        f"({llvm.get_host_cpu_name()})")
    return obj


class LinkError(RuntimeError):
    """Generated object code that needs a symbol the in-process loader cannot resolve."""


class ObjectCodeError(ValueError):
    """Object code the in-process loader must not be given: malformed or unexpected ELF (LLVM's
    loader trusts its input and crashes the process on a bad one)."""


_LINKER_SYMBOLS = frozenset({"_GLOBAL_OFFSET_TABLE_"})

# ELF64 file header, section header and symbol, little-endian.
_EHDR, _SHDR = struct.Struct("<16sHHIQQQIHHHHHH"), struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_SHT_SYMTAB, _SHT_STRTAB, _SHT_RELA, _SHT_NOBITS, _SHT_REL = 2, 3, 4, 8, 9
# Section types a relocatable object from LLVM may hold (the loader skips the others' contents).
_SECTION_TYPES = frozenset({0, 1, 2, 3, 4, 7, 8, 9, 14, 15, 16, 17, 0x6FFF4C03, 0x70000001})
# WRITE, ALLOC, EXECINSTR, MERGE, STRINGS, INFO_LINK, LINK_ORDER, GROUP, X86_64_LARGE.
_SECTION_FLAGS = 0x1 | 0x2 | 0x4 | 0x10 | 0x20 | 0x40 | 0x80 | 0x200 | 0x10000000
_SHN_ABS = 0xFFF1
_STT_SECTION, _STT_FILE = 3, 4
_EM_X86_64 = 62
# x86-64 relocations RuntimeDyld applies, with the bytes each writes (it aborts on others).
_X86_64_RELOCATIONS = {0: 0, 1: 8, 2: 4, 3: 4, 4: 4, 9: 4, 10: 4, 11: 4, 24: 8, 25: 8, 26: 4, 27: 8, 28: 8,
                       29: 8, 41: 4, 42: 4}
# A .bss larger than this, or an alignment above this, is damage (it would be allocated).
_MAX_NOBITS, _MAX_ALIGN = 64 << 20, 1 << 16


def _elf_host() -> bool:
    """Whether this host's object files are ELF64 little-endian (Linux on x86-64 or AArch64)."""
    triple = llvm.get_process_triple()
    return "linux" in triple and triple.split("-")[0] in ("x86_64", "aarch64")


def _string(obj: bytes, table: tuple, offset: int) -> str:
    """The NUL-terminated name at ``offset`` of a string-table section, bounds-checked."""
    start, size = table[4], table[5]
    end = obj.find(b"\0", start + offset, start + size) if offset < size else -1
    if end < 0:
        raise ObjectCodeError(f"name offset {offset} outside its string table")
    return obj[start + offset:end].decode("utf-8", "replace")


def _sections(obj: bytes) -> list[tuple]:
    """The section headers of an ELF64 little-endian relocatable object, each within the file."""
    if len(obj) < _EHDR.size or obj[:7] != b"\x7fELF\x02\x01\x01":
        raise ObjectCodeError("not an ELF64 little-endian object")
    (ident, e_type, machine, version, entry, phoff, shoff, flags, ehsize, phentsize, phnum, shentsize, shnum,
     shstrndx) = _EHDR.unpack_from(obj)
    # Exactly what LLVM writes for a relocatable object: its reader trusts even the unused fields.
    if ident[7] not in (0, 3) or any(ident[8:]) or (e_type, version, entry, phoff, flags, ehsize, phentsize,
                                                     phnum) != (1, 1, 0, 0, 0, _EHDR.size, 0, 0):
        raise ObjectCodeError("not a relocatable ELF object")
    if machine != {"x86_64": _EM_X86_64, "aarch64": 183}.get(llvm.get_process_triple().split("-")[0]):
        raise ObjectCodeError(f"object for machine {machine}, not this host")
    if shentsize != _SHDR.size or not 0 < shnum < 1 << 12 or shoff + shnum * _SHDR.size > len(obj) \
            or not shstrndx < shnum:
        raise ObjectCodeError("section table outside the file")
    sections = [_SHDR.unpack_from(obj, shoff + i * _SHDR.size) for i in range(shnum)]
    for _, sh_type, flags, _, offset, size, link, _, align, _ in sections:
        if sh_type not in _SECTION_TYPES:
            raise ObjectCodeError(f"unexpected section type {sh_type:#x}")
        if size > _MAX_NOBITS if sh_type == _SHT_NOBITS else offset + size > len(obj):
            raise ObjectCodeError("section outside the file")
        if align > _MAX_ALIGN or align & (align - 1) or link >= shnum:
            raise ObjectCodeError("bad section alignment or link")
        if sh_type == _SHT_STRTAB and (size == 0 or obj[offset + size - 1] != 0):
            raise ObjectCodeError("string table not NUL-terminated")        # fatal to LLVM's reader
        if flags & ~_SECTION_FLAGS:
            raise ObjectCodeError(f"unsupported section flags {flags:#x}")      # TLS is fatal to it
    if sections[shstrndx][1] != _SHT_STRTAB:
        raise ObjectCodeError("section names are not a string table")
    for s in sections:
        if _string(obj, sections[shstrndx], s[0]) == ".eh_frame":
            _check_eh_frame(obj, s)
    return sections


def _check_eh_frame(obj: bytes, section: tuple) -> None:
    """The loader walks .eh_frame's records by their lengths: each must end inside it."""
    at, end = section[4], section[4] + section[5]
    while at + 4 <= end:
        length, = struct.unpack_from("<I", obj, at)
        if length == 0:
            return
        if length == 0xFFFFFFFF or at + 4 + length > end:
            raise ObjectCodeError(".eh_frame record outside its section")
        at += 4 + length


def _symbols(obj: bytes, sections: list[tuple]) -> list[tuple[str, int, int, int]]:
    """(name, binding, type, section index) of each symbol of the one symbol table, checked."""
    tables = [s for s in sections if s[1] == _SHT_SYMTAB]
    if len(tables) != 1:
        raise ObjectCodeError(f"{len(tables)} symbol tables, not one")
    (_, _, _, _, offset, size, link, _, _, entsize), = tables
    if entsize != _SYM.size or size % _SYM.size or sections[link][1] != _SHT_STRTAB:
        raise ObjectCodeError("malformed symbol table")
    out = []
    for at in range(offset, offset + size, _SYM.size):
        st_name, info, _, shndx, value, sym_size = _SYM.unpack_from(obj, at)
        kind, bind = info & 0xF, info >> 4
        in_section = 0 < shndx < len(sections)
        # The loader handles only these: local/global/weak; no type, object, function, or a
        # section symbol in a section, a file symbol absolute (TLS and others are fatal to it).
        if bind > 2 or kind > 4 or not (shndx < len(sections) or shndx == _SHN_ABS) \
                or kind == _STT_SECTION and not in_section or kind == _STT_FILE and shndx != _SHN_ABS:
            raise ObjectCodeError(f"unsupported symbol (binding {bind}, type {kind}, section {shndx:#x})")
        if in_section and value + sym_size > sections[shndx][5]:
            raise ObjectCodeError("symbol outside its section")
        out.append((_string(obj, sections[link], st_name), info >> 4, kind, shndx))
    return out


def _check_relocations(obj: bytes, sections: list[tuple], symbols: list[tuple[str, int, int, int]]) -> None:
    """Every relocation names a symbol that exists and is no file symbol (the loader cannot
    resolve one), and patches bytes inside its section."""
    x86 = llvm.get_process_triple().startswith("x86_64")
    for _, sh_type, _, _, offset, size, link, info, _, entsize in sections:
        if sh_type not in (_SHT_REL, _SHT_RELA):
            continue
        want = 24 if sh_type == _SHT_RELA else 16
        if entsize != want or size % want or sections[link][1] != _SHT_SYMTAB or not 0 < info < len(sections):
            raise ObjectCodeError("malformed relocation section")
        target_size = sections[info][5]
        for at in range(offset, offset + size, want):
            r_offset, r_info = struct.unpack_from("<QQ", obj, at)
            kind, sym = r_info & 0xFFFFFFFF, r_info >> 32
            width = _X86_64_RELOCATIONS.get(kind) if x86 else 8
            if width is None:
                raise ObjectCodeError(f"unsupported relocation type {kind}")
            if sym >= len(symbols) or symbols[sym][2] == _STT_FILE or r_offset + width > target_size:
                raise ObjectCodeError("relocation outside its section or symbol table")


def defined_symbols(obj: bytes) -> set[str]:
    """Global function symbols an ELF object defines (checked with :func:`validate_object`)."""
    sections = _sections(obj)
    return {name for name, bind, kind, shndx in _symbols(obj, sections) if bind in (1, 2) and kind == 2
            and 0 < shndx < len(sections) and sections[shndx][2] & 0x4}     # SHF_EXECINSTR


def validate_object(obj: bytes, symbol: str) -> None:
    """Raise :class:`ObjectCodeError` unless ``obj`` is a well-formed relocatable ELF object for
    this host (every header, section, symbol, name and relocation within bounds) that defines
    the function ``symbol``, and :class:`LinkError` if it needs a symbol nothing links.  On
    hosts whose objects are not ELF64 (none that tracejit is tested on) nothing is checked."""
    if not _elf_host():
        return
    sections = _sections(obj)
    symbols = _symbols(obj, sections)
    _check_relocations(obj, sections, symbols)
    if symbol not in defined_symbols(obj):
        raise ObjectCodeError(f"object code does not define the function {symbol}")
    missing = sorted(undefined_symbols(obj) - _LINKER_SYMBOLS)
    if missing:
        raise LinkError(f"object code for {symbol} calls {', '.join(missing)}, which tracejit does not link")


def undefined_symbols(obj: bytes) -> set[str]:
    """Names an ELF64 little-endian object file uses but does not define (empty for any other
    format: those hosts are not checked); raises :class:`ObjectCodeError` on a malformed one."""
    if obj[:6] != b"\x7fELF\x02\x01":
        return set()
    sections = _sections(obj)
    return {name for name, _, _, shndx in _symbols(obj, sections)[1:] if shndx == 0 and name}


def compile_kernel(kernel: kir.Kernel) -> CpuArtifact:
    """Lower, optimize and assemble ``kernel`` to object code."""
    text = str(lower(kernel))
    return CpuArtifact(symbol_name(kernel), assemble(text), text)


_engine: llvm.ExecutionEngine | None = None
_loaded: dict[str, int] = {}
_defined: set[str] = set()


def load_address(artifact: CpuArtifact, symbol: str | None = None) -> int:
    """Link ``artifact``'s object code into this process (once); the address of ``symbol``
    (default: the artifact's own).

    The object is validated first (:func:`validate_object`: LLVM's loader crashes on a malformed
    one); an object redefining a function already loaded is refused too.  Loaded code is never
    unloaded: compiled programs hold raw addresses of it."""
    global _engine
    symbol = symbol or artifact.symbol
    with _lock:
        if artifact.symbol not in _loaded:
            validate_object(artifact.object_code, artifact.symbol)
            clash = defined_symbols(artifact.object_code) & _defined if _elf_host() else set()
            if clash:
                raise ObjectCodeError(f"object code for {artifact.symbol} redefines "
                                      f"{', '.join(sorted(clash))}")
            if _engine is None:
                _engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target_machine())
            _engine.add_object_file(llvm.ObjectFileRef.from_data(artifact.object_code))
            _engine.finalize_object()
            _loaded[artifact.symbol] = _engine.get_function_address(artifact.symbol)
            if _elf_host():
                _defined.update(defined_symbols(artifact.object_code))
        addr = _loaded[artifact.symbol] if symbol == artifact.symbol else _engine.get_function_address(symbol)
    if not addr:
        raise LinkError(f"symbol {symbol} not found in the object code of {artifact.symbol}")
    return addr


def is_loaded(symbol: str) -> bool:
    """Whether an artifact exporting ``symbol`` is already linked into this process."""
    with _lock:
        return symbol in _loaded


def load(artifact: CpuArtifact) -> KernelFn:
    """Link ``artifact``'s object code into this process; return the kernel as a ctypes function."""
    return KERNEL_CFUNCTYPE(load_address(artifact))


def optimized_ir(kernel: kir.Kernel) -> str:
    """The optimized LLVM IR of ``kernel`` (for ``explain``)."""
    text = str(lower(kernel))
    with _lock:
        return str(optimize(text))
