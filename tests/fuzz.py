"""Differential fuzzer: random tensor programs run eagerly, under ``jit`` and under the
reference interpreter, and compared.

    python -m tests.fuzz --seconds 600 [--seed S] [--large] [--report fuzz_report.txt]

A *program* is data (:class:`Program`): input specs (shape, dtype, layout, a value seed) and a
list of op records.  :func:`execute` interprets it with the public API; the same Python
interpreter is what ``tj.jit`` traces, so one program gives three runs to compare:

* eagerly (NumPy references, op by op);
* ``tj.jit(f)`` (the CPU backend: fusion, generated kernels);
* ``tj.jit(f, backend="interpret")`` (the reference executor of the traced graph);
* and once more under ``tj.jit`` with an empty in-memory kernel cache, so every kernel comes
  from the disk cache the first jit run wrote (compared bit for bit with that run).

Op records pick their operands by index and adapt their parameters to the operand's shape
(an axis is taken modulo the rank, a slice is clipped, an incompatible broadcast falls back to
a Python scalar), so any sub-list of ops is again a valid program: that is how findings are
shrunk (drop ops, drop outputs, shrink input extents) before they are written as reproducers.

Comparison: shapes and dtypes equal; integer/bool values equal; float values equal where the
computation is exact (IEEE add/sub/mul/div/sqrt, moves, casts) and within a dtype-dependent
tolerance where it is not (transcendentals, reductions whose order may differ, matmul); NaN
positions and infinities' signs equal; arguments mutated in place equal afterwards.  Complex
values (inputs drawn part by part, Python complex scalars) are compared part by part.  A value
that depends discontinuously (floor, comparisons, casts to int, argmax, ...) on an inexact one
is compared by shape and dtype only.  Both runs raise or neither does; an error under jit where
eager succeeds counts unless it is ``UnsupportedUnderJitError`` or ``ConcretizationError``.

``--large`` makes inputs larger than the runtime's single-thread work limit
(``runtime.cpu.SMALL_WORK``) so launches split across worker threads.

Known, not yet fixed behaviour outside the numerics is listed in :data:`KNOWN` with the
pattern that identifies it; findings that match are counted as expected, not as mismatches.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import tracejit as tj
from runtime import kernel_cache

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64", "complex64",
          "complex128"]
FLOATS = ("float16", "float32", "float64")
COMPLEX = ("complex64", "complex128")
PART = {"complex64": "float32", "complex128": "float64"}
INTS = ("int8", "int16", "int32", "int64", "uint8")

UNARY_EXACT = ["negative", "abs", "square", "sqrt", "floor", "ceil", "trunc", "round", "sign",
               "isnan", "isinf", "isfinite", "signbit", "logical_not", "bitwise_invert", "reciprocal",
               "positive", "real", "imag", "conj"]
UNARY_MATH = ["exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "asin",
              "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "rsqrt"]
BINARY_EXACT = ["add", "subtract", "multiply", "divide", "maximum", "minimum", "floor_divide",
                "remainder", "pow", "copysign", "nextafter", "bitwise_and", "bitwise_or", "bitwise_xor",
                "bitwise_left_shift", "bitwise_right_shift", "logical_and", "logical_or", "logical_xor"]
BINARY_MATH = ["atan2", "hypot", "logaddexp"]
COMPARE = ["equal", "not_equal", "less", "less_equal", "greater", "greater_equal"]
REDUCE = ["sum", "prod", "max", "min", "mean", "argmax", "argmin", "any", "all"]
INPLACE = ["add", "subtract", "multiply", "divide", "floor_divide", "remainder", "pow", "bitwise_and",
           "bitwise_or", "bitwise_xor", "maximum"]

# ops whose result jumps when their (float) input moves by an ulp
DISCONTINUOUS = {"floor", "ceil", "trunc", "round", "sign", "signbit", "isnan", "isinf", "isfinite",
                 "logical_not", "bitwise_invert", "floor_divide", "remainder", "nextafter",
                 "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_left_shift", "bitwise_right_shift",
                 "logical_and", "logical_or", "logical_xor", "argmax", "argmin", "any", "all", "cast",
                 "where", "pow", "copysign", "maximum", "minimum", "max", "min", "sqrt",
                 "reciprocal", "divide", "setitem", "inplace"} | set(COMPARE)
INT_ONLY = {"bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_left_shift", "bitwise_right_shift",
            "bitwise_invert"}
BOOL_ONLY = {"logical_and", "logical_or", "logical_xor", "logical_not"}


# --------------------------------------------------------------------------- programs


@dataclass
class Input:
    """One argument: its logical shape and dtype, how it is laid out, and its value seed."""
    shape: tuple[int, ...]
    dtype: str
    layout: str = "c"        # c: contiguous, t: transposed view, s: strided (step 2), r: reversed
    seed: int = 0


@dataclass
class Op:
    """One op record; ``args`` index earlier values (taken modulo their count)."""
    kind: str
    name: str = ""
    args: tuple[int, ...] = ()
    p: dict[str, Any] = field(default_factory=dict)


@dataclass
class Program:
    inputs: list[Input]
    ops: list[Op]
    outputs: list[int]


@dataclass
class Val:
    """A value while interpreting: the tensor and what is known about its numerics."""
    t: Any
    approx: bool = False     # may differ from eager by rounding (transcendentals, sum order)
    chaotic: bool = False    # depends discontinuously on an approximate value: compare shape only
    reorder: bool = False    # a float reduction: overflow (inf vs nan vs finite) depends on the order
    scale: float = 1.0       # (eager runs) the largest finite magnitude this value was computed from
    tol: float = 0.0         # the tolerance of the least precise float dtype it was computed in


def _special(dtype: str) -> list:
    if dtype in FLOATS:
        fi = np.finfo(dtype)
        return [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, np.inf, -np.inf, np.nan, float(fi.max), -float(fi.max),
                float(fi.tiny), float(fi.smallest_subnormal), 3.0, 7.0, -7.0, 1e5, 1e10, -1e20, 2.0 ** 24,
                100.5, 65504.0, 1e30, 3e38, -1e38]
    if dtype == "bool":
        return [False, True]
    ii = np.iinfo(dtype)
    return [0, 1, -1, 2, -2, 3, 7, ii.max, ii.min, ii.max - 1, ii.min + 1, 8, 31, 63, 64, 100, -100]


def make_value(spec: Input) -> np.ndarray:
    """The argument's values (deterministic from its seed), in its logical shape, contiguous."""
    rng = np.random.default_rng(spec.seed)
    n = math.prod(spec.shape)
    if spec.dtype in COMPLEX:               # each part as a float input of the part dtype
        part = [make_value(dataclasses.replace(spec, dtype=PART[spec.dtype], seed=spec.seed + k))
                for k in (0, 7)]
        out = np.empty(spec.shape, spec.dtype)
        out.real, out.imag = part
        return out
    mode = spec.seed % 4                    # 0: small values, 1: wide, 2: with specials, 3: ints
    if spec.dtype == "bool":
        a = rng.random(n) < 0.5
    elif spec.dtype in FLOATS:
        if mode == 0:
            a = rng.standard_normal(n) * 2
        elif mode == 1:
            a = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 12, n)
        elif mode == 3:
            a = rng.integers(-9, 10, n).astype(np.float64)
        else:
            a = rng.standard_normal(n) * 3
            sp = _special(spec.dtype)
            pick = rng.random(n) < 0.4
            a[pick] = np.asarray(sp, dtype=np.float64)[rng.integers(0, len(sp), int(pick.sum()))]
        with np.errstate(all="ignore"):
            a = a.astype(spec.dtype)
    else:
        ii = np.iinfo(spec.dtype)
        if mode in (0, 3):
            a = rng.integers(max(ii.min, -9), min(ii.max, 10) + 1, n)
        else:
            a = rng.integers(int(ii.min), int(ii.max), n, endpoint=True, dtype=np.int64)
            sp = np.asarray(_special(spec.dtype), dtype=np.int64)
            pick = rng.random(n) < 0.3
            a[pick] = sp[rng.integers(0, len(sp), int(pick.sum()))]
        a = a.astype(spec.dtype)
    return np.ascontiguousarray(a.reshape(spec.shape))


