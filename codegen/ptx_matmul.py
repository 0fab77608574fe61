"""A tiled shared-memory GEMM for the GPU: ``C[b] = A[b] @ B[b]`` with arbitrary strides.

One block computes a ``TM x TN`` tile of ``C`` with ``TX * TY`` threads; thread ``(tx, ty)``
owns the ``(TM/TY) x (TN/TX)`` register micro-tile of rows ``ty + i*TY`` and columns
``tx + j*TX`` (interleaved, so neighbouring threads read neighbouring shared words and store
neighbouring columns of ``C``).  ``K`` is walked in ``BK``-wide slabs: every thread loads its
share of the ``TM x BK`` slab of ``A`` and the ``BK x TN`` slab of ``B`` into shared memory
(out-of-range elements read as 0, so edges need no special case in the inner loop), a barrier,
``BK`` rank-1 updates of the micro-tile with ``fma``, and a second barrier before the slab is
overwritten.  Stores are bounds-checked.

Parameters (the :mod:`codegen.ptx` convention with ``ndim = 3``, so the runtime packs them like
any kernel): pointers ``a, b, c``; extents ``M, N, K``; strides in elements
``(batch, m, k)`` of ``a``, ``(batch, k, n)`` of ``b``, ``(batch, m, n)`` of ``c`` (a batch
stride of 0 broadcasts).  Launch: grid ``(ceil(N/TN), ceil(M/TM), batch)``, block ``(TX*TY,)``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from llvmlite import ir

from codegen import nvvm, ptx, scalar
from codegen.nvvm import I64
from codegen.ptx_lower import DATA_LAYOUT, TRIPLE, if_then, loop

DTYPES = ("float16", "float32", "float64")
# one extra word per k-row of the A slab: the slab is written along k, and rows of exactly TM
# words would put a warp's stores into the same few banks
A_PAD = 1


@dataclass(frozen=True)
class Tiles:
    """Tile sizes: block tile ``tm x tn``, slab depth ``bk``, ``tx x ty`` threads."""
    tm: int = 64
    tn: int = 64
    bk: int = 16
    tx: int = 16
    ty: int = 16

    def __post_init__(self) -> None:
        nt = self.threads
        if self.tm % self.ty or self.tn % self.tx:
            raise ValueError(f"{self}: the block tile must split evenly into micro-tiles")
        if (self.tm * self.bk) % nt or (self.bk * self.tn) % nt:
            raise ValueError(f"{self}: every thread must load the same number of slab elements")

    @property
    def threads(self) -> int:
        return self.tx * self.ty

    def shared_bytes(self, dtype: str) -> int:
        return ((self.tm + A_PAD) * self.bk + self.bk * self.tn) * scalar.itemsize(acc_dtype(dtype))


TILES = Tiles()


def acc_dtype(dtype: str) -> str:
    """Accumulate half in float32 (also what the slabs hold: one conversion per element)."""
    return "float64" if dtype == "float64" else "float32"


def entry_name(dtype: str, t: Tiles) -> str:
    return f"matmul_{dtype}_{t.tm}x{t.tn}x{t.bk}_{t.tx}x{t.ty}"


def build(dtype: str, t: Tiles = TILES) -> ir.Module:
    """The NVPTX LLVM module of the tiled matmul for ``dtype`` and tile sizes ``t``."""
    if dtype not in DTYPES:
        raise ValueError(f"tiled matmul supports {DTYPES}, not {dtype}")
    acc = acc_dtype(dtype)
    mem_t, acc_t = scalar.storage_type(dtype), scalar.value_type(acc)
    module = ir.Module(name=f"matmul_{dtype}")
    module.triple, module.data_layout = TRIPLE, DATA_LAYOUT
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.PointerType()] * 3 + [I64] * 12),
                     entry_name(dtype, t))
    fn.calling_convention = "ptx_kernel"
    a_ptr, b_ptr, c_ptr, M, N, K, *st = fn.args
    sa, sb, sc = st[0:3], st[3:6], st[6:9]
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def i64(v: int) -> ir.Constant:
        return ir.Constant(I64, v)

    zero = scalar.const(acc, 0)
    as_stride = t.tm + A_PAD
    # generic pointers to the slabs: address-space inference turns accesses back into ld/st.shared
    a_s = b.addrspacecast(nvvm.shared_array(module, "a_slab", acc_t, as_stride * t.bk), ir.PointerType())
    b_s = b.addrspacecast(nvvm.shared_array(module, "b_slab", acc_t, t.bk * t.tn), ir.PointerType())
    rm, rn = t.tm // t.ty, t.tn // t.tx
    # accumulators live in allocas (SROA makes them registers) so the generic loop helper needs
    # no loop-carried values
    accs = [[b.alloca(acc_t, name=f"acc{i}_{j}") for j in range(rn)] for i in range(rm)]

    tid = nvvm.sreg(b, "tid.x")
    tx, ty = b.urem(tid, i64(t.tx)), b.udiv(tid, i64(t.tx))
    row0 = b.mul(nvvm.sreg(b, "ctaid.y"), i64(t.tm))
    col0 = b.mul(nvvm.sreg(b, "ctaid.x"), i64(t.tn))
    batch = nvvm.sreg(b, "ctaid.z")
    a_base, b_base, c_base = (b.mul(batch, s[0]) for s in (sa, sb, sc))
    for row in accs:
        for p in row:
            b.store(zero, p)

    def elem(ptr: ir.Value, off: ir.Value) -> ir.Value:
        p = b.gep(ptr, [off], source_etype=mem_t)
        return scalar.cast(b, b.load(p, typ=mem_t, align=scalar.itemsize(dtype)), dtype, acc)

    def stage(ptr, base, s_row, s_col, rows, cols, n_rows, n_cols, r0, c0, slab, slab_index):
        """Copy the ``rows x cols`` tile at (r0, c0) into ``slab``; consecutive threads take
        consecutive columns (coalesced when ``s_col`` is 1)."""
        for e in range(rows * cols // t.threads):
            idx = b.add(tid, i64(e * t.threads))
            r, c = b.udiv(idx, i64(cols)), b.urem(idx, i64(cols))
            gr, gc = b.add(r0, r), b.add(c0, c)
            inside = b.and_(b.icmp_unsigned("<", gr, n_rows), b.icmp_unsigned("<", gc, n_cols))
            off = b.add(base, b.add(b.mul(gr, s_row), b.mul(gc, s_col)))
            # outside the matrix, read element 0 of the batch (always valid) and discard it
            v = elem(ptr, b.select(inside, off, base))
            b.store(b.select(inside, v, zero), b.gep(slab, [slab_index(r, c)], source_etype=acc_t))

    def slab(k0: ir.Value) -> None:
        # A: TM x BK stored k-major (a_slab[k][m]); B: BK x TN stored as is (b_slab[k][n])
        stage(a_ptr, a_base, sa[1], sa[2], t.tm, t.bk, M, K, row0, k0, a_s,
              lambda r, c: b.add(b.mul(c, i64(as_stride)), r))
        stage(b_ptr, b_base, sb[1], sb[2], t.bk, t.tn, K, N, k0, col0, b_s,
              lambda r, c: b.add(b.mul(r, i64(t.tn)), c))
        nvvm.barrier(b)
        sums = [[b.load(p, typ=acc_t) for p in row] for row in accs]
        for kk in range(t.bk):
            av = [b.load(b.gep(a_s, [b.add(ty, i64(kk * as_stride + i * t.ty))], source_etype=acc_t),
                         typ=acc_t) for i in range(rm)]
            bv = [b.load(b.gep(b_s, [b.add(tx, i64(kk * t.tn + j * t.tx))], source_etype=acc_t),
                         typ=acc_t) for j in range(rn)]
            sums = [[scalar.intrinsic(b, "fma", [av[i], bv[j], sums[i][j]]) for j in range(rn)]
                    for i in range(rm)]
        for row, vals in zip(accs, sums, strict=True):
            for p, v in zip(row, vals, strict=True):
                b.store(v, p)
        # the next slab overwrites what slower threads may still be reading
        nvvm.barrier(b)

    # K is the same for the whole block, so every thread runs the barriers equally often
    loop(b, "k", i64(0), K, i64(t.bk), slab)

    for i in range(rm):
        gr = b.add(row0, b.add(ty, i64(i * t.ty)))
        for j in range(rn):
            gc = b.add(col0, b.add(tx, i64(j * t.tx)))
            inside = b.and_(b.icmp_unsigned("<", gr, M), b.icmp_unsigned("<", gc, N))

            def store(i=i, j=j, gr=gr, gc=gc) -> None:
                off = b.add(c_base, b.add(b.mul(gr, sc[1]), b.mul(gc, sc[2])))
                v = scalar.cast(b, b.load(accs[i][j], typ=acc_t), acc, dtype)
                b.store(v, b.gep(c_ptr, [off], source_etype=mem_t), align=scalar.itemsize(dtype))
            if_then(b, inside, f"store{i}_{j}", store)
    b.ret_void()
    return module


def lower_to_llvm(dtype: str, t: Tiles = TILES) -> str:
    """The (unoptimised) LLVM IR text, what the emulator runs and NVPTX compiles."""
    return str(build(dtype, t))


@functools.cache
def compile_matmul(dtype: str, arch: str = ptx.DEFAULT_ARCH, t: Tiles = TILES) -> ptx.PtxKernel:
    """PTX of the tiled matmul, launchable like a 3-d kir kernel with three operands."""
    arch = ptx.arch_of(arch)
    entry = entry_name(dtype, t)
    return ptx.PtxKernel(key=f"{entry}_v{ptx.CODEGEN_VERSION}", entry=entry, arch=arch,
                         ptx=ptx.emit_ptx(lower_to_llvm(dtype, t), arch, entry),
                         ndim=3, n_reduce=0, n_operands=3, vector_width=1)


def launch_geometry(batch: int, m: int, n: int, t: Tiles = TILES) -> tuple[tuple[int, int, int], int]:
    """``(grid, threads per block)``: one block per ``TM x TN`` tile of C, ``blockIdx.z`` = batch."""
    return (-(-n // t.tn), -(-m // t.tm), batch), t.threads
