"""Complex values inside generated kernels (pairs of float lanes, ``codegen.kir_complex``):
compiled results equal eager ones and NumPy's over shapes, broadcasts, views, both complex
dtypes and the special values (inf, nan, -0.0); complex chains are one kernel; the PTX of a
complex kernel assembles and runs on the simulated GPU."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import jitted

import tracejit as tj
from codegen import ptx
from tests.codegen.cpu_helpers import before_guard_page
from tracejit import fusion

COMPLEX = [np.complex64, np.complex128]
PART = {np.complex64: np.float32, np.complex128: np.float64}
SPECIAL = [0.0, -0.0, 1.0, -2.5, 0.75, np.inf, -np.inf, np.nan, 1e30, -3e-30]


def special_grid(dtype) -> np.ndarray:
    """Every pair of special parts as one complex vector."""
    pairs = list(itertools.product(SPECIAL, SPECIAL))
    out = np.empty(len(pairs), dtype)
    out.real = [p[0] for p in pairs]
    out.imag = [p[1] for p in pairs]
    return out


def random_complex(rng, shape, dtype) -> np.ndarray:
    z = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return z.astype(dtype)


def assert_same(actual, expected, ulps: int = 0) -> None:
    """Same dtype, NaNs and infinities in the same places, zeros signed alike; finite values
    equal (``ulps=0``) or within ``ulps`` units in the last place of the larger magnitude."""
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, e.dtype, a.shape, e.shape)
    parts = [(a.real, e.real), (a.imag, e.imag)] if a.dtype.kind == "c" else [(a, e)]
    for x, y in parts:
        if x.dtype.kind != "f":
            np.testing.assert_array_equal(x, y)
            continue
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
        ok = ~np.isnan(y)
        np.testing.assert_array_equal(np.signbit(x[ok & (y == 0)]), np.signbit(y[ok & (y == 0)]))
        if ulps == 0:
            np.testing.assert_array_equal(x[ok], y[ok])
            continue
        np.testing.assert_array_equal(np.isinf(x[ok]), np.isinf(y[ok]))
        fin = ok & np.isfinite(y)
        tol = ulps * np.spacing(np.maximum(np.abs(x[fin]), np.abs(y[fin])).astype(x.dtype))
        assert np.all(np.abs(x[fin].astype(np.float64) - y[fin]) <= tol), \
            np.max(np.abs(x[fin].astype(np.float64) - y[fin]) / np.maximum(tol, 1e-300))


def check(fn, np_fn, *arrays, ulps: int = 0, backend: str = "llvm") -> None:
    """jit(fn) == fn eagerly == np_fn on NumPy arrays (``ulps`` for kernels' transcendentals)."""
    ts = [tj.asarray(a) for a in arrays]
    compiled = jitted(fn, backend)(*ts)
    eager = fn(*ts)
    with np.errstate(all="ignore"):
        reference = np_fn(*arrays)
    assert_same(eager, reference)
    assert_same(compiled, eager, ulps)


def n_kernels(fn, *args) -> int:
    return len(tj.jit(fn).lower(*args).kernels)


def n_externs(fn, *args) -> int:
    plan = tj.jit(fn).lower(*args).entry.executable.plan
    return sum(isinstance(s, fusion.ExternPlan) for s in plan.steps)


def _reference(name, z):
    """The op table's reference (what eager runs)."""
    from tracejit.ops import PRIMS
    return PRIMS[name].impl(z)


def _expm1(z):
    return _reference("expm1", z)


def _sign(z):
    mag = np.abs(z)
    return np.where(mag == 0, 0, z / np.where(mag == 0, 1, mag)).astype(z.dtype)


EXACT_UNARY = {
    "neg": (tj.negative, np.negative), "conj": (tj.conj, np.conj), "real": (tj.real, np.real),
    "imag": (tj.imag, np.imag), "square": (tj.square, np.square),
    "reciprocal": (lambda z: 1.0 / z, lambda z: (1.0 / z).astype(z.dtype)),
    "isnan": (tj.isnan, np.isnan), "isinf": (tj.isinf, np.isinf), "isfinite": (tj.isfinite, np.isfinite),
    "to_bool": (lambda z: tj.astype(z, tj.bool), lambda z: z.astype(bool)),
    "to_real": (lambda z: tj.astype(z, tj.float32), lambda z: z.real.astype(np.float32)),
    "to_other": (lambda z: tj.astype(z, tj.complex128 if z.dtype == tj.complex64 else tj.complex64),
                 lambda z: z.astype(np.complex128 if z.dtype == np.complex64 else np.complex64)),
}
APPROX_UNARY = {     # (kernels' hypot, exp, sin and cos are within a few ulp of libm's)
    "abs": (tj.abs, np.abs), "exp": (tj.exp, np.exp), "sign": (tj.sign, _sign), "sqrt": (tj.sqrt, np.sqrt),
    "log": (tj.log, np.log), "log2": (tj.log2, np.log2), "log10": (tj.log10, np.log10),
    "exp2": (tj.exp2, np.exp2), "log1p": (tj.log1p, np.log1p), "expm1": (tj.expm1, _expm1),
    "tanh": (tj.tanh, lambda z: _reference("tanh", z)), "sin": (tj.sin, np.sin), "cos": (tj.cos, np.cos),
    "sinh": (tj.sinh, np.sinh), "cosh": (tj.cosh, np.cosh),
}
F64_TRIG = ("exp", "exp2", "expm1", "tanh", "sin", "cos", "sinh", "cosh")   # (see below)
BINARY = {
    "add": (tj.add, np.add), "sub": (tj.subtract, np.subtract), "mul": (tj.multiply, np.multiply),
    "div": (tj.divide, np.divide), "eq": (tj.equal, np.equal), "ne": (tj.not_equal, np.not_equal),
}


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("name", sorted(EXACT_UNARY))
def test_exact_unary_ops_on_special_values(name, dtype):
    ours, theirs = EXACT_UNARY[name]
    check(ours, theirs, special_grid(dtype))


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("name", sorted(APPROX_UNARY))
def test_transcendental_unary_ops_on_special_values(name, dtype):
    ours, theirs = APPROX_UNARY[name]
    g = special_grid(dtype)
    if name in F64_TRIG and dtype == np.complex128:
        # float64 sin and cos reduce their argument accurately up to |x| ~ 1e12 (codegen.mathlib),
        # as for real operands (sin and cos take it from the real part)
        part = g.real if name in ("sin", "cos") else g.imag
        g = g[~(np.isfinite(part) & (np.abs(part) > 1e12))]
    check(ours, theirs, g, ulps=4)


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("name", sorted(APPROX_UNARY))
def test_transcendental_unary_ops_on_ordinary_values(rng, name, dtype):
    ours, theirs = APPROX_UNARY[name]
    z = random_complex(rng, (33, 17), dtype) * 2
    compiled, expected = np.asarray(jitted(ours, "llvm")(tj.asarray(z))), theirs(z)
    assert compiled.dtype == expected.dtype
    tol = 1e-5 if dtype == np.complex64 else 1e-13      # (relative to the values' scale: cancellations)
    np.testing.assert_allclose(compiled, expected, rtol=tol, atol=tol * np.max(np.abs(expected)))


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("name", ["sinh", "cosh", "sin", "cos"])
def test_hyperbolic_functions_past_the_overflow_of_exp(rng, name, dtype):
    """Real parts (imaginary for sin, cos) around and past where ``e**|x|`` overflows: the
    result is applied in steps (glibc's scaling) and overflows only with the true value."""
    ours, theirs = APPROX_UNARY[name]
    big = [80.0, 88.5, 89.5, 100.0, 180.0, 300.0, 700.0, 709.5, 712.0, 1000.0, 1500.0, 1e30]
    xs = np.array([s * b for b in big for s in (1, -1)])
    ys = rng.uniform(-4, 4, xs.size)
    z = np.empty(xs.size, dtype)
    z.real, z.imag = (ys, xs) if name in ("sin", "cos") else (xs, ys)
    check(ours, theirs, z, ulps=8)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_exp_on_ordinary_values_and_near_overflow(rng, dtype):
    z = random_complex(rng, (257,), dtype) * 3
    big = 88.5 if dtype == np.complex64 else 709.5      # exp(re) alone overflows, the product not
    z[:8] = big + 1j * np.array([1.5, 1.55, -1.56, 2.0, 4.7, 0.001, 3.0, -1.5707])
    check(tj.exp, np.exp, z, ulps=8)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_sqrt_over_the_whole_range(rng, dtype):
    """Parts from subnormal to near overflow: the scaled paths of the kernels' sqrt."""
    n, top = 4000, (38 if dtype == np.complex64 else 308)
    z = np.empty(n, dtype)
    z.real = rng.standard_normal(n) * 10.0 ** rng.integers(-top - 7, top, n)
    z.imag = rng.standard_normal(n) * 10.0 ** rng.integers(-top - 7, top, n)
    fi = np.finfo(PART[dtype])
    z[:6] = [complex(fi.max, fi.max), complex(-fi.max, fi.tiny), complex(fi.smallest_subnormal, 0),
             complex(-fi.smallest_subnormal, -fi.smallest_subnormal), complex(0.75, -fi.smallest_subnormal),
             complex(1.5e9, -6e-41)]
    check(tj.sqrt, np.sqrt, z, ulps=4)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_log_near_the_unit_circle_and_over_the_whole_range(rng, dtype):
    """Where ``log |z|`` cancels (``|z|`` near 1) and where ``|z|`` is subnormal or huge."""
    n, top = 3000, (38 if dtype == np.complex64 else 308)
    t = rng.uniform(0, 7, n)
    circle = np.empty(n, dtype)
    circle.real, circle.imag = np.cos(t), np.sin(t)
    near = (1 + rng.standard_normal(n) * 1e-3 + 1j * rng.standard_normal(n) * 1e-3).astype(dtype)
    wide = np.empty(n, dtype)
    wide.real = rng.standard_normal(n) * 10.0 ** rng.integers(-top - 7, top, n)
    wide.imag = rng.standard_normal(n) * 10.0 ** rng.integers(-top - 7, top, n)
    for z in (circle, near, wide):
        check(tj.log, np.log, z, ulps=4)


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops_on_special_values(name, dtype):
    ours, theirs = BINARY[name]
    g = special_grid(dtype)
    a, b = np.repeat(g, len(g)), np.tile(g, len(g))       # every pair of special values
    check(ours, theirs, a, b)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_real_and_scalar_operands_are_promoted(dtype):
    g = special_grid(dtype)
    x = np.tile(np.array(SPECIAL, PART[dtype]), len(g) // len(SPECIAL))
    check(lambda z, x: z * x, lambda z, x: z * x, g, x)
    check(lambda z, x: x / z, lambda z, x: x / z, g, x)
    check(lambda z, x: z - x, lambda z, x: z - x, g, x)
    check(lambda z: z * 2.0 + 1j, lambda z: (z * 2.0 + 1j).astype(z.dtype), g)
    check(lambda z: z / 3.0, lambda z: (z / 3.0).astype(z.dtype), g)
    check(lambda x: tj.astype(x, dtype) * 1j, lambda x: x.astype(dtype) * dtype(1j), x)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_where_selects_pairs(rng, dtype):
    z, w = random_complex(rng, (5, 7), dtype), random_complex(rng, (5, 7), dtype)
    c = rng.standard_normal((5, 7)) > 0
    check(lambda c, z, w: tj.where(c, z * w, tj.conj(w)),
          lambda c, z, w: np.where(c, z * w, np.conj(w)), c, z, w)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_broadcasts_strided_and_transposed_views(rng, dtype):
    z = random_complex(rng, (6, 9), dtype)
    row = random_complex(rng, (9,), dtype)
    col = random_complex(rng, (6, 1), dtype)
    check(lambda z, r, c: z * r + c, lambda z, r, c: z * r + c, z, row, col)
    check(lambda z: z.T * z[:, ::-1].T, lambda z: z.T * z[:, ::-1].T, z)
    check(lambda z: tj.conj(z[::2, 1::3]) / (z[1::2, ::3] + 1),
          lambda z: np.conj(z[::2, 1::3]) / (z[1::2, ::3] + 1), z)
    check(lambda z: tj.reshape(tj.permute_dims(z, (1, 0)), (3, 18)) - 1j,
          lambda z: (z.T.reshape(3, 18) - 1j).astype(z.dtype), z)
    # a transposed input read in a kernel together with a contiguous one
    check(lambda z, w: tj.real(z * w) + tj.imag(w), lambda z, w: (z * w).real + w.imag,
          z.T, random_complex(rng, (9, 6), dtype))


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_sums_and_means(rng, dtype, axis):
    z = random_complex(rng, (37, 129), dtype)
    w = random_complex(rng, (129,), dtype)
    rtol = 2e-5 if dtype == np.complex64 else 1e-12      # (summation order differs)
    for ours, theirs in [
        (lambda z, w: tj.sum(z * w, axis=axis), lambda z, w: np.sum(z * w, axis=axis)),
        (lambda z, w: tj.mean(z - w, axis=axis), lambda z, w: np.mean(z - w, axis=axis)),
        (lambda z, w: z / tj.sum(z, axis=axis, keepdims=True),
         lambda z, w: z / np.sum(z, axis=axis, keepdims=True)),
    ]:
        a, b = tj.asarray(z), tj.asarray(w)
        compiled, eager = np.asarray(tj.jit(ours)(a, b)), np.asarray(ours(a, b))
        assert compiled.dtype == eager.dtype == np.dtype(dtype)
        np.testing.assert_allclose(eager, theirs(z, w), rtol=rtol)
        np.testing.assert_allclose(compiled, eager, rtol=rtol, atol=rtol)


def test_sum_of_special_values(dtype=np.complex128):
    g = special_grid(dtype).reshape(10, 10)
    check(lambda z: tj.sum(z, axis=1), lambda z: np.sum(z, axis=1), g, ulps=4)   # (summation order)


def _chain(z, w):
    return tj.real(tj.exp(z * w + 1j)) * 2


def test_complex_chain_is_one_kernel(rng):
    z, w = (tj.asarray(random_complex(rng, (64, 33), np.complex64)) for _ in range(2))
    assert n_kernels(_chain, z, w) == 1
    assert n_externs(_chain, z, w) == 0
    check(_chain, lambda z, w: (np.exp(z * w + 1j).real * 2).astype(np.float32), np.asarray(z), np.asarray(w),
          ulps=8)
    # a complex output: two float stores of one kernel
    def both(z, w):
        return z * w - 1, tj.abs(z)
    assert n_kernels(both, z, w) == 1
    # a sum and its epilogue
    assert n_kernels(lambda z: tj.mean(z * z, axis=1), z) == 1


def test_ops_left_on_the_host_stay_extern_steps(rng):
    z = tj.asarray(random_complex(rng, (8, 8), np.complex64))
    for f in (tj.tan, tj.asinh, tj.acos, lambda z: z ** 1.5, lambda z: tj.prod(z, axis=0)):
        assert n_externs(f, z) == 1
    check(lambda z: tj.tan(z * z) + 1, lambda z: np.tan(z * z) + 1, np.asarray(z))
    # a gather of a complex table (which traced code checks) and a concatenation stay host steps
    idx = np.array([5, -1, 0, 2])
    check(lambda z: tj.take(z * 2, tj.asarray(idx), axis=1) - 1j, lambda z: np.take(z * 2, idx, axis=1) - 1j,
          np.asarray(z))
    check(lambda z: tj.concat([z, tj.conj(z)], axis=0) * 1j, lambda z: np.concatenate([z, np.conj(z)]) * 1j,
          np.asarray(z))


@pytest.mark.parametrize("dtype", COMPLEX)
def test_inplace_update_of_a_complex_tensor(rng, dtype):
    z = tj.asarray(random_complex(rng, (16, 8), dtype))
    w = tj.asarray(random_complex(rng, (16, 8), dtype))
    expected = np.asarray(z) * np.asarray(w) + np.asarray(w)

    @tj.jit
    def step(w):
        z[...] = z * w + w
    step(w)
    assert_same(z, expected)


def test_assigning_a_python_complex_keeps_its_precision():
    def f(x):
        x[::-1] = complex(1e30, -1.5)       # (traced, it went through complex64)
        return x * 1
    x = tj.asarray(np.array([-3 - 2.5j, 1j]))
    check(f, lambda x: np.full_like(x, complex(1e30, -1.5)), np.asarray(x))


@pytest.mark.parametrize("dtype", COMPLEX)
def test_jitted_gradients_equal_eager_ones(rng, dtype):
    def loss(z, w):
        return tj.sum(tj.abs(tj.exp(z * w) / (w + 2)) + tj.real(tj.conj(z) * z * 1j + tj.square(w))
                      + tj.imag(tj.tanh(z) + tj.log(w) * tj.sqrt(z)))
    z, w = (tj.asarray(random_complex(rng, (4, 5), dtype)) for _ in range(2))
    eager = tj.grad(loss, argnums=(0, 1))(z, w)
    compiled = tj.jit(tj.grad(loss, argnums=(0, 1)))(z, w)
    for c, e in zip(compiled, eager):
        assert c.dtype == e.dtype
        rtol = 1e-5 if dtype == np.complex64 else 1e-12
        np.testing.assert_allclose(np.asarray(c), np.asarray(e), rtol=rtol)


def test_lazy_mode_fuses_complex(rng):
    z = random_complex(rng, (32,), np.complex64)
    with tj.lazy():
        out = tj.real(tj.exp(tj.asarray(z) * 1j)) + 1
    np.testing.assert_allclose(np.asarray(out), np.exp(z * 1j).real + 1, rtol=1e-6, atol=1e-6)


def _needs_ptxas() -> None:
    if not ptx.ptxas_available():
        pytest.skip("ptxas is not on PATH (install the CUDA toolkit)")


@pytest.mark.parametrize("dtype", COMPLEX)
def test_complex_kernel_ptx_assembles(dtype):
    _needs_ptxas()
    spec = tj.spec((64, 33), dtype)

    def f(z, w):
        return (tj.exp(z * w + 1j) / (z - w), tj.sum(z * tj.conj(w), axis=1), tj.abs(z),
                tj.log(tj.sqrt(z) - w), tj.sin(z) * tj.tanh(w) + tj.cosh(z) - tj.expm1(w) * tj.log1p(z),
                tj.sign(z) == w)
    gpu = tj.jit(f).lower(spec, spec, device="cuda")
    assert len(gpu.kernels) == len(tj.jit(f).lower(spec, spec).kernels)
    for pk in gpu.entry.executable.ptx.values():
        ptx.ptxas_check(pk.ptx, "sm_90")


def test_complex_kernels_on_the_simulated_gpu(rng):
    _needs_ptxas()          # (the simulated GPU assembles every kernel it launches)
    from tests.gpu.simulated_cuda import installed
    from tracejit import eager_device
    z, w = random_complex(rng, (40, 17), np.complex64), random_complex(rng, (40, 17), np.complex64)
    eager_device.cache_clear()
    try:
        with installed() as dev:
            a, b = tj.asarray(z).to("cuda"), tj.asarray(w).to("cuda")
            out = tj.jit(lambda a, b: (tj.exp(a * b + 1j) - b, tj.sum(a * b, axis=0)))(a, b)
            launches = dev.launches
            res = [np.asarray(o.to("cpu")) for o in out]
    finally:
        eager_device.cache_clear()
    assert launches >= 1
    np.testing.assert_allclose(res[0], np.exp(z * w + 1j) - w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res[1], np.sum(z * w, axis=0), rtol=1e-5, atol=1e-5)


def test_eager_complex_ops_on_the_simulated_gpu():
    """Eager ops on GPU tensors are one-op programs: fused complex kernels, and host steps
    (``sin``) whose result is copied to the device as float parts."""
    _needs_ptxas()
    from tests.gpu.simulated_cuda import installed
    from tracejit import eager_device
    z = (np.arange(6) + 1j * np.arange(6)[::-1]).astype(np.complex64)
    eager_device.cache_clear()
    try:
        with installed():
            a = tj.asarray(z).to("cuda")
            got = [np.asarray(t.to("cpu")) for t in
                   (tj.exp(a * a + 1j), tj.sqrt(a), tj.sin(a), tj.sum(a), a[::2] * 2, tj.conj(a)[::-1])]
    finally:
        eager_device.cache_clear()
    want = [np.exp(z * z + 1j), np.sqrt(z), np.sin(z), np.sum(z), z[::2] * 2, np.conj(z)[::-1]]
    for g, w in zip(got, want):
        assert g.dtype == np.complex64
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 7, 17, 100])
def test_complex_parts_stay_inside_their_buffer(n):
    """The imaginary part of the last element is the buffer's last float: masked tails of the
    parts' strided loads read nothing past it (the data ends at a guard page)."""
    z, keep = before_guard_page((5, n), np.complex64)
    z[...] = random_complex(np.random.default_rng(n), (5, n), np.complex64)
    t = tj.asarray(z)
    assert np.shares_memory(np.asarray(t), z)
    check(lambda z: z * 2 - 1j, lambda z: z * 2 - 1j, z)
    out = tj.jit(lambda z: (tj.sum(z * z, axis=1), tj.real(z) + tj.imag(z)))(t)
    np.testing.assert_allclose(np.asarray(out[0]), np.sum(z * z, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out[1]), z.real + z.imag)
    del t, out, keep