def make_inputs(prog: Program) -> tuple[list[Any], list[Any]]:
    """Fresh tensors for one run: (arguments, their bases); non-contiguous layouts are views."""
    args, bases = [], []
    for spec in prog.inputs:
        v = make_value(spec)
        if spec.layout == "t" and v.ndim >= 2:
            base = tj.asarray(np.ascontiguousarray(np.swapaxes(v, -1, -2)))
            t = tj.matrix_transpose(base)
        elif spec.layout == "s" and v.ndim >= 1:
            wide = np.zeros(v.shape[:-1] + (2 * v.shape[-1],), v.dtype)
            wide[..., ::2] = v
            base = tj.asarray(wide)
            t = base[(Ellipsis, slice(None, None, 2))]
        elif spec.layout == "r" and v.ndim >= 1:
            base = tj.asarray(np.ascontiguousarray(v[::-1]))
            t = base[::-1]
        else:
            base = t = tj.asarray(v)
        args.append(t)
        bases.append(base)
    return args, bases


# --------------------------------------------------------------------------- the interpreter


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def _fits_into(src: tuple[int, ...], dst: tuple[int, ...]) -> bool:
    """Whether ``src`` broadcasts to exactly ``dst``."""
    try:
        return np.broadcast_shapes(src, dst) == tuple(dst)
    except ValueError:
        return False


def _scalar_for(dtype: Any, s: float) -> Any:
    if dtype == tj.bool:
        return bool(int(s) % 2)
    if dtype in (tj.float16, tj.float32, tj.float64):
        return float(s)
    if dtype in (tj.complex64, tj.complex128):
        return complex(float(s), -1.5)
    return int(s)


def _for_kind(name: str, v: Any) -> Any:
    """Coerce an operand so that ``name`` accepts its dtype (bitwise ops need ints, ...)."""
    if name in INT_ONLY and v.dtype in (tj.float16, tj.float32, tj.float64):
        return tj.astype(v, tj.int32)
    if name in BOOL_ONLY and v.dtype != tj.bool:
        return v != 0
    return v


def _axes(p: dict, ndim: int) -> Any:
    ax = p.get("axis")
    if ax is None or ndim == 0:
        return None
    if isinstance(ax, tuple):
        return tuple(sorted({a % ndim for a in ax}))
    return ax % ndim - (ndim if p.get("neg") else 0)


def _slice_key(shape: tuple[int, ...], p: dict) -> tuple:
    key = []
    for d, n in enumerate(shape):
        r = p.get("r", [])[d] if d < len(p.get("r", [])) else (0, 0, 1)
        a, b, s = r
        if s == 0:
            key.append(slice(None))
        elif s < 0:
            key.append(slice(n - 1 - (a % max(n, 1)) if n else None, None if b == 0 else b % max(n, 1) - n - 1
                             if n else None, s))
        else:
            key.append(slice(a % (n + 1), None if b == 0 else min(n, a % (n + 1) + b), s))
    return tuple(key)


