"""Scalar expressions for a custom op's lowering: ``lower=lambda x: x * s.sigmoid(x)``.

A lowering receives one :class:`Scalar` per operand (the operand's value at one element) and
returns a :class:`Scalar` (or a Python number): ordinary operators and the functions here build
the op's loop-level IR (``codegen.kir``), which the code generators inline into fused kernels
on the CPU and the GPU alike.
"""
from __future__ import annotations

from numbers import Number
from typing import Any

from codegen import kir

_PREDICATES = frozenset({"isnan", "isinf", "isfinite", "signbit", "eq", "ne", "lt", "le", "gt", "ge"})


class Scalar:
    """One element of an operand, or an expression of them, with its dtype name."""

    __slots__ = ("expr", "dtype")
    __hash__ = None        # type: ignore[assignment]   (== builds an expression)

    def __init__(self, expr: kir.Expr, dtype: str) -> None:
        self.expr, self.dtype = expr, dtype

    def __repr__(self) -> str:
        return f"Scalar({self.expr}, {self.dtype})"

    def __bool__(self) -> bool:
        raise TypeError("a custom op's lowering computes on symbolic scalars: Python control flow on "
                        "one is not possible; use scalar_expr.where(cond, a, b)")

    def astype(self, dtype: Any) -> Scalar:
        name = _dtype_name(dtype)
        return self if name == self.dtype else Scalar(kir.Op("cast", (self.expr,), name), name)

    def __add__(self, o: Any) -> Scalar: return _apply("add", self, o)
    def __radd__(self, o: Any) -> Scalar: return _apply("add", o, self)
    def __sub__(self, o: Any) -> Scalar: return _apply("sub", self, o)
    def __rsub__(self, o: Any) -> Scalar: return _apply("sub", o, self)
    def __mul__(self, o: Any) -> Scalar: return _apply("mul", self, o)
    def __rmul__(self, o: Any) -> Scalar: return _apply("mul", o, self)
    def __truediv__(self, o: Any) -> Scalar: return _apply("div", self, o)
    def __rtruediv__(self, o: Any) -> Scalar: return _apply("div", o, self)
    def __floordiv__(self, o: Any) -> Scalar: return _apply("floordiv", self, o)
    def __mod__(self, o: Any) -> Scalar: return _apply("mod", self, o)
    def __pow__(self, o: Any) -> Scalar: return _apply("pow", self, o)
    def __rpow__(self, o: Any) -> Scalar: return _apply("pow", o, self)
    def __neg__(self) -> Scalar: return _apply("neg", self)
    def __abs__(self) -> Scalar: return _apply("abs", self)
    def __lt__(self, o: Any) -> Scalar: return _apply("lt", self, o)
    def __le__(self, o: Any) -> Scalar: return _apply("le", self, o)
    def __gt__(self, o: Any) -> Scalar: return _apply("gt", self, o)
    def __ge__(self, o: Any) -> Scalar: return _apply("ge", self, o)
    def __eq__(self, o: Any) -> Scalar: return _apply("eq", self, o)        # type: ignore[override]
    def __ne__(self, o: Any) -> Scalar: return _apply("ne", self, o)        # type: ignore[override]
    def __and__(self, o: Any) -> Scalar: return _apply("and", self, o)
    def __or__(self, o: Any) -> Scalar: return _apply("or", self, o)
    def __xor__(self, o: Any) -> Scalar: return _apply("xor", self, o)
    def __invert__(self) -> Scalar: return _apply("not" if self.dtype == "bool" else "invert", self)


def _dtype_name(dtype: Any) -> str:
    import numpy as np
    name = np.dtype(dtype).name
    if name not in kir.DTYPES:
        raise TypeError(f"scalar_expr: unsupported dtype {name}")
    return name


def _lift(x: Any, dtype: str) -> Scalar:
    if isinstance(x, Scalar):
        return x
    if isinstance(x, (bool, Number)) and not isinstance(x, complex):
        if dtype != "bool" and isinstance(x, bool):
            x = int(x)
        if dtype.startswith(("int", "uint")) and isinstance(x, float):
            raise TypeError(f"scalar_expr: float constant {x} in {dtype} arithmetic; cast first")
        return Scalar(kir.Const(x, dtype), dtype)
    raise TypeError(f"scalar_expr: cannot use {type(x).__name__} in a lowering (numbers and scalars only)")


def _apply(op: str, *args: Any) -> Scalar:
    dtype = next((a.dtype for a in args if isinstance(a, Scalar)), None)
    if dtype is None:
        raise TypeError(f"scalar_expr.{op}: needs at least one scalar operand")
    if op == "where":
        dtype = next((a.dtype for a in args[1:] if isinstance(a, Scalar)), "float32")
        cond = _lift(args[0], "bool")
        a, b = _lift(args[1], dtype), _lift(args[2], dtype)
        if cond.dtype != "bool":
            raise TypeError(f"scalar_expr.where: the condition must be bool, got {cond.dtype}")
        if a.dtype != b.dtype:
            raise TypeError(f"scalar_expr.where: branches have dtypes {a.dtype} and {b.dtype}")
        return Scalar(kir.Op("where", (cond.expr, a.expr, b.expr), a.dtype), a.dtype)
    lifted = [_lift(a, dtype) for a in args]
    if len({a.dtype for a in lifted}) > 1:
        raise TypeError(f"scalar_expr.{op}: operands have dtypes {', '.join(a.dtype for a in lifted)}; "
                        "cast one with .astype(dtype)")
    out = "bool" if op in _PREDICATES else dtype
    return Scalar(kir.Op(op, tuple(a.expr for a in lifted), out), out)


def where(cond: Any, a: Any, b: Any) -> Scalar:
    """``a`` where ``cond`` else ``b``."""
    return _apply("where", cond, a, b)


def maximum(a: Any, b: Any) -> Scalar:
    """The larger (NaN-propagating)."""
    return _apply("max", a, b)


def minimum(a: Any, b: Any) -> Scalar:
    """The smaller (NaN-propagating)."""
    return _apply("min", a, b)


def _unary(name: str):
    def fn(x: Any) -> Scalar:
        return _apply(name, x)
    fn.__name__ = name
    fn.__doc__ = f"``{name}`` of a scalar (see codegen.kir.SCALAR_OPS)."
    return fn


UNARY = [n for n, arity in kir.SCALAR_OPS.items() if arity == 1 and n not in ("cast", "not")]
for _n in UNARY:
    globals()[_n] = _unary(_n)


def unwrap(result: Any, dtype: str, op: str) -> kir.Expr:
    """The kir expression of a lowering's result, which must have the op's dtype ``dtype``."""
    r = _lift(result, dtype)
    if r.dtype != dtype:
        raise TypeError(f"custom op {op!r}: its lowering gives {r.dtype}, the op's dtype is {dtype} "
                        "(cast with .astype)")
    return r.expr


__all__ = ["Scalar", "where", "maximum", "minimum", "unwrap", *UNARY]
