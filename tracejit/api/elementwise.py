"""Elementwise functions of the Array API, each a thin layer over one primitive.

The layer does what primitives don't: promotion (with weak Python scalars), broadcasting,
and the standard's dtype policy (``exp`` of an integer tensor computes in the default
float dtype; ``floor`` of an integer tensor is the identity).
"""
from __future__ import annotations

from typing import Any

from .. import dtypes as dt
from .. import prims as P
from ..tensors import Tensor
from ._convert import all_weak, as_tensor, is_scalar, operands


def _floatify(x: Tensor) -> Tensor:
    return x if dt.is_inexact(x.dtype) else P.cast(x, dt.default_float)


def _weak_if(out: Tensor, weak: bool) -> Tensor:
    if weak:
        out._weak = True
    return out


def _float_unary(prim: str):
    def fn(x: Any, /) -> Tensor:
        x = as_tensor(x)
        return _weak_if(P.bind(prim, _floatify(x)), x._weak)
    fn.__name__ = prim
    fn.__doc__ = f"Elementwise ``{prim}`` (integer inputs compute in the default float dtype)."
    return fn


def _numeric_unary(prim: str, name: str, int_identity: bool = False):
    def fn(x: Any, /) -> Tensor:
        x = as_tensor(x)
        if dt.is_bool(x.dtype):
            raise TypeError(f"{name} needs a numeric dtype, got bool")
        if int_identity and dt.is_int(x.dtype):
            return x
        return P.bind(prim, x)
    fn.__name__ = name
    fn.__doc__ = f"Elementwise ``{name}``."
    return fn


# dtype kinds each kind of binary op takes as they are (no cast, no error): its fast path
_PLAIN_KINDS = {"float": "f", "numeric": "iuf", "intbool": "iub", "int": "iu", "any": "biuf"}


def _binary(prim: str, name: str, kind: str = "numeric"):
    plain = _PLAIN_KINDS[kind]
    bind = P.bind

    def fn(x1: Any, x2: Any, /) -> Tensor:
        # two tensors of one shape and dtype (most eager ops): nothing to promote or broadcast
        if type(x1) is Tensor and type(x2) is Tensor and x1._aval == x2._aval \
                and x1._aval.dtype.kind in plain and not (x1._weak or x2._weak):
            return bind(prim, x1, x2)
        a, b = operands(name, x1, x2)
        if kind == "float":
            a, b = _floatify(a), _floatify(b)
        elif kind == "numeric" and dt.is_bool(a.dtype):
            raise TypeError(f"{name} needs numeric operands, got bool")
        elif kind == "intbool" and dt.is_inexact(a.dtype):
            raise TypeError(f"{name} needs integer or boolean operands, got {a.dtype.name}")
        elif kind == "int" and not dt.is_int(a.dtype):
            raise TypeError(f"{name} needs integer operands, got {a.dtype.name}")
        out = bind(prim, a, b)
        if (type(x1) is Tensor and not x1._weak) or (type(x2) is Tensor and not x2._weak):
            return out          # a strong tensor operand: the result is strong (no all_weak walk)
        return _weak_if(out, all_weak(x1, x2))
    fn.__name__ = name
    fn.__doc__ = f"Elementwise ``{name}`` with broadcasting and type promotion."
    return fn


exp = _float_unary("exp")
exp2 = _float_unary("exp2")
expm1 = _float_unary("expm1")
log = _float_unary("log")
log2 = _float_unary("log2")
log10 = _float_unary("log10")
log1p = _float_unary("log1p")
sqrt = _float_unary("sqrt")
rsqrt = _float_unary("rsqrt")
sin = _float_unary("sin")
cos = _float_unary("cos")
tan = _float_unary("tan")
asin = _float_unary("asin")
acos = _float_unary("acos")
atan = _float_unary("atan")
sinh = _float_unary("sinh")
cosh = _float_unary("cosh")
tanh = _float_unary("tanh")
asinh = _float_unary("asinh")
acosh = _float_unary("acosh")
atanh = _float_unary("atanh")
erf = _float_unary("erf")
reciprocal = _float_unary("reciprocal")

negative = _numeric_unary("neg", "negative")
abs = _numeric_unary("abs", "abs")  # noqa: A001
sign = _numeric_unary("sign", "sign")
square = _numeric_unary("square", "square")
floor = _numeric_unary("floor", "floor", int_identity=True)
ceil = _numeric_unary("ceil", "ceil", int_identity=True)
round = _numeric_unary("round", "round", int_identity=True)  # noqa: A001
trunc = _numeric_unary("trunc", "trunc", int_identity=True)

add = _binary("add", "add")
subtract = _binary("sub", "subtract")
multiply = _binary("mul", "multiply")
divide = _binary("div", "divide", "float")
floor_divide = _binary("floordiv", "floor_divide")
remainder = _binary("mod", "remainder")
pow = _binary("pow", "pow")  # noqa: A001
maximum = _binary("max", "maximum")
minimum = _binary("min", "minimum")
atan2 = _binary("atan2", "atan2", "float")
copysign = _binary("copysign", "copysign", "float")
hypot = _binary("hypot", "hypot", "float")
logaddexp = _binary("logaddexp", "logaddexp", "float")
nextafter = _binary("nextafter", "nextafter", "float")
bitwise_and = _binary("and", "bitwise_and", "intbool")
bitwise_or = _binary("or", "bitwise_or", "intbool")
bitwise_xor = _binary("xor", "bitwise_xor", "intbool")
bitwise_left_shift = _binary("shl", "bitwise_left_shift", "int")
bitwise_right_shift = _binary("shr", "bitwise_right_shift", "int")
equal = _binary("eq", "equal", "any")
not_equal = _binary("ne", "not_equal", "any")
less = _binary("lt", "less", "any")
less_equal = _binary("le", "less_equal", "any")
greater = _binary("gt", "greater", "any")
greater_equal = _binary("ge", "greater_equal", "any")


