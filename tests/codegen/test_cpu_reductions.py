"""Reduction code paths of the CPU generator: tiled column reductions (remainder tiles, odd
sizes, strided outer dims, several stages), float32 block sums in rows, hoisted divisors."""
from __future__ import annotations

import numpy as np
import pytest
from cpu_helpers import C, L, before_guard_page, op, reduce_kernel

from codegen import cpu, kir

RNG = np.random.default_rng(7)


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _column(name: str, x: np.ndarray, dtype: str = "float32", threads: int | None = None) -> np.ndarray:
    """``name`` over axis 0 of 2-D ``x``, as a column kernel (lanes along the kept axis)."""
    out_dtype = "int64" if name.startswith("arg") else dtype
    out = np.empty((x.shape[1], 1), out_dtype)
    reduce_kernel([kir.Reduce(name, L(0), out_dtype), kir.Store(0, kir.Acc(0))], [x.T], [out],
                  x.T.shape, 1, threads=threads)
    return out[:, 0]


# more outer points than one tile, with a remainder tile and a scalar tail; reduce lengths
# around the unroll factor
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (4, 17), (5, cpu.COLUMN_TILE + 37),
                                   (9, 2 * cpu.COLUMN_TILE), (130, 70), (0, 9)])
@pytest.mark.parametrize("name", ["sum", "prod", "max", "min", "argmax", "argmin"])
def test_column_tiles(shape, name):
    x = randn(*shape)
    if x.shape[0] == 0 and name not in ("sum", "prod"):
        return
    got = _column(name, x, threads=1)
    want = getattr(np, name)(x.astype(np.float64) if name in ("sum", "prod") else x, axis=0)
    if name.startswith("arg"):
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_column_ties_and_nan_across_unrolled_points():
    x = randn(11, 40)
    x[2, 0] = x[3, 0] = x[9, 0] = 50.0            # ties within and across unrolled groups
    x[5, 1] = np.nan
    x[10, 2] = np.nan                               # in the remainder of the unrolled loop
    x[:, 3] = -np.inf
    for name in ("argmax", "argmin", "max", "min"):
        np.testing.assert_array_equal(_column(name, x), getattr(np, name)(x, axis=0), err_msg=name)


def test_column_threads_match_one_thread():
    x = randn(300, 3 * cpu.COLUMN_TILE + 5)
    np.testing.assert_array_equal(_column("sum", x, threads=2), _column("sum", x, threads=1))


