"""CPU scatter-add: LLVM IR of ``out = base; out[p, idx[j], c] += src[p, j, c]`` without atomics.

One C-ABI entry per dtype (:data:`codegen.cpu.KERNEL_CFUNCTYPE`)::

    void tj_scatter_add_<dtype>_v<vector bytes>(int64 start, int64 end, const int64 *shape,
                                                const int64 *strides, void **ptrs)

* ``shape = (P, N, M, C)``: the output is ``(P, N, C)`` (the dims before the scattered axis,
  that axis, the dims after it), ``src`` is ``(P, M, C)``, ``idx`` has ``M`` entries in
  ``[0, N)`` (checked before the kernel runs: it does no bounds check);
* ``strides`` = element strides ``(out_p, out_n, base_p, base_n, base_c, src_p, src_m, idx_m)``;
  ``out`` and ``src`` walk ``c`` contiguously, ``base`` too (``base_c`` 1) or not at all
  (``base_c`` 0: a broadcast value, such as a gradient's zeros, is a fill);
* ``ptrs = (out, base, src, idx)``;
* ``[start, end)`` is a range of the flattened ``(p, c)`` space: a thread owns those output
  columns entirely, copying ``base`` into them and then adding ``src``'s rows in index order,
  so no two threads write one element and every sum is made in ``np.add.at``'s order.
"""
from __future__ import annotations

from llvmlite import ir

from codegen import cpu
from codegen.cpu import CpuArtifact, masked_load, masked_store, native_vector_bytes
from codegen.llvm_loops import FunctionBuilder, function
from codegen.scalar import I64, itemsize, splat, value_type

DTYPES = ("float32", "float64", "int32", "int64")


def symbol(dtype: str, vector_bytes: int | None = None) -> str:
    return f"tj_scatter_add_{dtype}_v{vector_bytes or native_vector_bytes()}"


def lanes(dtype: str, vector_bytes: int | None = None) -> int:
    """Elements per vector register (columns handled per step)."""
    return max(1, (vector_bytes or native_vector_bytes()) // itemsize(dtype))


class _Scatter:
    def __init__(self, dtype: str, vector_bytes: int | None):
        if dtype not in DTYPES:
            raise ValueError(f"scatter_add kernel: dtype {dtype} not in {DTYPES}")
        self.dtype, self.t = dtype, value_type(dtype)
        self.w = lanes(dtype, vector_bytes)
        self.vt = ir.VectorType(self.t, self.w)
        self.size = itemsize(dtype)
        self.module = ir.Module(name=symbol(dtype, vector_bytes))
        self._entry(symbol(dtype, vector_bytes))

    def _add(self, b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
        return b.fadd(x, y) if self.dtype.startswith("float") else b.add(x, y)

    def _columns(self, e: FunctionBuilder, c0: ir.Value, c1: ir.Value, body) -> None:
        """``body(c, mask)`` over columns ``[c0, c1)``: whole vectors (mask None), then a masked tail."""
        b = e.b
        with e.loop(c0, c1, step=self.w, name="c") as lc:
            body(lc.i, None)
        rest = b.sub(c1, lc.i)
        with b.if_then(b.icmp_signed(">", rest, I64(0))):
            iota = ir.Constant(ir.VectorType(I64, self.w), list(range(self.w)))
            body(lc.i, b.icmp_signed("<", iota, splat(b, rest, self.w)))

    def _load(self, b: ir.IRBuilder, row: ir.Value, c: ir.Value, mask: ir.Value | None) -> ir.Value:
        ptr = b.bitcast(b.gep(row, [c]), self.vt.as_pointer())
        return b.load(ptr, align=self.size) if mask is None else masked_load(b, ptr, mask, self.size)

    def _store(self, b: ir.IRBuilder, v: ir.Value, row: ir.Value, c: ir.Value, mask: ir.Value | None) -> None:
        ptr = b.bitcast(b.gep(row, [c]), self.vt.as_pointer())
        if mask is None:
            b.store(v, ptr, align=self.size)
        else:
            masked_store(b, v, ptr, mask, self.size)

    def _entry(self, name: str) -> None:
        t = self.t
        fn = function(self.module, name, [I64, I64, I64.as_pointer(), I64.as_pointer(),
                                          ir.IntType(8).as_pointer().as_pointer()], internal=False)
        start, end, shape_p, strides_p, ptrs_p = fn.args
        e = FunctionBuilder(fn)
        b = e.b
        n_rows, n_idx, n_cols = [b.load(e.at(shape_p, I64(i))) for i in (1, 2, 3)]
        out_p, out_n, base_p, base_n, base_c, src_p, src_m, idx_m = \
            [b.load(e.at(strides_p, I64(i))) for i in range(8)]
        out, base, src = [b.bitcast(b.load(e.at(ptrs_p, I64(i))), t.as_pointer()) for i in range(3)]
        idx = b.bitcast(b.load(e.at(ptrs_p, I64(3))), I64.as_pointer())
        fill = b.icmp_signed("==", base_c, I64(0))
        p0 = b.sdiv(start, n_cols)
        p1 = e.ceil_div(end, n_cols)
        with e.loop(p0, p1, name="p") as lp:
            p = lp.i
            at = b.mul(p, n_cols)
            c0 = b.select(b.icmp_signed(">", start, at), b.sub(start, at), I64(0))
            c1 = e.min(b.sub(end, at), n_cols)
            out_row0 = e.at(out, b.mul(p, out_p))
            base_row0 = e.at(base, b.mul(p, base_p))
            src_row0 = e.at(src, b.mul(p, src_p))
            with e.loop(I64(0), n_rows, name="n") as ln:
                dst = e.at(out_row0, b.mul(ln.i, out_n))
                from_row = e.at(base_row0, b.mul(ln.i, base_n))
                with b.if_else(fill) as (then, otherwise):
                    with then:      # (a broadcast base: one value, never read as a vector)
                        value = splat(b, b.load(from_row, align=self.size), self.w)
                        self._columns(e, c0, c1, lambda c, m: self._store(b, value, dst, c, m))
                    with otherwise:
                        self._columns(e, c0, c1, lambda c, m: self._store(
                            b, self._load(b, from_row, c, m), dst, c, m))
            with e.loop(I64(0), n_idx, name="j") as lj:
                row = b.load(e.at(idx, b.mul(lj.i, idx_m)), align=8)
                dst = e.at(out_row0, b.mul(row, out_n))
                add = e.at(src_row0, b.mul(lj.i, src_m))
                self._columns(e, c0, c1, lambda c, m: self._store(
                    b, self._add(b, self._load(b, dst, c, m), self._load(b, add, c, m)), dst, c, m))
        b.ret_void()



def build(dtype: str, vector_bytes: int | None = None) -> ir.Module:
    """The unoptimized LLVM module of the scatter-add for ``dtype`` (entry :func:`symbol`)."""
    return _Scatter(dtype, vector_bytes).module


def compile_scatter_add(dtype: str, vector_bytes: int | None = None) -> CpuArtifact:
    """Optimize and assemble the scatter-add for ``dtype`` to host object code."""
    text = str(build(dtype, vector_bytes))
    return CpuArtifact(symbol(dtype, vector_bytes), cpu.assemble(text), text)
