"""CPU kernels: layouts, reductions, multi-stage kernels, threading, programs, the disk cache."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from cpu_helpers import CACHE, C, L, elementwise, op, reduce_kernel

from codegen import cpu, kir
from runtime.cpu import CpuProgram, run_kernel
from runtime.kernel_cache import KernelCache, decode_entry
from runtime.program import Extern, Launch, Program, View

RNG = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------- elementwise


def fma_expr(dtype="float32"):
    return op("add", dtype, op("mul", dtype, L(0), C(1.5, dtype)), op("tanh", dtype, L(1)))


@pytest.mark.parametrize("shape", [(1000,), (7, 33), (3, 5, 67), (1, 1), (0, 5), (5, 0), ()])
def test_elementwise_contiguous(shape):
    x, y = randn(*shape), randn(*shape)
    (got,) = elementwise([fma_expr()], [x, y], ["float32"])
    np.testing.assert_allclose(got, x * 1.5 + np.tanh(y), rtol=1e-6, atol=1e-6)


def test_elementwise_broadcast_and_strided():
    x = randn(40, 70)
    row, col = randn(70), randn(40, 1)
    xt = randn(70, 40).T                       # transposed: strided along the inner dim
    sliced = randn(40, 140)[:, ::2]            # step 2
    expr = op("add", "float32", op("add", "float32", op("mul", "float32", L(0), L(1)), L(2)),
              op("sub", "float32", L(3), L(4)))
    (got,) = elementwise([expr], [x, row, col, xt, sliced], ["float32"])
    np.testing.assert_allclose(got, x * row + col + (xt - sliced), rtol=1e-6)


def test_elementwise_negative_strides_and_transposed_output():
    x = randn(30, 50)[::-1]
    out = np.empty((50, 30), np.float32).T
    k = kir.Kernel("neg", 2, 0, (kir.Operand("float32", ("s", "s")),), (kir.Operand("float32", ("c", "s")),),
                   (kir.Store(0, op("neg", "float32", L(0))),))
    run_kernel(k, (30, 50), [x], [out], cache=CACHE)
    np.testing.assert_array_equal(out, -x)


def test_index_and_mixed_dtypes():
    x = RNG.integers(-5, 5, (6, 37)).astype(np.int32)
    expr = op("add", "float64", op("cast", "float64", L(0)),
              op("cast", "float64", op("mul", "int64", kir.Index(0), kir.Index(1))))
    (got,) = elementwise([expr, op("gt", "bool", L(0), C(0, "int32"))], [x], ["float64", "bool"])[:1]
    i, j = np.indices(x.shape)
    np.testing.assert_array_equal(got, x + i * j)


def test_bool_input_and_output():
    a = RNG.random((9, 41)) < 0.5
    x = randn(9, 41)
    got, mask = elementwise([op("where", "float32", L(0), L(1), C(0.0, "float32")),
                             op("and", "bool", L(0), op("gt", "bool", L(1), C(0.0, "float32")))],
                            [a, x], ["float32", "bool"])
    np.testing.assert_array_equal(got, np.where(a, x, 0))
    np.testing.assert_array_equal(mask, a & (x > 0))


def test_layout_mismatch_is_an_error():
    k = kir.Kernel("c", 1, 0, (kir.Operand("float32", ("c",)),), (kir.Operand("float32", ("c",)),),
                   (kir.Store(0, L(0)),))
    with pytest.raises(ValueError, match="layout"):
        run_kernel(k, (10,), [randn(20)[::2]], [np.empty(10, np.float32)], cache=CACHE)


# --------------------------------------------------------------------------- reductions


def _reduce(op_name, x, axis_last=True, dtype="float32", threads=None):
    """Reduce a 2-D array along its last axis (row) or its first (column)."""
    v = x if axis_last else x.T
    out_dtype = "int64" if op_name.startswith("arg") else dtype
    out = np.empty((v.shape[0], 1), out_dtype)
    reduce_kernel([kir.Reduce(op_name, L(0), out_dtype), kir.Store(0, kir.Acc(0))], [v], [out],
                  v.shape, 1, threads=threads)
    return out[:, 0]


@pytest.mark.parametrize("axis_last", [True, False])
@pytest.mark.parametrize("shape", [(13, 1000), (300, 37), (1, 5), (64, 64), (4, 0)])
def test_float_reductions(shape, axis_last):
    x = randn(*shape)
    axis = 1 if axis_last else 0
    for name, ref in (("sum", np.sum), ("prod", np.prod), ("max", np.max), ("min", np.min),
                      ("argmax", np.argmax), ("argmin", np.argmin)):
        if x.shape[axis] == 0 and name not in ("sum", "prod"):
            continue
        got = _reduce(name, x, axis_last)
        want = ref(x.astype(np.float64) if name in ("sum", "prod") else x, axis=axis)
        if name.startswith("arg"):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "float64"])
def test_reductions_other_dtypes(dtype):
    x = RNG.integers(0, 100, (17, 203)).astype(dtype)
    for axis_last in (True, False):
        axis = 1 if axis_last else 0
        for name, ref in (("sum", np.sum), ("max", np.max), ("min", np.min), ("argmax", np.argmax)):
            got = _reduce(name, x, axis_last, dtype=dtype)
            want = ref(x, axis=axis)
            np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=f"{name} {axis_last}")


def test_max_and_argmax_with_nan():
    x = randn(6, 300)
    x[1, 17] = np.nan
    x[1, 250] = np.nan
    x[3, 299] = np.nan
    x[4, :] = -np.inf
    x[5, 100] = x[5].max() + 1
    x[5, 200] = x[5, 100]                      # ties: the first one wins
    for axis_last in (True, False):
        v = x if axis_last else np.ascontiguousarray(x.T).T
        for name, ref in (("argmax", np.argmax), ("argmin", np.argmin), ("max", np.max), ("min", np.min)):
            got = _reduce(name, v, axis_last=True)
            want = ref(x, axis=1)
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {axis_last}")


def test_column_argmax_with_nan():
    x = randn(500, 40)
    x[100, 3] = np.nan
    x[400, 3] = np.nan
    x[7, 5] = 99.0
    x[9, 5] = 99.0
    np.testing.assert_array_equal(_reduce("argmax", x, axis_last=False), np.argmax(x, axis=0))


def test_multi_dim_reduce_and_full_reduce():
    x = randn(5, 6, 7, 8)
    out = np.empty((5, 1, 1, 1), np.float32)          # reduce dims 1..3
    reduce_kernel([kir.Reduce("sum", L(0), "float32"), kir.Store(0, kir.Acc(0))], [x], [out], x.shape, 3)
    np.testing.assert_allclose(out.ravel(), x.sum(axis=(1, 2, 3)), rtol=1e-5)
    flat = randn(100003)
    total = np.empty(1, np.float32)
    reduce_kernel([kir.Reduce("sum", L(0), "float32"), kir.Store(0, kir.Acc(0))], [flat], [total],
                  flat.shape, 1)
    np.testing.assert_allclose(total[0], flat.astype(np.float64).sum(), rtol=1e-6)
    idx = np.empty(1, np.int64)
    reduce_kernel([kir.Reduce("argmax", op("abs", "float32", L(0)), "int64"), kir.Store(0, kir.Acc(0))],
                  [flat], [idx], flat.shape, 1)
    assert idx[0] == np.argmax(np.abs(flat))


def test_float32_sum_accuracy_16m():
    x = np.random.default_rng(1).random(1 << 24, dtype=np.float32)
    out = np.empty(1, np.float32)
    reduce_kernel([kir.Reduce("sum", L(0), "float32"), kir.Store(0, kir.Acc(0))], [x], [out], x.shape, 1)
    exact = x.astype(np.float64).sum()
    assert abs(out[0] - exact) / exact < 1e-5


def softmax_stages():
    x = L(0)
    shifted = op("sub", "float32", x, kir.Acc(0))
    return [kir.Reduce("max", x, "float32"),
            kir.Reduce("sum", op("exp", "float32", shifted), "float32"),
            kir.Store(0, op("div", "float32", op("exp", "float32", shifted), kir.Acc(1)), over_reduce=True)]


@pytest.mark.parametrize("shape", [(64, 1000), (3, 7), (1, 4099)])
@pytest.mark.parametrize("rows_inner", [True, False])
def test_softmax(shape, rows_inner):
    x = randn(*shape) * 4
    v = x if rows_inner else np.ascontiguousarray(x.T).T
    out = np.empty(shape, np.float32) if rows_inner else np.empty(shape[::-1], np.float32).T
    reduce_kernel(softmax_stages(), [v], [out], shape, 1)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_layernorm():
    n, d = 50, 384
    x, w, b = randn(n, d), randn(d), randn(d)
    inv_d = C(1.0 / d, "float32")
    mean = op("mul", "float32", kir.Acc(0), inv_d)
    centered = op("sub", "float32", L(0), mean)
    var = op("mul", "float32", kir.Acc(1), inv_d)
    inv_std = op("rsqrt", "float32", op("add", "float32", var, C(1e-5, "float32")))
    norm = op("mul", "float32", centered, inv_std)
    stages = [kir.Reduce("sum", L(0), "float32"),
              kir.Reduce("sum", op("square", "float32", centered), "float32"),
              kir.Store(0, op("add", "float32", op("mul", "float32", norm, L(1)), L(2)), over_reduce=True),
              kir.Store(1, mean)]
    out, mean_out = np.empty((n, d), np.float32), np.empty((n, 1), np.float32)
    reduce_kernel(stages, [x, w, b], [out, mean_out], (n, d), 1)
    mu = x.mean(axis=1, keepdims=True)
    ref = (x - mu) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mean_out, mu, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- threads


def test_thread_split_is_deterministic():
    x, y = randn(2000, 300), randn(300)        # above the single-thread work threshold
    one = elementwise([fma_expr()], [x, y], ["float32"], threads=1)[0]
    many = elementwise([fma_expr()], [x, y], ["float32"], threads=5)[0]
    np.testing.assert_array_equal(one, many)
    np.testing.assert_array_equal(_reduce("sum", x, threads=1), _reduce("sum", x, threads=4))
    np.testing.assert_array_equal(_reduce("sum", x, False, threads=1), _reduce("sum", x, False, threads=3))


def test_concurrent_callers():
    errors = []

    def worker(seed):
        try:
            rng = np.random.default_rng(seed)
            for _ in range(10):
                x = rng.standard_normal((200, 301)).astype(np.float32)
                y = rng.standard_normal(301).astype(np.float32)
                (got,) = elementwise([fma_expr()], [x, y], ["float32"])
                np.testing.assert_allclose(got, x * 1.5 + np.tanh(y), rtol=1e-6, atol=1e-6)
        except Exception as e:     # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# --------------------------------------------------------------------------- programs


def test_program_softmax_then_matmul():
    n, d, m = 20, 33, 7
    k_soft = kir.Kernel("softmax", 2, 1, (kir.Operand("float32", ("s", "c")),),
                        (kir.Operand("float32", ("s", "c")),), tuple(softmax_stages()))
    prog = Program(
        n_inputs=2, slot_nbytes=[n * d * 4, d * m * 4, n * d * 4, n * m * 4],
        slot_dtypes=["float32"] * 4, constants={},
        steps=[Launch(k_soft, (n, d), (View(0, 0, (d, 1)),), (View(2, 0, (d, 1)),)),
               Extern("matmul", (View(2, 0, (n * d, d, 1)), View(1, 0, (d * m, m, 1))),
                      (View(3, 0, (n * m, m, 1)),), ((1, n, d), (1, d, m), (1, n, m)), "float32")],
        outputs=[(View(3, 0, (m, 1)), (n, m), "float32"), (View(2, d, (1,)), (d,), "float32")])
    runner = CpuProgram(prog, cache=CACHE)
    x, w = randn(n, d), randn(d, m)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    s = e / e.sum(axis=1, keepdims=True)
    first = runner(x, w)
    for _ in range(3):                        # buffers are reused; earlier results stay intact
        out, row1 = runner(x * 2, w)
    np.testing.assert_allclose(first[0], s @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first[1], s[1], rtol=1e-5)
    e2 = np.exp(2 * x - (2 * x).max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, (e2 / e2.sum(axis=1, keepdims=True)) @ w, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- disk cache


def _cache_kernel():
    return kir.Kernel("cached", 1, 0, (kir.Operand("float64", ("c",)),), (kir.Operand("float64", ("c",)),),
                      (kir.Store(0, op("mul", "float64", L(0), C(3.0, "float64"))),))


def test_disk_cache_hit_in_fresh_process(tmp_path):
    cache = KernelCache(tmp_path, disk=True)
    cache.get(_cache_kernel())
    assert cache.stats["compiled"] == 1
    cache.get(_cache_kernel())
    assert cache.stats["memory_hits"] == 1
    script = textwrap.dedent("""
        import numpy as np, sys
        sys.path.insert(0, %r)
        from cpu_helpers import op, L, C
        from test_cpu_kernels import _cache_kernel
        from runtime.kernel_cache import KernelCache
        from runtime.cpu import run_kernel
        cache = KernelCache(%r, disk=True)
        x = np.arange(5.0); out = np.empty(5)
        run_kernel(_cache_kernel(), (5,), [x], [out], cache=cache)
        assert (out == 3 * x).all(), out
        print(cache.stats["disk_hits"], cache.stats["compiled"])
    """) % (os.path.dirname(__file__), str(tmp_path))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1", "0"]


def test_corrupted_entry_is_rebuilt(tmp_path, caplog):
    KernelCache(tmp_path, disk=True).get(_cache_kernel())
    (path,) = list(tmp_path.glob("*.tjk"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])              # truncated
    fresh = KernelCache(tmp_path, disk=True)
    with caplog.at_level("WARNING", logger="tracejit.cache"):
        entry = fresh.get(_cache_kernel())
    assert fresh.stats["disk_errors"] == 1 and fresh.stats["compiled"] == 1
    assert "damaged" in caplog.text
    assert decode_entry(path.read_bytes()).object_code == entry.artifact.object_code
    flipped = bytearray(path.read_bytes())
    flipped[-10] ^= 0xFF                                   # same length, one byte changed
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        decode_entry(path.read_bytes())


def test_disk_disabled_by_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEJIT_DISABLE_CACHE", "1")
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    cache = KernelCache()
    cache.get(_cache_kernel())
    assert not list(tmp_path.iterdir())


def test_ir_text_available():
    art = cpu.compile_kernel(_cache_kernel())
    assert art.symbol in art.llvm_ir and art.object_code
    assert "fmul" in cpu.optimized_ir(_cache_kernel())


def test_expression_hash_is_computed_once_per_node():
    """A deep chain of shared subexpressions (each node read twice) hashes in linear time."""
    from codegen import kir
    e = kir.Load(0)
    for _ in range(200):            # 2**200 paths from the root to the load
        e = kir.Op("add", (e, e), "float32")
    assert hash(e) == hash(e) and e in {e: 1}
    same, other = kir.Load(0), kir.Load(0)
    for _ in range(3):
        same = kir.Op("add", (same, same), "float32")
        other = kir.Op("add", (other, other), "float32")
    assert same is not other and same == other and hash(same) == hash(other)
