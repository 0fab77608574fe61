"""The op table: every primitive op, defined once.

Each :class:`Prim` carries

* ``infer``  — the shape and dtype rule: ``infer(*in_avals, **params) -> AVal``;
* ``impl``   — the eager reference implementation on NumPy arrays;
* ``lower``  — elementwise ops only: the scalar lowering into kernel IR,
  ``lower(args: list[kir.Expr], dtype: str, **params) -> kir.Expr``, used by every target;
* ``vjp``    — the vector-Jacobian product for autograd,
  ``vjp(g, out, *inputs, **params) -> tuple[Tensor | None, ...]``, written with primitives.

Primitives are *strict*: elementwise operands already share one shape and one dtype (the
public functions in ``tracejit.api`` insert the broadcasts and casts), reductions keep the
reduced dims, movement ops take fully normalised parameters.  This keeps every rule here
small and makes broadcasting and promotion visible in the graph, where fusion turns them
into index arithmetic.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from codegen import kir

from . import dtypes as dt


class AVal(NamedTuple):
    """Abstract value: what is known about a tensor while tracing."""
    shape: tuple[int, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{self.dtype.name}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Prim:
    name: str
    kind: str                      # elementwise | reduce | movement | matmul | source | host
    infer: Callable[..., AVal]
    impl: Callable[..., np.ndarray]
    lower: Callable[..., kir.Expr] | None = None
    vjp: Callable[..., tuple] | None = None
    doc: str = ""


PRIMS: dict[str, Prim] = {}


def _register(p: Prim) -> Prim:
    assert p.name not in PRIMS, p.name
    PRIMS[p.name] = p
    return p


_prims_module: Any = None


def _ops():
    """The dispatcher and primitive helpers, imported late (they import this module); looked up
    once (every VJP asks)."""
    global _prims_module
    if _prims_module is None:
        from . import prims
        _prims_module = prims
    return _prims_module


# ----------------------------------------------------------------------------- shape rules

def _same(op: str, *avals: AVal) -> None:
    first = avals[0]
    for a in avals[1:]:
        if a.shape != first.shape:
            raise ValueError(f"{op}: operands have shapes {first.shape} and {a.shape} (primitives "
                             f"need equal shapes; broadcast first)")
        if a.dtype != first.dtype:
            raise TypeError(f"{op}: operands have dtypes {first.dtype.name} and {a.dtype.name}")


# (kind "V" is bfloat16, the one non-NumPy dtype: ml_dtypes registers it as a void-kind type)
_DTYPE_KINDS = {"float": "fV", "int": "iu", "bool": "b", "numeric": "iufcV", "intbool": "iub",
                "any": "biufcV", "inexact": "fcV", "real": "iufV", "realbool": "biufV", "complex": "c"}
_DTYPE_WORDS = {"float": "a real floating-point", "int": "an integer", "bool": "a boolean",
                "numeric": "a numeric", "intbool": "an integer or boolean", "inexact": "a floating-point",
                "real": "a real-valued numeric", "realbool": "a real-valued or boolean",
                "complex": "a complex floating-point"}


def _check_dtype(op: str, a: AVal, allowed: str) -> None:
    if a.dtype.kind not in _DTYPE_KINDS[allowed]:     # runs on every eager op: one lookup
        raise TypeError(f"{op} needs {_DTYPE_WORDS[allowed]} dtype, got {a.dtype.name}")


# ----------------------------------------------------------------------------- elementwise

def _kop(op: str) -> Callable[..., kir.Expr]:
    return lambda args, dtype, **_: kir.Op(op, tuple(args), dtype)


def _quiet_numpy() -> tuple[Any, Any]:
    """NumPy's error-state context variable and its value under ``errstate(all="ignore")``.

    Setting the variable directly costs a tenth of entering ``np.errstate`` (microseconds per
    eager op); without it (another NumPy layout) ``errstate`` itself is used."""
    try:
        from numpy._core._ufunc_config import _extobj_contextvar as var
    except ImportError:
        return None, None
    with np.errstate(all="ignore"):
        return var, var.get()


_ERR_VAR, _ERR_QUIET = _quiet_numpy()


def _np_out(fn: Callable[..., Any], out_dtype: np.dtype | None = None) -> Callable[..., np.ndarray]:
    """NumPy's ``fn`` as a primitive's reference: no floating-point warnings (overflow to inf and
    NaN are values, as in the kernels), the result in the primitive's dtype."""
    want_dtype = out_dtype

    def finish(r: Any, xs: tuple[np.ndarray, ...]) -> np.ndarray:
        if type(r) is not np.ndarray:
            r = np.asarray(r)
        want = want_dtype if want_dtype is not None else xs[0].dtype
        return r if r.dtype == want else r.astype(want)

    if _ERR_VAR is None:
        def impl(*xs: np.ndarray) -> np.ndarray:
            with np.errstate(all="ignore"):
                return finish(fn(*xs), xs)
        return impl
    var, quiet = _ERR_VAR, _ERR_QUIET

    def impl(*xs: np.ndarray) -> np.ndarray:       # (runs on every eager op: one call deep)
        token = var.set(quiet)
        try:
            r = fn(*xs)
        finally:
            var.reset(token)
        if type(r) is not np.ndarray:
            r = np.asarray(r)
        want = want_dtype if want_dtype is not None else xs[0].dtype
        return r if r.dtype == want else r.astype(want)
    return impl


# VJPs written for complex operands too (conjugate Wirtinger, as PyTorch); the others refuse them
COMPLEX_VJPS = frozenset({"exp", "log", "sqrt", "sin", "cos", "tanh", "square", "reciprocal", "neg", "add",
                          "sub", "mul", "div"})


def _real_only_vjp(name: str, vjp: Callable | None) -> Callable | None:
    if vjp is None or name in COMPLEX_VJPS:
        return vjp

    def checked(g, out, *xs, **params):
        if any(x.dtype.kind == "c" for x in xs):
            raise NotImplementedError(f"the gradient of {name} for complex inputs is not implemented")
        return vjp(g, out, *xs, **params)
    return checked


def unary(name: str, np_fn: Callable, allowed: str = "float", result: str = "same",
          vjp: Callable | None = None, kir_op: str | None = None) -> Prim:
    out_bool = result == "bool"
    vjp = _real_only_vjp(name, vjp)

    def infer(a: AVal) -> AVal:
        _check_dtype(name, a, allowed)
        return AVal(a.shape, dt.bool_) if out_bool else a

    impl = _np_out(np_fn, dt.bool_ if out_bool else None)
    return _register(Prim(name, "elementwise", infer, impl, _kop(kir_op or name), vjp))


