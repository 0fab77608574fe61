"""Linear algebra: matmul (its own kernel kind), tensordot, vecdot; outer and einsum on top of them."""
from __future__ import annotations

import math
from collections.abc import Sequence

from .. import dtypes as dt
from .. import prims as P
from ..autocast import autocast_dtype, autocast_operands
from ..tensors import Tensor
from ._convert import as_tensor, broadcast_shapes_for, normalize_axis


def matmul(x1: Tensor, x2: Tensor, /) -> Tensor:
    """Matrix product with NumPy's rules for 1-D operands and broadcast batch dims."""
    if type(x1) is Tensor and type(x2) is Tensor:     # two matrices of one dtype: nothing to adapt
        (sa, da), (sb, db) = x1._aval, x2._aval
        if len(sa) == 2 and len(sb) == 2 and da == db and sa[1] == sb[0] and autocast_dtype() is None:
            return P.matmul(x1, x2)
    a, b = as_tensor(x1), as_tensor(x2)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
    dtype = dt.promote_types(a.dtype, b.dtype)
    (a, b), reduced = autocast_operands(P.cast(a, dtype), P.cast(b, dtype))
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = P.reshape(a, shape=(1,) + a.shape)
    if squeeze_b:
        b = P.reshape(b, shape=b.shape + (1,))
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: shapes {x1.shape} and {x2.shape} are not aligned "
                         f"({a.shape[-1]} != {b.shape[-2]})")
    batch = broadcast_shapes_for("matmul", a.shape[:-2], b.shape[:-2])
    if b.ndim == 2 and a.ndim > 2:
        out = _rows_times_matrix(a, b)
    else:
        a = P.broadcast_to(a, batch + a.shape[-2:])
        b = P.broadcast_to(b, batch + b.shape[-2:])
        out = P.matmul(a, b)
    if reduced is not None:
        out = P.cast(out, dtype=reduced)
    shape = batch + (() if squeeze_a else out.shape[-2:-1]) + (() if squeeze_b else out.shape[-1:])
    return out if shape == out.shape else P.reshape(out, shape=shape)


def _rows_times_matrix(a: Tensor, b: Tensor) -> Tensor:
    """A stack of matrices times one matrix as one 2-D product, the stack folded into the rows:
    one large GEMM instead of a batch of small ones with a broadcast operand, and the gradient
    of ``b`` comes out as one GEMM over the whole stack instead of a batch of products summed."""
    batch, (m, k) = a.shape[:-2], a.shape[-2:]
    rows = P.reshape(a, shape=(math.prod(batch) * m, k))
    return P.reshape(P.matmul(rows, b), shape=batch + (m, b.shape[-1]))


def tensordot(x1: Tensor, x2: Tensor, /, *, axes: int | tuple[Sequence[int], Sequence[int]] = 2) -> Tensor:
    """Sum over the given axes of ``x1`` and ``x2`` (as a permute + reshape + matmul)."""
    from .manipulation import permute_dims, reshape
    a, b = as_tensor(x1), as_tensor(x2)
    if isinstance(axes, int):
        if axes < 0:
            raise ValueError(f"tensordot: axes must be non-negative, got {axes}")
        ax_a, ax_b = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        ax_a = [normalize_axis(i, a.ndim, "tensordot") for i in axes[0]]
        ax_b = [normalize_axis(i, b.ndim, "tensordot") for i in axes[1]]
    for i, j in zip(ax_a, ax_b):
        if a.shape[i] != b.shape[j]:
            raise ValueError(f"tensordot: axis {i} of {a.shape} and axis {j} of {b.shape} differ")
    free_a = [i for i in range(a.ndim) if i not in ax_a]
    free_b = [i for i in range(b.ndim) if i not in ax_b]
    k = 1
    for i in ax_a:
        k *= a.shape[i]
    m = 1
    for i in free_a:
        m *= a.shape[i]
    n = 1
    for i in free_b:
        n *= b.shape[i]
    am = reshape(permute_dims(a, free_a + ax_a), (m, k))
    bm = reshape(permute_dims(b, ax_b + free_b), (k, n))
    return reshape(matmul(am, bm), tuple(a.shape[i] for i in free_a) + tuple(b.shape[i] for i in free_b))


def vecdot(x1: Tensor, x2: Tensor, /, *, axis: int = -1) -> Tensor:
    """Dot product along ``axis`` with broadcasting, ``sum(conj(x1) * x2)`` in the operands'
    promoted dtype."""
    from .elementwise import conj, multiply
    from .statistical import sum
    a, b = as_tensor(x1), as_tensor(x2)
    nd = max(a.ndim, b.ndim)
    ax = normalize_axis(axis, nd, "vecdot")
    if a.shape[ax - nd] != b.shape[ax - nd] if a.ndim and b.ndim else True:
        raise ValueError(f"vecdot: shapes {a.shape} and {b.shape} differ along axis {axis}")
    prod = multiply(conj(a), b)
    return sum(prod, axis=ax - nd, dtype=prod.dtype)


