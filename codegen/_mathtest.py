"""Test harness for :mod:`codegen.mathlib`: JIT elementwise loops on the host, PTX for sm_90.

The CPU kernels run a ``<lanes x T>`` vector loop (so the explicit-vector path is what gets
measured) and a scalar tail loop (so the scalar path is covered too).
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from codegen import mathlib

_FTYPES = {np.dtype(np.float32): ir.FloatType(), np.dtype(np.float64): ir.DoubleType()}


def _init() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def _add_kernel(mod: ir.Module, name: str, dtype: np.dtype, lanes: int) -> str:
    """void kern(T* out, T* a, T* b, i64 n): out[i] = name(a[i] [, b[i]])."""
    ft = _FTYPES[np.dtype(dtype)]
    vt = ir.VectorType(ft, lanes)
    i64 = ir.IntType(64)
    ptr = ft.as_pointer()
    kname = f"k_{name}_{np.dtype(dtype).name}"
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr, i64]), name=kname)
    out, a, b, n = fn.args
    arity = mathlib.ARITY[name]
    entry, vloop, vdone, sloop, done = (fn.append_basic_block(s) for s in ("entry", "v", "vd", "s", "d"))
    bld = ir.IRBuilder(entry)
    nvec = bld.mul(bld.udiv(n, ir.Constant(i64, lanes)), ir.Constant(i64, lanes))
    bld.cbranch(bld.icmp_unsigned(">", nvec, ir.Constant(i64, 0)), vloop, vdone)

    bld.position_at_end(vloop)
    i = bld.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)

    align = np.dtype(dtype).itemsize

    def vload(p):
        return bld.load(bld.bitcast(bld.gep(p, [i]), vt.as_pointer()), align=align)

    args = [vload(p) for p in (a, b)[:arity]]
    r = mathlib.emit(bld, name, args)
    bld.store(r, bld.bitcast(bld.gep(out, [i]), vt.as_pointer()), align=align)
    inext = bld.add(i, ir.Constant(i64, lanes))
    i.add_incoming(inext, vloop)
    bld.cbranch(bld.icmp_unsigned("<", inext, nvec), vloop, vdone)

    bld.position_at_end(vdone)
    bld.cbranch(bld.icmp_unsigned("<", nvec, n), sloop, done)
    bld.position_at_end(sloop)
    j = bld.phi(i64)
    j.add_incoming(nvec, vdone)
    sargs = [bld.load(bld.gep(p, [j])) for p in (a, b)[:arity]]
    bld.store(mathlib.emit(bld, name, sargs), bld.gep(out, [j]))
    jnext = bld.add(j, ir.Constant(i64, 1))
    j.add_incoming(jnext, sloop)
    bld.cbranch(bld.icmp_unsigned("<", jnext, n), sloop, done)
    bld.position_at_end(done)
    bld.ret_void()
    return kname


class Kernels:
    """Compile ``names`` x ``dtypes`` into one host module; ``k(name, *arrays) -> out``."""

    def __init__(self, names: Sequence[str], dtypes: Sequence[type] = (np.float32, np.float64),
                 lanes: int = 8) -> None:
        _init()
        mod = ir.Module(name="mathtest")
        target = llvm.Target.from_default_triple()
        self.tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                               features=llvm.get_host_cpu_features().flatten(),
                                               opt=3, jit=True)
        mod.triple = llvm.get_default_triple()
        self._names = {(n, np.dtype(d)): _add_kernel(mod, n, d, lanes) for n in names for d in dtypes}
        self.ir = str(mod)
        llmod = llvm.parse_assembly(self.ir)
        llmod.verify()
        pb = llvm.create_pass_builder(self.tm, llvm.create_pipeline_tuning_options(speed_level=3))
        pb.getModulePassManager().run(llmod, pb)
        self.engine = llvm.create_mcjit_compiler(llmod, self.tm)
        self.engine.finalize_object()
        self._fns: dict[tuple[str, np.dtype], Callable] = {}
        for key, kname in self._names.items():
            addr = self.engine.get_function_address(kname)
            ct = ctypes.c_float if key[1] == np.float32 else ctypes.c_double
            p = ctypes.POINTER(ct)
            self._fns[key] = ctypes.CFUNCTYPE(None, p, p, p, ctypes.c_int64)(addr)

    def __call__(self, name: str, *arrays: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        arrs = [np.ascontiguousarray(a) for a in arrays]
        dt = arrs[0].dtype
        out = np.empty_like(arrs[0]) if out is None else out
        b = arrs[1] if len(arrs) > 1 else arrs[0]
        ct = ctypes.POINTER(ctypes.c_float if dt == np.float32 else ctypes.c_double)
        self._fns[(name, dt)](out.ctypes.data_as(ct), arrs[0].ctypes.data_as(ct), b.ctypes.data_as(ct),
                              arrs[0].size)
        return out


def ptx_for(names: Sequence[str], dtypes: Sequence[type] = (np.float32, np.float64), lanes: int = 1) -> str:
    """PTX for sm_90 of a module with one elementwise kernel per (name, dtype)."""
    _init()
    mod = ir.Module(name="mathptx")
    mod.triple = "nvptx64-nvidia-cuda"
    kernels = [_add_kernel(mod, n, d, lanes) for n in names for d in dtypes]
    for k in kernels:  # emitted as .entry
        mod.get_global(k).calling_convention = "ptx_kernel"
    llmod = llvm.parse_assembly(str(mod))
    llmod.verify()
    tm = llvm.Target.from_triple(mod.triple).create_target_machine(cpu="sm_90", features="+ptx80", opt=3)
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(llmod, pb)
    return tm.emit_assembly(llmod)


def ptxas(ptx: str) -> subprocess.CompletedProcess:
    """Assemble PTX with ``ptxas -arch=sm_90``; raises FileNotFoundError without ptxas."""
    exe = shutil.which("ptxas")
    if exe is None:
        raise FileNotFoundError("ptxas not on PATH")
    with tempfile.TemporaryDirectory() as d:
        src = Path(d, "m.ptx")
        src.write_text(ptx)
        return subprocess.run([exe, "-arch=sm_90", str(src), "-o", str(Path(d, "m.cubin"))],
                              capture_output=True, text=True)
