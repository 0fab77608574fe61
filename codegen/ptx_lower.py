"""Lowering of a :class:`kir.Kernel` to an LLVM module for ``nvptx64-nvidia-cuda``.

Kernel parameters (the launch convention, see :func:`codegen.ptx.param_types`): one pointer per
input then per output (operand base, offset applied), then the ``ndim`` extents (i64), then
``ndim`` strides in elements (i64) for each operand in the same order.  Strides of ``"c"``/``"b"``
dims are passed too but ignored, so packing never needs the layout.

Two skeletons:

* elementwise (``n_reduce == 0``): a grid-stride loop over the outer space where every thread
  handles ``V`` consecutive elements of the last dim.  When the chunk is complete and every
  operand that is contiguous in the last dim is 16-byte-vector aligned (checked at run time, per
  chunk), those operands use one vector load/store (``ld.global.v4.f32`` ...); otherwise the
  chunk runs element by element.  Consecutive threads take consecutive chunks: coalesced.
* reduction (``n_reduce > 0``): one block per outer point (grid-stride over outer points).  For
  each ``Reduce`` stage every thread folds a strided slice of the reduce space, then the block
  combines with warp butterfly shuffles, one shared-memory word per warp and a second shuffle
  round that every warp runs, so all threads hold the result (the ``Acc``) without another
  broadcast.  ``Store`` stages then run over the reduce space (``over_reduce``) or in thread 0.
  Multi-stage kernels (softmax, layernorm) are one kernel.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

from codegen import kir, nvvm, scalar
from codegen.nvvm import I64

TRIPLE = "nvptx64-nvidia-cuda"
DATA_LAYOUT = "e-i64:64-i128:128-v16:16-v32:32-n16:32:64"
VECTOR_BYTES = 16
MAX_VECTOR_WIDTH = 8
MAX_WARPS = 32  # 1024 threads per block

reg_type = scalar.value_type      # bool is i1 in registers
mem_type = scalar.storage_type    # and one byte in memory
itemsize = scalar.itemsize


def to_mem(b: ir.IRBuilder, v: ir.Value, dtype: str) -> ir.Value:
    return b.zext(v, ir.IntType(8)) if dtype == "bool" else v


def from_mem(b: ir.IRBuilder, v: ir.Value, dtype: str) -> ir.Value:
    return b.icmp_unsigned("!=", v, ir.Constant(v.type, 0)) if dtype == "bool" else v


def vector_width(kernel: kir.Kernel) -> int:
    """Elements per thread in an elementwise kernel: 16 bytes of the widest last-dim-contiguous operand."""
    if kernel.n_reduce or kernel.ndim == 0 or _has_piecewise(kernel):
        return 1
    sizes = [itemsize(o.dtype) for o in (*kernel.inputs, *kernel.outputs) if o.layout[-1] == "c"]
    return min(MAX_VECTOR_WIDTH, VECTOR_BYTES // max(sizes)) if sizes else 1


def _has_piecewise(kernel: kir.Kernel) -> bool:
    """Selects by index range are branches per element (see ``_Lowering.piecewise``)."""
    return any(isinstance(e, kir.Piecewise) for st in kernel.stages for e in kir.walk(st.expr))


def _i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def loop(b: ir.IRBuilder, name: str, start: ir.Value, stop: ir.Value, step: ir.Value,
         body: Callable[[ir.Value], None]) -> None:
    """``for (i = start; i < stop; i += step) body(i)`` with the builder left after the loop."""
    pre, fn = b.block, b.function
    head, body_bb, done = (fn.append_basic_block(f"{name}.{part}") for part in ("head", "body", "done"))
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name=name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_unsigned("<", i, stop), body_bb, done)
    b.position_at_end(body_bb)
    body(i)
    i.add_incoming(b.add(i, step), b.block)
    b.branch(head)
    b.position_at_end(done)


def if_then(b: ir.IRBuilder, cond: ir.Value, name: str, body: Callable[[], None]) -> None:
    """``if (cond) body()`` with the builder left after it."""
    then, done = b.function.append_basic_block(f"{name}.then"), b.function.append_basic_block(f"{name}.done")
    b.cbranch(cond, then, done)
    b.position_at_end(then)
    body()
    b.branch(done)
    b.position_at_end(done)


@dataclass
class _Operand:
    ptr: ir.Value
    strides: list[ir.Value]
    spec: kir.Operand

    def term(self, b: ir.IRBuilder, d: int, idx: ir.Value) -> ir.Value | None:
        """Element offset contributed by index ``idx`` along dim ``d`` (None for a broadcast dim)."""
        kind = self.spec.layout[d]
        if kind == "b":
            return None
        return idx if kind == "c" else b.mul(idx, self.strides[d])


def _add_offsets(b: ir.IRBuilder, terms: list) -> ir.Value:
    terms = [t for t in terms if t is not None]
    if not terms:
        return _i64(0)
    acc = terms[0]
    for t in terms[1:]:
        acc = b.add(acc, t)
    return acc


class _Lowering:
    def __init__(self, kernel: kir.Kernel, name: str) -> None:
        self.k = kernel
        self.emit = scalar.emit_op
        self.module = ir.Module(name=kernel.name)
        self.module.triple = TRIPLE
        self.module.data_layout = DATA_LAYOUT
        n_ops = len(kernel.inputs) + len(kernel.outputs)
        params = [ir.PointerType()] * n_ops + [I64] * (kernel.ndim * (1 + n_ops))
        self.fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), params), name)
        self.fn.calling_convention = "ptx_kernel"
        args = list(self.fn.args)
        self.shape = args[n_ops:n_ops + kernel.ndim]
        strides = args[n_ops + kernel.ndim:]
        specs = (*kernel.inputs, *kernel.outputs)
        self.ops = [_Operand(args[i], strides[i * kernel.ndim:(i + 1) * kernel.ndim], specs[i])
                    for i in range(n_ops)]
        self.inputs = self.ops[:len(kernel.inputs)]
        self.outputs = self.ops[len(kernel.inputs):]
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.accs: dict[int, ir.Value] = {}

    # -- small helpers -------------------------------------------------------------------------
    def block(self, name: str) -> ir.Block:
        return self.fn.append_basic_block(name)

    def product(self, values: list[ir.Value]) -> ir.Value:
        acc: ir.Value = _i64(1)
        for v in values:
            acc = self.b.mul(acc, v)
        return acc

    def unravel(self, lin: ir.Value, dims: range) -> dict[int, ir.Value]:
        """Split a flat index into per-dim indices over ``dims`` (row-major)."""
        b, out, dims = self.b, {}, list(dims)
        for pos, d in enumerate(reversed(dims)):
            if pos == len(dims) - 1:
                out[d] = lin
            else:
                out[d] = b.urem(lin, self.shape[d])
                lin = b.udiv(lin, self.shape[d])
        return out

    def loop(self, name: str, start: ir.Value, stop: ir.Value, step: ir.Value,
             body: Callable[[ir.Value], None]) -> None:
        loop(self.b, name, start, stop, step, body)

    def if_then(self, cond: ir.Value, name: str, body: Callable[[], None]) -> None:
        if_then(self.b, cond, name, body)

    def load(self, op: _Operand, offset: ir.Value) -> ir.Value:
        b, dt = self.b, op.spec.dtype
        p = b.gep(op.ptr, [offset], source_etype=mem_type(dt))
        return from_mem(b, b.load(p, typ=mem_type(dt), align=itemsize(dt)), dt)

    def store(self, op: _Operand, offset: ir.Value, v: ir.Value) -> None:
        b, dt = self.b, op.spec.dtype
        p = b.gep(op.ptr, [offset], source_etype=mem_type(dt))
        b.store(to_mem(b, v, dt), p, align=itemsize(dt))

    def cast(self, v: ir.Value, src: str, dst: str) -> ir.Value:
        return v if src == dst else self.emit(self.b, "cast", [v], [src], dst)

    # -- expressions ---------------------------------------------------------------------------
    def eval(self, expr: kir.Expr, loads: Callable[[int], ir.Value], index: Callable[[int], ir.Value],
             memo: dict[int, ir.Value]) -> ir.Value:
        """Emit ``expr`` (shared sub-trees once per ``memo``); ``loads(i)`` gives input ``i``."""
        for node in kir.walk(expr, pieces=False):
            if id(node) in memo:
                continue
            if isinstance(node, kir.Piecewise):
                v = self.piecewise(node, loads, index, memo)
            elif isinstance(node, kir.Load):
                v = loads(node.input)
            elif isinstance(node, kir.Const):
                v = scalar.const(node.dtype, node.value)
            elif isinstance(node, kir.Acc):
                v = self.accs[node.stage]
            elif isinstance(node, kir.Index):
                v = index(node.dim)
            else:
                args = [memo[id(a)] for a in node.args]
                dtypes = [kir.expr_dtype(self.k, a) for a in node.args]
                v = self.emit(self.b, node.op, args, dtypes, node.dtype)
            memo[id(node)] = v
        return memo[id(expr)]

    def piecewise(self, e: kir.Piecewise, loads: Callable[[int], ir.Value], index: Callable[[int], ir.Value],
                  memo: dict[int, ir.Value]) -> ir.Value:
        """Branch on the index to the one piece that holds there: a piece's loads run only inside
        its range (what it computes stays in its block; a phi joins them)."""
        b, i = self.b, index(e.dim)
        done = self.block("piece.done")
        incoming = []
        for k, piece in enumerate(e.pieces):
            if k < len(e.cuts):
                here, rest = self.block(f"piece{k}"), self.block(f"piece{k}.rest")
                b.cbranch(b.icmp_signed("<", i, _i64(e.cuts[k])), here, rest)
                b.position_at_end(here)
            fresh = getattr(loads, "fresh", None)
            v = self.eval(piece, fresh() if fresh else loads, index, dict(memo))
            incoming.append((v, b.block))
            b.branch(done)
            if k < len(e.cuts):
                b.position_at_end(rest)
        b.position_at_end(done)
        phi = b.phi(incoming[0][0].type)
        for v, bb in incoming:
            phi.add_incoming(v, bb)
        return phi

    def build(self) -> ir.Module:
        if self.k.n_reduce == 0:
            if any(isinstance(s, kir.Reduce) for s in self.k.stages):
                raise ValueError(f"kernel {self.k.name}: Reduce stage with n_reduce == 0")
            _Elementwise(self).build()
        else:
            if _has_piecewise(self.k):
                raise ValueError(f"kernel {self.k.name}: Piecewise in a kernel with reduce dims")
            _RowReduce(self).build()
        self.b.ret_void()
        return self.module




class _Elementwise:
    """Grid-stride loop; each iteration handles a chunk of ``V`` elements of the last dim."""

    def __init__(self, low: _Lowering) -> None:
        self.low = low
        self.k = low.k
        self.V = vector_width(low.k)

    def build(self) -> None:
        low, b, k = self.low, self.low.b, self.k
        tid, ctaid = nvvm.sreg(b, "tid.x"), nvvm.sreg(b, "ctaid.x")
        ntid, nctaid = nvvm.sreg(b, "ntid.x"), nvvm.sreg(b, "nctaid.x")
        if k.ndim == 0:
            low.if_then(b.icmp_unsigned("==", b.add(tid, ctaid), _i64(0)), "single",
                        lambda: self.lane_scalar({}, None, 0))
            return
        self.nlast = low.shape[-1]
        self.nchunks = b.udiv(b.add(self.nlast, _i64(self.V - 1)), _i64(self.V))
        total = b.mul(low.product(low.shape[:-1]), self.nchunks)
        start = b.add(b.mul(ctaid, ntid), tid)
        low.loop("i", start, total, b.mul(ntid, nctaid), self.chunk)

    def chunk(self, lin: ir.Value) -> None:
        low, b, k, V = self.low, self.low.b, self.k, self.V
        idx = low.unravel(b.udiv(lin, self.nchunks), range(k.ndim - 1)) if k.ndim > 1 else {}
        j0 = b.mul(b.urem(lin, self.nchunks), _i64(V))
        last = k.ndim - 1
        # element offset of the chunk's first element, per operand
        base = [_add_offsets(b, [op.term(b, d, idx[d]) for d in range(last)] + [op.term(b, last, j0)])
                for op in low.ops]
        if V == 1:
            self.lane_scalar(idx, base, 0, j0)
            return
        vec_ops = [i for i, op in enumerate(low.ops) if op.spec.layout[-1] == "c"]
        fast = b.icmp_unsigned("<=", b.add(j0, _i64(V)), self.nlast)
        for i in vec_ops:
            op = low.ops[i]
            addr = b.ptrtoint(b.gep(op.ptr, [base[i]], source_etype=mem_type(op.spec.dtype)), I64)
            align = V * itemsize(op.spec.dtype)
            ok = b.icmp_unsigned("==", b.and_(addr, _i64(align - 1)), _i64(0))
            fast = b.and_(fast, ok)
        vec_bb, scalar_bb, done = low.block("vec"), low.block("scalar"), low.block("chunk.done")
        b.cbranch(fast, vec_bb, scalar_bb)
        b.position_at_end(vec_bb)
        self.vector_chunk(idx, base, j0, set(vec_ops))
        b.branch(done)
        b.position_at_end(scalar_bb)
        for j in range(V):
            jj = b.add(j0, _i64(j))
            low.if_then(b.icmp_unsigned("<", jj, self.nlast), f"lane{j}",
                        lambda j=j: self.lane_scalar(idx, base, j, j0))
        b.branch(done)
        b.position_at_end(done)

    def lane_offset(self, op: _Operand, base: ir.Value, j: int) -> ir.Value:
        if j == 0 or op.spec.layout[-1] == "b":
            return base
        step = _i64(j) if op.spec.layout[-1] == "c" else self.low.b.mul(_i64(j), op.strides[-1])
        return self.low.b.add(base, step)

    def index_fn(self, idx: dict[int, ir.Value], j0: ir.Value | None, j: int) -> Callable[[int], ir.Value]:
        def index(d: int) -> ir.Value:
            if d < self.k.ndim - 1:
                return idx[d]
            return self.low.b.add(j0, _i64(j)) if j else j0
        return index

    def lane_scalar(self, idx: dict, base: list | None, j: int, j0: ir.Value | None = None) -> None:
        """One element: scalar loads, the stages, scalar stores."""
        low = self.low
        offs = [self.lane_offset(op, base[i], j) if base else _i64(0) for i, op in enumerate(low.ops)]
        loads = self._cached(lambda i: low.load(low.inputs[i], offs[i]))
        memo: dict[int, ir.Value] = {}
        for st in self.k.stages:
            v = low.eval(st.expr, loads, self.index_fn(idx, j0, j), memo)
            out = low.outputs[st.output]
            low.store(out, offs[len(low.inputs) + st.output], low.cast(v, kir.expr_dtype(self.k, st.expr),
                                                                         out.spec.dtype))

    def vector_chunk(self, idx: dict, base: list, j0: ir.Value, vec_ops: set[int]) -> None:
        """A full aligned chunk: one vector access per contiguous operand, the stages per lane."""
        low, b, V = self.low, self.low.b, self.V
        n_in = len(low.inputs)
        lanes: dict[int, list[ir.Value]] = {}

        def vload(i: int) -> list[ir.Value]:
            if i not in lanes:
                op = low.inputs[i]
                dt = op.spec.dtype
                if i in vec_ops:
                    vt = ir.VectorType(mem_type(dt), V)
                    p = b.gep(op.ptr, [base[i]], source_etype=mem_type(dt))
                    vec = b.load(p, typ=vt, align=V * itemsize(dt))
                    lanes[i] = [from_mem(b, b.extract_element(vec, _i64(j)), dt) for j in range(V)]
                elif op.spec.layout[-1] == "b":
                    lanes[i] = [low.load(op, base[i])] * V
                else:
                    lanes[i] = [low.load(op, self.lane_offset(op, base[i], j)) for j in range(V)]
            return lanes[i]

        results: dict[int, list[ir.Value]] = {}
        memos: list[dict[int, ir.Value]] = [{} for _ in range(V)]
        for st in self.k.stages:
            out = low.outputs[st.output]
            vals = [low.eval(st.expr, lambda i, j=j: vload(i)[j], self.index_fn(idx, j0, j), memos[j])
                    for j in range(V)]
            vals = [low.cast(v, kir.expr_dtype(self.k, st.expr), out.spec.dtype) for v in vals]
            results[st.output] = vals
            o = n_in + st.output
            dt = out.spec.dtype
            if o in vec_ops:
                vec = ir.Constant(ir.VectorType(mem_type(dt), V), ir.Undefined)
                for j, v in enumerate(vals):
                    vec = b.insert_element(vec, to_mem(b, v, dt), _i64(j))
                p = b.gep(out.ptr, [base[o]], source_etype=mem_type(dt))
                b.store(vec, p, align=V * itemsize(dt))
            else:
                for j, v in enumerate(vals):
                    low.store(out, self.lane_offset(out, base[o], j), v)

    @staticmethod
    def _cached(fn: Callable[[int], ir.Value]) -> Callable[[int], ir.Value]:
        cache: dict[int, ir.Value] = {}

        def get(i: int) -> ir.Value:
            if i not in cache:
                cache[i] = fn(i)
            return cache[i]
        get.fresh = lambda: _Elementwise._cached(fn)   # (loads inside a branch stay there)
        return get


class _RowReduce:
    """One block per outer point; Reduce stages combine across the block, results in every thread."""

    def __init__(self, low: _Lowering) -> None:
        self.low = low
        self.k = low.k
        self.n_outer = low.k.n_outer

    def build(self) -> None:
        low, b, k = self.low, self.low.b, self.k
        self.tid, self.ntid = nvvm.sreg(b, "tid.x"), nvvm.sreg(b, "ntid.x")
        ctaid, nctaid = nvvm.sreg(b, "ctaid.x"), nvvm.sreg(b, "nctaid.x")
        self.lane = b.and_(self.tid, _i64(31))
        self.warp = b.lshr(self.tid, _i64(5))
        self.nwarps = b.lshr(b.add(self.ntid, _i64(31)), _i64(5))
        self.R = low.product(low.shape[self.n_outer:])
        self.shared = {}
        for s, st in enumerate(k.stages):
            if isinstance(st, kir.Reduce):
                arrays = [self._shared(f"red{s}", kir.expr_dtype(k, st.expr))]
                if st.op in ("argmax", "argmin"):
                    arrays.append(self._shared(f"red{s}.idx", "int64"))
                self.shared[s] = arrays
        total = low.product(low.shape[:self.n_outer])
        # the outer loop condition depends on ctaid only, so it is uniform and barriers are safe
        low.loop("o", ctaid, total, nctaid, self.outer_point)

    def _shared(self, name: str, dtype: str) -> ir.GlobalVariable:
        return nvvm.shared_array(self.low.module, name, mem_type(dtype), MAX_WARPS)

    def outer_point(self, o: ir.Value) -> None:
        low, b = self.low, self.low.b
        self.oidx = low.unravel(o, range(self.n_outer)) if self.n_outer else {}
        self.obase = [_add_offsets(b, [op.term(b, d, self.oidx[d]) for d in range(self.n_outer)])
                      for op in low.ops]
        low.accs = {}
        for s, st in enumerate(self.k.stages):
            if isinstance(st, kir.Reduce):
                low.accs[s] = self.reduce_stage(s, st)
            elif st.over_reduce:
                self.over_reduce(lambda r, ridx, st=st: self.store(st, r, ridx))
            else:
                low.if_then(b.icmp_unsigned("==", self.tid, _i64(0)), f"store{s}",
                            lambda st=st: self.store(st, None, {}))

    def point(self, ridx: dict[int, ir.Value]) -> tuple[list[ir.Value], Callable, Callable]:
        """Offsets, load function and index function at reduce index ``ridx`` (empty: outer only)."""
        low, b = self.low, self.low.b
        offs = [_add_offsets(b, [self.obase[i]] + [op.term(b, d, ridx[d]) for d in ridx])
                for i, op in enumerate(low.ops)]
        loads = _Elementwise._cached(lambda i: low.load(low.inputs[i], offs[i]))

        def index(d: int) -> ir.Value:
            return self.oidx[d] if d < self.n_outer else ridx.get(d, _i64(0))
        return offs, loads, index

    def over_reduce(self, body: Callable[[ir.Value, dict], None]) -> None:
        low = self.low
        low.loop("r", self.tid, self.R, self.ntid,
                 lambda r: body(r, low.unravel(r, range(self.n_outer, self.k.ndim))))

    def store(self, st: kir.Store, r: ir.Value | None, ridx: dict) -> None:
        low = self.low
        offs, loads, index = self.point(ridx)
        v = low.eval(st.expr, loads, index, {})
        out = low.outputs[st.output]
        low.store(out, offs[len(low.inputs) + st.output],
                  low.cast(v, kir.expr_dtype(self.k, st.expr), out.spec.dtype))

    # -- reductions ----------------------------------------------------------------------------
    def reduce_stage(self, s: int, st: kir.Reduce) -> ir.Value:
        low, b = self.low, self.low.b
        vdt = kir.expr_dtype(self.k, st.expr)
        is_arg = st.op in ("argmax", "argmin")
        comb = _Combiner(low, st.op, vdt if is_arg else st.dtype)
        init = comb.identity()
        pre = b.block
        head, body, done = low.block(f"red{s}.head"), low.block(f"red{s}.body"), low.block(f"red{s}.done")
        b.branch(head)
        b.position_at_end(head)
        r = b.phi(I64, name=f"r{s}")
        r.add_incoming(self.tid, pre)
        accs = [b.phi(v.type) for v in init]
        for a, v in zip(accs, init, strict=True):
            a.add_incoming(v, pre)
        b.cbranch(b.icmp_unsigned("<", r, self.R), body, done)
        b.position_at_end(body)
        _, loads, index = self.point(low.unravel(r, range(self.n_outer, self.k.ndim)))
        v = low.eval(st.expr, loads, index, {})
        new = comb.combine(accs, [v, r] if is_arg else [low.cast(v, vdt, st.dtype)])
        for a, n in zip(accs, new, strict=True):
            a.add_incoming(n, b.block)
        r.add_incoming(b.add(r, self.ntid), b.block)
        b.branch(head)
        b.position_at_end(done)
        result = self.block_combine(comb, list(accs), self.shared[s], init)
        return result[1] if is_arg else result[0]

    def _generic(self, arr: ir.GlobalVariable) -> ir.Value:
        # llvmlite gives globals typed pointers; a generic opaque pointer lets us index by element.
        # LLVM's address-space inference turns the accesses back into ld/st.shared.
        return self.low.b.addrspacecast(arr, ir.PointerType())

    def warp_combine(self, comb: _Combiner, vals: list[ir.Value]) -> list[ir.Value]:
        for m in (16, 8, 4, 2, 1):
            vals = comb.combine(vals, [nvvm.shfl_bfly(self.low.b, v, m) for v in vals])
        return vals

    def block_combine(self, comb: _Combiner, vals: list[ir.Value], arrays: list,
                      init: list) -> list[ir.Value]:
        """Warp shuffles, one shared word per warp, then every warp combines the per-warp words."""
        low, b = self.low, self.low.b
        vals = self.warp_combine(comb, vals)
        dtypes = comb.dtypes

        def publish() -> None:
            for v, arr, dt in zip(vals, arrays, dtypes, strict=True):
                p = b.gep(self._generic(arr), [self.warp], source_etype=mem_type(dt))
                b.store(to_mem(b, v, dt), p)
        low.if_then(b.icmp_unsigned("==", self.lane, _i64(0)), "publish", publish)
        nvvm.barrier(b)
        has = b.icmp_unsigned("<", self.lane, self.nwarps)
        # every lane loads a valid slot (slot 0 exists) and masks with the identity afterwards
        slot = b.select(has, self.lane, _i64(0))
        words = []
        for arr, dt, ident in zip(arrays, dtypes, init, strict=True):
            p = b.gep(self._generic(arr), [slot], source_etype=mem_type(dt))
            words.append(b.select(has, from_mem(b, b.load(p, typ=mem_type(dt)), dt), ident))
        out = self.warp_combine(comb, words)
        # the shared words are rewritten by the next reduction: wait until everyone has read them
        nvvm.barrier(b)
        return out


class _Combiner:
    """The associative fold of one reduce op (argmax/argmin fold (value, index) pairs)."""

    def __init__(self, low: _Lowering, op: str, dtype: str) -> None:
        self.low, self.op, self.dtype = low, op, dtype
        self.is_arg = op in ("argmax", "argmin")
        self.dtypes = [dtype, "int64"] if self.is_arg else [dtype]

    def _extreme(self, largest: bool) -> ir.Constant:
        dt = self.dtype
        if scalar.is_float(dt):
            return scalar.const(dt, float("inf") if largest else float("-inf"))
        if dt == "bool" or dt.startswith("uint"):
            bits = scalar.INT_BITS[dt]
            return scalar.const(dt, (1 << bits) - 1 if largest else 0)
        bits = scalar.INT_BITS[dt]
        return scalar.const(dt, (1 << (bits - 1)) - 1 if largest else -(1 << (bits - 1)))

    def identity(self) -> list[ir.Value]:
        if self.op in ("sum", "prod"):
            return [scalar.const(self.dtype, int(self.op == "prod"))]
        if self.op in ("max", "argmax"):
            v = self._extreme(largest=False)
        else:
            v = self._extreme(largest=True)
        # index identity: larger than any real index, so real elements win ties
        return [v, _i64((1 << 63) - 1)] if self.is_arg else [v]

    def combine(self, a: list[ir.Value], c: list[ir.Value]) -> list[ir.Value]:
        low, b, dt = self.low, self.low.b, self.dtype
        emit = low.emit
        if not self.is_arg:
            op = {"sum": "add", "prod": "mul", "max": "max", "min": "min"}[self.op]
            return [emit(b, op, [a[0], c[0]], [dt, dt], dt)]
        # c wins if strictly better, or equal with a smaller index; NaN beats everything (NumPy)
        (va, ia), (vc, ic) = a, c
        better = emit(b, "gt" if self.op == "argmax" else "lt", [vc, va], [dt, dt], "bool")
        tie = emit(b, "eq", [vc, va], [dt, dt], "bool")
        if scalar.is_float(dt):
            nan_a = emit(b, "isnan", [va], [dt], "bool")
            nan_c = emit(b, "isnan", [vc], [dt], "bool")
            better = b.or_(b.and_(better, b.not_(nan_a)), b.and_(nan_c, b.not_(nan_a)))
            tie = b.or_(tie, b.and_(nan_a, nan_c))
        take = b.or_(better, b.and_(tie, b.icmp_unsigned("<", ic, ia)))
        return [b.select(take, vc, va), b.select(take, ic, ia)]


def lower(kernel: kir.Kernel, name: str) -> ir.Module:
    """Build the NVPTX LLVM module of ``kernel`` with entry point ``name``."""
    return _Lowering(kernel, name).build()
