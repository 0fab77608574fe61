"""complex64/complex128 and uint16/uint32/uint64: promotion, elementwise functions, reductions, casts,
DLPack, under jit (compiled equals eager) and complex gradients vs PyTorch."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj

torch = pytest.importorskip("torch")

UNSIGNED = [tj.uint16, tj.uint32, tj.uint64]
COMPLEX = [tj.complex64, tj.complex128]


def test_promotion_tables():
    r = tj.result_type
    assert r(tj.uint16, tj.int8) == tj.int32 and r(tj.uint16, tj.int32) == tj.int32
    assert r(tj.uint32, tj.int16) == tj.int64 and r(tj.uint8, tj.uint64) == tj.uint64
    assert r(tj.uint32, tj.uint16) == tj.uint32 and r(tj.uint64, tj.float32) == tj.float32
    with pytest.raises(TypeError, match="uint64 and int64"):
        r(tj.uint64, tj.int64)
    assert r(tj.complex64, tj.complex128) == tj.complex128
    assert r(tj.complex64, tj.float64) == tj.complex128 and r(tj.complex64, tj.float32) == tj.complex64
    assert r(tj.complex64, tj.int64) == tj.complex64 and r(tj.bool, tj.complex128) == tj.complex128
    # Python scalars are weak: a float keeps a complex tensor's dtype, a complex takes a float
    # tensor's precision
    assert r(tj.complex64, 1.5) == tj.complex64 and r(tj.float64, 1j) == tj.complex128
    assert r(tj.float32, 1j) == tj.complex64 and r(tj.int32, 1j) == tj.complex64
    assert tj.asarray(1j).dtype == tj.complex64 and tj.asarray([1, 2j]).dtype == tj.complex64
    assert tj.can_cast(tj.float32, tj.complex64) and not tj.can_cast(tj.complex64, tj.float64)
    assert tj.isdtype(tj.complex64, "complex floating") and tj.isdtype(tj.uint32, "unsigned integer")
    assert tj.finfo(tj.complex128).dtype == tj.float64
    assert tj.finfo(tj.complex64).eps == np.finfo(np.float32).eps
    assert tj.iinfo(tj.uint64).max == 2 ** 64 - 1


def _unsigned_ops(x, y):
    return (x + y, x * y, x - y, x // y, x % y, tj.max(x), tj.min(x), tj.sum(x), tj.prod(y), x > y,
            x.astype(tj.float64), x >> 1, x << 3, x & y, -x, tj.abs(x), tj.sum(x, axis=0, keepdims=True),
            tj.argmax(x), x ** 2)


@pytest.mark.parametrize("dtype", UNSIGNED, ids=str)
def test_unsigned_elementwise_and_reductions(dtype, jit_backend):
    top = np.iinfo(dtype).max
    x = np.array([[0, 1, 7, top], [top - 1, 40000 % top, 3, 2]], dtype=dtype)
    y = np.array([[3, 2, 0, 5], [1, 7, top, 1]], dtype=dtype)
    with np.errstate(all="ignore"):
        safe = np.where(y == 0, 1, y)
        expected = (x + y, x * y, x - y, np.where(y == 0, 0, x // safe), np.where(y == 0, 0, x % safe),
                    x.max(), x.min(), x.sum(dtype=np.uint64), y.prod(dtype=np.uint64), x > y,
                    x.astype(np.float64), x >> 1, x << 3, x & y, -x, x, x.sum(axis=0, keepdims=True,
                                                                                   dtype=np.uint64),
                    np.argmax(x), x ** 2)
    eager = _unsigned_ops(tj.asarray(x), tj.asarray(y))
    compiled = jitted(_unsigned_ops, jit_backend)(tj.asarray(x), tj.asarray(y))
    for e, c, ref in zip(eager, compiled, expected):
        assert_close(e, ref, dtype=ref.dtype)
        assert_close(c, ref, dtype=ref.dtype)


@pytest.mark.parametrize("dtype", UNSIGNED, ids=str)
def test_unsigned_casts_and_dlpack(dtype):
    v = np.array([0.0, 1.5, 1000.9, 65535.0, 3.0e9 if dtype != tj.uint16 else 7.0])
    f = tj.jit(lambda t: (t.astype(dtype), t.astype(tj.float32).astype(dtype)))
    exact, via32 = f(tj.asarray(v))
    assert_close(exact, v.astype(dtype), dtype=dtype)
    assert_close(via32, v.astype(np.float32).astype(dtype), dtype=dtype)
    u = tj.asarray(np.arange(5, dtype=dtype))
    assert torch.from_dlpack(u).dtype == getattr(torch, np.dtype(dtype).name)
    assert_close(tj.from_dlpack(np.arange(3, dtype=dtype)), np.arange(3, dtype=dtype), dtype=dtype)


# complex functions with the standard's special cases, checked against NumPy (which follows C99)
SPECIAL = np.array([0j, -0.0 + 0j, 1 + 1j, -2.5 + 0.5j, complex(np.inf, 0), complex(-np.inf, 1),
                    complex(1, np.inf), complex(np.nan, 1), complex(0, np.nan), complex(np.inf, np.nan),
                    complex(-np.inf, np.inf), 3 - 4j, 1e-300 + 1e300j])
COMPLEX_FUNCTIONS = ["exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh", "asin", "acos",
                     "atan", "asinh", "acosh", "atanh", "log1p", "log2", "log10", "abs", "sign",
                     "conj", "real", "imag", "square", "reciprocal", "isnan", "isinf", "isfinite", "negative",
                     "round"]
_NUMPY_NAMES = {"asin": "arcsin", "acos": "arccos", "atan": "arctan", "asinh": "arcsinh", "acosh": "arccosh",
                "atanh": "arctanh"}


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
def test_complex_functions_match_numpy_special_cases(dtype):
    x = SPECIAL.astype(dtype)
    t = tj.asarray(x)
    with np.errstate(all="ignore"):
        for name in COMPLEX_FUNCTIONS:
            ref = getattr(np, _NUMPY_NAMES.get(name, name))(x) if name != "sign" else \
                np.where(x == 0, 0, x / np.where(x == 0, 1, np.abs(x))).astype(dtype)
            out = getattr(tj, name)(t)
            assert out.dtype == ref.dtype, name
            np.testing.assert_array_equal(np.asarray(out), ref, err_msg=name)


INF, NAN = float("inf"), float("nan")
# the standard's special cases of complex expm1 (NumPy's complex expm1 misses several)
EXPM1_SPECIAL = [(0j, 0j), (complex(-0.0, 0.0), 0j), (complex(INF, 0.0), complex(INF, 0.0)),
                 (complex(-INF, INF), -1 + 0j), (complex(-INF, NAN), -1 + 0j),
                 (complex(NAN, 0.0), complex(NAN, 0.0)),
                 (complex(NAN, 1.0), complex(NAN, NAN)), (complex(NAN, NAN), complex(NAN, NAN)),
                 (complex(1.0, INF), complex(NAN, NAN)), (complex(-INF, 2.0), complex(-1.0, 0.0))]


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
def test_complex_expm1(dtype, rng):
    x = np.array([a for a, _ in EXPM1_SPECIAL], dtype)
    out = np.asarray(tj.expm1(tj.asarray(x)))
    for got, (_, want) in zip(out, EXPM1_SPECIAL):
        assert (np.isnan(got.real) == np.isnan(want.real) and np.isnan(got.imag) == np.isnan(want.imag)
                and (np.isnan(want.real) or got.real == want.real)
                and (np.isnan(want.imag) or got.imag == want.imag)), (got, want)
    inf_inf = np.asarray(tj.expm1(tj.asarray(np.array([complex(INF, INF)], dtype))))[0]
    assert np.isinf(inf_inf.real) and np.isnan(inf_inf.imag)       # (the real part's sign is unspecified)
    mpmath = pytest.importorskip("mpmath")
    z = (rng.standard_normal(16) * 10.0 ** rng.integers(-12, 1, 16)
         + 1j * rng.standard_normal(16) * 10.0 ** rng.integers(-12, 1, 16)).astype(dtype)
    ref = np.array([complex(mpmath.expm1(mpmath.mpc(complex(v)))) for v in z])
    rtol = 1e-6 if dtype == tj.complex64 else 1e-13
    np.testing.assert_allclose(np.asarray(tj.expm1(tj.asarray(z))), ref, rtol=rtol, atol=0)


def test_complex_binary_ops_and_reductions(rng):
    a = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    b = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    A, B = tj.asarray(a), tj.asarray(b)
    for name, ref in [("add", a + b), ("subtract", a - b), ("multiply", a * b), ("divide", a / b),
                      ("pow", a ** b), ("equal", a == b), ("not_equal", a != b)]:
        assert_close(getattr(tj, name)(A, B), ref, rtol=1e-12, atol=1e-14)
    assert_close(tj.sum(A, axis=1), a.sum(axis=1), rtol=1e-12)
    assert_close(tj.prod(A, axis=0), a.prod(axis=0), rtol=1e-12)
    assert_close(tj.mean(A), a.mean(), rtol=1e-12)
    assert_close(A @ tj.matrix_transpose(B), a @ b.T, rtol=1e-12)
    assert_close(A * 2.5 + 1j, a * 2.5 + 1j, rtol=1e-12)
    assert_close(tj.astype(A, tj.complex64), a.astype(np.complex64), dtype=tj.complex64)
    assert_close(tj.astype(tj.real(A), tj.complex128), a.real.astype(np.complex128))
    for bad in (tj.maximum, tj.less, tj.floor_divide, tj.atan2):
        with pytest.raises(TypeError, match="complex64|complex128"):
            bad(A, B)
    with pytest.raises(TypeError):
        tj.max(A)


def test_complex_dlpack_roundtrip():
    x = np.array([1 + 2j, -3j], np.complex64)
    t = tj.asarray(x)
    np.testing.assert_array_equal(np.from_dlpack(t), x)
    assert torch.from_dlpack(t).dtype == torch.complex64
    assert tj.from_dlpack(torch.tensor([1 + 1j], dtype=torch.complex128)).dtype == tj.complex128
    assert complex(tj.asarray(1 + 2j)) == 1 + 2j


def _mixed(z, x):
    w = tj.exp(z * x) + tj.sqrt(z) * 2.0
    return (tj.real(w) + tj.abs(z) * x, tj.sum(w * 1j, axis=0), tj.conj(z)[::-1], tj.imag(tj.log(z)) - x,
            tj.where(x > 0, z, tj.conj(z)), tj.reshape(z, (4, 3)) @ tj.astype(tj.reshape(x, (3, 4)), z.dtype))


def test_complex_under_jit_equals_eager(rng, jit_backend):
    # complex arithmetic fuses into kernels as pairs of float lanes (the rest are host steps):
    # compiled equals eager up to the kernels' transcendentals (a few ulp)
    z = tj.asarray((rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))).astype(np.complex64))
    x = tj.asarray(rng.standard_normal((3, 4)).astype(np.float32))
    eager = _mixed(z, x)
    compiled = jitted(_mixed, jit_backend)(z, x)
    for e, c in zip(eager, compiled):
        assert c.dtype == e.dtype
        np.testing.assert_allclose(np.asarray(c), np.asarray(e), rtol=2e-6, atol=2e-6)


def _complex_loss_pairs():
    return [
        ("exp*abs", lambda z: tj.sum(tj.abs(tj.exp(z * z))), lambda z: torch.abs(torch.exp(z * z)).sum()),
        ("log/sqrt", lambda z: tj.sum(tj.real(tj.log(z) * tj.sqrt(z))),
         lambda z: (torch.log(z) * torch.sqrt(z)).real.sum()),
        ("sin/cos/tanh", lambda z: tj.sum(tj.imag(tj.sin(z) / tj.cos(z) + tj.tanh(z))),
         lambda z: (torch.sin(z) / torch.cos(z) + torch.tanh(z)).imag.sum()),
        ("conj*z", lambda z: tj.sum(tj.real(tj.conj(z) * z * 1j + tj.square(z) + 1.0 / z)),
         lambda z: (torch.conj(z) * z * 1j + z * z + 1.0 / z).real.sum()),
        ("matmul", lambda z: tj.sum(tj.abs(z @ tj.matrix_transpose(z))),
         lambda z: torch.abs(z @ z.mT).sum()),
        ("prod/views/cast", lambda z: tj.sum(tj.abs(tj.prod(z[1:, ::-1], axis=0)))
         + tj.sum(tj.real(tj.astype(tj.imag(z), tj.complex128) * z)),
         lambda z: torch.abs(torch.prod(z[1:].flip(-1), dim=0)).sum()
         + (z.imag.to(torch.complex128) * z).real.sum()),
    ]


@pytest.mark.parametrize("name,ours,theirs", _complex_loss_pairs(), ids=[p[0] for p in _complex_loss_pairs()])
def test_complex_gradients_match_torch(name, ours, theirs, rng):
    z = rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3))
    g = tj.grad(ours)(tj.asarray(z)).numpy()
    zt = torch.tensor(z, requires_grad=True)
    theirs(zt).backward()
    assert_close(g, zt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_complex_gradient_under_jit_equals_eager(rng, jit_backend):
    z = tj.asarray(rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3)))
    loss = _complex_loss_pairs()[0][1]
    assert_close(jitted(tj.grad(loss), jit_backend)(z), tj.grad(loss)(z).numpy(), rtol=1e-13, atol=1e-14)


def test_complex_gradient_without_a_rule_is_refused():
    with pytest.raises(NotImplementedError, match="asin for complex"):
        tj.grad(lambda z: tj.sum(tj.abs(tj.asin(z))))(tj.asarray(np.array([0.5 + 0.5j])))


def test_complex_tanh_at_infinity_signs_zero_as_the_imaginary_part():
    # the standard: tanh(+inf + bj) = 1 + 0j for finite b > 0 (C99 and NumPy sign the zero as sin(2b))
    z = np.array([complex(INF, 7.3e153), complex(INF, -2.0), complex(-INF, 3.0)])
    out = np.asarray(tj.tanh(tj.asarray(z)))
    np.testing.assert_array_equal(out.real, [1.0, 1.0, -1.0])
    np.testing.assert_array_equal(np.signbit(out.imag), [False, True, False])
    assert np.all(out.imag == 0)
