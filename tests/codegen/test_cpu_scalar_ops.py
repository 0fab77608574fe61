"""Every scalar op on the CPU, vectorized and scalar paths, against NumPy."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from cpu_helpers import C, L, elementwise, op

from codegen import kir

FLOATS = ("float16", "float32", "float64")
INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")

_erf = np.vectorize(math.erf, otypes=[np.float64])

FLOAT_UNARY = {
    "neg": np.negative, "abs": np.abs, "sign": np.sign, "square": np.square,
    "reciprocal": np.reciprocal, "exp": np.exp, "exp2": np.exp2, "expm1": np.expm1, "log": np.log,
    "log2": np.log2, "log10": np.log10, "log1p": np.log1p, "sqrt": np.sqrt,
    "rsqrt": lambda x: 1 / np.sqrt(x), "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh,
    "tanh": np.tanh, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
    "erf": lambda x: _erf(x.astype(np.float64)).astype(x.dtype),
    "sigmoid": lambda x: (1 / (1 + np.exp(-x.astype(np.float64)))).astype(x.dtype),
    "floor": np.floor, "ceil": np.ceil, "round": np.rint, "trunc": np.trunc,
}
FLOAT_PRED = {"isnan": np.isnan, "isinf": np.isinf, "isfinite": np.isfinite, "signbit": np.signbit,
              "not": np.logical_not}
FLOAT_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "floordiv": np.floor_divide, "mod": np.mod, "max": np.maximum, "min": np.minimum,
    "pow": np.power, "atan2": np.arctan2, "copysign": np.copysign, "hypot": np.hypot,
    "logaddexp": np.logaddexp, "nextafter": np.nextafter,
}
COMPARE = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
           "gt": np.greater, "ge": np.greater_equal}
INT_UNARY = {"neg": np.negative, "abs": np.abs, "sign": np.sign, "square": np.square,
             "invert": np.invert, "floor": lambda x: x, "round": lambda x: x}
INT_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "floordiv": np.floor_divide,
              "mod": np.mod, "max": np.maximum, "min": np.minimum, "and": np.bitwise_and,
              "or": np.bitwise_or, "xor": np.bitwise_xor}

SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -2.5, np.inf, -np.inf, np.nan, 1e-3, 3.0, 100.0]


def _float_inputs(dtype: str, n: int = 203, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.concatenate([SPECIAL, rng.uniform(-4, 4, n - len(SPECIAL))])
    return x.astype(dtype)


def _close(got, want, dtype):
    rtol = {"float16": 2e-3, "float32": 2e-6, "float64": 1e-13}[dtype]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol,
                               atol=rtol, equal_nan=True)


@pytest.mark.parametrize("dtype", FLOATS)
def test_float_unary(dtype):
    x = _float_inputs(dtype)
    names = list(FLOAT_UNARY) + list(FLOAT_PRED)
    exprs = [op(n, "bool" if n in FLOAT_PRED else dtype, L(0)) for n in names]
    outs = elementwise(exprs, [x], [e.dtype for e in exprs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, got in zip(names, outs):
            want = {**FLOAT_UNARY, **FLOAT_PRED}[name](x)
            if name in FLOAT_PRED:
                np.testing.assert_array_equal(got, want, err_msg=name)
            else:
                _close(got, np.asarray(want, dtype=dtype), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_float_binary(dtype):
    x = _float_inputs(dtype, seed=1)
    y = np.roll(_float_inputs(dtype, seed=2), 3)
    names = list(FLOAT_BINARY) + list(COMPARE)
    exprs = [op(n, "bool" if n in COMPARE else dtype, L(0), L(1)) for n in names]
    outs = elementwise(exprs, [x, y], [e.dtype for e in exprs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, got in zip(names, outs):
            want = {**FLOAT_BINARY, **COMPARE}[name](x, y)
            if name in COMPARE:
                np.testing.assert_array_equal(got, want, err_msg=name)
            elif name in ("floordiv", "mod"):
                ok = np.isfinite(x) & np.isfinite(y) & (y != 0)
                _close(got[ok], want[ok], dtype)
            else:
                try:
                    _close(got, want, dtype)
                except AssertionError as e:
                    raise AssertionError(f"{name}: {e}") from None


def test_float_special_semantics():
    x = np.array([np.nan, 1.0, -0.0, 5.0, -7.5, 7.5], np.float32)
    y = np.array([1.0, np.nan, 0.0, -3.0, 2.0, -2.0], np.float32)
    mx, mn, fd, md = elementwise([op(n, "float32", L(0), L(1)) for n in ("max", "min", "floordiv", "mod")],
                                 [x, y], ["float32"] * 4)
    assert np.isnan(mx[:2]).all() and np.isnan(mn[:2]).all()          # NaN propagates both ways
    np.testing.assert_array_equal(fd[3:], np.floor_divide(x, y)[3:])
    np.testing.assert_array_equal(md[3:], np.mod(x, y)[3:])               # sign follows the divisor


@pytest.mark.parametrize("dtype", INTS)
def test_int_ops(dtype):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    edge = [0, 1, -1, 2, -2, 7, -7, info.min, info.max] if info.min < 0 else [0, 1, 2, 7, 255, 128]
    x = np.concatenate([edge, rng.integers(info.min, info.max, 150, endpoint=True, dtype=dtype)])
    x = x.astype(dtype)
    y = np.concatenate([[0, -1, 0, 3, -3, 2, -2, -1, 1][: len(edge)],
                        rng.integers(max(info.min, -50), 50, 150)]).astype(dtype)
    names_u, names_b = list(INT_UNARY), list(INT_BINARY) + list(COMPARE)
    exprs = [op(n, dtype, L(0)) for n in names_u]
    exprs += [op(n, "bool" if n in COMPARE else dtype, L(0), L(1)) for n in names_b]
    outs = elementwise(exprs, [x, y], [e.dtype for e in exprs])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for name, got in zip(names_u + names_b, outs):
            fn = {**INT_UNARY, **INT_BINARY, **COMPARE}[name]
            want = fn(x) if name in INT_UNARY else fn(x, y)
            if name in ("floordiv", "mod"):
                want = np.where(y == 0, 0, want)       # NumPy's own zero-division result varies
            np.testing.assert_array_equal(got, np.asarray(want).astype(got.dtype), err_msg=name)


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8", "uint32", "uint64"])
def test_int_shift_and_pow(dtype):
    bits = np.iinfo(dtype).bits
    rng = np.random.default_rng(4)
    x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, 100, endpoint=True, dtype=dtype)
    lo = -2 if np.iinfo(dtype).min < 0 else 0
    s = rng.integers(lo, bits + 3, 100).astype(dtype)
    e = rng.integers(0, 12, 100).astype(dtype)
    shl, shr, pw = elementwise([op("shl", dtype, L(0), L(1)), op("shr", dtype, L(0), L(1)),
                                op("pow", dtype, L(0), L(2))], [x, s, e], [dtype] * 3)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(shl, np.left_shift(x, s))
        np.testing.assert_array_equal(shr, np.right_shift(x, s))
        np.testing.assert_array_equal(pw, np.power(x, e))


def test_bool_ops():
    rng = np.random.default_rng(5)
    a, b = rng.random(77) < 0.5, rng.random(77) < 0.5
    names = ["and", "or", "xor", "eq", "ne", "lt"]
    outs = elementwise([op(n, "bool", L(0), L(1)) for n in names] + [op("not", "bool", L(0))],
                       [a, b], ["bool"] * 7)
    refs = [a & b, a | b, a ^ b, a == b, a != b, a < b, ~a]
    for name, got, want in zip(names + ["not"], outs, refs):
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_where():
    rng = np.random.default_rng(6)
    c, x = rng.random(100) < 0.3, rng.standard_normal(100).astype(np.float32)
    (got,) = elementwise([op("where", "float32", L(0), L(1), C(-1.5, "float32"))], [c, x], ["float32"])
    np.testing.assert_array_equal(got, np.where(c, x, np.float32(-1.5)))


@pytest.mark.parametrize("src", kir.DTYPES)
def test_casts(src):
    rng = np.random.default_rng(7)
    vals = rng.uniform(0 if src in ("uint8", "bool") else -100, 100, 150)
    vals[:6] = [0, 1, 2.5, -2.5 if src not in ("uint8", "bool") else 3, 99.9, 0.5]
    x = vals.astype(src)
    dsts = [d for d in kir.DTYPES if not (d == "uint8" and src in FLOATS + INTS and src != "uint8")]
    outs = elementwise([op("cast", d, L(0)) for d in dsts], [x], list(dsts))
    # bfloat16 converts through float32, as kernels compute it (ml_dtypes would clamp a negative
    # value cast to an unsigned type at 0, where the C and NumPy conversion wraps)
    ref = x.astype(np.float32) if src == "bfloat16" else x
    for d, got in zip(dsts, outs):
        np.testing.assert_array_equal(got, ref.astype(d), err_msg=f"{src}->{d}")


def test_cast_float_to_uint8_nonnegative():
    x = np.array([0.0, 1.9, 200.7, 255.0, 17.2], np.float32)
    (got,) = elementwise([op("cast", "uint8", L(0))], [x], ["uint8"])
    np.testing.assert_array_equal(got, x.astype(np.uint8))


def test_nan_to_bool_is_true():
    x = np.array([np.nan, 0.0, -0.0, 3.0], np.float64)
    (got,) = elementwise([op("cast", "bool", L(0))], [x], ["bool"])
    np.testing.assert_array_equal(got, x.astype(bool))


def test_float_max_min_match_numpy_bitwise():
    """Every pair of special values, signed zeros included (NumPy: ties give the second)."""
    v = np.array([np.nan, -np.inf, -2.5, -0.0, 0.0, 1e-45, 3.0, np.inf], np.float32)
    x, y = (a.ravel() for a in np.meshgrid(v, v))
    mx, mn = elementwise([op(n, "float32", L(0), L(1)) for n in ("max", "min")], [x, y], ["float32"] * 2)
    for got, ref in ((mx, np.maximum(x, y)), (mn, np.minimum(x, y))):
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(ref))


def test_float64_to_float16_rounds_once():
    """Ties and near-ties of half precision, where rounding through float32 first would round
    twice: the result must equal NumPy's direct conversion bit for bit."""
    rng = np.random.default_rng(11)
    halves = rng.integers(0, 0x7C00, 4000, dtype=np.uint16).view(np.float16).astype(np.float64)
    nxt = np.nextafter(halves.astype(np.float16), np.float16(np.inf)).astype(np.float64)
    mid = (halves + nxt) / 2                              # exact ties
    tiny = np.abs(mid) * 2.0 ** -40                       # far below float32's resolution
    x = np.concatenate([mid, mid + tiny, mid - tiny, -mid - tiny, rng.uniform(-7e4, 7e4, 1000),
                        [np.nan, np.inf, -np.inf, 0.0, -0.0, 65520.0, 65519.99, 1e-300, -6e-8, 3e-8]])
    (got,) = elementwise([op("cast", "float16", L(0))], [x], ["float16"])
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


def test_generated_code_never_calls_outside_itself():
    """Conversions and ops that LLVM would hand to the compiler runtime are lowered inline;
    object code that still needs an outside symbol is refused before it can jump to address 0."""
    from codegen import cpu
    for k in (kir.Kernel("t", 1, 0, (kir.Operand("float64", ("c",)),), (kir.Operand("float16", ("c",)),),
                         (kir.Store(0, op("cast", "float16", L(0))),)),
              kir.Kernel("t", 1, 0, (kir.Operand("float16", ("c",)),) * 2, (kir.Operand("float16", ("c",)),),
                         (kir.Store(0, op("mod", "float16", L(0), L(1))),))):
        assert cpu.undefined_symbols(cpu.compile_kernel(k).object_code) <= {"_GLOBAL_OFFSET_TABLE_"}
    ext = "declare double @ext(double)\ndefine double @f(double %x) {\n  %y = call double @ext(double %x)\n" \
          "  ret double %y\n}\n"
    with pytest.raises(cpu.LinkError, match="calls ext"):
        cpu.assemble(ext)