def test_a_complex_host_step_returned_and_read_by_a_kernel_is_not_recomputed_there():
    """``round`` of a complex value is a host step; returned, it must be read back by the
    kernel after it (recomputing a cheap graph output inside that kernel has no complex round)."""
    def f(x):
        a = tj.round(x)
        return tj.log1p(a), a

    x = tj.asarray(np.array([1.6 + 2.4j, -0.5 + 0.5j, 3.49 - 7.5j], np.complex64))
    for e, j in zip(f(x), tj.jit(f)(x)):
        np.testing.assert_allclose(j.numpy(), e.numpy(), rtol=2e-6)


@pytest.mark.parametrize("axis", [0, 1])
def test_a_complex_product_is_read_by_the_kernel_after_it_not_folded_again(rng, axis):
    """``prod`` of complex values is a host step; the kernel reading it (a cast to its real part,
    a scale) must load its result, not fold the reduction itself lane by lane (the product of the
    real parts, which is not the real part of the product)."""
    z = random_complex(rng, (3, 4), np.complex64)
    check(lambda z: tj.astype(tj.prod(z, axis=axis), tj.float64),
          lambda z: np.prod(z, axis=axis).real.astype(np.float64), z)
    check(lambda z: tj.real(tj.prod(z, axis=axis)) * 2.0 + 1.0,
          lambda z: np.prod(z, axis=axis).real * 2 + 1, z)
    assert n_externs(lambda z: tj.astype(tj.prod(z, axis=axis), tj.float64), tj.asarray(z)) == 1


@pytest.mark.parametrize("dtype", COMPLEX)
def test_log_of_subnormal_parts(dtype):
    """``log |z|`` of a subnormal ``z`` and ``atan2`` of subnormal parts: scaled up first (the
    modulus alone has too few bits; the angle's interval test rounds to the smallest step)."""
    tiny = np.finfo(np.float32 if dtype == np.complex64 else np.float64).smallest_subnormal
    parts = np.array([1, 2, 3, 4, 7, 1000, 12345], dtype=np.float64) * float(tiny)
    re, im = np.meshgrid(parts, parts)
    z = (re + 1j * im).ravel().astype(dtype)
    check(tj.log, np.log, z, ulps=4)
