"""LLVM IR for every scalar op of :data:`codegen.kir.SCALAR_OPS`, on scalars or vectors.

Shared by the CPU and GPU code generators, so nothing here is target specific: only plain
instructions and the intrinsics every backend lowers inline (``llvm.sqrt``, ``llvm.fabs``,
rounding, ``llvm.maximum``...).  Transcendental functions come from :mod:`codegen.mathlib`
as inline polynomial code (a libm call in a loop neither vectorizes on the CPU nor exists
on NVPTX), through :func:`_math`.

Values are LLVM registers: ``bool`` is ``i1`` (``i8`` in memory, see :func:`storage_type`),
``float16`` is ``half``.  Every function accepts scalars or vectors of any width; operands
of one op must have the same shape (use :func:`splat` first).
"""
from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from codegen import mathlib

FLOAT_TYPES = {"float16": ir.HalfType(), "float32": ir.FloatType(), "float64": ir.DoubleType()}
INT_BITS = {"bool": 1, "int8": 8, "int16": 16, "int32": 32, "int64": 64, "uint8": 8}
SIGNED = frozenset({"int8", "int16", "int32", "int64"})
I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)

# Implemented by codegen.mathlib (float32/float64; float16 is computed in float32).
MATH_OPS = mathlib.FUNCTIONS


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_TYPES


def value_type(dtype: str) -> ir.Type:
    """The register type of a scalar of ``dtype`` (``bool`` -> ``i1``)."""
    if dtype in FLOAT_TYPES:
        return FLOAT_TYPES[dtype]
    return ir.IntType(INT_BITS[dtype])


def storage_type(dtype: str) -> ir.Type:
    """The in-memory type of ``dtype`` (``bool`` is one byte, as in NumPy)."""
    return I8 if dtype == "bool" else value_type(dtype)


def itemsize(dtype: str) -> int:
    return {"float16": 2, "float32": 4, "float64": 8}.get(dtype) or max(1, INT_BITS[dtype] // 8)


def width_of(value: ir.Value) -> int | None:
    """Lane count of a vector value, None for a scalar."""
    return value.type.count if isinstance(value.type, ir.VectorType) else None


def with_width(ty: ir.Type, width: int | None) -> ir.Type:
    return ir.VectorType(ty, width) if width else ty


def const(dtype: str, value, width: int | None = None) -> ir.Constant:
    """A constant of ``dtype`` (splatted to ``width`` lanes when given)."""
    ty = value_type(dtype)
    if dtype in FLOAT_TYPES:
        c = ir.Constant(ty, float(value))
    else:
        bits = INT_BITS[dtype]
        c = ir.Constant(ty, int(value) & ((1 << bits) - 1))
    return _splat_const(c, width)


def _splat_const(c: ir.Constant, width: int | None) -> ir.Constant:
    return ir.Constant(ir.VectorType(c.type, width), [c] * width) if width else c


def _like(value: ir.Value, scalar: ir.Constant) -> ir.Constant:
    """``scalar`` with the shape (scalar/vector) of ``value``."""
    return _splat_const(scalar, width_of(value))


def splat(builder: ir.IRBuilder, value: ir.Value, width: int | None) -> ir.Value:
    """Broadcast a scalar to ``width`` lanes (no-op for width None or an existing vector)."""
    if not width or isinstance(value.type, ir.VectorType):
        return value
    if isinstance(value, ir.Constant):
        return _splat_const(value, width)
    vty = ir.VectorType(value.type, width)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), value, I32(0))
    mask = ir.Constant(ir.VectorType(I32, width), [0] * width)
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), mask)


def type_suffix(ty: ir.Type) -> str:
    """LLVM's name of ``ty`` in overloaded intrinsic names (``v16f32``, ``f16``, ``i64``)."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{type_suffix(ty.element)}"
    if isinstance(ty, ir.HalfType):
        return "f16"
    if isinstance(ty, ir.FloatType):
        return "f32"
    if isinstance(ty, ir.DoubleType):
        return "f64"
    return f"i{ty.width}"


def intrinsic(builder: ir.IRBuilder, name: str, args: Sequence[ir.Value], ret: ir.Type | None = None,
              overloads: Sequence[ir.Type] | None = None) -> ir.Value:
    """Call ``llvm.<name>`` overloaded on the first argument's type (or ``overloads``)."""
    ret = ret or args[0].type
    overloads = overloads or [args[0].type]
    full = f"llvm.{name}." + ".".join(type_suffix(t) for t in overloads)
    module = builder.module
    fn = module.globals.get(full)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, [a.type for a in args]), name=full)
    return builder.call(fn, list(args))


