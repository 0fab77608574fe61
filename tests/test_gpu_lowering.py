"""Lowering for CUDA needs no GPU: every program compiles to PTX that ``ptxas -arch=sm_90`` accepts,
with as many kernels as on the CPU."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import tracejit as tj
from codegen import ptx
from tracejit import prims
from tracejit.ops import BUILTIN, PRIMS, AVal

F = tj.nn.functional
DTYPES = [tj.float32, tj.float64, tj.int32, tj.bool]


@functools.cache
def assemble(source: str) -> None:
    """``ptxas -arch=sm_90`` on one PTX module (each distinct text once per test run)."""
    ptx.ptxas_check(source, "sm_90")


def lower_both(fn, *specs):
    """``(cpu, cuda)`` lowerings of ``fn``; the CUDA one's PTX is assembled."""
    if not ptx.ptxas_available():
        pytest.skip("ptxas is not on PATH (install the CUDA toolkit)")
    f = tj.jit(fn)
    cpu = f.lower(*specs)
    gpu = f.lower(*specs, device="cuda")
    for k in gpu.kernels:
        assert ".entry" in k.source and ".target sm_" in k.source
    for pk in gpu.entry.executable.ptx.values():   # matmul externs included
        assemble(pk.ptx)
    assert len(gpu.kernels) == len(cpu.kernels)
    return cpu, gpu


def w1(x, b):
    return (tj.tanh(x * 1.5 + b) * 0.5 + 0.5) * tj.exp(-x * x) + tj.sin(x)


def mlp(x, w1, b1, w2, b2):
    return F.log_softmax(F.relu(x @ w1 + b1) @ w2 + b2, axis=-1)


S = tj.spec
PROGRAMS = {
    "w1_chain": (w1, [S((4096,), tj.float32), S((4096,), tj.float32)]),
    "softmax": (lambda x: F.softmax(x, axis=-1), [S((64, 1024), tj.float32)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (512,), w, b, 1e-5),
                   [S((32, 512), tj.float32), S((512,), tj.float32), S((512,), tj.float32)]),
    "sum": (lambda x: tj.sum(x), [S((1 << 18,), tj.float32)]),
    "mean_axis0": (lambda x: tj.mean(x, axis=0), [S((256, 128), tj.float32)]),
    "matmul_bias_relu": (lambda x, w, b: F.relu(x @ w + b),
                         [S((64, 128), tj.float32), S((128, 32), tj.float32), S((32,), tj.float32)]),
    "mlp": (mlp, [S((16, 784)), S((784, 64)), S((64,)), S((64, 10)), S((10,))]),
    "float64_rows": (lambda x: tj.max(x, axis=1) - tj.exp(x).sum(axis=1), [S((33, 77), tj.float64)]),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_lowers_to_ptx_that_assembles(name):
    fn, specs = PROGRAMS[name]
    cpu, gpu = lower_both(fn, *specs)
    assert gpu.kernels, "every program here launches at least one kernel"
    assert [k.key for k in gpu.kernels] == [k.key for k in cpu.kernels]


def _arity(prim, a: AVal) -> int | None:
    """How many operands ``prim`` takes on ``a`` (None: it rejects the dtype)."""
    avals = [AVal(a.shape, np.dtype(tj.bool)), a, a] if prim.name == "where" else [a]
    while len(avals) <= 3:
        try:
            prim.infer(*avals)
            return len(avals)
        except TypeError as e:
            if "positional argument" not in str(e):     # a dtype rule said no
                return None
            avals.append(a)
    return None


def _elementwise_cases():
    """(primitive, operand dtypes, params) for every elementwise primitive and dtype it accepts."""
    for name, prim in sorted(PRIMS.items()):
        if prim.kind != "elementwise" or name not in BUILTIN:
            continue
        for dtype in DTYPES:
            if name == "cast":
                for to in DTYPES:
                    if to != dtype:
                        yield pytest.param(name, [dtype], {"dtype": np.dtype(to)}, id=f"cast-{dtype}-{to}")
                continue
            n = _arity(prim, AVal((8, 33), np.dtype(dtype)))
            if n is not None:
                ins = [tj.bool, dtype, dtype] if name == "where" else [dtype] * n
                yield pytest.param(name, ins, {}, id=f"{name}-{dtype}")


CASES = list(_elementwise_cases())


def test_every_elementwise_primitive_has_a_case():
    covered = {c.values[0] for c in CASES}
    # the parts of complex numbers take only complex operands (their kernels, as pairs of float
    # lanes, are assembled by tests/test_complex_kernels.py)
    complex_only = {"real", "imag", "conj"}
    for name in complex_only:
        assert _arity(PRIMS[name], AVal((8, 33), np.dtype(tj.complex64))) == 1
    assert covered == {n for n in BUILTIN if PRIMS[n].kind == "elementwise"} - complex_only


@pytest.mark.parametrize("name,dtypes,params", CASES)
def test_every_elementwise_primitive_assembles(name, dtypes, params):
    def one_op(*xs):
        return prims.bind(name, *xs, **params)
    _, gpu = lower_both(one_op, *(S((8, 33), d) for d in dtypes))
    assert len(gpu.kernels) == 1


def test_lowering_reports_the_arch_and_never_opens_a_device(monkeypatch):
    from runtime import cuda
    monkeypatch.setattr(cuda, "device", lambda *a: pytest.fail("lowering opened the GPU"))
    lo = tj.jit(w1).lower(S((1024,)), S((1024,)), device="cuda")
    arch = "sm_90" if not cuda.is_available() else cuda.device_properties(0)[1]
    assert all(k.ptx.arch == arch for k in lo.kernels)
    assert lo.entry.executable.device == "cuda:0"


def test_cpu_kernels_show_llvm_ir():
    lo = tj.jit(w1).lower(S((1024,)), S((1024,)))
    assert "define" in lo.kernels[0].source