def test_column_strided_outer_dims_and_two_reduce_dims():
    # iteration (a, c, b, d): outer (a, c) with c contiguous, reduce (b, d) strided
    x = randn(3, 5, 7, 130)                          # array dims (a, b, d, c)
    v = x.transpose(0, 3, 1, 2)
    out = np.empty((3, 130, 1, 1), np.float32)
    reduce_kernel([kir.Reduce("sum", L(0), "float32"), kir.Store(0, kir.Acc(0))], [v], [out], v.shape, 2)
    np.testing.assert_allclose(out[:, :, 0, 0], x.sum(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    # strided output and a non-contiguous input along the lane dim
    y = randn(20, 2 * 90)[:, ::2]
    out2 = np.empty((90, 2), np.float32)[:, :1]
    reduce_kernel([kir.Reduce("max", L(0), "float32"), kir.Store(0, kir.Acc(0))], [y.T], [out2],
                  y.T.shape, 1)
    np.testing.assert_array_equal(out2[:, 0], y.max(axis=0))


def test_column_multi_stage_softmax_and_broadcast_operand():
    """Stages that read earlier accumulators, an over-reduce store and a per-row operand."""
    n, m = 23, cpu.COLUMN_TILE + 3
    x, w = randn(n, m) * 3, randn(n, 1)
    xv, wv = x.T, np.broadcast_to(w.T, (m, n))       # iteration (column, row)
    shifted = op("sub", "float32", op("mul", "float32", L(0), L(1)), kir.Acc(0))
    e = op("exp", "float32", shifted)
    stages = [kir.Reduce("max", op("mul", "float32", L(0), L(1)), "float32"),
              kir.Reduce("sum", e, "float32"),
              kir.Store(0, op("div", "float32", e, kir.Acc(1)), over_reduce=True),
              kir.Store(1, kir.Acc(1))]
    out = np.empty((n, m), np.float32)
    total = np.empty((m, 1), np.float32)
    reduce_kernel(stages, [xv, wv], [out.T, total], xv.shape, 1)
    xw = (x * w).astype(np.float64)
    ref = np.exp(xw - xw.max(axis=0))
    np.testing.assert_allclose(out, ref / ref.sum(axis=0), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(total[:, 0], ref.sum(axis=0), rtol=2e-5)


@pytest.mark.parametrize("n", [cpu.SUM_BLOCK - 1, cpu.SUM_BLOCK, 3 * cpu.SUM_BLOCK + 77])
def test_row_block_sums(n):
    x = RNG.random((3, n), dtype=np.float32) + 1000.0   # large common part: f32 lanes would drift
    out = np.empty((3, 1), np.float32)
    reduce_kernel([kir.Reduce("sum", L(0), "float32"), kir.Store(0, kir.Acc(0))], [x], [out], x.shape, 1)
    np.testing.assert_allclose(out[:, 0], x.astype(np.float64).sum(axis=1), rtol=2e-7)


def test_row_block_sum_float16():
    x = (RNG.random((2, 2 * cpu.SUM_BLOCK + 5)) * 4).astype(np.float16)
    out = np.empty((2, 1), np.float16)
    reduce_kernel([kir.Reduce("sum", L(0), "float16"), kir.Store(0, kir.Acc(0))], [x], [out], x.shape, 1)
    np.testing.assert_allclose(out[:, 0], x.astype(np.float64).sum(axis=1), rtol=1e-3)


def test_division_by_hoisted_value():
    """x / acc and x / broadcast operand: multiplied by a reciprocal, within 1.5 ulp."""
    x, d = randn(37, 301), randn(37, 1) + 3.0
    inv = op("div", "float32", L(0), L(1))
    stages = [kir.Reduce("sum", op("abs", "float32", L(0)), "float32"),
              kir.Store(0, op("div", "float32", L(0), kir.Acc(0)), over_reduce=True),
              kir.Store(1, inv, over_reduce=True),
              kir.Store(2, op("div", "float32", L(0), C(3.0, "float32")), over_reduce=True)]
    outs = [np.empty_like(x) for _ in range(3)]
    reduce_kernel(stages, [x, np.broadcast_to(d, x.shape)], outs, x.shape, 1)
    s = np.abs(x).astype(np.float64).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(outs[0], x / s, rtol=3e-7)
    np.testing.assert_allclose(outs[1], x / d, rtol=3e-7)
    np.testing.assert_array_equal(outs[2], x / np.float32(3.0))     # constants divide exactly


def test_column_index_of_the_unrolled_reduce_dim():
    x = randn(7, 45)                                   # iteration (column, row): rows unrolled
    row = op("cast", "float32", kir.Index(1))
    out = np.empty((45, 1), np.float32)
    reduce_kernel([kir.Reduce("sum", op("mul", "float32", L(0), row), "float32"), kir.Store(0, kir.Acc(0))],
                  [x.T], [out], x.T.shape, 1)
    want = (x * np.arange(7, dtype=np.float32)[:, None]).sum(axis=0)
    np.testing.assert_allclose(out[:, 0], want, rtol=1e-5)


def test_narrow_column_tiles_with_many_outer_rows():
    x = randn(5000, 6, 3)                               # iteration (n, c, r): tiles 3 columns wide
    v = x.transpose(0, 2, 1)
    out = np.empty((5000, 3, 1), np.float32)
    reduce_kernel([kir.Reduce("max", L(0), "float32"), kir.Store(0, kir.Acc(0))], [v], [out], v.shape, 1)
    np.testing.assert_array_equal(out[:, :, 0], x.max(axis=1))


@pytest.mark.parametrize("n", [1, 10, 17, 63, 100])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int8"])
def test_row_tails_stay_inside_their_rows(n, dtype):
    """Short rows and row tails run as masked vector steps: every pass of a three-pass row
    kernel (max, sum of exp, normalized store) and an argmax match NumPy, and nothing is read
    or written past the last row (the data ends at a guard page)."""
    x, keep = before_guard_page((37, n), dtype)
    x[...] = (RNG.standard_normal((37, n)) * 4).astype(dtype)
    if dtype == "int8":
        out = np.empty((37, 1), np.int64)
        reduce_kernel([kir.Reduce("argmax", L(0), "int64"), kir.Store(0, kir.Acc(0))], [x], [out], x.shape, 1)
        np.testing.assert_array_equal(out[:, 0], x.argmax(axis=1))
        return
    y, keep_y = before_guard_page((37, n), dtype)
    stages = [kir.Reduce("max", L(0), dtype),
              kir.Reduce("sum", op("exp", dtype, op("sub", dtype, L(0), kir.Acc(0))), dtype),
              kir.Store(0, op("div", dtype, op("exp", dtype, op("sub", dtype, L(0), kir.Acc(0))), kir.Acc(1)),
                        over_reduce=True)]
    reduce_kernel(stages, [x], [y], x.shape, 1)
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    rtol = 2e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=rtol)
