"""Accuracy, special values and NVPTX assembly of codegen.mathlib.

Each function runs through a JIT-compiled <8 x T> loop (scalar tail included) and is compared
with NumPy in float64 (float32 results) or long double (float64 results); erf's float64
reference is mpmath on a subset.
"""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from codegen import _mathtest as mt
from codegen import mathlib

# documented max error in ulp: (float32, float64)
ULP_BOUNDS: dict[str, tuple[float, float]] = {
    "exp": (1, 1), "exp2": (1, 1), "expm1": (2, 2),
    "log": (1, 1), "log2": (3, 3), "log10": (3, 3), "log1p": (2, 2),
    "sin": (2, 2), "cos": (2, 2), "tan": (3, 3),
    "asin": (3, 3), "acos": (2, 2), "atan": (2, 2), "atan2": (3, 3),
    "sinh": (3, 3), "cosh": (2, 2), "tanh": (3, 3),
    "asinh": (3, 3), "acosh": (3, 3), "atanh": (3, 3),
    "erf": (2, 2), "sigmoid": (3, 3), "pow": (1, 2), "logaddexp": (3, 3), "hypot": (2, 2),
}
N32, N64 = 1_000_000, 200_000
LD = np.longdouble
HAVE_LD = np.finfo(LD).nmant >= 63  # x87 extended: 11 bits beyond float64


