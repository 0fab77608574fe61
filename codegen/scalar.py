"""LLVM IR for every scalar op of :data:`codegen.kir.SCALAR_OPS`, on scalars or vectors.

Shared by the CPU and GPU code generators, so nothing here is target specific: only plain
instructions and the intrinsics every backend lowers inline (``llvm.sqrt``, ``llvm.fabs``,
rounding, ``llvm.maximum``...).  Transcendental functions come from :mod:`codegen.mathlib`
as inline polynomial code (a libm call in a loop neither vectorizes on the CPU nor exists
on NVPTX), through :func:`_math`.

Values are LLVM registers: ``bool`` is ``i1`` (``i8`` in memory, see :func:`storage_type`),
``float16`` is ``half``; ``bfloat16`` is its 16 bits (``i16``) in registers and memory, and
kernels only move it, select it and cast it (the front end computes on it in float32): float32
-> bfloat16 rounds to nearest even with integer ops on the CPU (``cvt.rn.bf16.f32`` on NVPTX),
bfloat16 -> float32 is a 16-bit shift.  Every function accepts scalars or vectors of any width; operands
of one op must have the same shape (use :func:`splat` first).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from llvmlite import ir

from codegen import mathlib

FLOAT_TYPES = {"float16": ir.HalfType(), "float32": ir.FloatType(), "float64": ir.DoubleType()}
INT_BITS = {"bool": 1, "int8": 8, "int16": 16, "int32": 32, "int64": 64, "uint8": 8, "uint16": 16,
            "uint32": 32, "uint64": 64}
SIGNED = frozenset({"int8", "int16", "int32", "int64"})
BF16 = "bfloat16"
I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
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
    if dtype == BF16:
        return I16
    return ir.IntType(INT_BITS[dtype])


def storage_type(dtype: str) -> ir.Type:
    """The in-memory type of ``dtype`` (``bool`` is one byte, as in NumPy)."""
    return I8 if dtype == "bool" else value_type(dtype)


def itemsize(dtype: str) -> int:
    return {"float16": 2, BF16: 2, "float32": 4, "float64": 8}.get(dtype) or max(1, INT_BITS[dtype] // 8)


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
    elif dtype == BF16:
        c = ir.Constant(ty, bf16_bits(float(value)))
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
    if src == BF16:
        value, src = _bf16_to_f32(b, value), "float32"
        if dst == "float32":
            return value
    if dst == BF16:
        return _f32_to_bf16(b, _to_float32_for_bf16(b, value, src))
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
        return _float_to_int(b, value, src, dst)
    if is_float(dst):
        return b.sitofp(value, dty) if src in SIGNED else b.uitofp(value, dty)
    sbits, dbits = INT_BITS[src], INT_BITS[dst]
    if sbits == dbits:
        return value
    if sbits > dbits:
        return b.trunc(value, dty)
    return b.sext(value, dty) if src in SIGNED else b.zext(value, dty)


def _float_to_int(b: ir.IRBuilder, value: ir.Value, src: str, dst: str) -> ir.Value:
    """float -> int as NumPy does on x86: truncation toward zero, and NaN, infinities and values
    out of the range of int32 (int64 for int64) give that type's minimum (what ``cvttss2si``
    returns); int8/int16/uint8 convert through int32 and keep its low bits.

    LLVM's ``fptosi`` is poison out of range (varying garbage after optimization), so the range
    is checked explicitly; on x86 the select folds into the conversion's own result.
    """
    w = width_of(value)
    bits = max(32, INT_BITS[dst])
    ity = with_width(ir.IntType(bits), w)
    if src == "float16":      # (every half fits in a float; the conversion itself is exact)
        value, src = b.fpext(value, with_width(ir.FloatType(), w)), "float32"
    if dst in ("uint32", "uint64"):
        return _float_to_wide_uint(b, value, src, dst)
    lim = float(2 ** (bits - 1))
    in_range = b.and_(b.fcmp_ordered(">=", value, _like(value, const(src, -lim))),
                      b.fcmp_ordered("<", value, _like(value, const(src, lim))))
    safe = b.select(in_range, value, _zero(value, src))
    int_min = _splat_const(ir.Constant(ir.IntType(bits), 1 << (bits - 1)), w)
    conv = b.select(in_range, b.fptosi(safe, ity), int_min)
    if INT_BITS[dst] < bits:
        return b.trunc(conv, with_width(value_type(dst), w))
    return conv


def _float_to_wide_uint(b: ir.IRBuilder, value: ir.Value, src: str, dst: str) -> ir.Value:
    """float -> uint32/uint64 as NumPy's x86 conversion: below ``2**(n-1)`` the signed conversion
    (negative values wrap; NaN and too negative values give ``2**(n-1)``), from there the signed
    conversion of ``x - 2**(n-1)`` with the top bit flipped (so ``2**n`` and more give 0)."""
    bits = INT_BITS[dst]
    signed = f"int{bits}"
    half = float(2 ** (bits - 1))
    high = b.fcmp_ordered(">=", value, _like(value, const(src, half)))
    low_path = _float_to_int(b, value, src, signed)
    shifted = _float_to_int(b, b.fsub(value, _like(value, const(src, half))), src, signed)
    top = _splat_const(ir.Constant(ir.IntType(bits), 1 << (bits - 1)), width_of(value))
    return b.select(high, b.xor(shifted, top), low_path)


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


def bf16_bits(x: float) -> int:
    """The bfloat16 nearest ``x`` (ties to even) as its 16 bits, for constants."""
    with np.errstate(over="ignore"):
        t = np.float32(x)
    bits = int(np.array(t).view(np.uint32))
    if np.isnan(x):
        return ((bits >> 16) & 0x8000) | 0x7FC0
    if float(t) != x:                        # round to odd first, so the one rounding below is exact
        if abs(float(t)) > abs(x):
            bits -= 1
        bits |= 1
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def _to_float32_for_bf16(b: ir.IRBuilder, value: ir.Value, src: str) -> ir.Value:
    """``value`` as a float32 from which rounding to bfloat16 rounds the source value correctly:
    float64 and wide integers go through float64 rounded to odd (ml_dtypes rounds them once)."""
    w = width_of(value)
    f32 = with_width(ir.FloatType(), w)
    if src == "float32":
        return value
    if src == "float16":
        return b.fpext(value, f32)
    if src == "bool":
        return b.uitofp(value, f32)
    if src != "float64":
        value = (b.sitofp if src in SIGNED else b.uitofp)(value, with_width(ir.DoubleType(), w))
    return _to_float32_round_to_odd(b, value)


def _bf16_to_f32(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    w = width_of(v)
    wide = b.shl(b.zext(v, with_width(I32, w)), _splat_const(I32(16), w))
    return b.bitcast(wide, with_width(ir.FloatType(), w))


def _f32_to_bf16(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """float32 -> bfloat16, round to nearest even; a NaN becomes the quiet NaN of its sign, as in
    ml_dtypes (NVPTX's ``cvt`` gives its own canonical NaN)."""
    if "nvptx" in (b.module.triple or ""):
        return _per_lane(b, x, lambda s: b.call(_PTX_CVT_BF16, [s]), I16)
    w = width_of(x)
    i32 = with_width(I32, w)
    bits = b.bitcast(x, i32)
    high = b.lshr(bits, _splat_const(I32(16), w))
    odd = b.and_(high, _splat_const(I32(1), w))
    rounded = b.lshr(b.add(bits, b.add(odd, _splat_const(I32(0x7FFF), w))), _splat_const(I32(16), w))
    quiet = b.or_(b.and_(high, _splat_const(I32(0x8000), w)), _splat_const(I32(0x7FC0), w))
    return b.trunc(b.select(_isnan(b, x), quiet, rounded), with_width(I16, w))


_PTX_CVT_BF16 = ir.InlineAsm(ir.FunctionType(I16, [ir.FloatType()]), "cvt.rn.bf16.f32 $0, $1;", "=h,f")


def _per_lane(b: ir.IRBuilder, x: ir.Value, fn, elem: ir.Type) -> ir.Value:
    w = width_of(x)
    if not w:
        return fn(x)
    out = ir.Constant(ir.VectorType(elem, w), ir.Undefined)
    for i in range(w):
        out = b.insert_element(out, fn(b.extract_element(x, I32(i))), I32(i))
    return out


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
    """NumPy's float floor division and remainder (``npy_divmod``), step for step, so every
    special value agrees: ``mod = fmod(x, y)`` (exact), ``div = (x - mod) / y``, the remainder
    moved to the sign of ``y``, the quotient floored and snapped to the nearest integer.  By zero:
    ``x / y`` and NaN; ``mod(1, inf) = 1``, ``floordiv(-1, inf) = -1``, ``floordiv(inf, 2) = nan``."""
    zero = _zero(x, dtype)
    one = _one(x, dtype)
    mod = fmod(b, x, y)
    div = b.fdiv(b.fsub(x, mod), y)
    mod_nz = b.fcmp_unordered("!=", mod, zero)                 # (NaN counts as nonzero, as in C)
    flip = b.and_(mod_nz, b.xor(b.fcmp_ordered("<", y, zero), b.fcmp_ordered("<", mod, zero)))
    mod = _select(b, flip, b.fadd(mod, y), mod)
    div = _select(b, flip, b.fsub(div, one), div)
    mod = _select(b, mod_nz, mod, intrinsic(b, "copysign", [zero, y]))
    floor = intrinsic(b, "floor", [div])
    snap = b.fcmp_ordered(">", b.fsub(div, floor), _like(x, const(dtype, 0.5)))
    floor = _select(b, snap, b.fadd(floor, one), floor)
    quot = b.fdiv(x, y)
    q = _select(b, b.fcmp_unordered("!=", div, zero), floor, intrinsic(b, "copysign", [zero, quot]))
    by_zero = b.fcmp_ordered("==", y, zero)
    return _select(b, by_zero, quot, q), mod


def fmod(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """C's ``fmod(x, y)``, exact: the remainder of ``x / y`` truncated, with the sign of ``x``
    (NaN for ``y == 0``, infinite ``x`` or a NaN; ``x`` itself for ``|x| < |y|``).

    An internal always-inline function with a loop over all lanes at once: each round removes up
    to 50 (float64) / 21 (float32) bits of quotient with ``q = trunc(r / t)``, ``r - q*t`` by one
    fma, exact (``t`` is ``|y|`` scaled by a power of two, so the remainder is a multiple of
    ``t``'s last place and smaller than ``t``).  One round for quotients below 2**50 / 2**21; at
    most ~42 / 13 rounds for the widest exponent gaps."""
    ty = x.type
    name = f"tj.fmod.{type_suffix(ty)}"
    module = b.module
    fn = module.globals.get(name)
    if fn is None:
        fn = _build_fmod(module, name, ty)
    return b.call(fn, [x, y])


def _build_fmod(module: ir.Module, name: str, ty: ir.Type) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(ty, [ty, ty]), name=name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    x, y = fn.args
    w = width_of(x)
    elem = ty.element if w else ty
    f64 = isinstance(elem, ir.DoubleType)
    dtype = "float64" if f64 else "float32"
    bits, mant, bias = (64, 52, 1023) if f64 else (32, 23, 127)
    chunk, step = (50, 1000) if f64 else (21, 120)
    ity = with_width(ir.IntType(bits), w)

    def ci(v: int) -> ir.Constant:
        return _splat_const(ir.Constant(ir.IntType(bits), v), w)

    def cf(v: float) -> ir.Constant:
        return _like(x, const(dtype, v))

    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)

    def ilogb(v: ir.Value) -> ir.Value:
        """floor(log2(v)) for finite v > 0 (subnormals scaled up first)."""
        sub = b.fcmp_ordered("<", v, cf(2.0 ** (1 - bias)))
        v = b.select(sub, b.fmul(v, cf(2.0 ** (mant + 2))), v)
        e = b.sub(b.and_(b.lshr(b.bitcast(v, ity), ci(mant)), ci(2 * bias + 1)), ci(bias))
        return b.select(sub, b.sub(e, ci(mant + 2)), e)

    def pow2(k: ir.Value) -> ir.Value:
        return b.bitcast(b.shl(b.add(k, ci(bias)), ci(mant)), ty)

    def any_lane(c: ir.Value) -> ir.Value:
        if not w:
            return c
        return b.icmp_unsigned("!=", b.bitcast(c, ir.IntType(w)), ir.Constant(ir.IntType(w), 0))

    ax, ay = intrinsic(b, "fabs", [x]), intrinsic(b, "fabs", [y])
    inf = cf(float("inf"))
    ok = b.and_(b.fcmp_ordered("<", ax, inf), b.fcmp_ordered("!=", ay, cf(0.0)))   # false for NaNs
    ok = b.and_(ok, b.fcmp_ordered("==", ay, ay))
    ey = ilogb(ay)
    active0 = b.and_(ok, b.fcmp_ordered(">=", ax, ay))
    b.cbranch(any_lane(active0), loop, done)

    b.position_at_end(loop)
    r = b.phi(ty)
    r.add_incoming(ax, entry)
    active = b.and_(ok, b.fcmp_ordered(">=", r, ay))
    gap = b.sub(b.sub(ilogb(b.select(active, r, ay)), ey), ci(chunk))
    s = b.select(b.icmp_signed(">", gap, ci(0)), gap, ci(0))
    s1 = b.select(b.icmp_signed(">", s, ci(step)), ci(step), s)
    rest = b.sub(s, s1)
    s2 = b.select(b.icmp_signed(">", rest, ci(step)), ci(step), rest)
    s3 = b.sub(rest, s2)
    t = b.fmul(b.fmul(b.fmul(ay, pow2(s1)), pow2(s2)), pow2(s3))
    q = intrinsic(b, "trunc", [b.fdiv(r, t)])
    rr = intrinsic(b, "fma", [b.fneg(q), t, r])
    rr = b.select(b.fcmp_ordered("<", rr, cf(0.0)), b.fadd(rr, t), rr)
    r_next = b.select(active, rr, r)
    r.add_incoming(r_next, loop)
    more = b.and_(ok, b.fcmp_ordered(">=", r_next, ay))
    b.cbranch(any_lane(more), loop, done)

    b.position_at_end(done)
    res = b.phi(ty)
    res.add_incoming(ax, entry)
    res.add_incoming(r_next, loop)
    out = intrinsic(b, "copysign", [res, x])
    # NaN as glibc's fmod makes it on x86: an input NaN propagates, else (x*y)/(x*y) gives the
    # hardware's default NaN (sign bit set), which copysign/signbit can observe
    xy = b.fmul(x, y)
    nan = b.select(b.fcmp_unordered("uno", x, x), x, b.fdiv(xy, xy))
    nan = b.select(b.fcmp_unordered("uno", y, y), y, nan)                  # (y's NaN if both are)
    b.ret(b.select(ok, out, nan))
    return fn


def _int_pow(b: ir.IRBuilder, x, y, dtype: str):
    """x ** y by square-and-multiply over every bit of y (exact modulo 2**bits, like NumPy)."""
    one, zero = _one(x, dtype), _zero(x, dtype)
    result, base, e = one, x, y
    for _ in range(INT_BITS[dtype]):
        bit = b.icmp_unsigned("!=", b.and_(e, one), zero)
        result = _select(b, bit, b.mul(result, base), result)
        base = b.mul(base, base)
        e = b.lshr(e, one)
    if dtype not in SIGNED:
        return result
    # A negative exponent gives the integer part of 1 / x**|y| (as tracejit.ops defines it for
    # eager too): 1 for x == 1, +-1 for x == -1 by the parity of y, else 0 (also for x == 0).
    minus_one = _like(x, const(dtype, -1))
    odd = b.icmp_unsigned("!=", b.and_(y, one), zero)
    small = _select(b, b.icmp_signed("==", x, one), one,
                    _select(b, b.icmp_signed("==", x, minus_one), _select(b, odd, minus_one, one), zero))
    return _select(b, b.icmp_signed("<", y, zero), small, result)


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
    # equal operands give y (C's nextafter), but x in NumPy's float16 loop: (-0.0, +0.0) -> -0.0
    r = _select(b, b.fcmp_ordered("==", x, y), x if dtype == "float16" else y, r)
    return _select(b, b.or_(_isnan(b, x), _isnan(b, y)), b.fadd(x, y), r)


def _fmaxmin(b: ir.IRBuilder, cmp: str, x, y, dtype: str = "float32"):
    """NumPy's maximum/minimum: a NaN in either wins, ties (+0, -0) give ``y`` (``x`` for
    float16, whose NumPy loop compares with ``>=``/``<=``).  One maxps or minps plus a NaN
    check on x, where ``llvm.maximum`` (which orders -0 below +0) costs ~7."""
    if dtype == "float16":
        cmp += "="
    m = b.select(b.fcmp_ordered(cmp, x, y), x, y)
    return b.select(_isnan(b, x), x, m)


def _sign(b: ir.IRBuilder, x, dtype: str):
    zero, one = _zero(x, dtype), _one(x, dtype)
    if is_float(dtype):
        neg_one = _like(x, const(dtype, -1.0))
        r = _select(b, b.fcmp_ordered("==", x, zero), zero, x)           # -0 -> +0 (NumPy), NaN stays
        r = _select(b, b.fcmp_ordered(">", x, zero), one, r)
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
    if src == "float16" and (op in MATH_OPS or op in ("floordiv", "mod", "fma")):
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
        "max": lambda: _fmaxmin(b, ">", x, y, dt), "min": lambda: _fmaxmin(b, "<", x, y, dt),
        "copysign": lambda: intrinsic(b, "copysign", [x, y]),
        "floor": lambda: intrinsic(b, "floor", [x]), "ceil": lambda: intrinsic(b, "ceil", [x]),
        "trunc": lambda: intrinsic(b, "trunc", [x]), "round": lambda: intrinsic(b, "roundeven", [x]),
        "isnan": lambda: _isnan(b, x),
        "ne": lambda: b.fcmp_unordered("!=", x, y),
        "sign": lambda: _sign(b, x, dt),
        "floordiv": lambda: _float_floordiv_mod(b, x, y, dt)[0],
        "mod": lambda: _float_floordiv_mod(b, x, y, dt)[1],
        "nextafter": lambda: _nextafter(b, x, y, dt),
        "fma": lambda: intrinsic(b, "fma", [x, y, a[2]]),
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
