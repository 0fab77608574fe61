"""CPU GEMM of bfloat16 operands into float32, on AVX-512 BF16 dot products (``vdpbf16ps``).

The loops, blocking and entry are :mod:`codegen.cpu_gemm`'s; what differs is the data:

* packed panels hold K in pairs: element ``(k, r)`` of a panel of ``rows`` sits at
  ``(k // 2) * 2 * rows + 2 * r + k % 2``, so each 32-bit word is the two bfloat16 values of one
  row for k and k + 1, as ``vdpbf16ps`` reads them; an odd K is padded with a zero;
* the micro-kernel's step is one k pair: NR/16 loads of B's pairs, one 32-bit broadcast of A's
  pair per row, one ``vdpbf16ps`` per accumulator (``acc += a0 * b0 + a1 * b1``, each product
  exact in float32, each sum rounded to nearest even; inputs and results below float32's normal
  range are flushed to zero, as the instruction does).

Only hosts whose CPU reports ``avx512bf16`` get this kernel (:func:`available`).
"""
from __future__ import annotations

import functools

from llvmlite import binding as llvm
from llvmlite import ir

from codegen import cpu
from codegen.cpu import CpuArtifact, masked_load, masked_store
from codegen.cpu_gemm import KC, MC_BYTES, NC_BYTES, GemmParams, _Gemm, _lane_mask
from codegen.llvm_loops import FunctionBuilder
from codegen.scalar import I16, I32, I64, splat

OPERAND = "bfloat16"
LANES = 16                      # float32 accumulators per 64-byte register
PAIR = ir.VectorType(I32, LANES)
HALVES = ir.VectorType(I16, 2 * LANES)
# acc (tied to the output) += dot of the bfloat16 pairs of the two sources
_DPBF16 = ir.InlineAsm(ir.FunctionType(ir.VectorType(ir.FloatType(), LANES), [PAIR, PAIR,
                                       ir.VectorType(ir.FloatType(), LANES)]),
                       "vdpbf16ps $2, $1, $0", "=v,v,v,0")


@functools.cache
def available() -> bool:
    """Whether the host has the AVX-512 BF16 instructions this kernel is made of."""
    feats = llvm.get_host_cpu_features()
    return bool(feats.get("avx512bf16") and feats.get("avx512f"))