def _erf_ref(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.float64:  # float32 arguments: a float64 reference is plenty
        try:
            from scipy.special import erf
            return erf(x)
        except ImportError:
            return np.array([math.erf(v) for v in x])
    import mpmath
    mpmath.mp.prec = 80
    return np.copysign(np.array([LD(str(mpmath.erf(mpmath.mpf(float(v))))) for v in x], dtype=LD), x)


def _sigmoid_ref(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


REF = {
    "exp": np.exp, "exp2": np.exp2, "expm1": np.expm1, "log": np.log, "log2": np.log2,
    "log10": np.log10, "log1p": np.log1p, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "atan2": np.arctan2,
    "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "asinh": np.arcsinh,
    "acosh": np.arccosh, "atanh": np.arctanh, "erf": _erf_ref, "sigmoid": _sigmoid_ref,
    "pow": np.power, "logaddexp": np.logaddexp, "hypot": np.hypot,
}


def _lu(rng, n, lo, hi, signed=True):
    """Log-uniform magnitudes in [lo, hi], random signs."""
    v = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    return v * rng.choice([-1.0, 1.0], n) if signed else v


def _u(rng, n, lo, hi):
    return rng.uniform(lo, hi, n)


def sample(name: str, dt: np.dtype, n: int, rng) -> list[np.ndarray]:
    """Random arguments over each function's meaningful domain (half uniform, half log-uniform)."""
    f32 = dt == np.float32
    big = 3e38 if f32 else 1e307
    tiny = 1e-38 if f32 else 1e-300
    h = n // 2
    ov = 89.0 if f32 else 710.0
    un = -104.0 if f32 else -746.0
    D = {
        "exp": lambda: [np.r_[_u(rng, h, un, ov), _lu(rng, h, tiny, 1)]],
        "exp2": lambda: [np.r_[_u(rng, h, un * 1.45, ov * 1.45), _lu(rng, h, tiny, 1)]],
        "expm1": lambda: [np.r_[_u(rng, h, -40, ov), _lu(rng, h, tiny, 1)]],
        "log": lambda: [np.r_[_lu(rng, h, 1e-45 if f32 else 5e-324, big, False), _u(rng, h, 0.6, 1.5)]],
        "log1p": lambda: [np.r_[_lu(rng, h, tiny, big, False), -_lu(rng, h, tiny, 1, False)]],
        "sin": lambda: [np.r_[_u(rng, h, -1e5, 1e5), _lu(rng, h, tiny, 1e5)]],
        "asin": lambda: [np.r_[_u(rng, h, -1, 1), _lu(rng, h, tiny, 1)]],
        "atan": lambda: [_lu(rng, n, tiny, big)],
        "atan2": lambda: [_lu(rng, n, tiny, big), _lu(rng, n, tiny, big)],
        "sinh": lambda: [np.r_[_u(rng, h, -ov - 1, ov + 1), _lu(rng, h, tiny, 1)]],
        "tanh": lambda: [np.r_[_u(rng, h, -25, 25), _lu(rng, h, tiny, 1)]],
        "asinh": lambda: [_lu(rng, n, tiny, big)],
        "acosh": lambda: [1 + _lu(rng, n, 1e-12, big, False)],
        "atanh": lambda: [np.r_[_u(rng, h, -1, 1), _lu(rng, h, tiny, 1)]],
        "erf": lambda: [np.r_[_u(rng, h, -7, 7), _lu(rng, h, tiny, 1)]],
        "sigmoid": lambda: [np.r_[_u(rng, h, -120 if f32 else -750, 40), _lu(rng, h, tiny, 1)]],
        "pow": lambda: [np.r_[_lu(rng, h, 1e-6, 1e6, False), _lu(rng, h, 1e-3, 1e3)],
                        np.r_[_u(rng, h, -40, 40), np.round(_u(rng, h, -20, 20))]],
        "logaddexp": lambda: [_u(rng, n, -200, 200), np.r_[_u(rng, h, -200, 200), _lu(rng, h, tiny, 1e3)]],
        "hypot": lambda: [_lu(rng, n, tiny, big), _lu(rng, n, tiny, big)],
    }
    alias = {"log2": "log", "log10": "log", "cos": "sin", "tan": "sin", "acos": "asin", "cosh": "sinh"}
    return [a.astype(dt) for a in D[alias.get(name, name)]()]


def special_values(dt: np.dtype) -> np.ndarray:
    fi = np.finfo(dt)
    v = [0.0, -0.0, np.inf, -np.inf, np.nan, fi.smallest_subnormal, -fi.smallest_subnormal,
         fi.smallest_normal, -fi.smallest_normal, fi.smallest_normal * 0.75, fi.max, -fi.max, 1.0, -1.0,
         0.5, -0.5, 2.0, 1e-3, 1e5, -1e5, np.pi, np.pi / 2, -np.pi / 2, 0.9999999, 1.0000001, 3.5, -2.5,
         88.72, 88.73, 89.0, 89.41, 89.42, -87.33, -103.0, -103.97, -104.0, -149.0, -150.0, 127.99, 128.0,
         709.78, 709.79, 710.0, 710.48, 710.5, -745.1, -745.2, -1074.0, 1023.99, 1024.0, 40.0, -40.0,
         1e20, -1e20, 1e30, -1e30, 0.4142, 2.4142, 0.84, 1.0e-8, -1.0e-8]
    return np.array(v, dtype=np.float64).astype(dt)


def ulp_errors(got: np.ndarray, ref: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """|got - ref| in ulps of the result type (of ``scale`` if given, e.g. for a result that cancels);
    ref is higher precision.  Matching nan/inf count as 0, other non-finite mismatches as inf."""
    dt = got.dtype
    with np.errstate(all="ignore"):
        ref_t = ref.astype(dt)
        mag = np.abs(ref) if scale is None else np.maximum(np.abs(ref), np.abs(scale).astype(ref.dtype))
        ulp = np.spacing(mag.astype(dt)).astype(ref.dtype)
        # below the binade boundary the ulp is the smaller one
        ulp = np.maximum(np.minimum(ulp, mag * np.finfo(dt).eps), np.finfo(dt).smallest_subnormal)
        err = np.abs(got.astype(ref.dtype) - ref) / ulp
    both_nan = np.isnan(got) & np.isnan(ref_t)
    same_inf = np.isinf(ref_t) & (got == ref_t)
    err = np.where(both_nan | same_inf, 0.0, err)
    return np.where(np.isnan(err), np.inf, err)


def reference(name: str, args: list[np.ndarray]) -> np.ndarray:
    hi = np.float64 if args[0].dtype == np.float32 else LD
    with np.errstate(all="ignore"):
        return np.asarray(REF[name](*[a.astype(hi) for a in args]), dtype=hi)


def _scale(name: str, args: list[np.ndarray]) -> np.ndarray | None:
    # logaddexp = max(a, b) + log1p(exp(-|a-b|)) cancels when the result is near 0 (as NumPy's
    # does): its error is measured in ulps of max(|a|, |b|, |result|).
    if name != "logaddexp":
        return None
    s = np.maximum(np.abs(args[0]), np.abs(args[1]))
    return np.where(np.isfinite(s), s, 0)


@pytest.fixture(scope="module")
def K() -> mt.Kernels:
    return mt.Kernels(sorted(mathlib.FUNCTIONS))


def max_ulp(K: mt.Kernels, name: str, dt, n: int, seed: int = 0) -> tuple[float, np.ndarray]:
    args = sample(name, np.dtype(dt), n, np.random.default_rng(seed))
    if name == "erf" and dt == np.float64:
        args = [a[:20000] for a in args]
    err = ulp_errors(K(name, *args), reference(name, args), _scale(name, args))
    i = int(np.argmax(err))
    return float(err[i]), np.array([a[i] for a in args])


NAMES = sorted(mathlib.FUNCTIONS)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_random_accuracy(K, name, dt):
    if dt == np.float64 and not HAVE_LD:
        pytest.skip("needs x87 long double for a float64 reference")
    bound = ULP_BOUNDS[name][dt == np.float64]
    err, at = max_ulp(K, name, dt, N32 if dt == np.float32 else N64)
    assert err <= bound, f"{name}[{np.dtype(dt).name}] max error {err:.2f} ulp at {at!r}"


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_special_values(K, name, dt):
    if dt == np.float64 and not HAVE_LD:
        pytest.skip("needs x87 long double for a float64 reference")
    sv = special_values(np.dtype(dt))
    if mathlib.ARITY[name] == 2:
        a, b = np.meshgrid(sv, sv)
        args = [a.ravel(), b.ravel()]
    else:
        args = [sv]
    got = K(name, *args)
    ref = reference(name, args)
    with np.errstate(over="ignore"):
        ref_t = ref.astype(dt)
    if name in ("sin", "cos", "tan"):  # past the documented range: only bounded, never nan
        far = np.abs(args[0]) > 1e5
        fin = np.isfinite(args[0])
        assert not np.isnan(got[far & fin]).any()
        if name != "tan":
            assert (np.abs(got[far & fin]) <= 1).all()
        keep = ~far
        args, got, ref, ref_t = [a[keep] for a in args], got[keep], ref[keep], ref_t[keep]
    assert np.array_equal(np.isnan(got), np.isnan(ref_t)), \
        f"nan mismatch at {[a[np.isnan(got) != np.isnan(ref_t)] for a in args]}"
    zero = ref == 0  # exact zeros only: a result that merely underflows may round either way
    bad_sign = zero & (np.signbit(got) != np.signbit(ref_t))
    assert not bad_sign.any(), f"signed zero wrong at {[a[bad_sign] for a in args]}"
    err = ulp_errors(got, ref, _scale(name, args))
    bound = ULP_BOUNDS[name][dt == np.float64]
    i = int(np.argmax(err))
    assert err[i] <= bound, f"{name}{tuple(a[i] for a in args)} = {got[i]!r}, expected {ref[i]!r}"


def test_denormal_and_overflow_edges(K):
    f32 = np.float32
    assert K("exp", np.array([89.0, 88.8, -104.0, -200.0], f32)).tolist() == [np.inf, np.inf, 0.0, 0.0]
    x = np.linspace(-103.9, -87.0, 4001).astype(f32)  # results in the denormal range
    assert ulp_errors(K("exp", x), np.exp(x.astype(np.float64))).max() <= 1
    assert K("tanh", np.array([np.inf, -np.inf], f32)).tolist() == [1.0, -1.0]
    assert np.isnan(K("sin", np.array([np.inf], f32)))[0]
    assert np.signbit(K("expm1", np.array([-0.0], f32)))[0]


def test_vector_widths_and_scalar_types():
    """4-wide double and 16-wide float vectors, and odd tails through the scalar path."""
    K4 = mt.Kernels(["exp", "sin", "pow"], dtypes=(np.float64,), lanes=4)
    K16 = mt.Kernels(["exp", "sin", "pow"], dtypes=(np.float32,), lanes=16)
    for K, dt in ((K4, np.float64), (K16, np.float32)):
        x = np.linspace(-20, 20, 37).astype(dt)
        for name in ("exp", "sin"):
            assert ulp_errors(K(name, x), reference(name, [x])).max() <= 1
        y = np.full_like(x, 3.0)
        assert ulp_errors(K("pow", x, y), reference("pow", [x, y])).max() <= 4


def test_bad_arguments():
    from llvmlite import ir
    b = ir.IRBuilder(ir.Function(ir.Module(), ir.FunctionType(ir.VoidType(), []), "f").append_basic_block())
    one = ir.Constant(ir.FloatType(), 1.0)
    with pytest.raises(ValueError, match="unknown"):
        mathlib.emit(b, "gamma", [one])
    with pytest.raises(ValueError, match="takes 2"):
        mathlib.emit(b, "pow", [one])
    with pytest.raises(TypeError):
        mathlib.emit(b, "exp", [ir.Constant(ir.IntType(32), 1)])


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH (CUDA toolkit not installed)")
@pytest.mark.parametrize("lanes", [1, 4])
def test_nvptx_assembles(lanes):
    ptx = mt.ptx_for(NAMES, lanes=lanes)
    for bad in ("llvm.exp", "llvm.log", "llvm.sin", "llvm.cos", "llvm.pow", "expf", "logf"):
        assert f"call.uni {bad}" not in ptx and f"{bad}(" not in ptx
    res = mt.ptxas(ptx)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize("name", ["sin", "cos", "tan"])
def test_float32_trig_large_arguments_payne_hanek(name: str) -> None:
    """float32 sin/cos/tan over [1e5, 3.4e38] (1M log-uniform points, both signs) within a few
    ulp of the float64 reference rounded: the Payne-Hanek path keeps the reduction exact."""
    K = mt.Kernels([name], dtypes=(np.float32,), lanes=8)
    rng = np.random.default_rng(5)
    n = 1_000_000
    x = (10.0 ** rng.uniform(5, 38.5, n) * rng.choice([-1, 1], n)).astype(np.float32)
    x = np.r_[x, np.float32([65536.0, 65535.996, 1e30, -1e30, 3.4028235e38, -3.4028235e38, 16777216.0])]
    got = K(name, x).astype(np.float64)
    ref = getattr(np, name)(x.astype(np.float64))
    ulp = np.abs(got - ref) / np.spacing(np.abs(ref.astype(np.float32))).astype(np.float64)
    assert ulp.max() <= (3.5 if name == "tan" else 2.0), (x[np.argmax(ulp)], ulp.max())
    assert np.isnan(K(name, np.float32([np.inf, -np.inf, np.nan]))).all()
