"""Sizes as polynomials of named dimensions: how one exported program serves every batch size.

A compiled program is data (:mod:`runtime.program`) whose kernels take their extents and strides
as arguments, so programs traced at different sizes of a dimension differ only in integers
(extents, strides, offsets, byte counts) and in size-derived run-time constants (a mean's count).
:func:`fit` takes the same program, encoded as a JSON tree (:mod:`tracejit.export_program`), at
several sizes of each named dimension and replaces every integer that varies by the polynomial
of the names (degree at most 2 in each) that produces it; :func:`evaluate` turns the template
back into a concrete tree for any sizes.  Anything else that varies (a kernel, an op, a float)
means the program's structure depends on the size, and :func:`fit` refuses it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from .errors import TracejitError

MAX_DEGREE = 2  # per name: x * x appears (attention over a symbolic sequence length)
MAX_NAMES = 2  # samples grow as 3 ** names
# Sizes tried for each name, first the ones fitted, then the ones checked.  Small (tracing and
# planning are per size; kernels are shared), never 1 (a size-1 dim simplifies differently).
SAMPLE_SIZES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)
POLY = "$poly"  # {"$poly": [[numerator, denominator, e_1, ..., e_k], ...]}
RECIPROCAL = "$recip"  # {"$recip": <poly>}: 1 / poly (a float constant such as 1 / count)
CONST = "$c"  # {"$c": [dtype, value]}: a 0-d constant of the program (value may be fitted)


class ExportShapeError(TracejitError):
    """The traced program cannot be expressed for every size of a symbolic dimension."""


def monomials(n_names: int) -> list[tuple[int, ...]]:
    return list(itertools.product(range(MAX_DEGREE + 1), repeat=n_names))


def sample_points(names: Sequence[str], avoid: set[int]) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    """(points to fit on: a grid of MAX_DEGREE + 1 sizes per name, points to check the fit on).

    Sizes equal to a static dimension of the inputs are skipped: a batch of 3 rows of 3 features
    could let the passes treat two different dims alike."""
    sizes = [s for s in SAMPLE_SIZES if s not in avoid]
    fit_sizes, check_sizes = sizes[: MAX_DEGREE + 1], sizes[MAX_DEGREE + 1 : MAX_DEGREE + 3]
    grid = [dict(zip(names, combo)) for combo in itertools.product(fit_sizes, repeat=len(names))]
    checks = [dict(zip(names, check_sizes if k % 2 == 0 else check_sizes[::-1])) for k in range(2)]
    if len(names) == 1:
        checks = [{names[0]: s} for s in check_sizes]
    return grid, checks


def _solve(rows: list[list[Fraction]], rhs: list[Fraction]) -> list[Fraction]:
    """Gaussian elimination over the rationals (the systems here are at most 9 x 9)."""
    n = len(rhs)
    a = [row[:] + [b] for row, b in zip(rows, rhs)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(n):
            if r != col and a[r][col] != 0:
                f = a[r][col] / a[col][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[col])]
    return [a[r][n] / a[r][r] for r in range(n)]


def _monomial_value(point: Sequence[int], exps: Sequence[int]) -> int:
    return math.prod(p**e for p, e in zip(point, exps))


def fit_poly(points: list[tuple[int, ...]], values: list[Fraction]) -> list[list[int]]:
    """The polynomial (as ``[[num, den, e_1, ...], ...]``, zero terms dropped) through ``values``
    at the grid ``points``."""
    exps = monomials(len(points[0]))
    rows = [[Fraction(_monomial_value(p, e)) for e in exps] for p in points]
    coefs = _solve(rows, values)
    return [[c.numerator, c.denominator, *e] for c, e in zip(coefs, exps) if c != 0]


def eval_poly(terms: list[list[int]], point: Sequence[int]) -> Fraction:
    return sum((Fraction(num, den) * _monomial_value(point, exps) for num, den, *exps in terms), Fraction(0))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _cast(value: Any, dtype: str) -> Any:
    return np.asarray(value, dtype=dtype).item()


def _constant_value(template: dict[str, Any], point: Sequence[int]) -> Any:
    """A 0-d constant's value at ``point``, computed in its dtype (as the passes fold it)."""
    dtype, value = template[CONST]
    if isinstance(value, dict) and RECIPROCAL in value:
        n = np.asarray(float(eval_poly(value[RECIPROCAL][POLY], point)), dtype=dtype)
        return (np.asarray(1, dtype=dtype) / n).item()
    if isinstance(value, dict):
        return _cast(float(eval_poly(value[POLY], point)), dtype)
    return value