def binary(name: str, np_fn: Callable, allowed: str = "numeric", result: str = "same",
           vjp: Callable | None = None, kir_op: str | None = None,
           lower: Callable[..., kir.Expr] | None = None) -> Prim:
    out_bool = result == "bool"
    vjp = _real_only_vjp(name, vjp)

    def infer(a: AVal, b: AVal) -> AVal:
        _same(name, a, b)
        _check_dtype(name, a, allowed)
        return AVal(a.shape, dt.bool_) if out_bool else a

    impl = _np_out(np_fn, dt.bool_ if out_bool else None)
    return _register(Prim(name, "elementwise", infer, impl, lower or _kop(kir_op or name), vjp))


# VJP helpers: written with the strict primitives, so they trace under jit and fuse.
def _P():  # noqa: N802
    return _ops()


def _vjp_neg(g, out, x):
    return (_P().neg(g),)


def _cj(x):
    """``conj(x)``: complex VJPs are ``g * conj(f'(z))``, the conjugate Wirtinger derivative PyTorch
    uses (identity for real ``x``)."""
    return _P().conj(x) if x.dtype.kind == "c" else x


def _vjp_exp(g, out, x):
    return (_P().mul(g, _cj(out)),)


def _vjp_log(g, out, x):
    return (_P().div(g, _cj(x)),)


def _vjp_sqrt(g, out, x):
    P = _P()
    return (P.div(g, P.mul(P.full_like(out, 2.0), _cj(out))),)


def _vjp_sin(g, out, x):
    return (_P().mul(g, _cj(_P().cos(x))),)


def _vjp_cos(g, out, x):
    return (_P().neg(_P().mul(g, _cj(_P().sin(x)))),)


def _vjp_tanh(g, out, x):
    P = _P()
    return (P.mul(g, _cj(P.sub(P.full_like(out, 1.0), P.mul(out, out)))),)


def _vjp_expm1(g, out, x):
    P = _P()
    return (P.mul(g, P.add(out, P.full_like(out, 1.0))),)


def _vjp_log1p(g, out, x):
    P = _P()
    return (P.div(g, P.add(x, P.full_like(x, 1.0))),)


def _vjp_exp2(g, out, x):
    P = _P()
    return (P.mul(g, P.mul(out, P.full_like(out, math.log(2.0)))),)


def _vjp_log_base(base):
    def vjp(g, out, x):
        P = _P()
        return (P.div(g, P.mul(x, P.full_like(x, math.log(base)))),)
    return vjp


def _vjp_tan(g, out, x):
    P = _P()
    return (P.mul(g, P.add(P.full_like(out, 1.0), P.mul(out, out))),)


def _vjp_asin(g, out, x):
    P = _P()
    return (P.div(g, P.sqrt(P.sub(P.full_like(x, 1.0), P.mul(x, x)))),)


def _vjp_acos(g, out, x):
    return (_P().neg(_vjp_asin(g, out, x)[0]),)


def _vjp_atan(g, out, x):
    P = _P()
    return (P.div(g, P.add(P.full_like(x, 1.0), P.mul(x, x))),)


def _vjp_sinh(g, out, x):
    return (_P().mul(g, _P().cosh(x)),)


def _vjp_cosh(g, out, x):
    return (_P().mul(g, _P().sinh(x)),)


def _vjp_asinh(g, out, x):
    P = _P()
    return (P.div(g, P.sqrt(P.add(P.mul(x, x), P.full_like(x, 1.0)))),)


def _vjp_acosh(g, out, x):
    P = _P()
    return (P.div(g, P.sqrt(P.sub(P.mul(x, x), P.full_like(x, 1.0)))),)


def _vjp_atanh(g, out, x):
    P = _P()
    return (P.div(g, P.sub(P.full_like(x, 1.0), P.mul(x, x))),)


def _vjp_erf(g, out, x):
    P = _P()
    scale = P.full_like(x, 2.0 / math.sqrt(math.pi))
    return (P.mul(g, P.mul(scale, P.exp(P.neg(P.mul(x, x))))),)


def _vjp_abs(g, out, x):
    P = _P()
    if x.dtype.kind == "c":         # g * x / |x| (0 at 0), as PyTorch's sgn
        return (P.mul(P.cast(g, dtype=x.dtype), P.sign(x)),)
    return (P.mul(g, P.sign(x)),)


def _sign(x: np.ndarray) -> np.ndarray:
    """``sign``; of a complex number ``x / |x|`` (0 at 0), the standard's and NumPy 2's definition."""
    if x.dtype.kind != "c":
        return np.sign(x)
    mag = np.abs(x)
    with np.errstate(all="ignore"):
        return np.where(mag == 0, 0, x / np.where(mag == 0, 1, mag)).astype(x.dtype)


def _vjp_zero(g, out, *xs):
    return tuple(_P().zeros_like(x) if dt.is_float(x.dtype) else None for x in xs)


def _vjp_square(g, out, x):
    P = _P()
    return (P.mul(g, _cj(P.mul(P.full_like(x, 2.0), x))),)


def _vjp_reciprocal(g, out, x):
    P = _P()
    return (P.neg(P.mul(g, _cj(P.mul(out, out)))),)


def _vjp_rsqrt(g, out, x):
    P = _P()
    return (P.mul(g, P.mul(P.full_like(x, -0.5), P.div(out, x))),)


def _vjp_add(g, out, a, b):
    return g, g


def _vjp_sub(g, out, a, b):
    return g, _P().neg(g)


def _vjp_mul(g, out, a, b):
    P = _P()
    return P.mul(g, _cj(b)), P.mul(g, _cj(a))


def _vjp_div(g, out, a, b):
    P = _P()
    ga = P.div(g, _cj(b))
    return ga, P.neg(P.mul(ga, _cj(out)))


def _vjp_pow(g, out, a, b):
    P = _P()
    one = P.placed_like(P.full_like(b, 1.0), a)     # (b - 1 on a's device: b may be a host scalar)
    ga = P.mul(g, P.mul(b, P.pow(a, P.sub(b, one))))
    # d/db a**b = a**b * log(a); defined as 0 where a == 0 (as PyTorch does)
    zero = P.zeros_like(a)
    safe_log = P.where(P.eq(a, zero), zero, P.log(a))
    return ga, P.mul(g, P.mul(out, safe_log))


