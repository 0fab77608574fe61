"""The generated CPU GEMM (codegen.cpu_gemm, runtime.cpu_gemm) against a float64 NumPy reference.

Tolerance: each output is a K-term dot product.  Rounding in any summation order stays within
``K * u * (|A| @ |B|)`` (u = 2**-24 for float32, 2**-53 for float64), and for random data near
``sqrt(K) * u * (|A| @ |B|)``.  We allow ``RTOL * sqrt(K) * (|A| @ |B|)`` with RTOL 1e-5 (float32)
and 1e-13 (float64): above even the worst case for every K used here (K * u < RTOL * sqrt(K) while
K < 27,000 for float32), yet a wrong or missing term is off by O(1) of that scale.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen import cpu_gemm
from runtime import cpu_gemm as rt
from runtime.cpu_gemm import gemm

RTOL = {"float32": 1e-5, "float64": 1e-13}


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path / "cache"))


def check(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = a64 @ b64
    scale = np.abs(a64) @ np.abs(b64)
    tol = RTOL[out.dtype.name] * np.sqrt(max(a.shape[1], 1)) * scale + 1e-30
    bad = ~(np.abs(out - ref) <= tol)
    assert not bad.any(), f"{bad.sum()} wrong of {out.size}, first at {np.argwhere(bad)[0]}"


def operand(rng: np.random.Generator, shape: tuple[int, int], dtype: str, layout: str) -> np.ndarray:
    """A ``shape`` array laid out as: ``c`` row-major, ``t`` a transposed view, ``s`` a view with
    steps (2, 3), ``n`` negative steps, ``b`` broadcast (stride 0 along dim 0)."""
    m, n = shape
    if layout == "c":
        return rng.standard_normal(shape).astype(dtype)
    if layout == "t":
        return rng.standard_normal((n, m)).astype(dtype).T
    if layout == "s":
        return rng.standard_normal((2 * m + 1, 3 * n + 2)).astype(dtype)[1::2, 2::3]
    if layout == "n":
        return rng.standard_normal(shape).astype(dtype)[::-1, ::-1]
    if layout == "b":
        return np.broadcast_to(rng.standard_normal((1, n)).astype(dtype), shape)
    raise ValueError(layout)


def run(m: int, n: int, k: int, dtype: str = "float32", la: str = "c", lb: str = "c", lo: str = "c",
        threads: int | None = None, seed: int = 0, vector_bytes: int | None = None) -> None:
    rng = np.random.default_rng(seed)
    a, b = operand(rng, (m, k), dtype, la), operand(rng, (k, n), dtype, lb)
    out = np.full((n, m), np.nan, dtype).T if lo == "t" else np.full((m, n), np.nan, dtype)
    rt._gemm(a, b, out, threads, vector_bytes)
    check(a, b, out)


SIZES = [(1, 1, 1), (13, 17, 33), (100, 257, 100), (33, 100, 257), (257, 13, 17), (14, 32, 256),
         (15, 33, 300)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m,n,k", SIZES)
@pytest.mark.parametrize("threads", [1, 2])
def test_sizes(m, n, k, dtype, threads):
    run(m, n, k, dtype, threads=threads)


@pytest.mark.parametrize("la,lb,lo", [("t", "c", "c"), ("c", "t", "c"), ("t", "t", "t"), ("s", "s", "c"),
                                      ("n", "n", "c"), ("b", "c", "c"), ("c", "b", "t"), ("s", "t", "t")])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layouts(la, lb, lo, dtype):
    run(100, 257, 67, dtype, la, lb, lo, threads=2)
    run(19, 45, 300, dtype, la, lb, lo, threads=1)


@pytest.mark.parametrize("m,n,k", [(0, 5, 3), (5, 0, 3), (0, 0, 0), (7, 9, 0), (300, 300, 0)])
def test_empty(m, n, k):
    out = np.full((m, n), np.nan, np.float32)
    gemm(np.ones((m, k), np.float32), np.ones((k, n), np.float32), out, threads=2)
    assert out.shape == (m, n) and (out == 0).all()


# (M, K) x (K, N) and operand layouts of the training benchmark's matmuls
T1 = [((256, 784), (784, 512), "c", "c"), ((256, 512), (512, 512), "c", "c"),
      ((256, 512), (512, 10), "c", "c"), ((784, 256), (256, 512), "t", "c"),
      ((512, 256), (256, 512), "t", "c"), ((256, 512), (512, 512), "c", "t"),
      ((256, 10), (10, 512), "c", "t")]


@pytest.mark.parametrize("sa,sb,la,lb", T1)
def test_training_shapes(sa, sb, la, lb):
    run(sa[0], sb[1], sa[1], "float32", la, lb, threads=2)


@pytest.mark.parametrize("vector_bytes", [32, 16])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_narrower_vectors(vector_bytes, dtype):
    """The AVX2 and SSE blockings (built on this host, run with its wider instruction set)."""
    for m, n, k, la, lb in [(13, 17, 33, "c", "c"), (61, 70, 300, "t", "c"), (40, 23, 9, "c", "t"),
                            (6, 16, 1, "s", "n")]:
        run(m, n, k, dtype, la, lb, threads=2, vector_bytes=vector_bytes)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 70), k=st.integers(0, 40),
       dtype=st.sampled_from(["float32", "float64"]), la=st.sampled_from("ctsnb"),
       lb=st.sampled_from("ctsnb"), lo=st.sampled_from("ct"), threads=st.sampled_from([1, 2]))
def test_hypothesis(m, n, k, dtype, la, lb, lo, threads):
    rt.SMALL_GEMM, saved = 0, rt.SMALL_GEMM      # split even tiny problems across threads
    rt._calls.by_signature.clear()              # (calls are planned once per signature)
    try:
        run(m, n, k, dtype, la, lb, lo, threads)
    finally:
        rt.SMALL_GEMM = saved
        rt._calls.by_signature.clear()


def test_out_overlapping_input():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 40)).astype(np.float32)
    b = rng.standard_normal((40, 40)).astype(np.float32)
    expect = a.astype(np.float64) @ b
    gemm(a, b, a)
    np.testing.assert_allclose(a, expect, rtol=1e-4, atol=1e-4)


def test_validation():
    f4 = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"inner dimensions differ: a \(3, 4\) @ b \(3, 4\)"):
        gemm(f4, f4, np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"out has shape \(3, 3\).*needs \(3, 5\)"):
        gemm(f4, np.ones((4, 5), np.float32), np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="must be 2-D"):
        gemm(np.ones(4, np.float32), f4, np.empty((3, 4), np.float32))
    with pytest.raises(TypeError, match="one dtype"):
        gemm(f4, np.ones((4, 2)), np.empty((3, 2), np.float32))
    with pytest.raises(TypeError, match="one dtype"):
        gemm(f4.astype(np.int32), np.ones((4, 2), np.int32), np.empty((3, 2), np.int32))
    out = np.empty((3, 2), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        gemm(f4, np.ones((4, 2), np.float32), out)
    with pytest.raises(TypeError, match="NumPy array"):
        gemm([[1.0]], f4, out)


def test_disk_cache_rebuilds_damaged_entry(tmp_path, monkeypatch):
    from runtime import kernel_cache
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(kernel_cache, "_provided", {})   # (a loaded export provides its GEMM)
    first = rt._Gemm("float64")
    assert not first.from_disk
    (entry,) = tmp_path.glob("*.tjk")
    assert rt._Gemm("float64").from_disk
    entry.write_bytes(entry.read_bytes()[:-10])
    again = rt._Gemm("float64")
    assert not again.from_disk and again.stats["disk_errors"] == 1
    assert rt._Gemm("float64").from_disk        # rewritten


_X86_FMA = llvm.get_process_triple().startswith("x86_64") and llvm.get_host_cpu_features().get("fma")


@pytest.mark.skipif(not _X86_FMA, reason="checks x86 FMA assembly")
def test_micro_kernel_assembly():
    """The inner loop: vector FMAs, no stack traffic (spilled accumulators)."""
    asm = cpu_gemm.assembly("float32")
    p = cpu_gemm.params("float32")
    body = asm[asm.index(f"_uk{p.mr}:"):]
    body = body[:body.index(".Lfunc_end")]
    assert body.count("vfmadd") >= p.mr * p.nr // p.lanes
    assert "(%rsp)" not in body


@pytest.mark.parametrize("dtype, generated", [("float32", True), ("float64", True), ("int32", False)])
def test_compiled_matmul_uses_generated_gemm_for_floats(dtype, generated):
    import tracejit as tj
    from runtime.cpu import _PreparedMatmul
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((37, 70)) * 4).astype(dtype)
    b = (rng.standard_normal((70, 5)) * 4).astype(dtype)
    f = tj.jit(lambda x, y: x @ y)
    out = np.asarray(f(tj.asarray(a), tj.asarray(b)))
    (entry,) = f.entries()
    steps = entry.executable._run.steps
    assert [isinstance(s, _PreparedMatmul) for s in steps] == [generated]
    if generated:
        check(a, b, out)
    else:
        np.testing.assert_array_equal(out, a @ b)


def check_batched(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in np.ndindex(*out.shape[:-2]):
        check(a[i], b[i], out[i])


@pytest.mark.parametrize("batch, m, n, k, threads", [
    ((8, 8), 64, 32, 16, 2),       # many products, split whole across threads
    ((3,), 37, 70, 45, 2),         # odd count and partial tiles
    ((1,), 200, 300, 64, 2),       # fewer products than threads: columns split too
    ((4,), 70, 5, 33, 2),          # narrow C: computed transposed
    ((2, 3), 9, 11, 0, 2),         # K = 0: zeros
    ((5,), 16, 40, 24, 1),
])
def test_batched_gemm(batch, m, n, k, threads):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(batch + (m, k)).astype(np.float32)
    b = rng.standard_normal(batch + (n, k)).astype(np.float32).swapaxes(-1, -2)    # transposed views
    out = np.full(batch + (m, n), np.nan, np.float32)
    rt.batched_gemm(a, b, out, threads)
    check_batched(a, b, out)


def test_batched_gemm_broadcast_and_strided_batch():
    """Batch strides of 0 (an operand shared by every product) and a permuted, sliced batch."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, 4, 30, 20)).astype(np.float64).transpose(1, 0, 2, 3)[:, ::2]
    b = np.broadcast_to(rng.standard_normal((20, 50)), (4, 3, 20, 50))
    out = np.full((3, 4, 30, 50), np.nan).transpose(1, 0, 2, 3)
    rt.batched_gemm(a, b, out, 2)
    check_batched(a, b, out)


def test_compiled_batched_matmul_uses_generated_gemm():
    import tracejit as tj
    from runtime.cpu import _PreparedBatchedMatmul
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3, 40, 24)).astype(np.float32)
    b = rng.standard_normal((2, 3, 50, 24)).astype(np.float32)
    f = tj.jit(lambda x, y: x @ tj.matrix_transpose(y))
    out = np.asarray(f(tj.asarray(a), tj.asarray(b)))
    (entry,) = f.entries()
    assert [type(s) for s in entry.executable._run.steps] == [_PreparedBatchedMatmul]
    check_batched(a, b.swapaxes(-1, -2), out)


def test_threads_split_the_longer_side_of_c():
    """Each range packs all of the operand it does not split, so a tall C is split by rows and
    a wide one by columns (and the result is right either way)."""
    p = cpu_gemm.params("float32")
    assert rt.plan(1024, 256, 4096, p, 2)[0] == 1
    assert rt.plan(256, 1024, 4096, p, 2)[0] == 0
    assert rt.plan(512, 512, 512, p, 2)[0] == 0
    assert rt.plan(1024, 20, 512, p, 2)[0] == 1           # too narrow for a column split
    for m, n in ((300, 100), (100, 300)):
        run(m, n, 257, threads=2)