def _math(builder: ir.IRBuilder, name: str, args: Sequence[ir.Value]) -> ir.Value:
    """One transcendental function, from :mod:`codegen.mathlib` (float32/float64 only)."""
    return mathlib.emit(builder, name, list(args))


# --------------------------------------------------------------------------- helpers


def _select(b: ir.IRBuilder, cond, x, y):
    return b.select(cond, x, y)


def _fcmp(b: ir.IRBuilder, op: str, x, y, ordered: bool = True):
    return b.fcmp_ordered(op, x, y) if ordered else b.fcmp_unordered(op, x, y)


def _icmp(b: ir.IRBuilder, dtype: str, op: str, x, y):
    return b.icmp_signed(op, x, y) if dtype in SIGNED else b.icmp_unsigned(op, x, y)


def _zero(v, dtype):
    return _like(v, const(dtype, 0))


def _one(v, dtype):
    return _like(v, const(dtype, 1))


def _isnan(b, x):
    return b.fcmp_unordered("uno", x, x)


# --------------------------------------------------------------------------- casts


def cast(builder: ir.IRBuilder, value: ir.Value, src: str, dst: str) -> ir.Value:
    """Convert between dtypes with NumPy semantics (float->int truncates, ->bool is != 0)."""
    b = builder
    if src == dst:
        return value
    w = width_of(value)
    dty = with_width(value_type(dst), w)
    if dst == "bool":
        if is_float(src):
            return b.fcmp_unordered("une", value, _zero(value, src))   # NaN is truthy
        return b.icmp_unsigned("!=", value, _zero(value, src))
    if is_float(src) and is_float(dst):
        if _fbits(src) < _fbits(dst):
            return b.fpext(value, dty)
        if (src, dst) == ("float64", "float16"):
            # x86 has no double->half instruction, and LLVM's fallback is a call into the
            # compiler runtime.  Rounding to float32 by round-to-odd first keeps the final
            # rounding to half exact (float32 carries 13 more bits than half).
            value = _to_float32_round_to_odd(b, value)
        return b.fptrunc(value, dty)
    if is_float(src):
        bits = INT_BITS[dst]
        if bits >= 32:
            return b.fptosi(value, dty)
        # Small ints wrap like NumPy on x86: convert to int32, then truncate.
        wide = b.fptosi(value, with_width(I32, w))
        return b.trunc(wide, dty)
    if is_float(dst):
        return b.sitofp(value, dty) if src in SIGNED else b.uitofp(value, dty)
    sbits, dbits = INT_BITS[src], INT_BITS[dst]
    if sbits == dbits:
        return value
    if sbits > dbits:
        return b.trunc(value, dty)
    return b.sext(value, dty) if src in SIGNED else b.zext(value, dty)


