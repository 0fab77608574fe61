"""GPU kernels of the gather (``take``) and its gradient (``scatter_add``), without atomics.

Both see the operands as ``(P, ·, C)``: the dims before the indexed axis, that axis, the dims
after it; ``idx`` holds ``M`` indices already checked in range and made non-negative (the
program's ``index_check`` step), so neither kernel bounds-checks them.  Strides are in elements.

* ``take_<dtype>(out, table, idx, P, N, M, C, out_p, out_m, out_c, table_p, table_n, table_c,
  idx_m)``: ``out[p, j, c] = table[p, idx[j], c]``, one thread per output element (grid-stride
  loop over ``P * M * C``; consecutive threads read consecutive columns of a row).
* ``scatter_add_<dtype>(out, src, idx, P, N, M, C, out_p, out_n, out_c, src_p, src_m, src_c,
  idx_m)``: ``out[p, idx[j], c] += src[p, j, c]`` for ``j`` in order, one thread per output
  column ``(p, c)`` (grid-stride over ``P * C``): a thread owns its column, so no two threads
  write one element and each sum is made in ``np.add.at``'s order.  ``out`` holds the base
  beforehand (a strided copy launched first).

Launch: a 1-D grid of :data:`BLOCK`-thread blocks, :func:`launch_geometry`.
"""
from __future__ import annotations

import functools

from llvmlite import ir

from codegen import nvvm, ptx, scalar
from codegen.nvvm import I64
from codegen.ptx_lower import DATA_LAYOUT, TRIPLE, loop

DTYPES = ("float32", "float64", "int32", "int64")
KINDS = ("take", "scatter_add")
BLOCK = 128


def entry_name(kind: str, dtype: str) -> str:
    return f"{kind}_{dtype}"


def build(kind: str, dtype: str) -> ir.Module:
    """The NVPTX LLVM module of ``kind`` (``take`` or ``scatter_add``) for ``dtype``."""
    if kind not in KINDS or dtype not in DTYPES:
        raise ValueError(f"GPU {kind}: kinds {KINDS}, dtypes {DTYPES}; got {kind}, {dtype}")
    t = scalar.storage_type(dtype)
    size = scalar.itemsize(dtype)
    module = ir.Module(name=entry_name(kind, dtype))
    module.triple, module.data_layout = TRIPLE, DATA_LAYOUT
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.PointerType()] * 3 + [I64] * 11),
                     entry_name(kind, dtype))
    fn.calling_convention = "ptx_kernel"
    out, other, idx, P, _N, M, C, *st = fn.args
    s_out, s_other, idx_m = st[0:3], st[3:6], st[6]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    first = b.add(b.mul(nvvm.sreg(b, "ctaid.x"), nvvm.sreg(b, "ntid.x")), nvvm.sreg(b, "tid.x"))
    stride = b.mul(nvvm.sreg(b, "nctaid.x"), nvvm.sreg(b, "ntid.x"))

    def at(ptr: ir.Value, strides, p: ir.Value, r: ir.Value, c: ir.Value) -> ir.Value:
        off = b.add(b.add(b.mul(p, strides[0]), b.mul(r, strides[1])), b.mul(c, strides[2]))
        return b.gep(ptr, [off], source_etype=t)

    def row(j: ir.Value) -> ir.Value:
        return b.load(b.gep(idx, [b.mul(j, idx_m)], source_etype=I64), typ=I64, align=8)

    if kind == "take":
        mc = b.mul(M, C)

        def element(q: ir.Value) -> None:
            p, rest = b.udiv(q, mc), b.urem(q, mc)
            j, c = b.udiv(rest, C), b.urem(rest, C)
            v = b.load(at(other, s_other, p, row(j), c), typ=t, align=size)
            b.store(v, at(out, s_out, p, j, c), align=size)
        loop(b, "q", first, b.mul(P, mc), stride, element)
    else:
        add = b.fadd if dtype.startswith("float") else b.add

        def column(q: ir.Value) -> None:
            p, c = b.udiv(q, C), b.urem(q, C)

            def one(j: ir.Value) -> None:
                dst = at(out, s_out, p, row(j), c)
                v = b.load(at(other, s_other, p, j, c), typ=t, align=size)
                b.store(add(b.load(dst, typ=t, align=size), v), dst, align=size)
            loop(b, "j", ir.Constant(I64, 0), M, ir.Constant(I64, 1), one)
        loop(b, "q", first, b.mul(P, C), stride, column)
    b.ret_void()
    return module


@functools.cache
def compile_kernel(kind: str, dtype: str, arch: str = ptx.DEFAULT_ARCH) -> ptx.PtxKernel:
    """PTX of ``kind`` for ``dtype``, launchable with three operands over a 4-d space."""
    arch = ptx.arch_of(arch)
    entry = entry_name(kind, dtype)
    return ptx.PtxKernel(key=f"{entry}_v{ptx.CODEGEN_VERSION}", entry=entry, arch=arch,
                         ptx=ptx.emit_ptx(str(build(kind, dtype)), arch, entry),
                         ndim=4, n_reduce=0, n_operands=3, vector_width=1)


def launch_geometry(kind: str, sizes: tuple[int, int, int, int]) -> tuple[int, int]:
    """``(blocks, threads per block)``: a thread per output element (take) or column (scatter_add)."""
    p, _, m, c = sizes
    work = p * m * c if kind == "take" else p * c
    return max(1, min(ptx.MAX_GRID, -(-work // BLOCK))), BLOCK