def _apply(op: Op, env: list[Val]) -> Val | None:
    """Run one op record on the interpreter state; returns the new value (None: nothing new)."""
    def arg(i: int) -> Val:
        return env[op.args[i] % len(env)]

    p = op.p
    if op.kind == "unary":
        a = arg(0)
        x = _for_kind(op.name, a.t)
        out = getattr(tj, op.name)(x)
        # (|z| of a complex z is a hypot, which kernels approximate as they do exp; sign is z / |z|;
        # a complex sqrt is no correctly rounded operation: within an ulp or two of glibc's)
        approx = a.approx or op.name in UNARY_MATH or (
            op.name in ("abs", "sign", "sqrt") and _is_complex(a.t)) or _complex_product(op.name, out)
        # known: float64 sin/cos/tan lose accuracy past |x| ~ 1e12 (codegen.mathlib), and so
        # do complex128 exp, exp2, expm1, tanh, sin, cos, sinh and cosh (a sin and cos of a part)
        f64_trig = (op.name in ("sin", "cos", "tan") and out.dtype == tj.float64) or \
            (op.name in ("exp", "exp2", "expm1", "tanh", "sin", "cos", "sinh", "cosh")
             and out.dtype == tj.complex128)
        # tan has poles: an input one ulp off near pi/2 moves the result arbitrarily far
        ill = a.approx and (op.name in DISCONTINUOUS or op.name == "tan")
        return Val(out, approx, a.chaotic or f64_trig or ill)
    if op.kind in ("binary", "compare"):
        a, b = arg(0), arg(1)
        x = _for_kind(op.name, a.t)
        if p.get("scalar") is not None or not _broadcastable(a.t.shape, b.t.shape):
            y: Any = _scalar_for(x.dtype, p.get("scalar") if p.get("scalar") is not None else 2)
            b = Val(None)
        else:
            y = _for_kind(op.name, b.t)
        if p.get("swap"):
            x, y = y, x
        out = getattr(tj, op.name)(x, y)
        float_pow = op.name == "pow" and out.dtype in (tj.float16, tj.float32, tj.float64)
        approx = a.approx or b.approx or op.name in BINARY_MATH or float_pow or _complex_product(op.name, out)
        jumps = (a.approx or b.approx) and op.name in DISCONTINUOUS
        return Val(out, approx, a.chaotic or b.chaotic or jumps)
    if op.kind == "where":
        c, a, b = arg(0), arg(1), arg(2)
        cond = c.t if c.t.dtype == tj.bool else (tj.real(c.t) if _is_complex(c.t) else c.t) > 0
        if not _broadcastable(cond.shape, a.t.shape) or not _broadcastable(np.broadcast_shapes(
                cond.shape, a.t.shape), b.t.shape):
            b = a
        out = tj.where(cond, a.t, b.t)
        return Val(out, a.approx or b.approx, a.chaotic or b.chaotic or c.chaotic or c.approx)
    if op.kind == "cast":
        a = arg(0)
        out = tj.astype(a.t, getattr(tj, op.name))
        inexact = a.t.dtype in (tj.float16, tj.float32, tj.float64) or _is_complex(a.t)
        float_to_other = inexact and op.name not in FLOATS + COMPLEX
        return Val(out, a.approx and op.name in FLOATS + COMPLEX, a.chaotic or (a.approx and float_to_other))
    if op.kind == "reduce":
        a = arg(0)
        axis = _axes(p, a.t.ndim)
        fn = getattr(tj, op.name)
        if op.name in ("argmax", "argmin") and isinstance(axis, tuple):
            axis = axis[0] if axis else None
        if op.name in ("argmax", "argmin", "max", "min", "prod", "mean") and a.t.dtype == tj.bool:
            x = tj.astype(a.t, tj.int32)
        else:
            x = a.t
        out = fn(x, axis=axis, keepdims=bool(p.get("keepdims")))
        is_float = x.dtype in (tj.float16, tj.float32, tj.float64) or _is_complex(x)
        approx = a.approx or op.name == "mean" or (is_float and op.name in ("sum", "prod"))
        # a float16 product of many terms under- or overflows part-way or not depending on the
        # precision of the running product (NumPy rounds it to float16 at every step)
        terms = x.size // max(1, out.size)
        ranged = op.name == "prod" and x.dtype == tj.float16 and terms > 8
        return Val(out, approx, a.chaotic or ranged or (a.approx and op.name in DISCONTINUOUS))
    if op.kind == "view":
        a = arg(0)
        x = a.t
        if op.name == "slice":
            out = x[_slice_key(x.shape, p)] if x.ndim else x
        elif op.name == "permute":
            perm = sorted(range(x.ndim), key=lambda i: p.get("keys", [0] * 8)[i % 8] + i * 1e-3)
            out = tj.permute_dims(x, tuple(perm))
        elif op.name == "transpose":
            out = x.mT if x.ndim >= 2 else x
        elif op.name == "reshape":
            out = x.reshape(_reshape_target(x.shape, p.get("how", 0)))
        elif op.name == "expand":
            lead = tuple(p.get("lead", ()))
            shape = lead + tuple(p.get("grow", 3) if n == 1 and p.get("grow_ones") else n for n in x.shape)
            out = tj.broadcast_to(x, shape)
        elif op.name == "index":
            if x.ndim == 0 or x.shape[0] == 0:
                out = x[None] if p.get("newaxis") else x
            else:
                i = p.get("i", 0) % x.shape[0]
                out = x[i - x.shape[0] if p.get("neg") else i]
        elif op.name == "flip":
            out = tj.flip(x, axis=_axes(p, x.ndim)) if x.ndim else x
        else:
            raise AssertionError(op.name)
        return Val(out, a.approx, a.chaotic)
    if op.kind == "gather":
        a = arg(0)
        x = a.t
        if x.ndim == 0 or 0 in x.shape:
            return None
        ax = p.get("axis", 0) % x.ndim
        n = x.shape[ax]
        vals = [i % (2 * n) - n for i in p.get("idx", [0])]    # in [-n, n): negative ones wrap
        if p.get("oob"):
            vals[0] = n + 1                                      # both runs raise IndexError
        idx = np.array(vals, np.int64)
        if p.get("rows") and len(vals) > 1:
            idx = idx.reshape(-1, 1)
        return Val(tj.take(x, tj.asarray(idx), axis=ax), a.approx, a.chaotic)
    if op.kind == "matmul":
        a, b = arg(0), arg(1)
        x = a.t if a.t.dtype != tj.bool else tj.astype(a.t, tj.int32)
        if x.ndim < 2:
            x = x.reshape((1, -1)) if x.ndim == 1 else x.reshape((1, 1))
        y = b.t if b.t.dtype == x.dtype else tj.astype(b.t, x.dtype)
        if y.ndim != 2 or y.shape[0] != x.shape[-1] or x.ndim != 2:
            x = x.reshape((-1, x.shape[-1])) if x.shape[-1] else x.reshape((x.shape[0], 0))
            # x @ x.T of every row: at most MATMUL_ROWS of them (a 33x33x33x8 input's rows
            # would make a 36k x 36k product, gigabytes in each mode)
            x = x[:MATMUL_ROWS] if x.shape[0] > MATMUL_ROWS else x
            y, b = x.mT, a
        out = tj.matmul(x, y)
        is_float = x.dtype in (tj.float16, tj.float32, tj.float64) or _is_complex(x)
        return Val(out, a.approx or b.approx or is_float, a.chaotic or b.chaotic)
    if op.kind == "inplace":
        a, b = arg(0), arg(1)
        x = a.t
        if p.get("scalar") is not None or not _fits_into(b.t.shape, x.shape):
            y: Any = _scalar_for(x.dtype, p.get("scalar") if p.get("scalar") is not None else 3)
            b = Val(None)
        else:
            y = b.t if p.get("raw") or b.t.dtype == x.dtype else tj.astype(b.t, x.dtype)
        name = op.name
        if x.dtype == tj.bool and name not in ("bitwise_and", "bitwise_or", "bitwise_xor", "add", "multiply"):
            name = "bitwise_or"
        if name in INT_ONLY and x.dtype in (tj.float16, tj.float32, tj.float64):
            name = "add"
        if name == "divide" and x.dtype not in (tj.float16, tj.float32, tj.float64):
            name = "multiply"
        dunder = {"add": "__iadd__", "subtract": "__isub__", "multiply": "__imul__", "divide": "__itruediv__",
                  "floor_divide": "__ifloordiv__", "remainder": "__imod__", "pow": "__ipow__",
                  "bitwise_and": "__iand__", "bitwise_or": "__ior__", "bitwise_xor": "__ixor__"}
        if name == "maximum":
            x[...] = tj.maximum(x, y)
        else:
            getattr(x, dunder[name])(y)
        chaotic = a.chaotic or b.chaotic or ((a.approx or b.approx) and name in DISCONTINUOUS)
        float_pow = name == "pow" and x.dtype in (tj.float16, tj.float32, tj.float64)
        _taint(env, a, chaotic, a.approx or b.approx or float_pow or _complex_product(name, x))
        return None
    if op.kind == "setitem":
        a, b = arg(0), arg(1)
        x = a.t
        key = _slice_key(x.shape, p) if x.ndim else ()
        region = x[key] if x.ndim else x
        if p.get("scalar") is not None or not _fits_into(b.t.shape, region.shape):
            s = p.get("scalar") if p.get("scalar") is not None else 1
            x[key if x.ndim else ...] = _scalar_for(x.dtype, s)
            b = Val(None)
        else:
            x[key if x.ndim else ...] = b.t
        to_int = b.approx and x.dtype not in (tj.float16, tj.float32, tj.float64)
        _taint(env, a, a.chaotic or b.chaotic or to_int, a.approx or b.approx)
        return None
    raise AssertionError(op.kind)