def outer(x1: Tensor, x2: Tensor, /) -> Tensor:
    """``x1[i] * x2[j]`` for 1-D operands (a broadcast product, so it fuses)."""
    from .elementwise import multiply
    a, b = as_tensor(x1), as_tensor(x2)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"outer: operands must be 1-D, got shapes {a.shape} and {b.shape}")
    return multiply(P.reshape(a, shape=(a.shape[0], 1)), P.reshape(b, shape=(1, b.shape[0])))


def _einsum_terms(subscripts: str, operands: Sequence[Tensor]) -> tuple[list[str], str, dict[str, int]]:
    spec = subscripts.replace(" ", "")
    if "..." in spec:
        raise ValueError(f"einsum: ellipsis ('...') is not supported, got {subscripts!r}; "
                         "name every dimension with a letter")
    inputs, arrow, output = spec.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum: {subscripts!r} names {len(terms)} operand(s), got {len(operands)}")
    sizes: dict[str, int] = {}
    for term, x in zip(terms, operands):
        if not all(c.isascii() and c.isalpha() for c in term):
            raise ValueError(f"einsum: subscripts are letters, got {term!r} in {subscripts!r}")
        if len(term) != x.ndim:
            raise ValueError(f"einsum: {term!r} names {len(term)} dimension(s) of a {x.ndim}-D operand "
                             f"of shape {x.shape}")
        if len(set(term)) != len(term):
            raise ValueError(f"einsum: {term!r} repeats an index within one operand (a diagonal, as in "
                             "'ii->i'), which is not supported; take the diagonal with indexing first")
        for c, n in zip(term, x.shape):
            if sizes.setdefault(c, n) != n:
                raise ValueError(f"einsum: index {c!r} has size {sizes[c]} in one operand and {n} in another")
    if not arrow:       # implicit output: the indices seen once, in alphabetical order
        output = "".join(sorted(c for c in sizes if inputs.count(c) == 1))
    if len(set(output)) != len(output) or any(c not in sizes for c in output):
        raise ValueError(f"einsum: the output {output!r} must name distinct indices of the inputs")
    return terms, output, sizes


def _einsum_sum_out(x: Tensor, term: str, keep: str) -> tuple[Tensor, str]:
    """``x`` summed over the indices of ``term`` not in ``keep`` (in its own dtype)."""
    from .statistical import sum
    drop = tuple(i for i, c in enumerate(term) if c not in keep)
    if not drop:
        return x, term
    return sum(x, axis=drop, dtype=x.dtype), "".join(c for c in term if c in keep)


def _einsum_pair(a: Tensor, la: str, b: Tensor, lb: str, keep: str,
                 sizes: dict[str, int]) -> tuple[Tensor, str]:
    """One contraction: ``a`` and ``b`` as a batched matmul (batch, left, contracted) @
    (batch, contracted, right), keeping the indices in ``keep``."""
    from .manipulation import permute_dims, reshape
    a, la = _einsum_sum_out(a, la, keep + lb)
    b, lb = _einsum_sum_out(b, lb, keep + la)
    batch = [c for c in la if c in lb and c in keep]
    contracted = [c for c in la if c in lb and c not in keep]
    left = [c for c in la if c not in lb]
    right = [c for c in lb if c not in la]

    def prod(cs: list[str]) -> int:
        n = 1
        for c in cs:
            n *= sizes[c]
        return n
    am = reshape(permute_dims(a, tuple(la.index(c) for c in batch + left + contracted)),
                 (prod(batch), prod(left), prod(contracted)))
    bm = reshape(permute_dims(b, tuple(lb.index(c) for c in batch + contracted + right)),
                 (prod(batch), prod(contracted), prod(right)))
    out = matmul(am, bm)
    letters = batch + left + right
    return reshape(out, tuple(sizes[c] for c in letters)), "".join(letters)


def einsum(subscripts: str, /, *operands: Tensor) -> Tensor:
    """Einstein summation, as ``numpy.einsum``/``torch.einsum``: ``einsum('bij,bjk->bik', a, b)``.

    Operands are contracted left to right, each pair as one batched ``matmul`` between
    permutes and reshapes (so it has gradients and compiles).  Not supported: ``...`` and an
    index repeated within one operand (diagonals such as ``'ii->i'``); each is a ValueError.
    """
    from .manipulation import permute_dims
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])      # torch.einsum('ij,jk', [a, b])
    xs = [as_tensor(x) for x in operands]
    if not xs:
        raise ValueError("einsum needs at least one operand")
    dtype = dt.result_type(*xs)
    xs = [P.cast(x, dtype) for x in xs]
    terms, output, sizes = _einsum_terms(subscripts, xs)
    x, term = xs[0], terms[0]
    for i in range(1, len(xs)):
        later = output + "".join(terms[i + 1:])
        x, term = _einsum_pair(x, term, xs[i], terms[i], later, sizes)
    x, term = _einsum_sum_out(x, term, output)
    if term != output:
        x = permute_dims(x, tuple(term.index(c) for c in output))
    return x