def params() -> GemmParams:
    mr, nr = 14, 2 * LANES
    mc = max(mr, MC_BYTES // (KC * 2) // mr * mr)
    nc = max(nr, NC_BYTES // (KC * 2) // nr * nr)
    return GemmParams("float32", 64, LANES, mr, nr, KC, mc, nc, operand=OPERAND)


class _GemmBF16(_Gemm):
    def packed_k(self, e: FunctionBuilder, kc: ir.Value) -> ir.Value:
        return e.b.and_(e.b.add(kc, I64(1)), I64(-2))

    def _pair_ptr(self, b: ir.IRBuilder, ptr: ir.Value) -> ir.Value:
        return b.bitcast(ptr, I32.as_pointer())

    def _k_loop(self, e: FunctionBuilder, mr: int, kc: ir.Value, ap: ir.Value,
                bp: ir.Value) -> list[ir.Value]:
        """``kc`` (even) k as ``kc / 2`` pair steps of ``vdpbf16ps``."""
        p, b = self.p, e.b
        nv = p.nr // LANES
        ap32, bp32 = self._pair_ptr(b, ap), self._pair_ptr(b, bp)
        zero = ir.Constant(self.vt, None)
        with e.loop(I64(0), b.ashr(kc, I64(1)), 1, "k2", [zero] * (mr * nv)) as lp:
            row = e.at(bp32, b.mul(lp.i, I64(p.nr)))
            bv = [b.load(b.bitcast(e.at(row, I64(v * LANES)), PAIR.as_pointer()), align=64)
                  for v in range(nv)]
            a_row = e.at(ap32, b.mul(lp.i, I64(p.mr)))
            out = list(lp.carried)
            for r in range(mr):
                a = splat(b, b.load(e.at(a_row, I64(r)), align=4), LANES)
                for v in range(nv):
                    out[r * nv + v] = b.call(_DPBF16, [a, bv[v], out[r * nv + v]])
            lp.next = out
        return lp.carried

    def _pack_copy(self, e: FunctionBuilder, rows: int, kc, rv, src, ks, dst) -> None:
        """Rows of the panel contiguous (row-major B): per pair, two masked vector loads (the second zero
        past K) interleaved lane by lane."""
        b = e.b
        w = 2 * LANES
        chunks = [(c, min(w, rows - c)) for c in range(0, rows, w)]
        masks = [_lane_mask(b, w, c, rv) for c, _ in chunks]
        zero = ir.Constant(HALVES, None)
        interleave = [[(j // 2) + (w if j % 2 else 0) + h * LANES for j in range(w)] for h in (0, 1)]
        with e.loop(I64(0), b.ashr(b.add(kc, I64(1)), I64(1)), 1, "k2") as lp:
            k0 = b.mul(lp.i, I64(2))
            has_k1 = b.icmp_signed("<", b.add(k0, I64(1)), kc)
            s0 = e.at(src, b.mul(k0, ks))
            s1 = e.at(s0, b.select(has_k1, ks, I64(0)))
            d = e.at(dst, b.mul(lp.i, I64(2 * rows)))
            for (c, n), m in zip(chunks, masks):
                x0 = masked_load(b, b.bitcast(e.at(s0, I64(c)), HALVES.as_pointer()), m, 2)
                x1 = b.select(has_k1, masked_load(b, b.bitcast(e.at(s1, I64(c)), HALVES.as_pointer()), m, 2),
                              zero)
                for h in range(2):
                    if 2 * h * LANES >= 2 * n:
                        continue
                    out = b.shuffle_vector(x0, x1, ir.Constant(ir.VectorType(I32, w), interleave[h]))
                    at = b.bitcast(e.at(d, I64(2 * c + h * w)), HALVES.as_pointer())
                    valid = min(w, 2 * n - h * w)
                    if valid == w:
                        b.store(out, at, align=2)
                    else:
                        keep = [int(j < valid) for j in range(w)]
                        masked_store(b, out, at, ir.Constant(ir.VectorType(ir.IntType(1), w), keep), 2)

    def _pack_transpose(self, e: FunctionBuilder, rows: int, kc, rv, src, rs, dst) -> ir.Value:
        """K contiguous (row-major A): each row's pair (k, k + 1) is one 32-bit word of the source.  Packs
        the whole pairs; returns the first k left (the odd last one, if any)."""
        b = e.b
        last = b.sub(rv, I64(1))
        dst32 = self._pair_ptr(b, dst)
        row_ptrs = [self._pair_ptr(b, e.at(src, b.mul(e.min(I64(r), last), rs))) for r in range(rows)]
        with e.loop(I64(0), b.ashr(kc, I64(1)), 1, "kw") as lp:
            d = e.at(dst32, b.mul(lp.i, I64(rows)))
            for r in range(rows):
                x = b.load(e.at(row_ptrs[r], lp.i), align=2)
                keep = b.icmp_signed("<", I64(r), rv)
                b.store(b.select(keep, x, I32(0)), e.at(d, I64(r)), align=4)
        return b.mul(lp.i, I64(2))

    def _pack_scalar(self, e: FunctionBuilder, rows: int, k0, kc, rv, src, rs, ks, dst) -> None:
        """Element by element from ``k0`` (even) up to the even K, zeros past ``kc`` and ``rv``."""
        b = e.b
        last_r, last_k = b.sub(rv, I64(1)), b.sub(kc, I64(1))
        with e.loop(k0, b.and_(b.add(kc, I64(1)), I64(-2)), 1, "ks") as lp:
            k = lp.i
            in_k = b.icmp_signed("<", k, kc)
            s = e.at(src, b.mul(e.min(k, last_k), ks))
            d = e.at(dst, b.add(b.mul(b.ashr(k, I64(1)), I64(2 * rows)), b.and_(k, I64(1))))
            for r in range(rows):
                x = b.load(e.at(s, b.mul(e.min(I64(r), last_r), rs)), align=2)
                keep = b.and_(in_k, b.icmp_signed("<", I64(r), rv))
                b.store(b.select(keep, x, I16(0)), e.at(d, I64(2 * r)), align=2)


def build() -> ir.Module:
    """The unoptimized LLVM module (entry :attr:`GemmParams.symbol` of :func:`params`)."""
    return _GemmBF16(params()).module


def compile_gemm() -> CpuArtifact:
    """Optimize and assemble the bfloat16 GEMM to host object code."""
    text = str(build())
    return CpuArtifact(params().symbol, cpu.assemble(text), text)