def _complex_product(name: str, out: Any) -> bool:
    """A product of complex values: NumPy's own rounds ``a*c - b*d`` differently by the loop it
    picks (``np.square(z)`` and ``np.square(z[::-1])`` differ by an ulp in an element), so eager
    results vary with the operands' layout and compiled ones are compared within rounding."""
    return name in ("multiply", "square", "divide", "pow", "reciprocal") and _is_complex(out)


def _is_complex(t: Any) -> bool:
    return t.dtype in (tj.complex64, tj.complex128)


def _taint(env: list[Val], target: Val, chaotic: bool, approx: bool) -> None:
    """After an in-place update every value may share memory with the target: mark them all."""
    if not (chaotic or approx):
        return
    for v in env:
        v.approx = v.approx or approx
        v.chaotic = v.chaotic or chaotic


def _magnitude(t: Any) -> float:
    """The largest finite |value| of a concrete float tensor (1 for tracers and other dtypes)."""
    if getattr(t, "is_tracer", True) or t.dtype not in (tj.float16, tj.float32, tj.float64, tj.complex64,
                                                          tj.complex128) or t.size == 0:
        return 1.0
    a = np.asarray(t)
    a = (np.concatenate([a.real.ravel(), a.imag.ravel()]) if a.dtype.kind == "c" else a).astype(np.float64)
    a = np.abs(a[np.isfinite(a)])
    return max(1.0, float(a.max())) if a.size else 1.0