def _to_bool(x: Any) -> Tensor:
    return P.cast(as_tensor(x), dt.bool_)


def logical_and(x1: Any, x2: Any, /) -> Tensor:
    a, b = operands("logical_and", _to_bool(x1), _to_bool(x2))
    return P.bind("and", a, b)


def logical_or(x1: Any, x2: Any, /) -> Tensor:
    a, b = operands("logical_or", _to_bool(x1), _to_bool(x2))
    return P.bind("or", a, b)


def logical_xor(x1: Any, x2: Any, /) -> Tensor:
    a, b = operands("logical_xor", _to_bool(x1), _to_bool(x2))
    return P.bind("xor", a, b)


def logical_not(x: Any, /) -> Tensor:
    return P.bind("logical_not", _to_bool(x))


def bitwise_invert(x: Any, /) -> Tensor:
    x = as_tensor(x)
    if dt.is_inexact(x.dtype):
        raise TypeError(f"bitwise_invert needs an integer or boolean dtype, got {x.dtype.name}")
    return P.bind("bitwise_invert", x)


def positive(x: Any, /) -> Tensor:
    x = as_tensor(x)
    if dt.is_bool(x.dtype):
        raise TypeError("positive needs a numeric dtype, got bool")
    return x


def _predicate(prim: str):
    def fn(x: Any, /) -> Tensor:
        x = as_tensor(x)
        if not dt.is_inexact(x.dtype):
            # integers are never nan/inf; signbit of an integer is x < 0
            if prim == "isfinite":
                return P.full(x.shape, True, dt.bool_)
            if prim == "signbit":
                return less(x, 0) if not dt.is_bool(x.dtype) else P.full(x.shape, False, dt.bool_)
            return P.full(x.shape, False, dt.bool_)
        return P.bind(prim, x)
    fn.__name__ = prim
    fn.__doc__ = f"Elementwise ``{prim}`` (bool result)."
    return fn


isnan = _predicate("isnan")
isinf = _predicate("isinf")
isfinite = _predicate("isfinite")
signbit = _predicate("signbit")


def where(condition: Any, x1: Any, x2: Any, /) -> Tensor:
    """``x1`` where ``condition`` holds, else ``x2`` (broadcast, promoted)."""
    a, b = operands("where", x1, x2)
    c = _to_bool(condition)
    from ._convert import broadcast_shapes_for
    shape = broadcast_shapes_for("where", c.shape, a.shape)
    return P.bind("where", P.broadcast_to(c, shape), P.broadcast_to(a, shape), P.broadcast_to(b, shape))


def clip(x: Any, /, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
    """Clamp to ``[min, max]`` (either may be None); keeps ``x``'s dtype and shape."""
    x = as_tensor(x)
    out = x
    if min is not None:
        out = maximum(out, min if is_scalar(min) else as_tensor(min, x.dtype))
    if max is not None:
        out = minimum(out, max if is_scalar(max) else as_tensor(max, x.dtype))
    if out.dtype != x.dtype:
        out = P.cast(out, x.dtype)
    # the result has the broadcast shape of x, min and max (an empty bound makes it empty)
    from ._convert import broadcast_shapes_for
    shape = broadcast_shapes_for("clip", x.shape, *(() if b is None or is_scalar(b) else as_tensor(b).shape
                                                    for b in (min, max)))
    return P.broadcast_to(out, shape) if out.shape != shape else out


def conj(x: Any, /) -> Tensor:
    """The complex conjugate (a real ``x`` as it is)."""
    x = as_tensor(x)
    return P.bind("conj", x) if dt.is_complex(x.dtype) else x


def real(x: Any, /) -> Tensor:
    """The real part, in the real dtype of ``x``'s precision (a real ``x`` as it is)."""
    x = as_tensor(x)
    return P.bind("real", x) if dt.is_complex(x.dtype) else x


def imag(x: Any, /) -> Tensor:
    """The imaginary part (zeros for a real ``x``)."""
    x = as_tensor(x)
    return P.bind("imag", x) if dt.is_complex(x.dtype) else P.zeros_like(x)


__all__ = [
    "abs", "acos", "acosh", "add", "asin", "asinh", "atan", "atan2", "atanh", "bitwise_and",
    "bitwise_invert", "bitwise_left_shift", "bitwise_or", "bitwise_right_shift", "bitwise_xor", "ceil",
    "clip", "conj", "copysign", "cos", "cosh", "divide", "equal", "erf", "exp", "exp2", "expm1", "floor",
    "floor_divide", "greater", "greater_equal", "hypot", "imag", "isfinite", "isinf", "isnan", "less",
    "less_equal", "log", "log10", "log1p", "log2", "logaddexp", "logical_and", "logical_not",
    "logical_or", "logical_xor", "maximum", "minimum", "multiply", "negative", "nextafter", "not_equal",
    "positive", "pow", "real", "reciprocal", "remainder", "round", "rsqrt", "sign", "signbit", "sin",
    "sinh", "sqrt", "square", "subtract", "tan", "tanh", "trunc", "where",
]
