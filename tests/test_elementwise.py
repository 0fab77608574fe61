"""Every elementwise function, eager and under jit, against NumPy (float64 reference)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj

# domains: where inputs are drawn so the reference is finite and well-conditioned
DOMAINS = {
    "real": lambda r, s: r.uniform(-3, 3, s),
    "pos": lambda r, s: r.uniform(0.1, 4, s),
    "unit": lambda r, s: r.uniform(-0.95, 0.95, s),
    "ge1": lambda r, s: r.uniform(1.05, 4, s),
    "nonzero": lambda r, s: r.choice([-1, 1], s) * r.uniform(0.5, 3, s),
}

UNARY = [
    ("exp", np.exp, "real"), ("exp2", np.exp2, "real"), ("expm1", np.expm1, "real"),
    ("log", np.log, "pos"), ("log2", np.log2, "pos"), ("log10", np.log10, "pos"),
    ("log1p", np.log1p, "pos"), ("sqrt", np.sqrt, "pos"), ("rsqrt", lambda x: 1 / np.sqrt(x), "pos"),
    ("sin", np.sin, "real"), ("cos", np.cos, "real"), ("tan", np.tan, "unit"),
    ("asin", np.arcsin, "unit"), ("acos", np.arccos, "unit"), ("atan", np.arctan, "real"),
    ("sinh", np.sinh, "real"), ("cosh", np.cosh, "real"), ("tanh", np.tanh, "real"),
    ("asinh", np.arcsinh, "real"), ("acosh", np.arccosh, "ge1"), ("atanh", np.arctanh, "unit"),
    ("erf", np.vectorize(math.erf, otypes=[np.float64]), "real"),
    ("reciprocal", np.reciprocal, "nonzero"), ("negative", np.negative, "real"),
    ("abs", np.abs, "real"), ("sign", np.sign, "real"), ("square", np.square, "real"),
    ("floor", np.floor, "real"), ("ceil", np.ceil, "real"), ("trunc", np.trunc, "real"),
    ("round", np.round, "real"), ("positive", np.positive, "real"),
]

BINARY = [
    ("add", np.add, "real", "real"), ("subtract", np.subtract, "real", "real"),
    ("multiply", np.multiply, "real", "real"), ("divide", np.divide, "real", "nonzero"),
    ("floor_divide", np.floor_divide, "real", "nonzero"), ("remainder", np.remainder, "real", "nonzero"),
    ("pow", np.power, "pos", "real"), ("maximum", np.maximum, "real", "real"),
    ("minimum", np.minimum, "real", "real"), ("atan2", np.arctan2, "real", "real"),
    ("copysign", np.copysign, "real", "real"), ("hypot", np.hypot, "real", "real"),
    ("logaddexp", np.logaddexp, "real", "real"),
    ("equal", np.equal, "real", "real"), ("not_equal", np.not_equal, "real", "real"),
    ("less", np.less, "real", "real"), ("less_equal", np.less_equal, "real", "real"),
    ("greater", np.greater, "real", "real"), ("greater_equal", np.greater_equal, "real", "real"),
]

SHAPES = [(), (0,), (7,), (3, 5), (2, 3, 4)]
BROADCAST_PAIRS = [((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (3,)), ((0, 3), (3,)), ((5, 1), (1, 6))]


def _views(a: np.ndarray) -> list[np.ndarray]:
    """The array itself and non-contiguous views with the same values pattern."""
    out = [a]
    if a.ndim >= 2:
        out.append(np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1))   # transposed layout
    if a.ndim >= 1 and a.size:
        out.append(np.repeat(a, 2, axis=-1)[..., ::2])                      # stepped slice
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,ref,domain", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, ref, domain, dtype, rng, jit_backend):
    fn = getattr(tj, name)
    f = jitted(fn, jit_backend)
    for shape in SHAPES:
        for a in _views(DOMAINS[domain](rng, shape).astype(dtype)):
            expected = ref(a.astype(np.float64))
            assert_close(fn(tj.asarray(a)), expected, dtype=dtype)
            assert_close(f(tj.asarray(a)), expected, dtype=dtype)


@pytest.mark.parametrize("name,ref,d1,d2", BINARY, ids=[b[0] for b in BINARY])
def test_binary_broadcasting(name, ref, d1, d2, rng, jit_backend):
    fn = getattr(tj, name)
    f = jitted(fn, jit_backend)
    for s1, s2 in BROADCAST_PAIRS + [(s, s) for s in SHAPES]:
        for dtype in ("float32", "float64"):
            a = DOMAINS[d1](rng, s1).astype(dtype)
            b = DOMAINS[d2](rng, s2).astype(dtype)
            expected = ref(a.astype(np.float64), b.astype(np.float64))
            if name in ("floor_divide", "remainder"):   # discontinuous: reference in the same dtype
                expected = ref(a, b)
            out_dtype = "bool" if expected.dtype == bool else dtype
            for x, y in zip(_views(a), _views(b)):   # non-contiguous layouts too
                assert_close(fn(tj.asarray(x), tj.asarray(y)), expected, dtype=out_dtype)
                assert_close(f(tj.asarray(x), tj.asarray(y)), expected, dtype=out_dtype)


INT_BINARY = [
    ("add", np.add), ("subtract", np.subtract), ("multiply", np.multiply),
    ("floor_divide", np.floor_divide), ("remainder", np.remainder), ("maximum", np.maximum),
    ("minimum", np.minimum), ("bitwise_and", np.bitwise_and), ("bitwise_or", np.bitwise_or),
    ("bitwise_xor", np.bitwise_xor), ("bitwise_left_shift", np.left_shift),
    ("bitwise_right_shift", np.right_shift), ("equal", np.equal), ("less", np.less),
]


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8"])
@pytest.mark.parametrize("name,ref", INT_BINARY, ids=[b[0] for b in INT_BINARY])
def test_integer_binary(name, ref, dtype, rng, jit_backend):
    a = rng.integers(0 if dtype == "uint8" else -50, 50, (4, 5)).astype(dtype)
    b = rng.integers(1, 6, (5,)).astype(dtype)           # nonzero divisors, in-range shifts
    expected = ref(a, b)
    assert_close(getattr(tj, name)(tj.asarray(a), tj.asarray(b)), expected, dtype=expected.dtype)
    assert_close(jitted(getattr(tj, name), jit_backend)(tj.asarray(a), tj.asarray(b)), expected)


def test_integer_division_by_zero_is_zero():
    a, b = tj.asarray([7, -7, 3]), tj.asarray([0, 0, 2])
    assert tj.floor_divide(a, b).tolist() == [0, 0, 1]
    assert tj.remainder(a, b).tolist() == [0, 0, 1]


@pytest.mark.parametrize("name,ref", [("logical_and", np.logical_and), ("logical_or", np.logical_or),
                                      ("logical_xor", np.logical_xor)])
def test_logical(name, ref, rng, jit_backend):
    a, b = rng.random((3, 4)) > 0.5, rng.random((4,)) > 0.5
    assert_close(getattr(tj, name)(tj.asarray(a), tj.asarray(b)), ref(a, b), dtype="bool")
    assert_close(jitted(getattr(tj, name), jit_backend)(tj.asarray(a), tj.asarray(b)), ref(a, b))
    assert_close(tj.logical_not(tj.asarray(a)), ~a)
    assert_close(tj.bitwise_invert(tj.asarray(a)), ~a)


@pytest.mark.parametrize("name", ["isnan", "isinf", "isfinite", "signbit"])
def test_predicates(name, jit_backend):
    a = np.array([0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, np.nan], np.float32)
    ref = getattr(np, name)
    assert_close(getattr(tj, name)(tj.asarray(a)), ref(a), dtype="bool")
    assert_close(jitted(getattr(tj, name), jit_backend)(tj.asarray(a)), ref(a))
    i = np.array([-2, 0, 3])
    assert_close(getattr(tj, name)(tj.asarray(i)), ref(i), dtype="bool")


def test_integer_inputs_to_float_functions_compute_in_default_float():
    out = tj.exp(tj.asarray([0, 1, 2]))
    assert out.dtype == tj.float32
    assert_close(out, np.exp([0.0, 1.0, 2.0]))
    assert tj.floor(tj.asarray([1, 2])).dtype == tj.int64   # identity on integers


def test_where_and_clip(rng, jit_backend):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4,))
    c = rng.random((3, 1)) > 0.5
    assert_close(tj.where(tj.asarray(c), tj.asarray(a), tj.asarray(b)), np.where(c, a, b))
    f = jitted(lambda c, a: tj.where(c, a, 0.0), jit_backend)
    assert_close(f(tj.asarray(c), tj.asarray(a)), np.where(c, a, 0.0))
    assert_close(tj.clip(tj.asarray(a), -0.5, 0.5), np.clip(a, -0.5, 0.5))
    assert_close(tj.clip(tj.asarray(a), min=0.0), np.clip(a, 0.0, None))
    g = jitted(lambda x, lo: tj.clip(x, lo, 1.0), jit_backend)
    assert_close(g(tj.asarray(a), tj.asarray(b)), np.clip(a, b, 1.0))
    assert tj.clip(tj.asarray(a, dtype=tj.float32), 0, 1).dtype == tj.float32


def test_python_scalars_and_operators(rng, jit_backend):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    x = tj.asarray(a)
    exprs = [lambda x: x * 2 + 1, lambda x: 1 - x / 3.0, lambda x: 2 ** x, lambda x: -x % 1.5,
             lambda x: (x > 0) & (x < 1), lambda x: abs(x) // 0.5, lambda x: x ** 2]
    for e in exprs:
        expected = e(a.astype(np.float64))
        assert_close(e(x), expected)
        assert_close(jitted(e, jit_backend)(x), expected)