def _select_grad(mask_a):
    def vjp(g, out, a, b):
        P = _P()
        m = mask_a(a, b)
        zero = P.zeros_like(g)
        return P.where(m, g, zero), P.where(m, zero, g)
    return vjp


def _vjp_atan2(g, out, a, b):
    P = _P()
    den = P.add(P.mul(a, a), P.mul(b, b))
    return P.mul(g, P.div(b, den)), P.neg(P.mul(g, P.div(a, den)))


def _vjp_hypot(g, out, a, b):
    P = _P()
    return P.mul(g, P.div(a, out)), P.mul(g, P.div(b, out))


def _vjp_logaddexp(g, out, a, b):
    P = _P()
    return P.mul(g, P.exp(P.sub(a, out))), P.mul(g, P.exp(P.sub(b, out)))


def _vjp_copysign(g, out, a, b):
    P = _P()
    return P.mul(g, P.mul(P.sign(a), P.sign(out))), None


def _expm1(x: np.ndarray) -> np.ndarray:
    """``exp(x) - 1``; for complex ``x = a + bj`` as ``expm1(a) cos(b) - 2 sin(b/2)**2 + e**a sin(b) j``
    (accurate near 0; NumPy's complex expm1 misses the standard's special cases), and through
    ``exp`` where a part is not finite (C99's special cases, less 1)."""
    if x.dtype.kind != "c":
        return np.expm1(x)
    a, b = x.real, x.imag
    half = np.sin(b / 2)
    out = (np.expm1(a) * np.cos(b) - 2 * half * half) + 1j * (np.exp(a) * np.sin(b))
    finite = np.isfinite(a) & np.isfinite(b)
    return np.where(finite, out, np.exp(x) - 1).astype(x.dtype)


def _tanh(x: np.ndarray) -> np.ndarray:
    """``tanh``; of ``+-inf + bj`` with finite ``b`` it is ``+-1 + 0j`` with the zero signed as ``b``
    (the standard's special case; C99 and NumPy sign it as ``sin(2b)``)."""
    r = np.tanh(x)
    if x.dtype.kind != "c":
        return r
    edge = np.isinf(x.real) & np.isfinite(x.imag)
    if edge.any():
        r = np.array(r)
        r.real[edge] = np.sign(x.real[edge])      # (parts set apart: 1j * -0.0 would lose the sign)
        r.imag[edge] = np.copysign(0.0, x.imag[edge])
    return r


def _bool_vjp(g, out, *xs):
    return tuple(None for _ in xs)


for _name, _fn, _vjp in [
    ("exp", np.exp, _vjp_exp), ("exp2", np.exp2, _vjp_exp2), ("expm1", _expm1, _vjp_expm1),
    ("log", np.log, _vjp_log), ("log2", np.log2, _vjp_log_base(2.0)),
    ("log10", np.log10, _vjp_log_base(10.0)), ("log1p", np.log1p, _vjp_log1p),
    ("sqrt", np.sqrt, _vjp_sqrt), ("rsqrt", lambda x: 1 / np.sqrt(x), _vjp_rsqrt),
    ("sin", np.sin, _vjp_sin), ("cos", np.cos, _vjp_cos), ("tan", np.tan, _vjp_tan),
    ("asin", np.arcsin, _vjp_asin), ("acos", np.arccos, _vjp_acos), ("atan", np.arctan, _vjp_atan),
    ("sinh", np.sinh, _vjp_sinh), ("cosh", np.cosh, _vjp_cosh), ("tanh", _tanh, _vjp_tanh),
    ("asinh", np.arcsinh, _vjp_asinh), ("acosh", np.arccosh, _vjp_acosh),
    ("atanh", np.arctanh, _vjp_atanh), ("reciprocal", lambda x: 1 / x, _vjp_reciprocal),
]:
    unary(_name, _fn, "inexact", vjp=_vjp)     # (complex operands run as host steps under jit)


def _erf(x: np.ndarray) -> np.ndarray:
    """NumPy has no erf; vectorised math.erf in float64 is exact enough for a reference."""
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype) if x.size else x.copy()


unary("erf", _erf, "float", vjp=_vjp_erf)
unary("neg", np.negative, "numeric", vjp=_vjp_neg)


def _abs_infer(a: AVal) -> AVal:
    _check_dtype("abs", a, "numeric")
    return AVal(a.shape, dt.real_dtype(a.dtype))       # |complex| is real


_register(Prim("abs", "elementwise", _abs_infer, lambda x: np.abs(x), _kop("abs"), _vjp_abs))


def _part_infer(op: str):
    def infer(a: AVal) -> AVal:
        _check_dtype(op, a, "complex")
        return AVal(a.shape, a.dtype if op == "conj" else dt.real_dtype(a.dtype))
    return infer


def _vjp_real(g, out, x):
    return (_P().cast(g, dtype=x.dtype),)


def _vjp_imag(g, out, x):
    # d imag(z) / d z_im = 1: the gradient i*g
    P = _P()
    return (P.mul(P.cast(g, dtype=x.dtype), P.full_like(x, 1j)),)


# complex parts: only complex operands reach them (the API returns a real operand as it is)
_register(Prim("conj", "elementwise", _part_infer("conj"), np.conj, _kop("conj"),
               lambda g, out, x: (_P().conj(g),)))
_register(Prim("real", "elementwise", _part_infer("real"), lambda x: np.real(x).copy(), _kop("real"),
               _vjp_real))
_register(Prim("imag", "elementwise", _part_infer("imag"), lambda x: np.imag(x).copy(), _kop("imag"),
               _vjp_imag))
unary("sign", _sign, "numeric", vjp=_vjp_zero)
unary("square", np.square, "numeric", vjp=_vjp_square)
for _name, _fn in [("floor", np.floor), ("ceil", np.ceil), ("trunc", np.trunc)]:
    unary(_name, _fn, "real", vjp=_vjp_zero)
unary("round", np.round, "numeric", vjp=_vjp_zero)
for _name, _fn in [("isnan", np.isnan), ("isinf", np.isinf), ("isfinite", np.isfinite)]:
    unary(_name, _fn, "any", result="bool", vjp=_bool_vjp)
