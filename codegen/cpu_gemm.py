"""CPU GEMM: LLVM IR of ``C = A @ B`` for float32 and float64, GotoBLAS/BLIS style.

One C-ABI entry per dtype (:data:`codegen.cpu.KERNEL_CFUNCTYPE`)::

    void tj_gemm_<dtype>_v<vector bytes>(int64 start, int64 end, const int64 *shape,
                                         const int64 *strides, void **ptrs)

* ``shape = (M, N, K, split, chunk, b_mode)``: ``[start, end)`` is a range of columns of C
  (``split`` 0) or of rows (``split`` 1); ranges are ``chunk`` long except the last, so
  ``start // chunk`` names the range's scratch slot;
* ``b_mode``: where B's packed panels live.  :data:`B_SCRATCH` (0): packed into the range's
  scratch slot, one block at a time.  :data:`B_PACK` (1): all of B packed into the shared
  panels at ``ptrs[4]`` (each range its own columns, so only with ``split`` 0 or one range) and
  used from there.  :data:`B_PACKED` (2): read from ``ptrs[4]`` as an earlier ``B_PACK`` call of
  the same B, K and N left them, nothing packed.  The shared layout
  (:func:`shared_b_elements`): K block ``p`` (balanced blocks of <= KC) at element
  ``p * packed_k(kstep) * round_up(N, NR)``, within it column ``j``'s panel at ``j * packed_k(kc)``;
* ``strides`` = element strides ``(a_m, a_k, b_k, b_n, c_m, c_n)``, any values (transposed
  views, steps, 0 for broadcasts);
* ``ptrs = (A, B, C, scratch, shared B panels)``: scratch holds one slot of
  :attr:`GemmParams.scratch_bytes` per range, 64-byte aligned; the shared panels are 64-byte
  aligned (null with ``B_SCRATCH``).

Loops (per range): ``jc`` over NC columns, ``pc`` over KC of K (balanced blocks), B's block packed
into KC x NR panels; ``ic`` over MC rows, A's block packed into MR x KC panels; then the
micro-kernel over each MR x NR tile of C: MR x NR/W accumulators in vector registers, per k
NR/W vector loads of B and MR broadcasts of A.  Packing zero-pads partial panels, so the
micro-kernel always computes a whole tile; a partial tile, or a C whose rows are not
contiguous, goes through a stack tile copied out element by element.

Packing has three paths chosen at run time per panel: a vector copy when the panel's rows are
contiguous in memory (row-major B, column-major A), an in-register transpose when its K is
contiguous (row-major A, column-major B), else scalar loads.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from llvmlite import ir

from codegen import cpu
from codegen.cpu import CpuArtifact, masked_load, masked_store, native_vector_bytes
from codegen.llvm_loops import FunctionBuilder, function
from codegen.scalar import I1, I32, I64, const, intrinsic, itemsize, splat, value_type

DTYPES = ("float32", "float64")
B_SCRATCH, B_PACK, B_PACKED = 0, 1, 2
# K per packed block: a B micro-panel (KC x NR, KC * 128 bytes with two vectors per row of the
# tile) stays in L1 while the A panels stream past it.
KC = 256
# k steps per trip of the micro-kernel loop
UNROLL = 1
# Rows of A per packed block (a multiple of MR is used): MC x KC elements stay in L2.
MC_BYTES = 160 * 1024
# Columns of B per packed block (a multiple of NR is used): KC x NC elements.
NC_BYTES = 512 * 1024


@dataclass(frozen=True)
class GemmParams:
    """Register and cache blocking of one dtype on the host."""
    dtype: str          # C's and the accumulators'
    vector_bytes: int
    lanes: int          # elements per vector register
    mr: int             # tile rows (A values broadcast per k)
    nr: int             # tile columns (a multiple of lanes)
    kc: int
    mc: int
    nc: int
    operand: str = ""   # A's and B's, when not ``dtype``

    @property
    def operand_dtype(self) -> str:
        return self.operand or self.dtype

    @property
    def symbol(self) -> str:
        return f"tj_gemm_{self.operand_dtype}_v{self.vector_bytes}"

    @functools.cached_property
    def scratch_bytes(self) -> int:
        """Packing space per range: A's block, then B's (64-byte aligned)."""
        size = itemsize(self.operand_dtype)
        a = -(-self.mc * self.kc * size // 64) * 64
        return a + self.kc * self.nc * size


def k_blocks(k: int, kc: int = KC) -> tuple[int, int]:
    """(count, size) of the balanced K blocks of <= ``kc`` the kernel splits ``k`` into."""
    count = max(1, -(-k // kc))
    return count, -(-k // count)


def shared_b_elements(p: GemmParams, k: int, n: int) -> int:
    """Elements of the shared packed panels of a K x N B (``b_mode`` 1 and 2)."""
    count, size = k_blocks(k, p.kc)
    packed = size + size % 2 if p.operand else size     # (pairs of k in the bfloat16 kernel)
    return count * packed * -(-n // p.nr) * p.nr


def params(dtype: str, vector_bytes: int | None = None) -> GemmParams:
    """Blocking for ``dtype`` with ``vector_bytes`` registers (default: the host's)."""
    if dtype not in DTYPES:
        raise TypeError(f"gemm supports {DTYPES}, not {dtype}")
    vb = vector_bytes or native_vector_bytes()
    lanes = vb // itemsize(dtype)
    # 32 registers with AVX-512: 14 x 2 accumulators + 2 of B + 1 broadcast; 16 otherwise: 6 x 2
    mr = 14 if vb == 64 else 6
    nr = 2 * lanes
    size = itemsize(dtype)
    mc = max(mr, MC_BYTES // (KC * size) // mr * mr)
    nc = max(nr, NC_BYTES // (KC * size) // nr * nr)
    return GemmParams(dtype, vb, lanes, mr, nr, KC, mc, nc)


# --------------------------------------------------------------------------- IR helpers


def _lane_mask(b: ir.IRBuilder, lanes: int, first: int, count: ir.Value) -> ir.Value:
    """Lanes ``l`` with ``first + l < count``."""
    iota = ir.Constant(ir.VectorType(I64, lanes), list(range(first, first + lanes)))
    return b.icmp_signed("<", iota, splat(b, count, lanes))


def _const_mask(lanes: int, count: int) -> ir.Constant:
    return ir.Constant(ir.VectorType(I1, lanes), [int(i < count) for i in range(lanes)])


# --------------------------------------------------------------------------- generator


class _Gemm:
    """The GEMM's LLVM module.  ``t``/``size`` are A's and B's element (what packing copies),
    ``ct``/``vt``/``c_size`` C's and the accumulators' (the same type here; see
    :mod:`codegen.cpu_gemm_bf16` for a kernel where they differ)."""

    def __init__(self, p: GemmParams):
        self.p = p
        self.ct = value_type(p.dtype)
        self.vt = ir.VectorType(self.ct, p.lanes)
        self.c_size = itemsize(p.dtype)
        self.t = value_type(p.operand_dtype)
        self.size = itemsize(p.operand_dtype)
        self.module = ir.Module(name=p.symbol)
        # one micro-kernel per tile height: a partial panel of A costs its rows only
        self.kernels = {mr: self._micro_kernel(mr) for mr in range(1, p.mr + 1)}
        self.pack_a = self._pack(p.mr, "pack_a")
        self.pack_b = self._pack(p.nr, "pack_b")
        self.block = self._block()
        self._entry()
        self._batched_entry()

    def vptr(self, b: ir.IRBuilder, ptr: ir.Value) -> ir.Value:
        return b.bitcast(ptr, self.vt.as_pointer())

    def packed_k(self, e: FunctionBuilder, kc: ir.Value) -> ir.Value:
        """How many k a packed panel of ``kc`` holds (its rows apart: ``packed_k * rows``)."""
        return kc

    # ----------------------------------------------------------------- micro-kernel

    def _micro_kernel(self, mr: int) -> ir.Function:
        """``uk(kc, ap, bp, c, ldc, acc)``: the ``mr`` x NR tile ``C (+)= Ap @ Bp`` over ``kc``
        (Ap's panel is MR rows wide); C's rows ``ldc`` apart and contiguous; ``acc`` adds to C
        instead of overwriting it."""
        p = self.p
        ptr = self.t.as_pointer()
        fn = function(self.module, f"{p.symbol}_uk{mr}", [I64, ptr, ptr, self.ct.as_pointer(), I64, I1])
        fn.attributes.add("noinline")
        kc, ap, bp, c, ldc, acc = fn.args
        for a in (ap, bp, c):
            a.add_attribute("noalias")
        e = FunctionBuilder(fn)
        accs = self._k_loop(e, mr, kc, ap, bp)
        self._store_tile(e, accs, mr, c, ldc, acc)
        return fn

    def _k_loop(self, e: FunctionBuilder, mr: int, kc: ir.Value, ap: ir.Value,
                bp: ir.Value) -> list[ir.Value]:
        """The accumulators of an ``mr`` x NR tile: per k, NR/W vector loads of B, ``mr``
        broadcasts of A, fused multiply-adds."""
        p, b = self.p, e.b
        nv = p.nr // p.lanes
        accs = [const(p.dtype, 0, p.lanes)] * (mr * nv)

        def step(k: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
            bk = e.at(bp, b.mul(k, I64(p.nr)))
            bv = [b.load(self.vptr(b, e.at(bk, I64(v * p.lanes))), align=64) for v in range(nv)]
            ak = e.at(ap, b.mul(k, I64(p.mr)))
            out = list(accs)
            for r in range(mr):
                a = splat(b, b.load(e.at(ak, I64(r)), align=self.size), p.lanes)
                for v in range(nv):
                    out[r * nv + v] = intrinsic(b, "fmuladd", [a, bv[v], out[r * nv + v]])
            return out

        unroll = UNROLL
        with e.loop(I64(0), kc, unroll, "k4", accs) as lp:
            cur = lp.carried
            for u in range(unroll):
                cur = step(b.add(lp.i, I64(u)), cur)
            lp.next = cur
        with e.loop(lp.i, kc, 1, "k1", lp.carried) as lp1:
            lp1.next = step(lp1.i, lp1.carried)
        return lp1.carried

    def _store_tile(self, e: FunctionBuilder, accs: list[ir.Value], mr: int, c: ir.Value, ldc: ir.Value,
                    acc: ir.Value) -> None:
        """The accumulators into C's tile (added to it when ``acc``), and return."""
        p, b, vt = self.p, e.b, self.vt
        nv = p.nr // p.lanes
        fn = e.fn
        add_bb = fn.append_basic_block("add")
        store_bb = fn.append_basic_block("store")
        b.cbranch(acc, add_bb, store_bb)
        pre = b.block
        b.position_at_end(add_bb)
        rows = [e.at(c, b.mul(I64(r), ldc)) for r in range(mr)]
        added = []
        for r in range(mr):
            for v in range(nv):
                old = b.load(self.vptr(b, e.at(rows[r], I64(v * p.lanes))), align=self.c_size)
                added.append(b.fadd(old, accs[r * nv + v]))
        b.branch(store_bb)
        b.position_at_end(store_bb)
        out = []
        for x, y in zip(accs, added):
            phi = b.phi(vt)
            phi.add_incoming(x, pre)
            phi.add_incoming(y, add_bb)
            out.append(phi)
        rows = [e.at(c, b.mul(I64(r), ldc)) for r in range(mr)]
        for r in range(mr):
            for v in range(nv):
                b.store(out[r * nv + v], self.vptr(b, e.at(rows[r], I64(v * p.lanes))), align=self.c_size)
        b.ret_void()

    # ----------------------------------------------------------------- packing

    def _pack(self, rows: int, name: str) -> ir.Function:
        """``pack(kc, rv, src, rs, ks, dst)``: ``dst[k * rows + r] = src[r * rs + k * ks]`` for
        k < kc, r < rv, and 0 for rv <= r < rows (a zero-padded panel)."""
        p, t = self.p, self.t
        ptr = t.as_pointer()
        fn = function(self.module, f"{p.symbol}_{name}", [I64, I64, ptr, I64, I64, ptr])
        kc, rv, src, rs, ks, dst = fn.args
        for a in (src, dst):
            a.add_attribute("noalias")
        e = FunctionBuilder(fn)
        b = e.b
        copy_bb, check_bb = fn.append_basic_block("copy"), fn.append_basic_block("check")
        trans_bb, scalar_bb = fn.append_basic_block("transpose"), fn.append_basic_block("scalar")
        b.cbranch(b.icmp_signed("==", rs, I64(1)), copy_bb, check_bb)
        b.position_at_end(check_bb)
        b.cbranch(b.icmp_signed("==", ks, I64(1)), trans_bb, scalar_bb)

        b.position_at_end(copy_bb)
        self._pack_copy(e, rows, kc, rv, src, ks, dst)
        b.ret_void()

        b.position_at_end(trans_bb)
        k_end = self._pack_transpose(e, rows, kc, rv, src, rs, dst)
        self._pack_scalar(e, rows, k_end, kc, rv, src, rs, ks, dst)
        b.ret_void()

        b.position_at_end(scalar_bb)
        self._pack_scalar(e, rows, I64(0), kc, rv, src, rs, ks, dst)
        b.ret_void()
        return fn

    def _chunks(self, rows: int) -> list[tuple[int, int]]:
        """(first row, rows) of each vector covering a panel row of ``rows`` elements."""
        w = self.p.lanes
        return [(c, min(w, rows - c)) for c in range(0, rows, w)]

    def _store_row(self, b: ir.IRBuilder, x: ir.Value, at: ir.Value, n: int) -> None:
        """Store the first ``n`` lanes of ``x`` at ``at``."""
        if n == self.p.lanes:
            b.store(x, self.vptr(b, at), align=self.size)
        else:
            masked_store(b, x, self.vptr(b, at), _const_mask(self.p.lanes, n), self.size)

    def _pack_copy(self, e: FunctionBuilder, rows: int, kc, rv, src, ks, dst) -> None:
        """A panel whose rows are contiguous: masked vector loads per k."""
        b, w = e.b, self.p.lanes
        masks = [_lane_mask(b, w, c, rv) for c, _ in self._chunks(rows)]
        with e.loop(I64(0), kc, 1, "k") as lp:
            s = e.at(src, b.mul(lp.i, ks))
            d = e.at(dst, b.mul(lp.i, I64(rows)))
            for (c, n), m in zip(self._chunks(rows), masks):
                x = masked_load(b, self.vptr(b, e.at(s, I64(c))), m, self.size)
                self._store_row(b, x, e.at(d, I64(c)), n)

    def _pack_transpose(self, e: FunctionBuilder, rows: int, kc, rv, src, rs, dst) -> ir.Value:
        """A panel whose K is contiguous: ``lanes`` k at a time, each chunk of ``lanes`` rows
        loaded as vectors and transposed in registers.  Returns the first k not packed."""
        b, w = e.b, self.p.lanes
        last = b.sub(rv, I64(1))
        zero = const(self.p.dtype, 0, w)
        chunks = self._chunks(rows)
        row_ptrs = [e.at(src, b.mul(e.min(I64(r), last), rs)) for r in range(rows)]
        valid = [_lane_mask(b, w, c, rv) for c, _ in chunks]
        with e.loop(I64(0), kc, w, "kt") as lp:
            d = e.at(dst, b.mul(lp.i, I64(rows)))
            for (c, n), m in zip(chunks, valid):
                vecs = [b.load(self.vptr(b, e.at(row_ptrs[c + r], lp.i)), align=self.size) for r in range(n)]
                vecs += [zero] * (w - n)
                for k, x in enumerate(_transpose(b, vecs)):
                    x = b.select(m, x, zero)
                    self._store_row(b, x, e.at(d, I64(k * rows + c)), n)
        return lp.i

    def _pack_scalar(self, e: FunctionBuilder, rows: int, k0, kc, rv, src, rs, ks, dst) -> None:
        b = e.b
        last = b.sub(rv, I64(1))
        zero = const(self.p.dtype, 0)
        with e.loop(k0, kc, 1, "ks") as lp:
            s = e.at(src, b.mul(lp.i, ks))
            d = e.at(dst, b.mul(lp.i, I64(rows)))
            for r in range(rows):
                x = b.load(e.at(s, b.mul(e.min(I64(r), last), rs)), align=self.size)
                b.store(b.select(b.icmp_signed("<", I64(r), rv), x, zero), e.at(d, I64(r)), align=self.size)

    # ----------------------------------------------------------------- entry

    def _entry(self) -> None:
        """The 2-D entry: a range of C's columns or rows."""
        p = self.p
        fn = function(self.module, p.symbol, [I64, I64, I64.as_pointer(), I64.as_pointer(),
                                               ir.IntType(8).as_pointer().as_pointer()], internal=False)
        start, end, shape_p, strides_p, ptrs_p = fn.args
        e = FunctionBuilder(fn)
        b = e.b
        m, n, k, split, chunk, b_mode = [b.load(e.at(shape_p, I64(i))) for i in range(6)]
        strides = [b.load(e.at(strides_p, I64(i))) for i in range(6)]
        a_p, b_p, c_p, scratch = self._pointers(e, ptrs_p, start, chunk)
        shared = b.bitcast(b.load(e.at(ptrs_p, I64(4))), self.t.as_pointer())
        by_rows = b.icmp_signed("!=", split, I64(0))
        m0, m1 = b.select(by_rows, start, I64(0)), b.select(by_rows, end, m)
        n0, n1 = b.select(by_rows, I64(0), start), b.select(by_rows, n, end)
        # a K block's panels in the shared layout: packed_k(kstep) x N rounded up to NR panels
        k_blocks = e.ceil_div(k, I64(self.p.kc))
        kstep = e.ceil_div(k, b.select(b.icmp_signed(">", k_blocks, I64(0)), k_blocks, I64(1)))
        n_panels = b.mul(e.ceil_div(n, I64(self.p.nr)), I64(self.p.nr))
        block_ld = b.mul(self.packed_k(e, kstep), n_panels)
        b.call(self.block, [m0, m1, n0, n1, k, *strides, a_p, b_p, c_p, scratch, shared, b_mode, block_ld])
        b.ret_void()

    def _batched_entry(self) -> None:
        """The batched entry ``<symbol>_batched``: ``shape = (M, N, K, chunk, parts, cols)``;
        range item ``r`` is column block ``r % parts`` (``cols`` wide) of product ``r // parts``,
        whose operands start at element offsets ``offsets[3 r // parts + (0, 1, 2)]`` (``ptrs[4]``)
        from A, B and C."""
        p = self.p
        fn = function(self.module, f"{p.symbol}_batched", [I64, I64, I64.as_pointer(), I64.as_pointer(),
                                                            ir.IntType(8).as_pointer().as_pointer()],
                      internal=False)
        start, end, shape_p, strides_p, ptrs_p = fn.args
        e = FunctionBuilder(fn)
        b = e.b
        m, n, k, chunk, parts, cols = [b.load(e.at(shape_p, I64(i))) for i in range(6)]
        strides = [b.load(e.at(strides_p, I64(i))) for i in range(6)]
        a_p, b_p, c_p, scratch = self._pointers(e, ptrs_p, start, chunk)
        offsets = b.bitcast(b.load(e.at(ptrs_p, I64(4))), I64.as_pointer())
        with e.loop(start, end, 1, "batch") as lp:
            item = b.sdiv(lp.i, parts)
            n0 = b.mul(b.srem(lp.i, parts), cols)
            n1 = e.min(b.add(n0, cols), n)
            row = e.at(offsets, b.mul(item, I64(3)))
            a_off, b_off, c_off = [b.load(e.at(row, I64(j))) for j in range(3)]
            b.call(self.block, [I64(0), m, n0, n1, k, *strides, e.at(a_p, a_off), e.at(b_p, b_off),
                                e.at(c_p, c_off), scratch, ir.Constant(self.t.as_pointer(), None),
                                I64(B_SCRATCH), I64(0)])
        b.ret_void()

    def _pointers(self, e: FunctionBuilder, ptrs_p: ir.Value, start: ir.Value, chunk: ir.Value
                  ) -> list[ir.Value]:
        """A, B, C and this range's scratch slot (range ``start // chunk``)."""
        b, ptr, cptr = e.b, self.t.as_pointer(), self.ct.as_pointer()
        a_p, b_p, c_p, s_p = [b.bitcast(b.load(e.at(ptrs_p, I64(i))), cptr if i == 2 else ptr)
                              for i in range(4)]
        scratch = e.at(b.bitcast(s_p, ir.IntType(8).as_pointer()),
                       b.mul(b.sdiv(start, chunk), I64(self.p.scratch_bytes)))
        return [a_p, b_p, c_p, b.bitcast(scratch, ptr)]

    def _block(self) -> ir.Function:
        """``block(m0, m1, n0, n1, k, a_m, a_k, b_k, b_n, c_m, c_n, A, B, C, scratch, shared,
        b_mode, block_ld)``: rows [m0, m1) x columns [n0, n1) of ``C = A @ B``, packing A into
        ``scratch`` and B as ``b_mode`` says (see the module's docstring; ``block_ld``: the
        elements of one K block of the shared panels)."""
        p, t, ct = self.p, self.t, self.ct
        ptr, cptr = t.as_pointer(), ct.as_pointer()
        fn = function(self.module, f"{p.symbol}_block", [I64] * 11 + [ptr, ptr, cptr, ptr, ptr, I64, I64])
        m0, m1, n0, n1, k, a_m, a_k, b_k, b_n, c_m, c_n, a_p, b_p, c_p, scratch, shared, b_mode, block_ld \
            = fn.args
        e = FunctionBuilder(fn)
        b = e.b
        tile = b.alloca(ir.ArrayType(ct, p.mr * p.nr))
        tile.align = 64
        tile = b.bitcast(tile, cptr)
        a_pack = scratch
        b_scratch = e.at(scratch, I64(-(-p.mc * p.kc * self.size // 64) * 64 // self.size))
        in_scratch = b.icmp_signed("==", b_mode, I64(B_SCRATCH))
        packs_b = b.icmp_signed("!=", b_mode, I64(B_PACKED))
        zero = const(p.dtype, 0)

        empty_bb, work_bb = fn.append_basic_block("k0"), fn.append_basic_block("work")
        b.cbranch(b.icmp_signed("<=", k, I64(0)), empty_bb, work_bb)
        b.position_at_end(empty_bb)
        with e.loop(m0, m1, 1, "zi") as li:
            row = e.at(c_p, b.mul(li.i, c_m))
            with e.loop(n0, n1, 1, "zj") as lj:
                b.store(zero, e.at(row, b.mul(lj.i, c_n)), align=self.c_size)
        b.ret_void()

        b.position_at_end(work_bb)
        kstep = e.ceil_div(k, e.ceil_div(k, I64(p.kc)))       # balanced K blocks of <= KC
        with e.loop(n0, n1, p.nc, "jc", tail=True) as ljc:
            jc = ljc.i
            nc = e.min(I64(p.nc), b.sub(n1, jc))
            with e.loop(I64(0), k, kstep, "pc", tail=True) as lpc:
                pc = lpc.i
                kc = e.min(kstep, b.sub(k, pc))
                kp = self.packed_k(e, kc)
                acc = b.icmp_signed(">", pc, I64(0))
                b_src = e.at(b_p, b.add(b.mul(pc, b_k), b.mul(jc, b_n)))
                # (jc is a multiple of NR: ranges of columns are, and so are NC blocks)
                shared_at = b.add(b.mul(b.sdiv(pc, kstep), block_ld), b.mul(jc, kp))
                b_pack = b.select(in_scratch, b_scratch, e.at(shared, shared_at))
                with b.if_then(packs_b):
                    with e.loop(I64(0), nc, p.nr, "pb", tail=True) as lp:
                        b.call(self.pack_b, [kc, e.min(I64(p.nr), b.sub(nc, lp.i)),
                                             e.at(b_src, b.mul(lp.i, b_n)), b_n, b_k,
                                             e.at(b_pack, b.mul(lp.i, kp))])
                with e.loop(m0, m1, p.mc, "ic", tail=True) as lic:
                    ic = lic.i
                    mc = e.min(I64(p.mc), b.sub(m1, ic))
                    a_src = e.at(a_p, b.add(b.mul(ic, a_m), b.mul(pc, a_k)))
                    with e.loop(I64(0), mc, p.mr, "pa", tail=True) as lp:
                        b.call(self.pack_a, [kc, e.min(I64(p.mr), b.sub(mc, lp.i)),
                                             e.at(a_src, b.mul(lp.i, a_m)), a_m, a_k,
                                             e.at(a_pack, b.mul(lp.i, kp))])
                    c_blk = e.at(c_p, b.add(b.mul(ic, c_m), b.mul(jc, c_n)))
                    with e.loop(I64(0), nc, p.nr, "jr", tail=True) as ljr:
                        nr = e.min(I64(p.nr), b.sub(nc, ljr.i))
                        bp = e.at(b_pack, b.mul(ljr.i, kp))
                        with e.loop(I64(0), mc, p.mr, "ir", tail=True) as lir:
                            mr = e.min(I64(p.mr), b.sub(mc, lir.i))
                            ap = e.at(a_pack, b.mul(lir.i, kp))
                            cp = e.at(c_blk, b.add(b.mul(lir.i, c_m), b.mul(ljr.i, c_n)))
                            wide = b.and_(b.icmp_signed("==", nr, I64(p.nr)),
                                          b.icmp_signed("==", c_n, I64(1)))
                            with b.if_else(wide) as (then, otherwise):
                                with then:
                                    self._dispatch(e, mr, [kp, ap, bp, cp, c_m, acc])
                                with otherwise:
                                    b.call(self.kernels[p.mr], [kp, ap, bp, tile, I64(p.nr), I1(0)])
                                    self._copy_tile(e, tile, cp, mr, nr, c_m, c_n, acc)
        b.ret_void()
        return fn

    def _dispatch(self, e: FunctionBuilder, mr: ir.Value, args: list[ir.Value]) -> None:
        """Call the micro-kernel for ``mr`` rows."""
        b = e.b
        join = e.fn.append_basic_block("uk.join")
        sw = b.switch(mr, join)
        for rows, fn in self.kernels.items():
            bb = e.fn.append_basic_block(f"uk{rows}")
            sw.add_case(I64(rows), bb)
            b.position_at_end(bb)
            b.call(fn, args)
            b.branch(join)
        b.position_at_end(join)

    def _copy_tile(self, e: FunctionBuilder, tile, cp, mr, nr, c_m, c_n, acc) -> None:
        """The valid ``mr`` x ``nr`` corner of a computed tile into (or onto) strided C."""
        b = e.b
        with e.loop(I64(0), mr, 1, "ti") as li:
            row = e.at(cp, b.mul(li.i, c_m))
            trow = e.at(tile, b.mul(li.i, I64(self.p.nr)))
            with e.loop(I64(0), nr, 1, "tj") as lj:
                dst = e.at(row, b.mul(lj.i, c_n))
                x = b.load(e.at(trow, lj.i), align=self.c_size)
                old = b.load(dst, align=self.c_size)
                b.store(b.select(acc, b.fadd(old, x), x), dst, align=self.c_size)


def _transpose(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """Transpose a square matrix of vectors (``rows[r]`` lane ``l`` -> ``out[l]`` lane ``r``)
    by swapping off-diagonal blocks of halving size: log2(w) rounds of w two-input shuffles."""
    w = len(rows)
    rows = list(rows)
    h = w // 2
    while h >= 1:
        for i in range(w):
            if i & h:
                continue
            j = i + h
            lo = [l if (l // h) % 2 == 0 else w + l - h for l in range(w)]
            hi = [l + h if (l // h) % 2 == 0 else w + l for l in range(w)]
            x, y = rows[i], rows[j]
            rows[i] = b.shuffle_vector(x, y, ir.Constant(ir.VectorType(I32, w), lo))
            rows[j] = b.shuffle_vector(x, y, ir.Constant(ir.VectorType(I32, w), hi))
        h //= 2
    return rows


def build(dtype: str, vector_bytes: int | None = None) -> ir.Module:
    """The unoptimized LLVM module of the GEMM for ``dtype`` (entry :attr:`GemmParams.symbol`)."""
    return _Gemm(params(dtype, vector_bytes)).module


def compile_gemm(dtype: str, vector_bytes: int | None = None) -> CpuArtifact:
    """Optimize and assemble the GEMM for ``dtype`` to host object code."""
    text = str(build(dtype, vector_bytes))
    return CpuArtifact(params(dtype, vector_bytes).symbol, cpu.assemble(text), text)


def assembly(dtype: str, vector_bytes: int | None = None) -> str:
    """Host assembly of the GEMM for ``dtype`` (to inspect the micro-kernel's inner loop)."""
    text = str(build(dtype, vector_bytes))
    with cpu._lock:
        return cpu.target_machine().emit_assembly(cpu.optimize(text))