def _to_float32_round_to_odd(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """float64 -> float32 rounded toward zero, with the last bit set when inexact."""
    w = width_of(x)
    t = b.fptrunc(x, with_width(ir.FloatType(), w))
    back = b.fpext(t, x.type)
    inexact = b.fcmp_ordered("one", back, x)                   # (false for NaN)
    away = b.fcmp_ordered(">", intrinsic(b, "fabs", [back]), intrinsic(b, "fabs", [x]))
    bits = b.bitcast(t, with_width(I32, w))
    bits = b.select(away, b.sub(bits, _splat_const(I32(1), w)), bits)     # one ulp toward zero
    bits = b.select(inexact, b.or_(bits, _splat_const(I32(1), w)), bits)
    return b.bitcast(bits, t.type)


def _fbits(dtype: str) -> int:
    return {"float16": 16, "float32": 32, "float64": 64}[dtype]


# --------------------------------------------------------------------------- integer division


def _int_divmod(b: ir.IRBuilder, x, y, dtype: str):
    """Python-style (floor) quotient and remainder; division by zero gives 0, never traps."""
    zero, one = _zero(x, dtype), _one(x, dtype)
    y_is_zero = b.icmp_unsigned("==", y, zero)
    if dtype not in SIGNED:
        safe = _select(b, y_is_zero, one, y)
        q, r = b.udiv(x, safe), b.urem(x, safe)
        return _select(b, y_is_zero, zero, q), _select(b, y_is_zero, zero, r)
    minus_one = _like(x, const(dtype, -1))
    y_is_m1 = b.icmp_signed("==", y, minus_one)
    # x / -1 overflows (traps on x86) for x = INT_MIN: divide by 1 and negate instead.
    safe = _select(b, b.or_(y_is_zero, y_is_m1), one, y)
    q, r = b.sdiv(x, safe), b.srem(x, safe)
    q = _select(b, y_is_m1, b.sub(zero, x), q)
    # Floor toward -inf: adjust when the remainder is nonzero and its sign differs from y's.
    fix = b.and_(b.icmp_signed("!=", r, zero), b.icmp_signed("<", b.xor(r, y), zero))
    q = _select(b, fix, b.sub(q, one), q)
    r = _select(b, fix, b.add(r, y), r)
    return _select(b, y_is_zero, zero, q), _select(b, y_is_zero, zero, r)


def _float_floordiv_mod(b: ir.IRBuilder, x, y, dtype: str):
    """Python-style float floor division and modulo (the sign of the remainder follows y)."""
    q = intrinsic(b, "floor", [b.fdiv(x, y)])
    r = intrinsic(b, "fma", [b.fsub(_zero(x, dtype), q), y, x])
    zero = _zero(x, dtype)
    # Rounding can leave a remainder with the wrong sign or equal to y: fold it back.
    wrong_sign = b.and_(b.fcmp_ordered("!=", r, zero),
                        b.xor(b.fcmp_ordered("<", r, zero), b.fcmp_ordered("<", y, zero)))
    r = _select(b, wrong_sign, b.fadd(r, y), r)
    r = _select(b, b.fcmp_ordered("==", r, zero), intrinsic(b, "copysign", [zero, y]), r)
    return q, r


def _int_pow(b: ir.IRBuilder, x, y, dtype: str):
    """x ** y by square-and-multiply over every bit of y (exact modulo 2**bits, like NumPy)."""
    one, zero = _one(x, dtype), _zero(x, dtype)
    result, base, e = one, x, y
    for _ in range(INT_BITS[dtype]):
        bit = b.icmp_unsigned("!=", b.and_(e, one), zero)
        result = _select(b, bit, b.mul(result, base), result)
        base = b.mul(base, base)
        e = b.lshr(e, one)
    return result


# --------------------------------------------------------------------------- float helpers


def _nextafter(b: ir.IRBuilder, x, y, dtype: str):
    bits = _fbits(dtype)
    ity = with_width(ir.IntType(bits), width_of(x))
    xi = b.bitcast(x, ity)
    one = _like(x, ir.Constant(ir.IntType(bits), 1))
    zero = _zero(x, dtype)
    up = b.xor(b.fcmp_ordered("<", x, y), b.fcmp_ordered("<", x, zero))   # magnitude grows
    stepped = b.bitcast(_select(b, up, b.add(xi, one), b.sub(xi, one)), x.type)
    tiny = intrinsic(b, "copysign", [b.bitcast(one, x.type), y])           # smallest subnormal
    r = _select(b, b.fcmp_ordered("==", x, zero), tiny, stepped)
    r = _select(b, b.fcmp_ordered("==", x, y), y, r)
    return _select(b, b.or_(_isnan(b, x), _isnan(b, y)), b.fadd(x, y), r)


def _fmaxmin(b: ir.IRBuilder, cmp: str, x, y):
    """NumPy's maximum/minimum: a NaN in either wins, ties (+0, -0) give ``y``.  One maxps or
    minps plus a NaN check on x, where ``llvm.maximum`` (which orders -0 below +0) costs ~7."""
    m = b.select(b.fcmp_ordered(cmp, x, y), x, y)
    return b.select(_isnan(b, x), x, m)


def _sign(b: ir.IRBuilder, x, dtype: str):
    zero, one = _zero(x, dtype), _one(x, dtype)
    if is_float(dtype):
        neg_one = _like(x, const(dtype, -1.0))
        r = _select(b, b.fcmp_ordered(">", x, zero), one, x)              # keeps 0, -0 and NaN
        return _select(b, b.fcmp_ordered("<", x, zero), neg_one, r)
    if dtype not in SIGNED:
        return b.zext(b.icmp_unsigned("!=", x, zero), x.type) if dtype != "bool" else x
    pos = b.zext(b.icmp_signed(">", x, zero), x.type)
    neg = b.zext(b.icmp_signed("<", x, zero), x.type)
    return b.sub(pos, neg)


# --------------------------------------------------------------------------- the op table


_FCMP = {"eq": "==", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_ICMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def emit_op(builder: ir.IRBuilder, op: str, args: Sequence[ir.Value], arg_dtypes: Sequence[str],
            dtype: str) -> ir.Value:
    """Emit scalar op ``op`` (a :data:`kir.SCALAR_OPS` name) on ``args``.

    ``arg_dtypes`` are the operands' dtypes, ``dtype`` the result's.  All arguments must share
    one shape (scalar or the same vector width).
    """
    if op == "cast":
        return cast(builder, args[0], arg_dtypes[0], dtype)
    if op == "where":
        return builder.select(args[0], args[1], args[2])
    src = arg_dtypes[0]
    if src == "float16" and (op in MATH_OPS or op in ("floordiv", "mod")):
        # Computed in float32 and rounded once, as NumPy does for half precision (a half fma,
        # which floor division uses, would be widened to double and call the compiler runtime).
        wide = [cast(builder, a, "float16", "float32") for a in args]
        out = emit_op(builder, op, wide, ["float32"] * len(args), "float32")
        return cast(builder, out, "float32", dtype)
    if op == "div" and not is_float(src):
        # True division of integers: the front end asks for a float result.
        args = [cast(builder, a, src, dtype) for a in args]
        src = dtype
    if is_float(src):
        return _float_op(builder, op, list(args), src)
    return _int_op(builder, op, list(args), src)


def _float_op(b: ir.IRBuilder, op: str, a: list, dt: str) -> ir.Value:
    x = a[0]
    y = a[1] if len(a) > 1 else None
    zero, one = _zero(x, dt), _one(x, dt)
    if op in MATH_OPS:
        return _math(b, op, a)
    simple = {
        "add": lambda: b.fadd(x, y), "sub": lambda: b.fsub(x, y), "mul": lambda: b.fmul(x, y),
        "div": lambda: b.fdiv(x, y), "neg": lambda: b.fneg(x), "square": lambda: b.fmul(x, x),
        "reciprocal": lambda: b.fdiv(one, x), "abs": lambda: intrinsic(b, "fabs", [x]),
        "sqrt": lambda: intrinsic(b, "sqrt", [x]),
        "rsqrt": lambda: b.fdiv(one, intrinsic(b, "sqrt", [x])),
        "max": lambda: _fmaxmin(b, ">", x, y), "min": lambda: _fmaxmin(b, "<", x, y),
        "copysign": lambda: intrinsic(b, "copysign", [x, y]),
        "floor": lambda: intrinsic(b, "floor", [x]), "ceil": lambda: intrinsic(b, "ceil", [x]),
        "trunc": lambda: intrinsic(b, "trunc", [x]), "round": lambda: intrinsic(b, "roundeven", [x]),
        "isnan": lambda: _isnan(b, x),
        "ne": lambda: b.fcmp_unordered("!=", x, y),
        "sign": lambda: _sign(b, x, dt),
        "floordiv": lambda: _float_floordiv_mod(b, x, y, dt)[0],
        "mod": lambda: _float_floordiv_mod(b, x, y, dt)[1],
        "nextafter": lambda: _nextafter(b, x, y, dt),
    }
    if op in simple:
        return simple[op]()
    if op in _FCMP:
        return b.fcmp_ordered(_FCMP[op], x, y)
    if op in ("isinf", "isfinite"):
        inf = _like(x, ir.Constant(value_type(dt), float("inf")))
        ax = intrinsic(b, "fabs", [x])
        return b.fcmp_ordered("==" if op == "isinf" else "<", ax, inf)
    if op == "signbit":
        bits = _fbits(dt)
        xi = b.bitcast(x, with_width(ir.IntType(bits), width_of(x)))
        return b.icmp_signed("<", xi, _like(x, ir.Constant(ir.IntType(bits), 0)))
    if op == "not":
        return b.fcmp_ordered("==", x, zero)
    raise NotImplementedError(f"scalar op {op!r} on {dt}")


def _int_op(b: ir.IRBuilder, op: str, a: list, dt: str) -> ir.Value:
    x = a[0]
    y = a[1] if len(a) > 1 else None
    zero, one = _zero(x, dt), _one(x, dt)
    signed = dt in SIGNED
    is_bool = dt == "bool"
    if op in ("floor", "ceil", "round", "trunc"):
        return x
    if op in ("isnan", "isinf", "signbit") and not signed:
        return _like(x, ir.Constant(I1, 0))
    if op == "isfinite":
        return _like(x, ir.Constant(I1, 1))
    if op == "signbit":
        return b.icmp_signed("<", x, zero)
    if op in ("isnan", "isinf"):
        return _like(x, ir.Constant(I1, 0))
    if op in _ICMP:
        return _icmp(b, dt, _ICMP[op], x, y)
    if is_bool:
        bool_ops = {
            "add": b.or_, "or": b.or_, "max": b.or_, "mul": b.and_, "and": b.and_, "min": b.and_,
            "sub": b.xor, "xor": b.xor,
        }
        if op in bool_ops:
            return bool_ops[op](x, y)
        if op in ("not", "invert"):
            return b.xor(x, one)
        if op in ("abs", "neg", "square", "sign"):
            return x
    if op == "not":
        return b.icmp_unsigned("==", x, zero)
    if op == "invert":
        return b.xor(x, _like(x, const(dt, -1)))
    if op in ("shl", "shr"):
        bits = _like(x, const(dt, INT_BITS[dt]))
        in_range = b.icmp_unsigned("<", y, bits)              # negative counts are huge unsigned
        safe = _select(b, in_range, y, zero)
        if op == "shl":
            return _select(b, in_range, b.shl(x, safe), zero)
        if signed:
            fill = _select(b, b.icmp_signed("<", x, zero), _like(x, const(dt, -1)), zero)
            return _select(b, in_range, b.ashr(x, safe), fill)
        return _select(b, in_range, b.lshr(x, safe), zero)
    simple = {
        "add": lambda: b.add(x, y), "sub": lambda: b.sub(x, y), "mul": lambda: b.mul(x, y),
        "neg": lambda: b.sub(zero, x), "square": lambda: b.mul(x, x),
        "and": lambda: b.and_(x, y), "or": lambda: b.or_(x, y), "xor": lambda: b.xor(x, y),
        "abs": lambda: _select(b, b.icmp_signed("<", x, zero), b.sub(zero, x), x) if signed else x,
        "sign": lambda: _sign(b, x, dt),
        "max": lambda: _select(b, _icmp(b, dt, ">=", x, y), x, y),
        "min": lambda: _select(b, _icmp(b, dt, "<=", x, y), x, y),
        "floordiv": lambda: _int_divmod(b, x, y, dt)[0], "mod": lambda: _int_divmod(b, x, y, dt)[1],
        "reciprocal": lambda: _int_divmod(b, one, x, dt)[0],
        "pow": lambda: _int_pow(b, x, y, dt),
        "copysign": lambda: _select(b, b.icmp_signed("<", y, zero),
                                    b.sub(zero, _int_op(b, "abs", [x], dt)), _int_op(b, "abs", [x], dt)),
    }
    if op in simple:
        return simple[op]()
    raise NotImplementedError(f"scalar op {op!r} on {dt}")
