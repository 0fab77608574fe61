"""Loop-level kernel IR: the contract between fusion (``tracejit``) and the code generators.

A :class:`Kernel` describes one fused loop nest over an iteration space of ``ndim`` dims.
The last ``n_reduce`` dims are the *reduction* (inner) space, the others the *outer*
(parallel) space.  Every operand is a strided view: element ``idx`` of operand ``k`` lives at
``base_k + sum_d idx[d] * stride_k[d]`` (strides in elements, offsets already applied to the
base pointer by the runtime).  A broadcast dim has stride 0; an output written once per
outer point has stride 0 on every reduce dim.

Extents and strides are runtime arguments.  What is structural (and so part of the cache
key) is each operand's *layout pattern*: per dim, ``"b"`` (stride 0), ``"c"`` (stride 1) or
``"s"`` (any other stride).  One compiled kernel serves every size with the same pattern.

The body is a list of stages run, in order, for every outer point:

* :class:`Reduce` loops over the reduce space and folds an expression into an accumulator;
  later stages read the result as ``Acc(i)`` (``i`` = the stage's position).
* :class:`Store` writes an expression to an output, either once per outer point
  (``over_reduce=False``) or at every point of the reduce space (``over_reduce=True``,
  e.g. the normalising pass of softmax).

With ``n_reduce == 0`` a kernel is purely elementwise: its stages are ``Store``\\ s.

Expressions are small immutable trees (shared sub-trees are allowed and are emitted once).
Scalar ops are named by strings from :data:`SCALAR_OPS`; every code generator implements
all of them.  Comparisons and predicates produce ``bool``.

There are no complex lanes: a complex value is a pair of float lanes (its real and imaginary
parts, :mod:`codegen.kir_complex`), and an operand of complex memory is two float operands,
one per part, strided over the interleaved storage (element strides doubled, the imaginary
part one element further).  So every code generator handles complex kernels unchanged.
"""
from __future__ import annotations

import functools
import hashlib
import numbers
from dataclasses import dataclass

DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
          "bfloat16", "float32", "float64")

# name -> arity.  Semantics follow NumPy for the operand dtype (all operands of an op share
# one dtype unless noted; the front end inserts casts).
SCALAR_OPS: dict[str, int] = {
    # arithmetic
    "neg": 1, "abs": 1, "sign": 1, "square": 1, "reciprocal": 1,
    "add": 2, "sub": 2, "mul": 2, "div": 2,          # div: true division (floats only)
    "floordiv": 2, "mod": 2,                          # Python semantics (sign of divisor), ints and floats
    "max": 2, "min": 2,                               # NaN-propagating for floats
    "pow": 2, "atan2": 2, "copysign": 2, "hypot": 2, "logaddexp": 2, "nextafter": 2,
    # transcendental (float only)
    "exp": 1, "exp2": 1, "expm1": 1, "log": 1, "log2": 1, "log10": 1, "log1p": 1,
    "sqrt": 1, "rsqrt": 1, "sin": 1, "cos": 1, "tan": 1, "asin": 1, "acos": 1, "atan": 1,
    "sinh": 1, "cosh": 1, "tanh": 1, "asinh": 1, "acosh": 1, "atanh": 1,
    "erf": 1, "sigmoid": 1,
    # rounding (float; identity on ints)
    "floor": 1, "ceil": 1, "round": 1, "trunc": 1,   # round: half to even
    # predicates -> bool
    "isnan": 1, "isinf": 1, "isfinite": 1, "signbit": 1,
    "eq": 2, "ne": 2, "lt": 2, "le": 2, "gt": 2, "ge": 2,
    # logical (bool) and bitwise (ints and bool)
    "not": 1, "and": 2, "or": 2, "xor": 2, "invert": 1, "shl": 2, "shr": 2,
    # select(cond: bool, a, b)
    "where": 3,
    # fma(a, b, c) = a * b + c rounded once (floats only): complex products round as NumPy's do
    "fma": 3,
    # cast(x) to the node's dtype (float->int truncates toward zero; ->bool is x != 0)
    "cast": 1,
}

LANE_DTYPES = {"complex64": "float32", "complex128": "float64"}   # a complex dtype's part lanes

REDUCE_OPS = ("sum", "prod", "max", "min", "argmax", "argmin")  # arg*: int64 flat index into the reduce space


