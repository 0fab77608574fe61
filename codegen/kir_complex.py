"""Complex arithmetic as pairs of float lanes in the kernel IR.

Kernels have no complex type: a complex value is a :class:`Pair` of float expressions (its
real and imaginary parts, in the part dtype ``f``: float32 for complex64, float64 for
complex128), and every complex op here is plain float ops on the parts.  Each formula is the
one NumPy's loops use on an x86-64 host with FMA, operand order and single roundings included
(a product's real part is ``fma(ar, br, -(ai * bi))``; a quotient is Smith's algorithm), so the
special values (infinities, NaNs, signed zeros) come out as NumPy's; transcendentals are
``codegen.mathlib``'s, within its few-ulp bounds.  A real operand of a complex op is the pair
``(x, +0.0)``, as NumPy promotes it (``inf * (1+0j)`` has a NaN imaginary part there too).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import kir
from .kir import Const, Expr, Op

LANE_DTYPES = kir.LANE_DTYPES


class Pair(NamedTuple):
    """A complex value inside a kernel: its real and imaginary parts."""
    re: Expr
    im: Expr


Value = Expr | Pair

# the largest float x whose exp(x) is finite, rounded down: above it exp(x) * cos(y) is
# computed as (exp(x/2) * cos(y)) * exp(x/2), which overflows only when the result does
_EXP_SPLIT = {"float32": 88.0, "float64": 709.0}
_MAX = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}
# sqrt scales |z| below 2**_TINY_EXP up by 2**(2 k) (k = _SCALE_EXP), so (|x| + |z|) / 2 is normal
_TINY_EXP = {"float32": -120, "float64": -1000}
_SCALE_EXP = {"float32": 40, "float64": 300}


def lane_dtype(dtype: str) -> str:
    """The part dtype of a complex dtype (a real dtype is its own)."""
    return LANE_DTYPES.get(dtype, dtype)


def _op(name: str, f: str, *args: Expr) -> Expr:
    return Op(name, args, f)


def _c(value: float, f: str) -> Expr:
    return Const(float(value), f)


def _bool(name: str, *args: Expr) -> Expr:
    return Op(name, args, "bool")


def _sel(cond: Expr, a: Expr, b: Expr, f: str) -> Expr:
    return Op("where", (cond, a, b), f)


def promote(x: Value, f: str) -> Pair:
    """``x`` as a complex value of part dtype ``f`` (a real ``x`` gets a +0.0 imaginary part)."""
    if isinstance(x, Pair):
        return x
    return Pair(x, _c(0.0, f))


def add(a: Pair, b: Pair, f: str) -> Pair:
    return Pair(_op("add", f, a.re, b.re), _op("add", f, a.im, b.im))


def sub(a: Pair, b: Pair, f: str) -> Pair:
    return Pair(_op("sub", f, a.re, b.re), _op("sub", f, a.im, b.im))


def neg(a: Pair, f: str) -> Pair:
    return Pair(_op("neg", f, a.re), _op("neg", f, a.im))


def conj(a: Pair, f: str) -> Pair:
    return Pair(a.re, _op("neg", f, a.im))


def mul(a: Pair, b: Pair, f: str) -> Pair:
    """``(ar br - ai bi) + (ar bi + ai br) j``, each part one fma (NumPy's SIMD loop)."""
    re = _op("fma", f, a.re, b.re, _op("neg", f, _op("mul", f, a.im, b.im)))
    im = _op("fma", f, a.re, b.im, _op("mul", f, a.im, b.re))
    return Pair(re, im)


def square(a: Pair, f: str) -> Pair:
    re = _op("fma", f, a.re, a.re, _op("neg", f, _op("mul", f, a.im, a.im)))
    im = _op("add", f, _op("mul", f, a.re, a.im), _op("mul", f, a.im, a.re))
    return Pair(re, im)


def div(a: Pair, b: Pair, f: str) -> Pair:
    """Smith's algorithm as NumPy writes it: scale by the larger part of ``b``; ``b == 0``
    divides each part of ``a`` by ``|b.re|`` (a complex inf or NaN)."""
    abs_r, abs_i = _op("abs", f, b.re), _op("abs", f, b.im)
    real_big = _bool("ge", abs_r, abs_i)       # false when either is NaN, as NumPy's branch
    zero = _bool("and", _bool("eq", abs_r, _c(0.0, f)), _bool("eq", abs_i, _c(0.0, f)))
    one = _c(1.0, f)
    # |b.re| >= |b.im|
    rat1 = _op("div", f, b.im, b.re)
    scl1 = _op("div", f, one, _op("add", f, b.re, _op("mul", f, b.im, rat1)))
    re1 = _op("mul", f, _op("add", f, a.re, _op("mul", f, a.im, rat1)), scl1)
    im1 = _op("mul", f, _op("sub", f, a.im, _op("mul", f, a.re, rat1)), scl1)
    # |b.re| < |b.im|
    rat2 = _op("div", f, b.re, b.im)
    scl2 = _op("div", f, one, _op("add", f, b.im, _op("mul", f, b.re, rat2)))
    re2 = _op("mul", f, _op("add", f, _op("mul", f, a.re, rat2), a.im), scl2)
    im2 = _op("mul", f, _op("sub", f, _op("mul", f, a.im, rat2), a.re), scl2)
    re0, im0 = _op("div", f, a.re, abs_r), _op("div", f, a.im, abs_r)
    re = _sel(zero, re0, _sel(real_big, re1, re2, f), f)
    im = _sel(zero, im0, _sel(real_big, im1, im2, f), f)
    return Pair(re, im)


def reciprocal(a: Pair, f: str) -> Pair:
    """``1 / a`` as NumPy's ``1 / x`` computes it: ``(1 + 0j) / a``."""
    return div(Pair(_c(1.0, f), _c(0.0, f)), a, f)


def abs_(a: Pair, f: str) -> Expr:
    """``|a|``: ``hypot`` (no overflow in the squares; ``|inf + nan j| = inf``)."""
    return _op("hypot", f, a.re, a.im)


def sign(a: Pair, f: str) -> Pair:
    """``a / |a|``, 0 at 0 (the op table's reference, step for step)."""
    mag = abs_(a, f)
    at_zero = _bool("eq", mag, _c(0.0, f))
    q = div(a, Pair(_sel(at_zero, _c(1.0, f), mag, f), _c(0.0, f)), f)
    return Pair(_sel(at_zero, _c(0.0, f), q.re, f), _sel(at_zero, _c(0.0, f), q.im, f))


def exp(a: Pair, f: str) -> Pair:
    """``e**a.re * (cos a.im + j sin a.im)`` with C99's special cases (glibc's ``cexp``):
    ``exp(x + 0j) = exp(x) + 0j`` (the zero's sign kept), and for an infinite or NaN
    imaginary part ``+inf`` gives ``inf + nan j``, ``-inf`` gives ``0 + copysign(0, im) j``."""
    x, y = a.re, a.im
    e = _op("exp", f, x)
    c, s = _op("cos", f, y), _op("sin", f, y)
    half = _op("exp", f, _op("mul", f, x, _c(0.5, f)))
    big = _bool("gt", x, _c(_EXP_SPLIT[f], f))
    re = _sel(big, _op("mul", f, _op("mul", f, half, c), half), _op("mul", f, e, c), f)
    im = _sel(big, _op("mul", f, _op("mul", f, half, s), half), _op("mul", f, e, s), f)
    y_bad = _bool("not", _bool("isfinite", y))
    up = _bool("and", _bool("eq", x, _c(float("inf"), f)), y_bad)
    down = _bool("and", _bool("eq", x, _c(float("-inf"), f)), y_bad)
    re = _sel(up, _c(float("inf"), f), _sel(down, _c(0.0, f), re, f), f)
    im = _sel(up, _c(float("nan"), f), _sel(down, _op("copysign", f, _c(0.0, f), y), im, f), f)
    real_axis = _bool("eq", y, _c(0.0, f))
    return Pair(_sel(real_axis, e, re, f), _sel(real_axis, y, im, f))


def sqrt(a: Pair, f: str) -> Pair:
    """The principal square root as glibc's ``csqrt`` computes it: ``t = sqrt((|x| + |z|) / 2)``,
    the other part ``y / (2 t)`` (halved after the division, which rounds a subnormal as glibc
    does), both scaled when ``|z|`` is near overflow or subnormal; C99's special cases (a zero's
    sign kept, ``sqrt(x + inf j) = inf + inf j`` even for a NaN ``x``, ``+-inf`` real parts)."""
    x, y = a
    big_t = _c(float(_MAX[f]) / 4, f)
    small_t = _c(2.0 ** _TINY_EXP[f], f)
    k = _SCALE_EXP[f]
    ax, ay = _op("abs", f, x), _op("abs", f, y)
    big = _bool("or", _bool("gt", ax, big_t), _bool("gt", ay, big_t))
    small = _bool("and", _bool("lt", ax, small_t), _bool("lt", ay, small_t))
    s_in = _sel(big, _c(0.25, f), _sel(small, _c(2.0 ** (2 * k), f), _c(1.0, f), f), f)
    s_out = _sel(big, _c(2.0, f), _sel(small, _c(2.0 ** -k, f), _c(1.0, f), f), f)
    xs, ys = _op("mul", f, x, s_in), _op("mul", f, y, s_in)
    h = _op("hypot", f, xs, ys)
    t = _op("sqrt", f, _op("mul", f, _op("add", f, _op("abs", f, xs), h), _c(0.5, f)))
    other = _op("mul", f, _c(0.5, f), _op("div", f, ys, t))
    right = _bool("ge", xs, _c(0.0, f))
    re = _op("mul", f, _sel(right, t, _op("abs", f, other), f), s_out)
    im = _op("mul", f, _sel(right, other, _op("copysign", f, t, ys), f), s_out)
    nan, inf, zero = _c(float("nan"), f), _c(float("inf"), f), _c(0.0, f)
    either_nan = _bool("or", _bool("isnan", x), _bool("isnan", y))
    re, im = _sel(either_nan, nan, re, f), _sel(either_nan, nan, im, f)
    y_finite = _bool("isfinite", y)
    up = _bool("eq", x, inf)            # inf + y j: inf + copysign(0, y) j (NaN for a NaN y)
    re = _sel(up, inf, re, f)
    im = _sel(up, _sel(y_finite, _op("copysign", f, zero, y), nan, f), im, f)
    down = _bool("eq", x, _c(float("-inf"), f))     # -inf + y j: 0 + copysign(inf, y) j
    re = _sel(down, _sel(y_finite, zero, nan, f), re, f)
    im = _sel(down, _sel(_bool("isnan", y), inf, _op("copysign", f, inf, y), f), im, f)
    y_inf = _bool("isinf", y)
    re, im = _sel(y_inf, inf, re, f), _sel(y_inf, y, im, f)
    at_zero = _bool("and", _bool("eq", x, zero), _bool("eq", y, zero))
    return Pair(_sel(at_zero, zero, re, f), _sel(at_zero, y, im, f))


def _square_parts(x: Expr, f: str) -> tuple[Expr, Expr]:
    """``x * x`` as ``hi + lo`` exactly (the fma gives the product's rounding error)."""
    hi = _op("mul", f, x, x)
    return hi, _op("fma", f, x, x, _op("neg", f, hi))


def _two_sum(a: Expr, b: Expr, f: str) -> tuple[Expr, Expr]:
    """``a + b`` as ``s + e`` exactly (Knuth's two-sum)."""
    s = _op("add", f, a, b)
    back = _op("sub", f, s, a)
    return s, _op("add", f, _op("sub", f, a, _op("sub", f, s, back)), _op("sub", f, b, back))


def _log_abs(x: Expr, y: Expr, f: str) -> Expr:
    """``log |x + y j|``, accurate near the unit circle, where ``log(hypot)`` cancels: there it
    is ``log1p(x**2 + y**2 - 1) / 2`` with the larger square less 1 exact.  float32 parts are
    squared in float64 (exactly, and never out of range); float64 ones as exact ``hi + lo``
    squares summed with two-sums."""
    if f == "float32":
        d = "float64"
        x64, y64 = Op("cast", (x,), d), Op("cast", (y,), d)
        hx, hy = _op("mul", d, x64, x64), _op("mul", d, y64, y64)
        x_big = _bool("ge", hx, hy)
        hb, hs = _sel(x_big, hx, hy, d), _sel(x_big, hy, hx, d)
        m = _op("add", d, _op("sub", d, hb, _c(1.0, d)), hs)
        sq = _op("add", d, hx, hy)
        far = _op("mul", d, _c(0.5, d), _op("log", d, sq))
        f_near, f_far = _op("mul", d, _c(0.5, d), _op("log1p", d, m)), far
        in_band = _bool("and", _bool("ge", sq, _c(0.5, d)), _bool("le", sq, _c(2.0, d)))
        return Op("cast", (_sel(in_band, f_near, f_far, d),), f)
    hx, lx = _square_parts(x, f)
    hy, ly = _square_parts(y, f)
    x_big = _bool("ge", hx, hy)
    hb, lb = _sel(x_big, hx, hy, f), _sel(x_big, lx, ly, f)
    hs, ls = _sel(x_big, hy, hx, f), _sel(x_big, ly, lx, f)
    s1, e1 = _two_sum(_op("sub", f, hb, _c(1.0, f)), hs, f)
    s2, e2 = _two_sum(s1, lb, f)
    s3, e3 = _two_sum(s2, ls, f)
    m = _op("add", f, s3, _op("add", f, _op("add", f, e1, e2), e3))
    near = _op("mul", f, _c(0.5, f), _op("log1p", f, m))
    sq = _op("add", f, hx, hy)
    in_band = _bool("and", _bool("ge", sq, _c(0.5, f)), _bool("le", sq, _c(2.0, f)))
    # a subnormal |z| has few significant bits: scale both parts up by 2**(2 k) first, as
    # sqrt does, and take k * 2 * log(2) off the logarithm
    k = _SCALE_EXP[f]
    small_t = _c(2.0 ** _TINY_EXP[f], f)
    small = _bool("and", _bool("lt", _op("abs", f, x), small_t), _bool("lt", _op("abs", f, y), small_t))
    up = _sel(small, _c(2.0 ** (2 * k), f), _c(1.0, f), f)
    far = _op("sub", f, _op("log", f, _op("hypot", f, _op("mul", f, x, up), _op("mul", f, y, up))),
              _sel(small, _c(2 * k * math.log(2.0), f), _c(0.0, f), f))
    return _sel(in_band, near, far, f)


def log(a: Pair, f: str) -> Pair:
    """The principal logarithm: ``log |a| + atan2(a.im, a.re) j``, which gives C99's special
    cases (``log(-0 + 0j) = -inf + pi j``, ``log(inf + nan j) = inf + nan j``, ...)."""
    x, y = a
    re = _log_abs(x, y, f)
    any_inf = _bool("or", _bool("isinf", x), _bool("isinf", y))
    return Pair(_sel(any_inf, _c(float("inf"), f), re, f), _op("atan2", f, y, x))


def _scaled(a: Pair, k: float, f: str) -> Pair:
    """Each part times the real number ``k`` (NumPy's complex ``log2``/``log10``/``exp2``)."""
    return Pair(_op("mul", f, a.re, _c(k, f)), _op("mul", f, a.im, _c(k, f)))


def _constant(value: float, f: str) -> float:
    """``value`` rounded to the part dtype, as NumPy's float constants (``NPY_LOG2Ef``)."""
    return float(np.float32(value)) if f == "float32" else value


def log2(a: Pair, f: str) -> Pair:
    return _scaled(log(a, f), _constant(math.log2(math.e), f), f)


def log10(a: Pair, f: str) -> Pair:
    return _scaled(log(a, f), _constant(math.log10(math.e), f), f)


def exp2(a: Pair, f: str) -> Pair:
    return exp(_scaled(a, _constant(math.log(2.0), f), f), f)


def log1p(a: Pair, f: str) -> Pair:
    """NumPy's complex ``log1p``: ``log(hypot(x + 1, y)) + atan2(y, x + 1) j``."""
    x1 = _op("add", f, a.re, _c(1.0, f))
    return Pair(_op("log", f, _op("hypot", f, x1, a.im)), _op("atan2", f, a.im, x1))


def expm1(a: Pair, f: str) -> Pair:
    """The op table's ``expm1`` step for step: ``expm1(x) cos(y) - 2 sin(y/2)**2 +
    j e**x sin(y)`` (the ``j *`` a complex product, as NumPy computes it), ``exp(z) - 1``
    where a part is not finite."""
    x, y = a
    half = _op("sin", f, _op("div", f, y, _c(2.0, f)))
    re = _op("sub", f, _op("mul", f, _op("expm1", f, x), _op("cos", f, y)),
             _op("mul", f, _op("mul", f, _c(2.0, f), half), half))
    im = _op("mul", f, _op("exp", f, x), _op("sin", f, y))
    out = add(promote(re, f), mul(Pair(_c(0.0, f), _c(1.0, f)), promote(im, f), f), f)
    edge = sub(exp(a, f), Pair(_c(1.0, f), _c(0.0, f)), f)
    return where(isfinite(a), out, edge, f)


def tanh(a: Pair, f: str) -> Pair:
    """glibc's ``ctanh`` step for step: ``(sinh x cosh x + j sin y cos y) / (sinh**2 x + cos**2 y)``,
    ``+-1 + 4 sin y cos y e**(-2|x|) j`` past the overflow of ``sinh**2``; the op table's
    special cases (``+-inf + y j`` is ``+-1 + copysign(0, y) j``, ``0 + y j`` with ``y`` not
    finite is ``0 + nan j``, a NaN part elsewhere gives NaNs but keeps a zero ``y``)."""
    x, y = a
    tiny, eps = _c(float(np.finfo(f).tiny), f), _c(float(np.finfo(f).eps), f)
    one, zero, nan = _c(1.0, f), _c(0.0, f), _c(float("nan"), f)
    ax, ay = _op("abs", f, x), _op("abs", f, y)
    y_normal, x_normal = _bool("gt", ay, tiny), _bool("gt", ax, tiny)
    s = _sel(y_normal, _op("sin", f, y), y, f)
    c = _sel(y_normal, _op("cos", f, y), one, f)
    sh = _sel(x_normal, _op("sinh", f, x), x, f)
    ch = _sel(x_normal, _op("cosh", f, x), one, f)
    cc = _op("mul", f, c, c)
    wide = _bool("gt", _op("abs", f, sh), _op("mul", f, _op("abs", f, c), eps))
    den = _sel(wide, _op("add", f, _op("mul", f, sh, sh), cc), cc, f)
    sc = _op("mul", f, s, c)
    decay = _op("exp", f, _op("mul", f, _c(-2.0, f), ax))
    big = _bool("gt", ax, _c(float(int((np.finfo(f).maxexp - 1) * math.log(2) / 2)), f))
    unit = _op("copysign", f, one, x)
    re = _sel(big, unit, _op("div", f, _op("mul", f, sh, ch), den), f)
    im = _sel(big, _op("mul", f, _op("mul", f, _op("mul", f, _c(4.0, f), s), c), decay),
              _op("div", f, sc, den), f)
    x_inf, y_zero = _bool("isinf", x), _bool("eq", y, zero)
    x_zero = _bool("eq", x, zero)
    re_edge = _sel(x_inf, unit, _sel(_bool("or", x_zero, y_zero), x, nan, f), f)
    im_edge = _sel(x_inf, _op("copysign", f, zero, y), _sel(y_zero, y, nan, f), f)
    finite = isfinite(a)
    return Pair(_sel(finite, re, re_edge, f), _sel(finite, im, im_edge, f))


def _sinh_or_cosh(a: Pair, f: str, cosh: bool) -> Pair:
    """glibc's ``csinh`` / ``ccosh`` step for step: ``sinh x cos y + j cosh x sin y`` (``cosh x
    cos y + j sinh x sin y``), with ``e**|x|`` applied in steps of ``e**t`` past its overflow
    (``t`` = (max exponent - 1) ln 2), and C99's special cases."""
    x, y = a
    fi = np.finfo(f)
    one, nan, inf = _c(1.0, f), _c(float("nan"), f), _c(float("inf"), f)
    t = float(int((fi.maxexp - 1) * math.log(2)))
    e_t = _constant(math.exp(t), f)
    y_normal = _bool("gt", _op("abs", f, y), _c(float(fi.tiny), f))
    s = _sel(y_normal, _op("sin", f, y), y, f)
    c = _sel(y_normal, _op("cos", f, y), one, f)
    rx = _op("abs", f, x)
    r1 = _op("sub", f, rx, _c(t, f))
    half_e_t = _c(_constant(e_t / 2, f), f)
    s1, c1 = _op("mul", f, s, half_e_t), _op("mul", f, c, half_e_t)
    twice = _bool("gt", r1, _c(t, f))
    r2 = _sel(twice, _op("sub", f, r1, _c(t, f)), r1, f)
    s2 = _sel(twice, _op("mul", f, s1, _c(e_t, f)), s1, f)
    c2 = _sel(twice, _op("mul", f, c1, _c(e_t, f)), c1, f)
    over = _bool("gt", r2, _c(t, f))
    ev = _op("exp", f, r2)
    big_c = _sel(over, _op("mul", f, _c(float(fi.max), f), c2), _op("mul", f, ev, c2), f)
    big_s = _sel(over, _op("mul", f, _c(float(fi.max), f), s2), _op("mul", f, ev, s2), f)
    big = _bool("gt", rx, _c(t, f))
    odd, even = _op("sinh", f, rx), _op("cosh", f, rx)
    re = _sel(big, big_c, _op("mul", f, even if cosh else odd, c), f)
    im = _sel(big, big_s, _op("mul", f, odd if cosh else even, s), f)
    negative = _bool("signbit", x)
    if cosh:
        im = _sel(negative, _op("neg", f, im), im, f)
    else:
        re = _sel(negative, _op("neg", f, re), re, f)
    y_nan = _op("sub", f, y, y)                    # NaN for an infinite or NaN y
    x_zero, y_zero = _bool("eq", x, _c(0.0, f)), _bool("eq", y, _c(0.0, f))
    y_nonzero = _bool("and", _bool("isfinite", y), _bool("not", y_zero))
    sign_x = _op("copysign", f, one, x)
    inf_c, inf_s = _op("copysign", f, inf, c), _op("copysign", f, inf, s)
    if cosh:        # x finite, y not finite; then x infinite
        re1, im1 = y_nan, _sel(x_zero, _c(0.0, f), nan, f)
        re2 = _sel(y_nonzero, inf_c, inf, f)
        im2 = _sel(y_nonzero, _op("mul", f, inf_s, sign_x),
                   _sel(y_zero, _op("mul", f, y, sign_x), y_nan, f), f)
    else:
        re1, im1 = _sel(x_zero, x, nan, f), y_nan
        re2 = _sel(y_nonzero, _op("mul", f, inf_c, sign_x), _sel(y_zero, x, inf, f), f)
        im2 = _sel(y_nonzero, inf_s, _sel(y_zero, y, y_nan, f), f)
    re3, im3 = nan, _sel(y_zero, y, nan, f)        # x NaN
    x_finite, x_inf = _bool("isfinite", x), _bool("isinf", x)
    finite = _bool("and", x_finite, _bool("isfinite", y))
    re = _sel(finite, re, _sel(x_finite, re1, _sel(x_inf, re2, re3, f), f), f)
    im = _sel(finite, im, _sel(x_finite, im1, _sel(x_inf, im2, im3, f), f), f)
    return Pair(re, im)


def sinh(a: Pair, f: str) -> Pair:
    return _sinh_or_cosh(a, f, cosh=False)


def cosh(a: Pair, f: str) -> Pair:
    return _sinh_or_cosh(a, f, cosh=True)


def sin(a: Pair, f: str) -> Pair:
    """``-j sinh(j a)`` (C99's definition of ``csin``, special cases included)."""
    w = sinh(Pair(_op("neg", f, a.im), a.re), f)
    return Pair(w.im, _op("neg", f, w.re))


def cos(a: Pair, f: str) -> Pair:
    """``cosh(j a)`` (C99's definition of ``ccos``)."""
    return cosh(Pair(_op("neg", f, a.im), a.re), f)


def eq(a: Pair, b: Pair) -> Expr:
    return _bool("and", _bool("eq", a.re, b.re), _bool("eq", a.im, b.im))


def ne(a: Pair, b: Pair) -> Expr:
    return _bool("or", _bool("ne", a.re, b.re), _bool("ne", a.im, b.im))


def isnan(a: Pair) -> Expr:
    return _bool("or", _bool("isnan", a.re), _bool("isnan", a.im))


def isinf(a: Pair) -> Expr:
    return _bool("or", _bool("isinf", a.re), _bool("isinf", a.im))


def isfinite(a: Pair) -> Expr:
    return _bool("and", _bool("isfinite", a.re), _bool("isfinite", a.im))


def where(cond: Expr, a: Pair, b: Pair, f: str) -> Pair:
    return Pair(_sel(cond, a.re, b.re, f), _sel(cond, a.im, b.im, f))


def _cast_part(x: Expr, src: str, dst: str) -> Expr:
    return x if src == dst else Op("cast", (x,), dst)


def cast(a: Value, src: str, dst: str) -> Value:
    """``a`` (dtype ``src``) as ``dst``, as NumPy's ``astype``: complex -> real keeps the real
    part, complex -> bool is ``re != 0 or im != 0``, real -> complex has a +0.0 imaginary part."""
    fs, fd = lane_dtype(src), lane_dtype(dst)
    if isinstance(a, Pair):
        if dst in LANE_DTYPES:
            return Pair(_cast_part(a.re, fs, fd), _cast_part(a.im, fs, fd))
        if dst == "bool":
            return _bool("or", _bool("ne", a.re, _c(0.0, fs)), _bool("ne", a.im, _c(0.0, fs)))
        return _cast_part(a.re, fs, dst)
    return Pair(_cast_part(a, src, fd), _c(0.0, fd))


def lower(op: str, args: list[Value], arg_dtypes: list[str], dtype: str) -> Value | None:
    """Primitive ``op`` on kernel values (pairs for complex operands) giving ``dtype``, or None
    when it has no lowering here (that op runs as a host step)."""
    if op == "cast":
        return cast(args[0], arg_dtypes[0], dtype)
    if op == "where":
        f = lane_dtype(dtype)
        return where(args[0], promote(args[1], f), promote(args[2], f), f)
    f = lane_dtype(next(d for d in arg_dtypes if d in LANE_DTYPES))
    xs = [promote(a, f) for a in args]
    if op == "real":
        return xs[0].re
    if op == "imag":
        return xs[0].im
    if op == "abs":
        return abs_(xs[0], f)
    pair_ops = {"add": add, "sub": sub, "mul": mul, "div": div, "neg": neg, "conj": conj,
                "square": square, "reciprocal": reciprocal, "sign": sign, "exp": exp, "sqrt": sqrt,
                "log": log, "log2": log2, "log10": log10, "exp2": exp2, "log1p": log1p, "expm1": expm1,
                "tanh": tanh, "sinh": sinh, "cosh": cosh, "sin": sin,
                "cos": cos}
    if op in pair_ops:
        return pair_ops[op](*xs, f)
    predicates = {"eq": eq, "ne": ne, "isnan": isnan, "isinf": isinf, "isfinite": isfinite}
    if op in predicates:
        return predicates[op](*xs)
    return None


# the primitives :func:`lower` computes on complex values (with ``reduce_sum``, a sum per part)
FUSED_OPS = frozenset({"cast", "where", "real", "imag", "abs", "add", "sub", "mul", "div", "neg", "conj",
                       "square", "reciprocal", "sign", "exp", "sqrt", "log", "log2", "log10", "exp2", "log1p",
                       "expm1", "tanh", "sinh", "cosh", "sin", "cos", "eq", "ne", "isnan", "isinf",
                       "isfinite"})