def _propagate(op: Op, env: list[Val], before: int) -> None:
    """Carry ``scale`` and ``reorder`` from an op's operands to what it produced or updated."""
    ins = [env[i % before] for i in op.args]
    scale = max([v.scale for v in ins] + [1.0])
    reduces = op.kind in ("reduce", "matmul") and op.name in ("", "sum", "prod", "mean")
    if reduces and ins and len(env) > before:
        # a sum's rounding error grows with its terms, not with its (maybe cancelled) result:
        # |terms| <= scale (scale_a * scale_b for a matmul's products), times their count
        first = ins[0].t
        terms = max(1, first.size // max(1, env[before].t.size)) if op.kind == "reduce" else \
            max(1, first.shape[-1] if first.ndim else 1)
        if op.kind == "matmul":
            scale = max(1.0, ins[0].scale) * max(1.0, ins[-1].scale)
        scale = min(scale * terms, 1e300)
    reorder = any(v.reorder for v in ins) or reduces
    tol = max([v.tol for v in ins] + [0.0])
    targets = env[before:] if len(env) > before else env
    for v in targets:
        v.scale = max(v.scale, scale, _magnitude(v.t))
        v.reorder = v.reorder or reorder
        v.tol = max(v.tol, tol, _TOL.get(str(v.t.dtype), 0.0))


def _reshape_target(shape: tuple[int, ...], how: int) -> tuple[int, ...]:
    n = math.prod(shape)
    how %= 4
    if how == 0:
        return (n,)
    if how == 1:
        return shape + (1,)
    if how == 2 and len(shape) >= 2:
        return (shape[0] * shape[1],) + shape[2:]
    if how == 3 and len(shape) >= 1 and shape[-1] % 2 == 0 and shape[-1] > 0:
        return shape[:-1] + (2, shape[-1] // 2)
    return (1,) + shape


def execute(prog: Program, args: Sequence[Any], flags: list[Val] | None = None) -> list[Any]:
    """Interpret ``prog`` on ``args`` with the public API; returns the output tensors.  ``flags``
    receives the output values' numerics (the same in every mode: they depend on structure)."""
    env = [Val(a, scale=_magnitude(a), tol=_TOL.get(str(a.dtype), 0.0)) for a in args]
    for op in prog.ops:
        before = len(env)
        v = _apply(op, env)
        if v is not None:
            env.append(v)
        _propagate(op, env, before)
    outs = [env[i % len(env)] for i in prog.outputs] + [env[-1]]
    if flags is not None:
        flags.extend(outs + env[:len(args)])
    return [o.t for o in outs]


def as_function(prog: Program) -> Callable[..., list[Any]]:
    def program(*args: Any) -> list[Any]:
        return execute(prog, args)
    return program


# --------------------------------------------------------------------------- generation


MATMUL_ROWS = 512


def generate(rng: random.Random, large: bool = False) -> Program:
    """A random program of 1-8 ops over 1-3 inputs."""
    def extent() -> int:
        return rng.choice([0, 1, 1, 2, 3, 3, 4, 5, 7, 8, 16, 33])

    n_in = rng.randint(1, 3)
    base_shape = tuple(extent() for _ in range(rng.choice([0, 1, 1, 2, 2, 2, 3, 3, 4])))
    if large:
        # 100K-460K elements: past runtime.cpu.SMALL_WORK, so launches split across threads
        base_shape = (rng.choice([1, 2, 3]), rng.choice([300, 513]), rng.choice([256, 300]))
    inputs = []
    for _ in range(n_in):
        shape = list(base_shape)
        if shape and rng.random() < 0.3:               # broadcast partners: drop or squash dims
            if rng.random() < 0.5:
                shape = shape[rng.randint(1, len(shape)):]
            else:
                shape[rng.randrange(len(shape))] = 1
        dtype = rng.choice(DTYPES + ["float32", "float32", "float64", "int32", "int64"])
        layout = rng.choice("ccctsr")
        inputs.append(Input(tuple(shape), dtype, layout, rng.randrange(1 << 30)))
    ops = []
    for _ in range(rng.randint(1, 8)):
        ops.append(_random_op(rng, n_in + len(ops)))
    outputs = [rng.randrange(64) for _ in range(rng.randint(0, 2))]
    return Program(inputs, ops, outputs)


def _random_op(rng: random.Random, n_vals: int) -> Op:
    def pick() -> int:
        return n_vals - 1 if rng.random() < 0.5 else rng.randrange(n_vals)

    def scalar() -> Any:
        return rng.choice([None, None, None, 0, 1, 2, -1, 3, 0.5, -2.5, 1e30, math.inf, math.nan, 7, 100])

    def axis() -> Any:
        return rng.choice([None, 0, 1, 2, -1, (0, 1), (1, 2), (0, 2), (0, 1, 2)])

    kind = rng.choices(["unary", "binary", "compare", "where", "cast", "reduce", "view", "matmul", "inplace",
                        "setitem", "gather"], [14, 18, 6, 4, 8, 10, 16, 3, 8, 6, 4])[0]
    if kind == "unary":
        return Op(kind, rng.choice(UNARY_EXACT + UNARY_MATH), (pick(),))
    if kind in ("binary", "compare"):
        names = BINARY_EXACT + BINARY_MATH if kind == "binary" else COMPARE
        return Op(kind, rng.choice(names), (pick(), rng.randrange(n_vals)),
                  {"scalar": scalar(), "swap": rng.random() < 0.2})
    if kind == "where":
        return Op(kind, "", (pick(), rng.randrange(n_vals), rng.randrange(n_vals)))
    if kind == "cast":
        return Op(kind, rng.choice(DTYPES), (pick(),))
    if kind == "reduce":
        return Op(kind, rng.choice(REDUCE), (pick(),), {"axis": axis(), "keepdims": rng.random() < 0.4,
                                                        "neg": rng.random() < 0.3})
    if kind == "view":
        name = rng.choice(["slice", "slice", "permute", "transpose", "reshape", "expand", "index", "flip"])
        p: dict[str, Any] = {}
        if name == "slice":
            p["r"] = [(rng.randrange(4), rng.choice([0, 0, 1, 2, 3]), rng.choice([1, 1, 2, 3, -1, -2, 0]))
                      for _ in range(4)]
        elif name == "permute":
            p["keys"] = [rng.random() for _ in range(8)]
        elif name == "reshape":
            p["how"] = rng.randrange(4)
        elif name == "expand":
            p["lead"] = tuple(rng.choice([1, 2, 3]) for _ in range(rng.randint(0, 2)))
            p["grow_ones"] = rng.random() < 0.6
            p["grow"] = rng.choice([2, 3, 5])
        elif name == "index":
            p = {"i": rng.randrange(8), "neg": rng.random() < 0.3, "newaxis": rng.random() < 0.5}
        elif name == "flip":
            p = {"axis": axis()}
        return Op(kind, name, (pick(),), p)
    if kind == "matmul":
        return Op(kind, "", (pick(), rng.randrange(n_vals)))
    if kind == "gather":
        return Op(kind, "", (pick(),), {"axis": rng.randrange(4), "rows": rng.random() < 0.3,
                                        "idx": [rng.randrange(-9, 9) for _ in range(rng.randint(1, 5))],
                                        "oob": rng.random() < 0.05})
    if kind == "inplace":
        return Op(kind, rng.choice(INPLACE), (pick(), rng.randrange(n_vals)),
                  {"scalar": scalar(), "raw": rng.random() < 0.1})
    return Op("setitem", "", (pick(), rng.randrange(n_vals)),
              {"r": [(rng.randrange(4), rng.choice([0, 1, 2]), rng.choice([1, 1, 2, -1, 0]))
                     for _ in range(4)],
               "scalar": scalar()})


# --------------------------------------------------------------------------- running and comparing


class Finding(Exception):
    """A difference between two runs; ``cls`` names its class for the summary."""

    def __init__(self, cls: str, detail: str) -> None:
        super().__init__(f"{cls}: {detail}")
        self.cls = cls
        self.detail = detail


_TOL = {"float16": 1e-2, "float32": 2e-5, "float64": 1e-11, "complex64": 2e-5, "complex128": 1e-11}


@dataclass
class Outcome:
    """One run: the outputs (NumPy copies) and the arguments after the call, or the error."""
    outs: list[np.ndarray] | None = None
    args_after: list[np.ndarray] | None = None
    error: BaseException | None = None
    flags: list[Val] = field(default_factory=list)
    shared: frozenset = frozenset()     # (output, argument or base) pairs sharing memory


def _shared_memory(outs: Sequence[Any], held: Sequence[Any]) -> frozenset:
    """Which outputs share memory with which arguments or bases: eagerly ``x[1:]`` returned is a
    view, so a later write to ``x`` shows in it, and a compiled call must give the same view."""
    def array(t: Any) -> Any:
        return t._value if isinstance(t, tj.Tensor) and t.device.type == "cpu" else None
    pairs = set()
    for i, o in enumerate(outs):
        a = array(o)
        for k, h in enumerate(held):
            b = array(h)
            if a is not None and b is not None and np.may_share_memory(a, b):
                pairs.add((i, k))
    return frozenset(pairs)


def run_mode(prog: Program, mode: str, jitted: Callable | None = None) -> Outcome:
    """Run ``prog`` eagerly (``mode='eager'``), under ``jit`` or ``interpret``, or in lazy mode
    (``mode='lazy'``: the eager code inside ``tj.lazy()``, flushed when the block ends);
    ``jitted``: the jitted function to call (one already called on other inputs)."""
    args, bases = make_inputs(prog)
    res = Outcome()
    try:
        if mode == "eager":
            outs = execute(prog, args, res.flags)
        elif mode == "lazy":
            with tj.lazy():
                outs = execute(prog, args)
        else:
            backend = {"backend": "interpret"} if mode == "interpret" else {}
            f = jitted or tj.jit(as_function(prog), **backend)
            outs = f(*args)
        res.outs = [np.array(np.asarray(o), copy=True) for o in outs]
        res.shared = _shared_memory(outs, list(args) + list(bases))
        res.args_after = [np.array(np.asarray(a), copy=True) for a in args] + \
                         [np.array(np.asarray(b), copy=True) for b in bases]
    except Exception as e:  # noqa: BLE001  (every failure is data here)
        res.error = e
    return res


def _allowed_jit_error(e: BaseException) -> bool:
    return isinstance(e, (tj.UnsupportedUnderJitError, tj.ConcretizationError))


def compare_arrays(a: np.ndarray, b: np.ndarray, what: str, flag: Val | None, exact: bool = False) -> None:
    """Raise a :class:`Finding` when ``b`` (under test) differs from ``a`` (eager)."""
    if a.shape != b.shape:
        raise Finding("shape", f"{what}: shape {b.shape} vs eager {a.shape}")
    if a.dtype != b.dtype:
        raise Finding("dtype", f"{what}: dtype {b.dtype} vs eager {a.dtype}")
    if a.dtype.kind == "c":             # each part as a float array
        compare_arrays(a.real, b.real, f"{what} (real part)", flag, exact)
        compare_arrays(a.imag, b.imag, f"{what} (imaginary part)", flag, exact)
        return
    if flag is not None and flag.chaotic and not exact:
        return
    if a.dtype.kind in "biu" or exact:
        same = (a == b) | ((a != a) & (b != b)) if a.dtype.kind == "f" else a == b
        if exact and a.dtype.kind == "f":
            same = a.view(f"u{a.dtype.itemsize}") == b.view(f"u{a.dtype.itemsize}")
            same |= np.isnan(a) & np.isnan(b)
        if not np.all(same):
            i = tuple(np.argwhere(~same)[0])
            raise Finding("int_value" if a.dtype.kind in "biu" else "cache_value",
                          f"{what}: at {i} got {b[i]!r}, eager {a[i]!r} ({np.count_nonzero(~same)} differ)")
        return
    an, bn = np.isnan(a), np.isnan(b)
    if flag is not None and flag.reorder:             # overflow in a reduction depends on its order
        odd = (an != bn) | (np.isinf(a) != np.isinf(b)) | (np.isinf(a) & np.isinf(b) & (a != b))
        a, b = np.where(odd, 0, a), np.where(odd, 0, b)
        an, bn = np.isnan(a), np.isnan(b)
    if not np.array_equal(an, bn):
        i = tuple(np.argwhere(an != bn)[0])
        raise Finding("nan", f"{what}: at {i} got {b[i]!r}, eager {a[i]!r}")
    ai, bi = np.isinf(a), np.isinf(b)
    if not np.array_equal(ai, bi) or not np.array_equal(a[ai], b[bi]):
        i = tuple(np.argwhere((ai != bi) | (ai & (a != b)))[0])
        raise Finding("inf", f"{what}: at {i} got {b[i]!r}, eager {a[i]!r}")
    fin = ~(an | ai)
    if not fin.any():
        return
    a64, b64 = a[fin].astype(np.float64), b[fin].astype(np.float64)
    approx = flag is not None and flag.approx
    if not approx:
        bad = ~((a64 == b64) & (np.signbit(a64) == np.signbit(b64)))
        if bad.any():
            j = int(np.argmax(bad))
            cls = "signed_zero" if a64[j] == b64[j] else "float_value"
            raise Finding(cls, f"{what}: got {b64[j]!r}, eager {a64[j]!r} ({int(bad.sum())} differ)")
        return
    tol = max(_TOL[a.dtype.name], flag.tol if flag is not None else 0.0)
    scale = max(1.0, float(np.max(np.abs(a64))), flag.scale if flag is not None else 1.0)
    bad = np.abs(a64 - b64) > tol * np.abs(a64) + tol * scale + np.finfo(a.dtype).tiny * 16
    if bad.any():
        j = int(np.argmax(bad))
        raise Finding("float_value", f"{what}: got {b64[j]!r}, eager {a64[j]!r} ({int(bad.sum())} differ)")


def compare(ref: Outcome, got: Outcome, mode: str, exact: bool = False) -> None:
    if ref.error is not None and got.error is not None:
        return
    if ref.error is not None:
        raise Finding(f"{mode}_succeeds", f"eager raised {type(ref.error).__name__}: {ref.error}")
    if got.error is not None:
        if mode not in ("cache", "lazy") and _allowed_jit_error(got.error):   # (lazy runs all eager code)
            return
        e = got.error
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:])
        raise Finding(f"{mode}_raises", f"{type(e).__name__}: {str(e)[:300]}\n{tb}")
    assert ref.outs is not None and got.outs is not None and ref.args_after is not None
    assert got.args_after is not None
    if len(ref.outs) != len(got.outs):
        raise Finding("structure", f"{len(got.outs)} outputs vs {len(ref.outs)}")
    for k, (a, b) in enumerate(zip(ref.outs, got.outs)):
        compare_arrays(a, b, f"{mode} output {k}", ref.flags[k] if ref.flags else None, exact)
    if ref.shared != got.shared:
        raise Finding("aliasing", f"{mode}: outputs sharing memory with (argument or base) "
                                  f"{sorted(got.shared)}, eager {sorted(ref.shared)}")
    arg_flags = ref.flags[len(ref.outs):]
    worst = Val(None, any(f.approx for f in arg_flags), any(f.chaotic for f in arg_flags))
    n = len(arg_flags)
    for k, (a, b) in enumerate(zip(ref.args_after, got.args_after)):
        # (then the arguments' bases, each with its argument's numerics)
        flag = arg_flags[k] if k < n else arg_flags[k - n] if k - n < n else worst
        try:
            compare_arrays(a, b, f"{mode} argument {k} after the call", flag, exact)
        except Finding as f:
            raise Finding("mutation" if f.cls in ("float_value", "int_value", "nan", "inf") else f.cls,
                          f.detail) from None