def _memo_hash(node: object, fields: tuple) -> int:
    """``hash(fields)``, kept on the node: expressions are DAGs, and a plain dataclass hash
    walks a shared subexpression once per path to it (exponential in the depth of a chain of
    kernels' worth of fused ops)."""
    h = node.__dict__.get("_hash")
    if h is None:
        h = hash(fields)
        object.__setattr__(node, "_hash", h)
    return h


@dataclass(frozen=True)
class Load:
    """The value of input ``input`` at the current index."""
    input: int


@dataclass(frozen=True, eq=False)
class Const:
    value: bool | int | float
    dtype: str

    # -0.0 == 0.0 and nan != nan in Python; two constants are the same expression only when
    # their bits are, or a memo keyed by expressions would turn -0.0 into 0.0
    def _identity(self) -> tuple:
        v = self.value
        if isinstance(v, numbers.Integral) or not isinstance(v, numbers.Real):
            return (self.dtype, bool(v) if isinstance(v, bool) else v, isinstance(v, bool))
        return (self.dtype, float.hex(float(v)))      # a NumPy float too

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Const) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


@dataclass(frozen=True)
class Acc:
    """The result of reduce stage ``stage`` at the current outer point."""
    stage: int


@dataclass(frozen=True)
class Index:
    """The current loop index along iteration dim ``dim`` (int64)."""
    dim: int


@dataclass(frozen=True)
class Op:
    op: str
    args: tuple[Expr, ...]
    dtype: str

    def __hash__(self) -> int:
        return _memo_hash(self, (self.op, self.args, self.dtype))


@dataclass(frozen=True)
class Piecewise:
    """A select by index range along iteration dim ``dim``: ``pieces[k]`` where
    ``cuts[k-1] <= Index(dim) < cuts[k]`` (``cuts`` ascending, one fewer than ``pieces``; the
    first piece starts at 0, the last runs to the end).  A piece is evaluated only at the points
    of its range, so its loads may address memory that exists only there (a concatenation's
    operand read shifted by its position).  Used in kernels without reduce dims."""
    dim: int
    cuts: tuple[int, ...]
    pieces: tuple[Expr, ...]

    def __hash__(self) -> int:
        return _memo_hash(self, (self.dim, self.cuts, self.pieces))

    @property
    def args(self) -> tuple[Expr, ...]:
        return self.pieces


@dataclass(frozen=True)
class Gather:
    """Input ``input`` read ``index`` steps along iteration dim ``dim`` from the current point
    (an indexed load: ``table[idx[t], j]``).  The fusion pass gives a gathering kernel an
    outer dim of extent 1 for this, along which only the table has a stride (its row stride), so
    the step is a run-time number like every other stride; ``index`` (int64) is in range,
    checked before the kernel runs."""
    input: int
    dim: int
    index: Expr

    def __hash__(self) -> int:
        return _memo_hash(self, (self.input, self.dim, self.index))

    @property
    def args(self) -> tuple[Expr, ...]:
        return (self.index,)


Expr = Load | Const | Acc | Index | Op | Piecewise | Gather


@dataclass(frozen=True)
class Reduce:
    op: str            # one of REDUCE_OPS
    expr: Expr
    dtype: str         # accumulator/result dtype (int64 for argmax/argmin)


@dataclass(frozen=True)
class Store:
    output: int
    expr: Expr
    over_reduce: bool = False


Stage = Reduce | Store


@dataclass(frozen=True)
class Operand:
    dtype: str
    layout: tuple[str, ...]   # per iteration dim: "b" | "c" | "s"


@dataclass(frozen=True)
class Kernel:
    name: str
    ndim: int
    n_reduce: int
    inputs: tuple[Operand, ...]
    outputs: tuple[Operand, ...]
    stages: tuple[Stage, ...]

    @functools.cached_property
    def key(self) -> str:
        """The structural key (computed when first asked: fusion builds many kernels it drops)."""
        return structural_key(self)

    @property
    def n_outer(self) -> int:
        return self.ndim - self.n_reduce


def structural_key(k: Kernel) -> str:
    """Content hash of everything that decides the generated code (not the name, not sizes)."""
    text = repr((k.ndim, k.n_reduce, k.inputs, k.outputs, k.stages))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def expr_dtype(k: Kernel, e: Expr) -> str:
    """The dtype of an expression node inside kernel ``k``."""
    if isinstance(e, (Load, Gather)):
        return k.inputs[e.input].dtype
    if isinstance(e, Acc):
        return k.stages[e.stage].dtype
    if isinstance(e, Index):
        return "int64"
    if isinstance(e, Piecewise):
        return expr_dtype(k, e.pieces[0])
    return e.dtype