def _fit_constant(items: list[dict[str, Any]], points: list[tuple[int, ...]]) -> dict[str, Any] | None:
    """A 0-d constant that varies with the sizes: a count (``n``, ``n - 1``) or its reciprocal,
    whichever reproduces every sample exactly in the constant's dtype; None when neither does."""
    dtypes = {x[CONST][0] for x in items}
    values = [x[CONST][1] for x in items]
    rest = [{k: v for k, v in x.items() if k != CONST} for x in items]
    if (
        len(dtypes) != 1
        or any(r != rest[0] for r in rest)
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v != 0 and math.isfinite(v)
            for v in values
        )
    ):
        return None
    dtype = dtypes.pop()
    for reciprocal in (False, True):
        guesses = [Fraction(1 / v if reciprocal else v).limit_denominator(1 << 10) for v in values]
        poly: dict[str, Any] = {POLY: fit_poly(points, guesses)}
        candidate = {**rest[0], CONST: [dtype, {RECIPROCAL: poly} if reciprocal else poly]}
        if all(_constant_value(candidate, p) == v for p, v in zip(points, values)):
            return candidate
    return None


def fit(trees: list[Any], points: list[tuple[int, ...]], what: str = "program") -> Any:
    """One template for trees of the same structure at ``points`` (sizes of the names, in order):
    varying integers become polynomials, varying 0-d constants polynomials (``n``) or their
    reciprocals (``1 / n``); raises :class:`ExportShapeError` naming where anything else differs."""

    def go(items: list[Any], path: str) -> Any:
        first = items[0]
        if all(_is_int(x) for x in items):
            if all(x == first for x in items):
                return first
            return {POLY: fit_poly(points, [Fraction(x) for x in items])}
        if isinstance(first, dict) and CONST in first:
            fitted = _fit_constant(items, points)
            if fitted is not None:
                return fitted
        if isinstance(first, dict) and all(isinstance(x, dict) and x.keys() == first.keys() for x in items):
            return {k: go([x[k] for x in items], f"{path}.{k}") for k in first}
        if isinstance(first, list) and all(isinstance(x, list) and len(x) == len(first) for x in items):
            return [go([x[i] for x in items], f"{path}[{i}]") for i in range(len(first))]
        if all(type(x) is type(first) and x == first for x in items):
            return first
        shown = ", ".join(f"{x!r:.60}" for x in items[:3])
        if path.endswith(".launch"):
            shown += " (different kernels: a size is compiled in, e.g. a concatenation or pad along it)"
        raise ExportShapeError(
            f"export: the compiled {what} changes with the symbolic sizes in a way export cannot "
            f"express (at {path}: {shown}); the program's structure depends on a symbolic "
            "dimension's size. Export with that dimension fixed (an int in tj.spec) instead."
        )

    return go(trees, "$")


def is_symbolic(value: Any) -> bool:
    return isinstance(value, dict) and POLY in value and len(value) == 1


def difference(a: Any, b: Any, path: str = "$") -> str | None:
    """Where two trees first differ (``$.steps[3].shape[0]: 77 != 80``), None when equal."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return next((d for k in a if (d := difference(a[k], b[k], f"{path}.{k}"))), None)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next(
            (d for i, (x, y) in enumerate(zip(a, b)) if (d := difference(x, y, f"{path}[{i}]"))), None
        )
    return None if type(a) is type(b) and a == b else f"{path}: {a!r:.60} != {b!r:.60}"


def evaluate(template: Any, point: Sequence[int]) -> Any:
    """The concrete tree at ``point``; raises :class:`ExportShapeError` when a size comes out
    fractional or negative (sizes outside what the program can take)."""
    if isinstance(template, dict):
        if is_symbolic(template):
            v = eval_poly(template[POLY], point)
            if v.denominator != 1 or v < 0:
                raise ExportShapeError(f"sizes {tuple(point)}: a program extent comes out as {v}")
            return int(v)
        if CONST in template:
            return {**template, CONST: [template[CONST][0], _constant_value(template, point)]}
        return {k: evaluate(v, point) for k, v in template.items()}
    if isinstance(template, list):
        return [evaluate(v, point) for v in template]
    return template


def max_degree(template: Any) -> int:
    """The highest total degree of any polynomial in ``template`` (0: nothing is symbolic)."""
    if isinstance(template, dict):
        if POLY in template and len(template) == 1:
            return max((sum(t[2:]) for t in template[POLY]), default=0)
        return max((max_degree(v) for v in template.values()), default=0)
    if isinstance(template, list):
        return max((max_degree(v) for v in template), default=0)
    return 0
