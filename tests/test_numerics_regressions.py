"""Results the differential fuzzer found different from NumPy under jit, each pinned here."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_power_one_half_is_numpys_square_root(dtype):
    # NumPy's loop takes a scalar exponent 0.5 as sqrt: (-inf)**0.5 is nan, (-0.0)**0.5 is -0.0
    x = np.array([-np.inf, -7.0, 4.0, np.inf, -0.0, 0.0, 2.0], dtype)
    with np.errstate(invalid="ignore"):
        expected = np.power(x, dtype(0.5))
    for got in (tj.asarray(x) ** 0.5, tj.jit(lambda a: a ** 0.5)(tj.asarray(x))):
        np.testing.assert_array_equal(got.numpy(), expected)
        number = ~np.isnan(expected)        # (a NaN's sign means nothing)
        np.testing.assert_array_equal(np.signbit(got.numpy())[number], np.signbit(expected)[number])


def test_power_by_an_array_of_one_half_is_cs_pow():
    x = np.array([-np.inf, -0.0, 9.0])
    e = np.full(3, 0.5)
    got = tj.jit(lambda a, b: a ** b)(tj.asarray(x), tj.asarray(e)).numpy()
    np.testing.assert_array_equal(got, np.power(x, e))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(np.power(x, e)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_division_by_a_broadcast_value_is_correctly_rounded(dtype):
    # a loop-invariant divisor was once turned into a multiplication by its reciprocal (1.5 ulp)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 70)).astype(dtype)
    d = np.array(3.0, dtype)
    got = tj.jit(lambda a, b: a / b)(tj.asarray(x), tj.asarray(d)).numpy()
    np.testing.assert_array_equal(got, x / d)
    rows = rng.uniform(1, 7, (300, 1)).astype(dtype)
    got = tj.jit(lambda a, b: (a / b).astype(tj.int32))(tj.asarray(x * 100), tj.asarray(rows)).numpy()
    np.testing.assert_array_equal(got, ((x * 100) / rows).astype(np.int32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nextafter_of_equal_zeros_matches_numpy(dtype):
    # NumPy's float16 loop returns x for equal operands; float32/float64 return y (C's rule)
    x = np.array([-0.0, 0.0, -0.0, 1.0, 2.0], dtype)
    y = np.array([0.0, -0.0, -0.0, 1.0, 3.0], dtype)
    expected = np.nextafter(x, y)
    a, b = tj.asarray(x), tj.asarray(y)
    for got in (tj.nextafter(a, b), tj.jit(tj.nextafter)(a, b)):
        np.testing.assert_array_equal(np.signbit(got.numpy()), np.signbit(expected))
        np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("backend", ["interpret", "llvm"])
def test_power_one_half_of_one_element_under_each_backend(backend):
    x = tj.asarray(np.array([-np.inf], np.float32))
    with np.errstate(invalid="ignore"):
        expected = np.power(np.array([-np.inf], np.float32), np.float32(0.5))    # nan
    got = tj.jit(lambda a: a ** 0.5, backend=backend)(x).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_signed_zeros_survive_simplification_and_kernels(dtype):
    x = np.array([-0.0, 0.0, 1.5, -2.0], dtype)
    cases = [
        lambda a: a + 0.0,                      # -0.0 + 0.0 is +0.0: not folded to a
        lambda a: a + tj.astype(tj.signbit(tj.abs(a)), a.dtype),   # a zero the passes derive
        lambda a: a - 0.0,                      # folds: -0.0 - 0.0 is -0.0
        lambda a: a + (-0.0),                   # folds: x + -0.0 is x for every x
        lambda a: a * 0 / -1.0,                 # a kernel constant -0.0 is not +0.0
    ]
    for fn in cases:
        expected = fn(tj.asarray(x)).numpy()
        got = tj.jit(fn)(tj.asarray(x)).numpy()
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


def test_constant_kernel_outputs_keep_the_sign_of_zero():
    def f(x):
        x[...] = 0
        return tj.divide(x, -1.0), x

    a, b = tj.asarray(np.float32(2.0)), tj.asarray(np.float32(2.0))
    for (e, j) in zip(f(a), tj.jit(f)(b)):
        assert np.signbit(e.numpy()) == np.signbit(j.numpy())


def test_output_that_is_a_broadcast_run_time_constant():
    # ones * 3.7 folds to a constant loaded at run time (3.7 is not compiled in); the output is
    # a broadcast view of it, so that constant must be bound as a buffer of the program
    def f(x):
        return x, tj.broadcast_to(tj.ones((1,)) * 3.7, (2,))
    np.testing.assert_array_equal(tj.jit(f)(tj.ones(2))[1].numpy(), f(tj.ones(2))[1].numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_atan2_of_subnormal_operands(dtype):
    """Both operands subnormal: the kernel scales them up before reducing ``y / x`` (its
    interval test rounded to the smallest subnormal and took atan(0.5) 9 ulp off)."""
    tiny = float(np.finfo(dtype).smallest_subnormal)
    y = np.array([2, 1, 3, 7, -5], dtype=np.float64) * tiny
    x = np.array([4, 3, 8, 2, 6], dtype=np.float64) * tiny
    y, x = y.astype(dtype), x.astype(dtype)
    got = tj.jit(tj.atan2)(tj.asarray(y), tj.asarray(x)).numpy()
    np.testing.assert_allclose(got, np.arctan2(y, x), rtol=4 * np.finfo(dtype).eps)
