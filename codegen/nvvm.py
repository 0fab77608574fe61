"""NVPTX intrinsics used by the GPU kernel skeletons: special registers, barriers, warp shuffles.

Only intrinsics whose names LLVM 22 accepts as-is are declared (no auto-upgraded spellings), so
the emitted IR stays valid across LLVM versions that llvmlite ships.
"""
from __future__ import annotations

from llvmlite import ir

I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()

FULL_MASK = -1  # all 32 lanes (i32 0xffffffff)
WARP_SIZE = 32
SHARED = 3  # NVPTX address space of shared memory


def _intrinsic(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name)
    return fn


def sreg(b: ir.IRBuilder, name: str) -> ir.Value:
    """Read a special register (``tid.x``, ``ctaid.x``, ``ntid.x``, ``nctaid.x``) as i64."""
    fn = _intrinsic(b.module, f"llvm.nvvm.read.ptx.sreg.{name}", I32, [])
    return b.zext(b.call(fn, []), I64)


def barrier(b: ir.IRBuilder) -> None:
    """``bar.sync 0``: every thread of the block must reach it (LLVM 22 name of ``barrier0``)."""
    fn = _intrinsic(b.module, "llvm.nvvm.barrier.cta.sync.aligned.all", ir.VoidType(), [I32])
    b.call(fn, [ir.Constant(I32, 0)])


def _shfl32(b: ir.IRBuilder, v: ir.Value, lane_mask: int) -> ir.Value:
    kind = "f32" if v.type == F32 else "i32"
    fn = _intrinsic(b.module, f"llvm.nvvm.shfl.sync.bfly.{kind}", v.type, [I32, v.type, I32, I32])
    # c = 0x1f: clamp within the whole warp (butterfly over 32 lanes)
    return b.call(fn, [ir.Constant(I32, FULL_MASK), v, ir.Constant(I32, lane_mask), ir.Constant(I32, 0x1F)])


def shfl_bfly(b: ir.IRBuilder, v: ir.Value, lane_mask: int) -> ir.Value:
    """The value of ``v`` in lane ``laneid ^ lane_mask`` (any scalar type up to 64 bits).

    The hardware shuffles 32-bit words: narrower values are widened, 64-bit values are split.
    """
    t = v.type
    if t == F32 or t == I32:
        return _shfl32(b, v, lane_mask)
    if isinstance(t, ir.IntType) and t.width < 32:
        return b.trunc(_shfl32(b, b.zext(v, I32), lane_mask), t)
    if isinstance(t, ir.HalfType):
        bits = b.zext(b.bitcast(v, ir.IntType(16)), I32)
        return b.bitcast(b.trunc(_shfl32(b, bits, lane_mask), ir.IntType(16)), t)
    if t == I64 or isinstance(t, ir.DoubleType):
        bits = b.bitcast(v, I64) if t != I64 else v
        lo = _shfl32(b, b.trunc(bits, I32), lane_mask)
        hi = _shfl32(b, b.trunc(b.lshr(bits, ir.Constant(I64, 32)), I32), lane_mask)
        out = b.or_(b.zext(lo, I64), b.shl(b.zext(hi, I64), ir.Constant(I64, 32)))
        return out if t == I64 else b.bitcast(out, t)
    raise TypeError(f"cannot shuffle a value of type {t}")


def shared_array(module: ir.Module, name: str, elem: ir.Type, n: int) -> ir.GlobalVariable:
    """A statically sized ``__shared__`` array (so launches need no dynamic shared memory)."""
    g = ir.GlobalVariable(module, ir.ArrayType(elem, n), name, addrspace=SHARED)
    g.linkage = "internal"
    g.initializer = ir.Constant(g.value_type, ir.Undefined)
    g.align = 16
    return g