_PRIVATE: kernel_cache.KernelCache | None = None


def _private_cache() -> kernel_cache.KernelCache:
    """The fuzzer's own kernel cache (memory + a private directory), whatever the environment."""
    global _PRIVATE
    if _PRIVATE is None:
        _PRIVATE = kernel_cache.KernelCache(tempfile.mkdtemp(prefix="tj-fuzz-cache-"), disk=True)
    return _PRIVATE


MODES = ("jit", "interpret", "cache", "lazy", "recall")
DEFAULT_MODES = ("jit", "interpret", "cache", "recall")
LAYOUTS = ("c", "t", "s", "r")


def relaid(prog: Program, k: int) -> Program:
    """``prog`` on other argument layouts and values (the same shapes and dtypes)."""
    inputs = [dataclasses.replace(i, layout=LAYOUTS[(LAYOUTS.index(i.layout) + k + j) % 4], seed=i.seed + k)
              for j, i in enumerate(prog.inputs)]
    return dataclasses.replace(prog, inputs=inputs)


def _check_recalls(prog: Program) -> None:
    """One jitted function called on the program's inputs and then on other layouts and values:
    each call (a cache hit or a new trace, as its key says) must match eager."""
    f = tj.jit(as_function(prog))
    for k in range(3):
        variant = relaid(prog, k)
        compare(run_mode(variant, "eager"), run_mode(variant, "jit", f), "recall")


