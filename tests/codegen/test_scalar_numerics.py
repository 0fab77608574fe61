"""Scalar numerics of compiled kernels against eager (NumPy): float floor division and
remainder at special values, float -> int casts out of range, integer negative powers."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import tracejit as tj

SPECIAL = np.array([0.0, -0.0, 1, -1, 2.5, -2.5, 7, -7, 0.1, 3, -3, 1e10, 1e-300, 5e-324, 1e-310, 1e300,
                    -1e300, 2.0 ** 60, 1.7976931348623157e308, np.inf, -np.inf, np.nan])


def _bits_equal(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    u = f"u{want.itemsize}"
    return (got.view(u) == want.view(u)) | (np.isnan(got) & np.isnan(want))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("name", ["remainder", "floor_divide"])
def test_float_floordiv_mod_special_values_match_numpy(dtype: str, name: str) -> None:
    """Every pair of special values gives NumPy's result bit for bit (remainder(1, inf) = 1,
    floor_divide(-1, inf) = -1, floor_divide(inf, 2) = nan, signed zeros, division by zero)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = (v.astype(dtype) for v in np.meshgrid(SPECIAL, SPECIAL))
        want = getattr(np, name)(a, b)
    f = tj.jit(lambda x, y: getattr(tj, name)(x, y))
    got = np.asarray(f(tj.asarray(a), tj.asarray(b)))
    bad = ~_bits_equal(got, want)
    assert not bad.any(), list(zip(a[bad][:5], b[bad][:5], got[bad][:5], want[bad][:5]))
    eager = np.asarray(getattr(tj, name)(tj.asarray(a), tj.asarray(b)))
    assert _bits_equal(eager, want).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_floordiv_mod_random_wide_range(dtype: str) -> None:
    """Exact fmod over the whole exponent range (quotients up to 2**2000)."""
    rng = np.random.default_rng(1)
    n = 50_000
    lo = -40 if dtype == "float32" else -320
    hi = 38 if dtype == "float32" else 308
    a = (rng.choice([-1, 1], n) * 10.0 ** rng.uniform(lo, hi, n)).astype(dtype)
    b = (rng.choice([-1, 1], n) * 10.0 ** rng.uniform(lo, hi, n)).astype(dtype)
    a[::5] = np.round(a[::5] * 4)
    f = tj.jit(lambda x, y: (tj.remainder(x, y), tj.floor_divide(x, y)))
    r, q = (np.asarray(t) for t in f(tj.asarray(a), tj.asarray(b)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _bits_equal(r, np.remainder(a, b)).all()
        assert _bits_equal(q, np.floor_divide(a, b)).all()


@pytest.mark.parametrize("src", ["float16", "float32", "float64"])
@pytest.mark.parametrize("dst", ["bool", "int8", "int16", "int32", "int64", "uint8"])
def test_float_to_int_cast_out_of_range_matches_numpy(src: str, dst: str) -> None:
    """NaN, infinities and out-of-range values convert as NumPy does on x86 (the type's minimum
    for int32/int64, through int32 then truncated for the narrow types), deterministically."""
    vals = np.array([np.nan, np.inf, -np.inf, 3e9, -3e9, 1e20, -1e20, 300.7, -300.7, 70000.5, -70000.5,
                     2.0 ** 31, -2.0 ** 31 - 1, 2.0 ** 63, -2.0 ** 63, 2.0 ** 31 + 5, 256.0, -129.0, -0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = np.tile(vals.astype(src), 40)          # several vector steps and a masked tail
        want = x.astype(dst)
    f = tj.jit(lambda t: tj.astype(t * 1, getattr(tj, dst)))     # (the cast inside a fused kernel)
    np.testing.assert_array_equal(np.asarray(f(tj.asarray(x))), want)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64"])
def test_integer_negative_power_defined_and_equal_to_eager(dtype: str) -> None:
    """x ** -n is the integer part of 1 / x**n: 1 for x == 1, +-1 for x == -1, else 0."""
    x = np.array([0, 1, -1, 2, -2, 3, -1, 1, 5, 7], dtype=dtype)
    e = np.array([-1, -2, -3, -1, -2, -5, -4, -7, 3, 2], dtype=dtype)
    want = np.array([0, 1, -1, 0, 0, 0, 1, 1, 125, 49], dtype=dtype)
    f = tj.jit(lambda a, b: a ** b)
    np.testing.assert_array_equal(np.asarray(f(tj.asarray(x), tj.asarray(e))), want)
    np.testing.assert_array_equal(np.asarray(tj.asarray(x) ** tj.asarray(e)), want)
    assert int(tj.asarray(np.int32(3)) ** -1) == 0


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_sign_of_negative_zero_and_maximum_ties_match_numpy(dtype: str) -> None:
    """sign(-0.0) is +0.0; maximum/minimum of +0 and -0 pick the operand NumPy picks (the
    second for float32/float64, the first for float16)."""
    neg, pos = np.full(20, -0.0, dtype), np.full(20, 0.0, dtype)
    f = tj.jit(lambda x, y: (tj.sign(x), tj.maximum(x, y), tj.maximum(y, x), tj.minimum(x, y),
                             tj.minimum(y, x)))
    got = [np.signbit(np.asarray(t)) for t in f(tj.asarray(neg), tj.asarray(pos))]
    want = [np.signbit(r) for r in (np.sign(neg), np.maximum(neg, pos), np.maximum(pos, neg),
                                    np.minimum(neg, pos), np.minimum(pos, neg))]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
