"""The bfloat16 GEMM (codegen.cpu_gemm_bf16: AVX-512 BF16 dot products into float32) against a
float64 reference of the same bfloat16 values, and bfloat16 matmuls through tracejit.

The products of two bfloat16 numbers are exact in float32, so the only error is float32
summation (and flushing below float32's normal range, which random data never reaches): the
tolerance of test_cpu_gemm.py applies."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from test_cpu_gemm import check, operand

from codegen import cpu_gemm_bf16
from runtime import cpu_gemm as rt

needs_bf16 = pytest.mark.skipif(not cpu_gemm_bf16.available(),
                                reason="the host CPU has no AVX-512 BF16 instructions")
BF16 = np.dtype(ml_dtypes.bfloat16)


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path / "cache"))


def bf16_operand(rng, shape, layout):
    return operand(rng, shape, "float32", layout).astype(BF16) if layout == "c" else \
        _as_layout(operand(rng, shape, "float32", "c").astype(BF16), layout)


def _as_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """``x``'s values in the layout ``operand`` names (a copy laid out that way)."""
    m, n = x.shape
    if layout == "t":
        return np.ascontiguousarray(x.T).T
    if layout == "s":
        big = np.zeros((2 * m + 1, 3 * n + 2), BF16)
        big[1::2, 2::3] = x
        return big[1::2, 2::3]
    if layout == "n":
        return np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1]
    if layout == "b":
        return np.broadcast_to(x[:1], x.shape)
    raise ValueError(layout)


SIZES = [(1, 1, 1), (13, 17, 33), (100, 257, 100), (33, 100, 257), (257, 13, 17), (14, 32, 256),
         (15, 33, 301), (3, 70, 1), (64, 64, 513)]


@needs_bf16
@pytest.mark.parametrize("m,n,k", SIZES)
@pytest.mark.parametrize("threads", [1, 2])
def test_sizes(m, n, k, threads):
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a, b = bf16_operand(rng, (m, k), "c"), bf16_operand(rng, (k, n), "c")
    out = np.full((m, n), np.nan, np.float32)
    rt.gemm(a, b, out, threads)
    check(a, b, out)


@needs_bf16
@pytest.mark.parametrize("la", ["c", "t", "s", "n", "b"])
@pytest.mark.parametrize("lb", ["c", "t", "s"])
def test_layouts(la, lb):
    rng = np.random.default_rng(5)
    for m, n, k in [(37, 45, 29), (14, 32, 30)]:
        a, b = bf16_operand(rng, (m, k), la), bf16_operand(rng, (k, n), lb)
        out = np.empty((n, m), np.float32).T          # a column-major C too
        rt.gemm(a, b, out, 2)
        check(a, b, out)


@needs_bf16
def test_inner_loop_is_dot_products():
    from codegen import cpu
    with cpu._lock:
        asm = cpu.target_machine().emit_assembly(cpu.optimize(str(cpu_gemm_bf16.build())))
    p = cpu_gemm_bf16.params()
    body = asm[asm.index(f"{p.symbol}_uk{p.mr}:"):]
    body = body[:body.index(".Lfunc_end")]
    assert body.count("vdpbf16ps") == p.mr * p.nr // p.lanes
    assert "(%rsp)" not in body


def test_bfloat16_matmul_accumulates_in_float32_eagerly_and_under_jit():
    """With or without the instructions: products exact, sums in float32, one rounding."""
    import tracejit as tj
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 300)).astype(BF16)
    b = rng.standard_normal((300, 24)).astype(BF16)
    exact = (a.astype(np.float64) @ b.astype(np.float64))
    eager = tj.asarray(a) @ tj.asarray(b)
    jitted = tj.jit(lambda x, y: x @ y)(tj.asarray(a), tj.asarray(b))
    assert eager.dtype == jitted.dtype == tj.bfloat16
    np.testing.assert_array_equal(eager.numpy().view(np.uint16), jitted.numpy().view(np.uint16))
    got = eager.numpy().astype(np.float64)
    # within one bfloat16 rounding of the exact sum (a bfloat16 accumulator would be far off)
    np.testing.assert_allclose(got, exact, rtol=2**-8, atol=1e-6 * np.abs(exact).max())
    assert np.mean(got == exact.astype(BF16).astype(np.float64)) > 0.97
    batched = tj.asarray(np.stack([a[:8, :16]] * 3)) @ tj.asarray(np.stack([b[:16]] * 3))
    np.testing.assert_allclose(batched.numpy().astype(np.float64)[1],
                               a[:8, :16].astype(np.float64) @ b[:16].astype(np.float64), rtol=2**-8)


def test_validation_names_the_dtypes():
    a = np.zeros((2, 2), BF16)
    with pytest.raises(TypeError, match="bfloat16 into float32"):
        rt.gemm(a, a, np.zeros((2, 2), np.float64))