def check(prog: Program, cache_check: bool = True, modes: Sequence[str] = DEFAULT_MODES) -> None:
    """Run ``prog`` eagerly and in each of ``modes``; raise the first :class:`Finding`."""
    old = kernel_cache._default
    kernel_cache._default = _private_cache()
    try:
        ref = run_mode(prog, "eager")
        if "lazy" in modes:
            compare(ref, run_mode(prog, "lazy"), "lazy")
        if "jit" in modes or "cache" in modes:
            jit = run_mode(prog, "jit")
            compare(ref, jit, "jit")
            if cache_check and "cache" in modes and jit.error is None:
                compare(jit, _run_from_disk(prog), "cache", exact=True)
        if "interpret" in modes:
            compare(ref, run_mode(prog, "interpret"), "interpret")
        if "recall" in modes:
            _check_recalls(prog)
    finally:
        kernel_cache._default = old


def _run_from_disk(prog: Program) -> Outcome:
    """Run under jit with an empty in-memory kernel cache over the same directory, so every
    kernel the first run compiled is loaded from disk."""
    old = kernel_cache._default
    fresh = kernel_cache.KernelCache(_private_cache().directory, disk=True)
    kernel_cache._default = fresh
    try:
        out = run_mode(prog, "jit")
    finally:
        kernel_cache._default = old
    if fresh.stats["compiled"] and out.error is None:
        out.error = AssertionError(f"the cache run compiled {fresh.stats['compiled']} kernel(s) "
                                   f"instead of loading them from disk: {fresh.stats}")
    return out


# --------------------------------------------------------------------------- known patterns

# Known differences owned by other parts of the project: (name, predicate on the program,
# reproducer).  A finding in a program that matches is counted as expected.
def _zero_ties_in_min_max(prog: Program, f: Finding) -> bool:
    return f.cls == "signed_zero" and any(
        op.kind == "reduce" and op.name in ("min", "max") for op in prog.ops)