unary("signbit", np.signbit, "realbool", result="bool", vjp=_bool_vjp)
unary("logical_not", np.logical_not, "bool", kir_op="not", vjp=_bool_vjp)
unary("bitwise_invert", np.invert, "intbool", kir_op="invert", vjp=_bool_vjp)


def _floordiv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if dt.is_int(a.dtype):  # integer division by zero gives 0 (NumPy also does, with a warning)
        return np.floor_divide(a, np.where(b == 0, 1, b)) * (b != 0)
    return np.floor_divide(a, b)


def _mod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if dt.is_int(a.dtype):
        return np.remainder(a, np.where(b == 0, 1, b)) * (b != 0)
    return np.remainder(a, b)


def _int_pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a ** b``; for integers a negative ``b`` (an error in NumPy, which compiled code cannot
    raise per element) gives the integer part of ``1 / a**|b|``: 1 for ``a == 1``, +-1 for
    ``a == -1`` by the parity of ``b``, else 0 (also for ``a == 0``, as integer division by 0)."""
    if not dt.is_int(a.dtype):
        if a.dtype != dt.float16 and b.size and (b.size == 1 or 0 in b.strides) and np.all(b == 0.5):
            return np.sqrt(a)   # NumPy's loop for a broadcast 0.5, which one element is too
        return np.power(a, b)
    neg = b < 0
    r = np.power(a, np.where(neg, 0, b))
    if not neg.any():
        return r
    one = np.ones_like(r)
    small = np.where(a == 1, one, np.where(a == -1, np.where(b % 2 == 0, one, -one), 0 * one))
    return np.where(neg, small, r).astype(a.dtype)


def _shift(fn):
    def impl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        bits = a.dtype.itemsize * 8
        big = (b >= bits) | (b < 0)
        r = fn(a, np.where(big, 0, b))
        fill = np.where(a < 0, -1, 0).astype(a.dtype) if fn is np.right_shift else np.zeros_like(a)
        return np.where(big, fill, r)
    return impl


binary("add", np.add, vjp=_vjp_add)
binary("sub", np.subtract, vjp=_vjp_sub)
binary("mul", np.multiply, vjp=_vjp_mul)
binary("div", np.true_divide, "inexact", vjp=_vjp_div)
binary("floordiv", _floordiv, "real", vjp=_vjp_zero)
binary("mod", _mod, "real", vjp=lambda g, out, a, b: (g, None))
def _lower_pow(args, dtype, **_):
    # NumPy's float32/float64 power loops take a broadcast (stride-0) exponent of 0.5 as sqrt,
    # so (-inf) ** 0.5 is nan and (-0.0) ** 0.5 is -0.0 (C's pow, and NumPy's float16 loop, give
    # inf and 0.0); a kernel's uniform exponent is that case
    x, e = args
    if isinstance(e, kir.Const) and e.value == 0.5 and dtype in ("float32", "float64"):
        return kir.Op("sqrt", (x,), dtype)
    return kir.Op("pow", tuple(args), dtype)


binary("pow", _int_pow, vjp=_vjp_pow, lower=_lower_pow)
binary("max", np.maximum, "real", vjp=_select_grad(lambda a, b: _P().ge(a, b)))
binary("min", np.minimum, "real", vjp=_select_grad(lambda a, b: _P().le(a, b)))
binary("atan2", np.arctan2, "float", vjp=_vjp_atan2)
binary("copysign", np.copysign, "float", vjp=_vjp_copysign)
binary("hypot", np.hypot, "float", vjp=_vjp_hypot)
binary("logaddexp", np.logaddexp, "float", vjp=_vjp_logaddexp)
binary("nextafter", np.nextafter, "float", vjp=_bool_vjp)
binary("and", np.bitwise_and, "intbool", vjp=_bool_vjp)
binary("or", np.bitwise_or, "intbool", vjp=_bool_vjp)
binary("xor", np.bitwise_xor, "intbool", vjp=_bool_vjp)
binary("shl", _shift(np.left_shift), "int", vjp=_bool_vjp)
binary("shr", _shift(np.right_shift), "int", vjp=_bool_vjp)
for _name, _fn in [("eq", np.equal), ("ne", np.not_equal)]:
    binary(_name, _fn, "any", result="bool", vjp=_bool_vjp)
for _name, _fn in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal)]:
    binary(_name, _fn, "realbool", result="bool", vjp=_bool_vjp)


def _where_infer(c: AVal, a: AVal, b: AVal) -> AVal:
    _same("where", a, b)
    if c.shape != a.shape:
        raise ValueError(f"where: condition has shape {c.shape}, values have shape {a.shape}")
    if not dt.is_bool(c.dtype):
        raise TypeError(f"where: condition must be bool, got {c.dtype.name}")
    return a


def _vjp_where(g, out, c, a, b):
    P = _P()
    zero = P.zeros_like(g)
    return None, P.where(c, g, zero), P.where(c, zero, g)


_register(Prim("where", "elementwise", _where_infer, lambda c, a, b: np.where(c, a, b),
               _kop("where"), _vjp_where))


def _cast_infer(a: AVal, *, dtype: np.dtype) -> AVal:
    return AVal(a.shape, dtype)


def _cast_impl(a: np.ndarray, *, dtype: np.dtype) -> np.ndarray:
    with np.errstate(all="ignore"):
        if a.dtype == dt.bfloat16 and not dt.is_float(dtype):
            a = a.astype(dt.float32)   # bfloat16 -> int/bool follows float32's rules, as kernels do
        return a.astype(dtype)


def _vjp_cast(g, out, a, *, dtype):
    if not (dt.is_inexact(a.dtype) and dt.is_inexact(dtype)):
        return (None,)
    if dt.is_complex(dtype) and not dt.is_complex(a.dtype):     # real -> complex: the real part
        return (_P().cast(_P().real(g), dtype=a.dtype),)
    return (_P().cast(g, dtype=a.dtype),)


_register(Prim("cast", "elementwise", _cast_infer, _cast_impl,
               lambda args, dtype, **_: kir.Op("cast", tuple(args), dtype), _vjp_cast))

ELEMENTWISE = frozenset(n for n, p in PRIMS.items() if p.kind == "elementwise")


# ----------------------------------------------------------------------------- reductions
# ``axes`` is a sorted tuple of non-negative dims; the reduced dims are kept with extent 1.

def _reduce_infer(op: str, allowed: str = "any", out: np.dtype | None = None):
    def infer(a: AVal, *, axes: tuple[int, ...]) -> AVal:
        _check_dtype(op, a, allowed)
        for ax in axes:
            if not 0 <= ax < len(a.shape):
                raise ValueError(f"{op}: axis {ax} out of range for shape {a.shape}")
        if op in ("reduce_max", "reduce_min", "argmax", "argmin") and any(a.shape[ax] == 0 for ax in axes):
            raise ValueError(f"{op}: zero-size reduction over axes {axes} of shape {a.shape} has no identity")
        shape = tuple(1 if i in axes else n for i, n in enumerate(a.shape))
        return AVal(shape, out or a.dtype)
    return infer


def _vjp_reduce_sum(g, out, x, *, axes):
    return (_P().expand(g, shape=x.shape),)


def _vjp_reduce_prod(g, out, x, *, axes):
    P = _P()
    return (P.mul(P.expand(g, shape=x.shape), _cj(P.div(P.expand(out, shape=x.shape), x))),)


def _vjp_reduce_extreme(g, out, x, *, axes):
    # the gradient goes to every position that attains the extreme, shared equally (as JAX does)
    P = _P()
    hit = P.cast(P.eq(x, P.expand(out, shape=x.shape)), dtype=x.dtype)
    count = P.reduce_sum(hit, axes=axes)
    return (P.mul(hit, P.expand(P.div(g, count), shape=x.shape)),)


def _reduce_impl(fn):
    def impl(a: np.ndarray, *, axes: tuple[int, ...]) -> np.ndarray:
        return np.asarray(fn(a, axis=axes, keepdims=True)).astype(a.dtype, copy=False)
    return impl


_register(Prim("reduce_sum", "reduce", _reduce_infer("reduce_sum", "numeric"), _reduce_impl(np.add.reduce),
               vjp=_vjp_reduce_sum))
_register(Prim("reduce_prod", "reduce", _reduce_infer("reduce_prod", "numeric"),
               _reduce_impl(np.multiply.reduce),
               vjp=_vjp_reduce_prod))
_register(Prim("reduce_max", "reduce", _reduce_infer("reduce_max", "realbool"),
               _reduce_impl(np.maximum.reduce), vjp=_vjp_reduce_extreme))
_register(Prim("reduce_min", "reduce", _reduce_infer("reduce_min", "realbool"),
               _reduce_impl(np.minimum.reduce), vjp=_vjp_reduce_extreme))


def _arg_impl(fn):
    def impl(a: np.ndarray, *, axes: tuple[int, ...]) -> np.ndarray:
        (ax,) = axes
        return np.asarray(fn(a, axis=ax, keepdims=True)).astype(np.int64)
    return impl


def _arg_infer(op: str):
    base = _reduce_infer(op, "real", dt.int64)

    def infer(a: AVal, *, axes: tuple[int, ...]) -> AVal:
        if len(axes) != 1:
            raise ValueError(f"{op} reduces exactly one axis, got {axes}")
        return base(a, axes=axes)
    return infer


_register(Prim("argmax", "reduce", _arg_infer("argmax"), _arg_impl(np.argmax), vjp=_bool_vjp))
_register(Prim("argmin", "reduce", _arg_infer("argmin"), _arg_impl(np.argmin), vjp=_bool_vjp))

REDUCTIONS = {"reduce_sum": "sum", "reduce_prod": "prod", "reduce_max": "max", "reduce_min": "min",
              "argmax": "argmax", "argmin": "argmin"}


# ----------------------------------------------------------------------------- movement (views)

def _reshape_infer(a: AVal, *, shape: tuple[int, ...]) -> AVal:
    if math.prod(shape) != math.prod(a.shape):
        raise ValueError(f"reshape: cannot reshape {a.shape} ({math.prod(a.shape)} elements) "
                         f"to {shape} ({math.prod(shape)} elements)")
    return AVal(tuple(shape), a.dtype)


def _vjp_reshape(g, out, x, *, shape):
    return (_P().reshape(g, shape=x.shape),)


def _permute_infer(a: AVal, *, perm: tuple[int, ...]) -> AVal:
    if sorted(perm) != list(range(len(a.shape))):
        raise ValueError(f"permute_dims: {perm} is not a permutation of the {len(a.shape)} axes of {a.shape}")
    return AVal(tuple(a.shape[p] for p in perm), a.dtype)


def _vjp_permute(g, out, x, *, perm):
    return (_P().permute(g, perm=tuple(int(i) for i in np.argsort(perm))),)


def _expand_infer(a: AVal, *, shape: tuple[int, ...]) -> AVal:
    if len(shape) != len(a.shape) or any(s != n and s != 1 for s, n in zip(a.shape, shape)):
        raise ValueError(f"broadcast_to: cannot broadcast shape {a.shape} to {shape}")
    return AVal(tuple(shape), a.dtype)


def _vjp_expand(g, out, x, *, shape):
    # The leading dims a broadcast added (``reshape`` to (1, ..., 1) + shape, then ``expand``) are
    # summed over at every extent, 1 included: the gradient of a bias added to a batch of one then
    # has the graph (and the kernels) it has at every other batch size.
    lead = _leading_ones_added(x)
    axes = tuple(i for i, (s, n) in enumerate(zip(x.shape, shape)) if s != n or i < lead)
    return (_P().reduce_sum(g, axes=axes) if axes else g,)


def _leading_ones_added(x: Any) -> int:
    """How many leading extent-1 dims the reshape that made traced ``x`` prepended (0 if none)."""
    trace = getattr(x, "_trace", None)
    if trace is None or x._node not in trace.graph:
        return 0
    node = trace.graph.node(x._node)
    if node.op != "reshape":
        return 0
    src = trace.graph.node(node.inputs[0]).shape
    k = len(node.shape) - len(src)
    return k if k > 0 and node.shape == (1,) * k + tuple(src) else 0


def _slice_infer(a: AVal, *, start: tuple[int, ...], stop: tuple[int, ...], step: tuple[int, ...]) -> AVal:
    if not len(start) == len(stop) == len(step) == len(a.shape):
        raise ValueError(f"slice: parameters do not match rank of {a.shape}")
    return AVal(tuple(len(range(b, e, s)) for b, e, s in zip(start, stop, step)), a.dtype)


def _slice_impl(a: np.ndarray, *, start, stop, step) -> np.ndarray:
    idx = tuple(slice(b, e if e >= 0 else None, s) for b, e, s in zip(start, stop, step))
    return a[idx]


def _vjp_slice(g, out, x, *, start, stop, step):
    # scatter g back: for positive steps pad; negative steps are flips of positive ones
    P = _P()
    if all(s > 0 for s in step) and all(s == 1 for s in step):
        pads = tuple((b, n - b - k) for b, n, k in zip(start, x.shape, g.shape))
        return (P.pad(g, pads=pads, value=0.0),)
    return (P.slice_scatter(P.zeros_like(x), g, start=start, stop=stop, step=step),)


def _pad_infer(a: AVal, *, pads: tuple[tuple[int, int], ...], value: float) -> AVal:
    if len(pads) != len(a.shape) or any(lo < 0 or hi < 0 for lo, hi in pads):
        raise ValueError(f"pad: widths {pads} do not fit shape {a.shape} (non-negative, one pair per dim)")
    return AVal(tuple(n + lo + hi for n, (lo, hi) in zip(a.shape, pads)), a.dtype)


def _pad_impl(a: np.ndarray, *, pads, value) -> np.ndarray:
    return np.pad(a, pads, constant_values=np.array(value).astype(a.dtype))


def _vjp_pad(g, out, x, *, pads, value):
    start = tuple(lo for lo, _ in pads)
    stop = tuple(lo + n for (lo, _), n in zip(pads, x.shape))
    return (_P().slice(g, start=start, stop=stop, step=(1,) * len(pads)),)


def _slice_scatter_infer(base: AVal, src: AVal, *, start, stop, step) -> AVal:
    want = _slice_infer(base, start=start, stop=stop, step=step)
    if want.shape != src.shape:
        raise ValueError(f"setitem: cannot assign shape {src.shape} to a slice of shape {want.shape}")
    _same("setitem", AVal(src.shape, base.dtype), src)
    return base


def _slice_scatter_impl(base: np.ndarray, src: np.ndarray, *, start, stop, step) -> np.ndarray:
    out = base.copy()
    out[tuple(slice(b, e if e >= 0 else None, s) for b, e, s in zip(start, stop, step))] = src
    return out


def _vjp_slice_scatter(g, out, base, src, *, start, stop, step):
    P = _P()
    return (P.slice_scatter(g, P.zeros_like(src), start=start, stop=stop, step=step),
            P.slice(g, start=start, stop=stop, step=step))


def _concat_infer(*avals: AVal, axis: int) -> AVal:
    first = avals[0]
    for a in avals[1:]:
        if len(a.shape) != len(first.shape) or any(
                s != t for i, (s, t) in enumerate(zip(a.shape, first.shape)) if i != axis):
            raise ValueError(f"concat: shapes {first.shape} and {a.shape} differ outside axis {axis}")
        if a.dtype != first.dtype:
            raise TypeError(f"concat: dtypes {first.dtype.name} and {a.dtype.name} differ")
    shape = list(first.shape)
    shape[axis] = sum(a.shape[axis] for a in avals)
    return AVal(tuple(shape), first.dtype)


def _vjp_concat(g, out, *xs, axis):
    P = _P()
    grads, at = [], 0
    for x in xs:
        start = tuple(at if i == axis else 0 for i in range(len(x.shape)))
        stop = tuple(at + x.shape[i] if i == axis else n for i, n in enumerate(x.shape))
        grads.append(P.slice(g, start=start, stop=stop, step=(1,) * len(x.shape)))
        at += x.shape[axis]
    return tuple(grads)


_register(Prim("reshape", "movement", _reshape_infer, lambda a, *, shape: a.reshape(shape), vjp=_vjp_reshape))
_register(Prim("permute", "movement", _permute_infer, lambda a, *, perm: a.transpose(perm), vjp=_vjp_permute))
_register(Prim("expand", "movement", _expand_infer, lambda a, *, shape: np.broadcast_to(a, shape),
               vjp=_vjp_expand))
_register(Prim("slice", "movement", _slice_infer, _slice_impl, vjp=_vjp_slice))
_register(Prim("pad", "movement", _pad_infer, _pad_impl, vjp=_vjp_pad))
_register(Prim("concat", "movement", _concat_infer, lambda *xs, axis: np.concatenate(xs, axis=axis),
               vjp=_vjp_concat))
_register(Prim("slice_scatter", "movement", _slice_scatter_infer, _slice_scatter_impl,
               vjp=_vjp_slice_scatter))


# ----------------------------------------------------------------------------- matmul

def _matmul_infer(a: AVal, b: AVal) -> AVal:
    if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned "
                         f"(need (..., m, k) @ (..., k, n) with equal batch dims)")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: dtypes {a.dtype.name} and {b.dtype.name} differ")
    if dt.is_bool(a.dtype):
        raise TypeError("matmul needs a numeric dtype, got bool")
    return AVal(a.shape[:-1] + b.shape[-1:], a.dtype)


def _vjp_matmul(g, out, a, b):
    P = _P()
    perm = tuple(range(len(a.shape) - 2)) + (len(a.shape) - 1, len(a.shape) - 2)
    return P.matmul(g, _cj(P.permute(b, perm=perm))), P.matmul(_cj(P.permute(a, perm=perm)), g)


def _matmul_impl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "c":
        return np.matmul(a, b)
    # the same GEMM as compiled code (runtime.cpu_gemm), so eager and jit agree and no BLAS
    # thread pool competes with the kernel threads
    from runtime.cpu_gemm import matmul
    out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]),
                   np.result_type(a, b))
    matmul(a, b, out)
    return out


_register(Prim("matmul", "matmul", _matmul_infer, _matmul_impl, vjp=_vjp_matmul))


# ----------------------------------------------------------------------------- sources
# ``constant`` holds a NumPy array (hashed by content); ``iota`` counts along one dim.

def _constant_infer(*, value: Any, runtime: bool = False) -> AVal:
    return AVal(value.shape, value.dtype)


def _iota_infer(*, shape: tuple[int, ...], axis: int, dtype: np.dtype) -> AVal:
    return AVal(tuple(shape), dtype)


def _iota_impl(*, shape, axis, dtype) -> np.ndarray:
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(np.arange(shape[axis], dtype=dtype).reshape(view), shape)


# ``runtime``: a size-derived number (a mean's count) that kernels read as an argument rather
# than compile in, so one kernel serves every batch size; the passes neither fold nor simplify it
_register(Prim("constant", "source", _constant_infer, lambda *, value, runtime=False: value))
_register(Prim("iota", "source", _iota_infer, _iota_impl))


# ----------------------------------------------------------------------------- host-only ops
# Data-dependent or sequential ops that run through NumPy; under ``jit`` they run as host
# steps between kernels (interpreter) or are rejected by the compiler with the op's name.

def _sort_infer(a: AVal, *, axis: int, descending: bool, stable: bool) -> AVal:
    _check_dtype("sort", a, "any")
    return a


def _argsort_impl(a, *, axis, descending, stable):
    if descending:
        # stable descending without negation (which overflows for unsigned and minimum ints):
        # stable-sort the reversed array ascending, then reverse the result and map indices back
        n = a.shape[axis]
        idx = np.argsort(np.flip(a, axis=axis), axis=axis, kind="stable")
        return np.flip(n - 1 - idx, axis=axis).astype(np.int64)
    return np.argsort(a, axis=axis, kind="stable").astype(np.int64)


def _sort_impl(a, *, axis, descending, stable):
    if descending:
        return np.take_along_axis(a, _argsort_impl(a, axis=axis, descending=True, stable=True), axis=axis)
    return np.sort(a, axis=axis, kind="stable")


def _cumsum_infer(a: AVal, *, axis: int, include_initial: bool) -> AVal:
    _check_dtype("cumulative_sum", a, "any")
    shape = list(a.shape)
    if include_initial:
        shape[axis] += 1
    out = dt.default_int if dt.is_bool(a.dtype) else a.dtype
    return AVal(tuple(shape), out)


def _cumsum_impl(a, *, axis, include_initial):
    out_dtype = np.int64 if a.dtype == np.bool_ else a.dtype
    r = np.cumsum(a, axis=axis, dtype=out_dtype)
    if include_initial:
        pads = [(0, 0)] * a.ndim
        pads[axis] = (1, 0)
        r = np.pad(r, pads)
    return r


def _vjp_cumsum(g, out, x, *, axis, include_initial):
    P = _P()
    if include_initial:
        n = g.shape[axis]
        g = P.slice(g, start=tuple(1 if i == axis else 0 for i in range(len(g.shape))),
                    stop=tuple(n if i == axis else s for i, s in enumerate(g.shape)),
                    step=(1,) * len(g.shape))
    flip = P.flip(g, axis=axis)
    return (P.flip(P.cumulative_sum(flip, axis=axis, include_initial=False), axis=axis),)


def _take_infer(a: AVal, idx: AVal, *, axis: int) -> AVal:
    if not dt.is_int(idx.dtype):
        raise TypeError(f"take: indices must be integers, got {idx.dtype.name}")
    return AVal(a.shape[:axis] + idx.shape + a.shape[axis + 1:], a.dtype)


def _take_impl(a, idx, *, axis):
    n = a.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"take: index out of range for axis {axis} with size {n}")
    return np.take(a, idx, axis=axis)


def _vjp_take(g, out, a, idx, *, axis):
    return _P().scatter_add(_P().zeros_like(a), idx, g, axis=axis), None


def _scatter_add_infer(base: AVal, idx: AVal, src: AVal, *, axis: int) -> AVal:
    return base


def _scatter_add_impl(base, idx, src, *, axis):
    """``base`` with ``src``'s slices added at ``idx`` along ``axis`` (repeated indices add up, in
    order): the generated kernel (``runtime.cpu_scatter``), or ``np.add.at`` for other dtypes."""
    from runtime.cpu_scatter import scatter_add
    n = base.shape[axis]
    idx = np.asarray(idx)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"scatter_add: index out of range for axis {axis} with size {n}")
    out = scatter_add(base, np.where(idx < 0, idx + n, idx).astype(np.int64, copy=False), src, axis)
    return out if out is not None else _scatter_add_numpy(base, idx, src, axis=axis)


def _scatter_add_numpy(base, idx, src, *, axis):
    out = base.copy()
    moved = np.moveaxis(out, axis, 0)
    src_moved = np.moveaxis(src.reshape(base.shape[:axis] + (idx.size,) + base.shape[axis + 1:]), axis, 0)
    np.add.at(moved, idx.reshape(-1), src_moved)
    return out


def _index_check_infer(idx: AVal, *, size: int) -> AVal:
    if not dt.is_int(idx.dtype):
        raise TypeError(f"take: indices must be integers, got {idx.dtype.name}")
    return AVal(idx.shape, dt.int64)


def _index_check_impl(idx, *, size):
    """Indices into an axis of ``size`` as int64 in [0, size) (negative ones count from the end),
    or IndexError: what lets a compiled gather load them without a bounds check of its own."""
    r = np.asarray(idx, dtype=np.int64)
    if r.size and (r.min() < -size or r.max() >= size):
        raise IndexError(f"take: index out of range for an axis of size {size} "
                         f"(indices in [{int(r.min())}, {int(r.max())}])")
    return np.where(r < 0, r + size, r) if r.size and r.min() < 0 else r


def _label_check_impl(labels, *, size, ignore_index, op):
    """Class labels unchanged, or IndexError naming the first one outside [0, size) that is not
    ``ignore_index`` (what an eager loss checks before it runs, as a step of the program)."""
    bad = (labels < 0) | (labels >= size)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bad.any():
        allowed = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
        raise IndexError(f"{op}: labels must be in [0, {size}){allowed}, got {int(labels[bad].flat[0])}")
    return labels


_register(Prim("index_check", "host", _index_check_infer, _index_check_impl, vjp=_bool_vjp))
_register(Prim("label_check", "host", lambda labels, **p: labels, _label_check_impl, vjp=_bool_vjp))
# ops that raise on bad data: dead code elimination keeps them
CHECKS = frozenset({"index_check", "label_check"})
_register(Prim("sort", "host", _sort_infer, _sort_impl, vjp=None))
_register(Prim("argsort", "host", lambda a, **p: AVal(a.shape, dt.int64), _argsort_impl, vjp=_bool_vjp))
_register(Prim("cumulative_sum", "host", _cumsum_infer, _cumsum_impl, vjp=_vjp_cumsum))
_register(Prim("take", "host", _take_infer, _take_impl, vjp=_vjp_take))
# a take whose indices an index_check made (in range, non-negative): what a GPU program's
# gather is compiled as (compiler.device_gathers), launched as a kernel there
_register(Prim("take_checked", "host", _take_infer, lambda a, idx, *, axis: np.take(a, idx, axis=axis)))
_register(Prim("scatter_add", "host", _scatter_add_infer, _scatter_add_impl,
               vjp=lambda g, out, base, idx, src, *, axis: (g, None, _P().take(g, idx, axis=axis))))


def _cumprod_impl(a, *, axis, include_initial):
    r = np.cumprod(a, axis=axis, dtype=np.int64 if a.dtype == np.bool_ else a.dtype)
    if include_initial:
        pads = [(0, 0)] * a.ndim
        pads[axis] = (1, 0)
        r = np.pad(r, pads, constant_values=1)
    return r


def _searchsorted_infer(sorted_: AVal, values: AVal, *, side: str) -> AVal:
    if len(sorted_.shape) != 1:
        raise ValueError(f"searchsorted: the sorted sequence must be 1-D, got shape {sorted_.shape}")
    if side not in ("left", "right"):
        raise ValueError(f"searchsorted: side must be 'left' or 'right', got {side!r}")
    _same("searchsorted", AVal((), sorted_.dtype), AVal((), values.dtype))
    return AVal(values.shape, dt.int64)


_register(Prim("cumulative_prod", "host", lambda a, **p: _cumsum_infer(a, **p), _cumprod_impl))
_register(Prim("searchsorted", "host", _searchsorted_infer,
               lambda s, v, *, side: np.searchsorted(s, v, side=side).astype(np.int64), vjp=_bool_vjp))


# ----------------------------------------------------------------------------- collectives
# Across the ranks of the process group (``tracejit.distributed``): host ops, so under ``jit``
# each is an extern step between kernels and the kernels on either side still fuse.  Every
# rank traces the same program, so every rank runs the same collectives in the same order.

def _group():
    from .distributed import process_group
    return process_group.current()


def _all_reduce_vjp(g, out, x, *, op):
    if op not in ("sum", "mean"):
        raise NotImplementedError(f"all_reduce({op}) has no gradient; use op='sum' or 'mean'")
    return (_P().bind("all_reduce", g, op=op),)


def _broadcast_vjp(g, out, x, *, src):
    total = _P().bind("all_reduce", g, op="sum")          # every rank's use of src's value
    return (total if _group().rank == src else _P().zeros_like(g),)


def _all_gather_infer(a: AVal, *, world_size: int) -> AVal:
    return AVal((world_size,) + a.shape, a.dtype)


def _all_gather_vjp(g, out, x, *, world_size):
    P = _P()
    mine = P.bind("reduce_scatter", g, op="sum", world_size=world_size)   # [1, *x.shape]
    return (P.reshape(mine, shape=x.shape),)


def _reduce_scatter_infer(a: AVal, *, op: str, world_size: int) -> AVal:
    if not a.shape or a.shape[0] % world_size:
        raise ValueError(f"reduce_scatter: the leading dimension of shape {a.shape} must be a multiple of "
                         f"the world size {world_size}")
    return AVal((a.shape[0] // world_size,) + a.shape[1:], a.dtype)


def _reduce_scatter_vjp(g, out, x, *, op, world_size):
    if op not in ("sum", "mean"):
        raise NotImplementedError(f"reduce_scatter({op}) has no gradient; use op='sum' or 'mean'")
    P = _P()
    full = P.reshape(P.bind("all_gather", g, world_size=world_size), shape=x.shape)
    return (full if op == "sum" else P.div(full, P.full_like(full, float(world_size))),)


def _collective_infer(name: str, kinds: str = "numeric") -> Callable[..., AVal]:
    def infer(a: AVal, **params: Any) -> AVal:
        _check_dtype(name, a, kinds)
        if "op" in params and params["op"] == "mean" and not dt.is_float(a.dtype):
            raise TypeError(f"{name}(mean) needs a floating-point tensor, got {a.dtype.name}")
        return a
    return infer


_register(Prim("all_reduce", "host", _collective_infer("all_reduce"),
               lambda a, *, op: _group().all_reduce(a, op).wait(), vjp=_all_reduce_vjp))
_register(Prim("broadcast", "host", _collective_infer("broadcast", "any"),
               lambda a, *, src: _group().broadcast(a, src).wait(), vjp=_broadcast_vjp))
_register(Prim("all_gather", "host", _all_gather_infer,
               lambda a, *, world_size: _group().all_gather(a).wait(), vjp=_all_gather_vjp))
def _reduce_scatter_check(a: AVal, *, op: str, world_size: int) -> AVal:
    return _reduce_scatter_infer(_collective_infer("reduce_scatter")(a, op=op), op=op, world_size=world_size)


_register(Prim("reduce_scatter", "host", _reduce_scatter_check,
               lambda a, *, op, world_size: _group().reduce_scatter(a, op).wait(), vjp=_reduce_scatter_vjp))


# A reduction split in two steps, so that a compiled program runs other steps while it is in
# flight (DistributedDataParallel's buckets under jit): ``all_reduce_start`` starts it and
# returns a token; ``all_reduce_wait`` of that token is the result.  ``tag`` pairs the two; the
# wait's second operand, unread, is a value it must not run before (the backward pass's last).
def _all_reduce_start_infer(a: AVal, *, op: str, tag: int) -> AVal:
    _collective_infer("all_reduce_start")(a, op=op)
    return AVal((), dt.int64)


def _all_reduce_start_impl(a, *, op, tag):
    _group().start_tagged(tag, a, op)
    return np.asarray(tag, dtype=np.int64)


_register(Prim("all_reduce_start", "host", _all_reduce_start_infer, _all_reduce_start_impl))
_register(Prim("all_reduce_wait", "host",
               lambda token, after, *, tag, shape, dtype: AVal(tuple(shape), np.dtype(dtype)),
               lambda token, after, *, tag, shape, dtype: _group().wait_tagged(int(token)).reshape(shape)))
# the linear-algebra primitives and the Fourier transforms, registered into PRIMS
from . import ops_fft, ops_linalg  # noqa: E402,F401

# the op table's own primitives; ``custom_op`` adds more to PRIMS later (tracejit.debug's
# print, and the user's)
BUILTIN = frozenset(PRIMS)