def walk(expr: Expr, pieces: bool = True):
    """Yield every node of an expression tree once (post-order, shared nodes once); with
    ``pieces=False`` a :class:`Piecewise` is yielded without its pieces."""
    seen: set[int] = set()
    stack: list[tuple[Expr, bool]] = [(expr, False)]
    while stack:
        node, done = stack.pop()
        if done:
            yield node
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        if isinstance(node, (Op, Gather)) or (pieces and isinstance(node, Piecewise)):
            stack.extend((a, False) for a in reversed(node.args))


def specialize(expr: Expr, dim: int, lo: int, hi: int | None, memo: dict | None = None) -> Expr:
    """``expr`` where ``Index(dim)`` is known to lie in ``[lo, hi)`` (``hi`` None: unbounded),
    a range inside one piece of every :class:`Piecewise` along ``dim``: those become their piece."""
    memo = {} if memo is None else memo
    if id(expr) in memo:
        return memo[id(expr)]
    out = expr
    if isinstance(expr, Piecewise) and expr.dim == dim:
        k = sum(c <= lo for c in expr.cuts)
        assert hi is None or k == len(expr.cuts) or hi <= expr.cuts[k], "range straddles a cut"
        out = specialize(expr.pieces[k], dim, lo, hi, memo)
    elif isinstance(expr, Piecewise):
        pieces = tuple(specialize(p, dim, lo, hi, memo) for p in expr.pieces)
        same = all(p is pieces[0] or (isinstance(p, Const) and p == pieces[0]) for p in pieces)
        out = pieces[0] if same else Piecewise(expr.dim, expr.cuts, pieces)
    elif isinstance(expr, Op):
        args = tuple(specialize(a, dim, lo, hi, memo) for a in expr.args)
        out = expr if all(a is b for a, b in zip(args, expr.args)) else Op(expr.op, args, expr.dtype)
    elif isinstance(expr, Gather):
        index = specialize(expr.index, dim, lo, hi, memo)
        out = expr if index is expr.index else Gather(expr.input, expr.dim, index)
    memo[id(expr)] = out
    return out


def cuts_along(exprs, dim: int) -> list[int]:
    """Every cut of a :class:`Piecewise` along ``dim`` in ``exprs``, ascending."""
    return sorted({c for e in exprs for n in walk(e) if isinstance(n, Piecewise) and n.dim == dim
                   for c in n.cuts})


def format_expr(expr: Expr) -> str:
    if isinstance(expr, Load):
        return f"in{expr.input}[i]"
    if isinstance(expr, Const):
        return f"{expr.value!r}:{expr.dtype}"
    if isinstance(expr, Acc):
        return f"acc{expr.stage}"
    if isinstance(expr, Index):
        return f"i{expr.dim}"
    if isinstance(expr, Gather):
        return f"in{expr.input}[i; i{expr.dim} += {format_expr(expr.index)}]"
    if isinstance(expr, Piecewise):
        bounds = ("0",) + tuple(map(str, expr.cuts)) + ("",)
        parts = ", ".join(f"[{lo}:{hi}] {format_expr(p)}"
                          for lo, hi, p in zip(bounds, bounds[1:], expr.pieces))
        return f"by_i{expr.dim}({parts})"
    if expr.op == "cast":
        return f"{expr.dtype}({format_expr(expr.args[0])})"
    return f"{expr.op}({', '.join(format_expr(a) for a in expr.args)})"


def format_kernel(k: Kernel) -> str:
    """Readable text of a kernel: its operands, loop nest and stages."""
    outer = ", ".join(f"i{d}" for d in range(k.n_outer))
    inner = ", ".join(f"i{d}" for d in range(k.n_outer, k.ndim))
    lines = [f"kernel {k.name}  [{k.key}]"]
    for kind, ops in (("in", k.inputs), ("out", k.outputs)):
        for i, o in enumerate(ops):
            lines.append(f"  {kind}{i}: {o.dtype} layout={''.join(o.layout) or '-'}")
    lines.append(f"  parallel for ({outer}):" if outer else "  (single point):")
    for s, st in enumerate(k.stages):
        if isinstance(st, Reduce):
            lines.append(f"    acc{s} = {st.op} over ({inner}) of {format_expr(st.expr)}  : {st.dtype}")
        else:
            loop = f"for ({inner}): " if st.over_reduce else ""
            lines.append(f"    {loop}out{st.output}[i] = {format_expr(st.expr)}")
    return "\n".join(lines)