KNOWN: list[tuple[str, Callable[[Program, Finding], bool], str]] = [
    ("min/max reductions over +0.0 and -0.0 return either zero: which one follows the reduction "
     "order (NumPy's own varies with length and dtype)", _zero_ties_in_min_max,
     "tj.jit(lambda x: tj.min(x, axis=1))(tj.asarray(np.float32([[0.0, -0.0]])))  # 0.0; NumPy -0.0"),
]


def match_known(prog: Program, finding: Finding) -> str | None:
    for name, pred, _ in KNOWN:
        if pred(prog, finding):
            return name
    return None


# --------------------------------------------------------------------------- shrinking


def shrink(prog: Program, cls: str, budget: float = 20.0, modes: Sequence[str] = DEFAULT_MODES) -> Program:
    """Drop ops, outputs and extents while the finding keeps its class."""
    deadline = time.monotonic() + budget

    def still(p: Program) -> bool:
        if time.monotonic() > deadline:
            return False
        try:
            check(p, cache_check=cls.startswith("cache"), modes=modes)
        except Finding as f:
            return f.cls == cls
        except Exception:  # noqa: BLE001
            return False
        return False

    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        for i in range(len(prog.ops)):
            cand = dataclasses.replace(prog, ops=prog.ops[:i] + prog.ops[i + 1:])
            if cand.ops and still(cand):
                prog, changed = cand, True
                break
        if changed:
            continue
        if prog.outputs:
            cand = dataclasses.replace(prog, outputs=[])
            if still(cand):
                prog, changed = cand, True
                continue
        for k, inp in enumerate(prog.inputs):
            for d, n in enumerate(inp.shape):
                for m in sorted({1, 2, n // 2} - {n}):
                    if m >= n:
                        continue
                    shape = inp.shape[:d] + (m,) + inp.shape[d + 1:]
                    ins = list(prog.inputs)
                    ins[k] = dataclasses.replace(inp, shape=shape)
                    cand = dataclasses.replace(prog, inputs=ins)
                    if still(cand):
                        prog, changed = cand, True
                        break
                if changed:
                    break
            if changed:
                break
            if inp.layout != "c":
                ins = list(prog.inputs)
                ins[k] = dataclasses.replace(inp, layout="c")
                cand = dataclasses.replace(prog, inputs=ins)
                if still(cand):
                    prog, changed = cand, True
                    break
    return prog


def reproducer(prog: Program, finding: Finding) -> str:
    """A self-contained script that shows the finding."""
    vals = []
    for k, inp in enumerate(prog.inputs):
        v = make_value(inp)
        vals.append(f"# x{k}: {inp.dtype}{list(inp.shape)} layout {inp.layout}\n"
                    f"x{k} = np.array("
                    f"{np.array2string(v, separator=', ', threshold=10**6, floatmode='unique')}, "
                    f"dtype=np.{inp.dtype})")
    return (f"# {finding.cls}: {finding.detail.splitlines()[0]}\n"
            f"from tests.fuzz import *\nfrom numpy import inf, nan\n"
            f"prog = {prog!r}\n"
            f"# inputs (tests.fuzz.make_value of each spec):\n" + "\n".join(vals) + "\n"
            "check(prog)   # raises the Finding\n")


# --------------------------------------------------------------------------- driver


def fuzz(seconds: float, seed: int = 0, large: bool = False, max_programs: int | None = None,
         report: str | None = None, shrink_budget: float = 20.0, verbose: bool = True,
         modes: Sequence[str] = DEFAULT_MODES) -> dict[str, Any]:
    """Run random programs for ``seconds`` (or ``max_programs``), each eagerly and in ``modes``;
    returns the summary."""
    rng = random.Random(seed)
    t0 = time.monotonic()
    n = 0
    classes: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    repros: list[str] = []
    seen: set[str] = set()
    while time.monotonic() - t0 < seconds and (max_programs is None or n < max_programs):
        prog = generate(rng, large)
        n += 1
        try:
            check(prog, modes=modes)
        except Finding as f:
            known = match_known(prog, f)
            if known:
                expected[known] += 1
                continue
            classes[f.cls] += 1
            key = f.cls + "|" + f.detail.splitlines()[0][:60]
            if key in seen or len(repros) > 200:
                continue
            seen.add(key)
            small = shrink(prog, f.cls, shrink_budget, modes) if shrink_budget > 0 else prog
            try:
                check(small, cache_check=f.cls.startswith("cache"), modes=modes)
                final = f
            except Finding as g:
                final = g
            repros.append(f"# program {n} (seed {seed})\n" + reproducer(small, final))
            if verbose:
                print(f"[{n}] {final.cls}: {final.detail.splitlines()[0][:200]}", flush=True)
    summary = {"programs": n, "seconds": round(time.monotonic() - t0, 1), "findings": dict(classes),
               "expected": dict(expected), "reproducers": repros}
    if report:
        with open(report, "w") as fh:
            fh.write(f"# tracejit fuzz: seed {seed}, {n} programs, large={large}\n")
            fh.write(f"# findings by class: {dict(classes)}; expected (known): {dict(expected)}\n\n")
            fh.write("\n\n".join(repros))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--large", action="store_true", help="inputs past the multithreading split threshold")
    ap.add_argument("--programs", type=int, default=None, help="stop after this many programs")
    ap.add_argument("--report", default="fuzz_report.txt")
    ap.add_argument("--shrink-seconds", type=float, default=20.0)
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES),
                    help=f"what each program is compared with eager under, from {','.join(MODES)}")
    ns = ap.parse_args(argv)
    modes = tuple(m.strip() for m in ns.modes.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    s = fuzz(ns.seconds, ns.seed, ns.large, ns.programs, ns.report, ns.shrink_seconds, modes=modes)
    print(f"programs run: {s['programs']} in {s['seconds']} s")
    print(f"findings by class: {s['findings'] or 'none'}")
    if s["expected"]:
        print(f"expected (known, not counted): {s['expected']}")
    print(f"reproducers: {len(s['reproducers'])} written to {ns.report}")
    return 1 if s["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
