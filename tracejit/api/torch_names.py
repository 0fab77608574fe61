"""PyTorch-style names, as thin aliases over the Array API namespace (one table).

Each entry below is the whole of a name's implementation: a call of the standard functions
with PyTorch's argument names (``dim`` for ``axis``) and habits (varargs shapes).  Where the
two disagree the Array API function keeps the standard's meaning; only the alias differs
(docs/TORCH_NAMES.md lists every name and the differences).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .. import dtypes as dt
from .. import prims as P
from .. import random
from ..tensors import Tensor
from . import creation, elementwise, manipulation, searching, statistical
from .elementwise import clip


def _axes_of(x: Tensor, start_dim: int, end_dim: int) -> tuple[int, int]:
    nd = max(x.ndim, 1)
    return start_dim % nd, end_dim % nd


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """``x`` with a new size-1 dimension at ``dim`` (``expand_dims``)."""
    return manipulation.expand_dims(x, axis=dim)


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """``x`` with dimensions ``dim0`` and ``dim1`` swapped (``permute_dims``)."""
    perm = list(range(x.ndim))
    perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
    return manipulation.permute_dims(x, tuple(perm))


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Dimensions ``start_dim..end_dim`` merged into one (``reshape``); a 0-d tensor becomes 1-d."""
    if x.ndim == 0:
        return manipulation.reshape(x, (1,))
    a, b = _axes_of(x, start_dim, end_dim)
    merged = 1
    for n in x.shape[a:b + 1]:
        merged *= n
    return manipulation.reshape(x, x.shape[:a] + (merged,) + x.shape[b + 1:])


def clamp(x: Tensor, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
    """``clip`` under PyTorch's argument names."""
    return clip(x, min, max)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``concat`` along ``dim``."""
    return manipulation.concat(tensors, axis=dim)


def numel(x: Tensor) -> int:
    """The number of elements (``x.size`` in the Array API)."""
    return x.size


def _cast(dtype: Any) -> Callable[[Tensor], Tensor]:
    def cast(x: Tensor) -> Tensor:
        return x if x.dtype == dtype else manipulation.astype(x, dtype)
    cast.__doc__ = f"``x`` as {dtype.name} (no copy when it already is)."
    return cast


def clone(x: Tensor) -> Tensor:
    """A copy of ``x`` that gradients flow through; writing into it leaves ``x`` alone."""
    if (x.requires_grad or x.is_tracer) and not dt.is_bool(x.dtype):
        return P.mul(x, P.full_like(x, 1))      # x * 1 keeps -0.0 and NaN (x + 0 would not)
    return creation.asarray(x, copy=True)


def _fill_(x: Tensor, value: Any) -> Tensor:
    x._assign(creation.full_like(x, value))
    return x


def _zero_(x: Tensor) -> Tensor:
    return _fill_(x, 0)


class ValuesIndices(NamedTuple):
    """What ``x.max(dim=d)`` returns in PyTorch."""
    values: Tensor
    indices: Tensor


def _reduction(name: str) -> Callable[..., Any]:
    """A reduction method taking PyTorch's ``dim``/``keepdim`` (also positionally) or the
    standard's ``axis``/``keepdims``; ``max``/``min`` with ``dim`` give (values, indices)."""
    fn = getattr(statistical, name, None) or getattr(searching, name)

    def method(x: Tensor, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
               keepdims: bool | None = None, **kwargs: Any) -> Any:
        keep = keepdim if keepdims is None else keepdims
        if dim is None:
            return fn(x, axis=axis, keepdims=keep, **kwargs)
        if name in ("max", "min"):
            arg = statistical.argmax if name == "max" else statistical.argmin
            return ValuesIndices(fn(x, axis=dim, keepdims=keep), arg(x, axis=dim, keepdims=keep))
        return fn(x, axis=dim, keepdims=keep, **kwargs)
    method.__name__ = name
    method.__doc__ = f"``tracejit.{name}`` taking ``dim``/``keepdim`` as well as ``axis``/``keepdims``."
    return method


def _squeeze(x: Tensor, dim: Any = None, *, axis: Any = None) -> Tensor:
    """PyTorch's ``x.squeeze()``: every size-1 dimension, or ``dim`` if it has size 1 (else
    ``x`` unchanged).  ``axis=`` keeps the standard's meaning (an error for a size other than 1)."""
    if axis is not None:
        return manipulation.squeeze(x, axis=axis)
    dims = range(x.ndim) if dim is None else (dim,) if isinstance(dim, int) else dim
    axes = tuple(sorted({d % x.ndim for d in dims if x.shape[d] == 1})) if x.ndim else ()
    return manipulation.squeeze(x, axis=axes) if axes else x


def cumsum(x: Tensor, dim: int, *, dtype: Any = None) -> Tensor:
    """Running sums along ``dim`` (``cumulative_sum``)."""
    return statistical.cumulative_sum(x, axis=dim, dtype=dtype)


def isclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> Tensor:
    """Elementwise ``|a - b| <= atol + rtol * |b|`` (equal infinities are close), as PyTorch."""
    diff = elementwise.subtract(a, b)     # not finite where an infinity meets anything but itself
    within = elementwise.less_equal(elementwise.abs(diff),
                                    elementwise.add(atol, elementwise.multiply(rtol, elementwise.abs(b))))
    close = elementwise.logical_or(elementwise.equal(a, b),
                                   elementwise.logical_and(elementwise.isfinite(diff), within))
    if equal_nan:
        both_nan = elementwise.logical_and(elementwise.isnan(a), elementwise.isnan(b))
        close = elementwise.logical_or(close, both_nan)
    return close


def allclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    """Whether every element of ``a`` is close to ``b`` (a Python bool, so eager only)."""
    return bool(statistical.all(isclose(a, b, rtol, atol, equal_nan)))


def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (a list, number, NumPy array or tensor), as
    ``torch.tensor``: it never shares memory with ``data``."""
    return creation.asarray(data, dtype=dtype, device=device, copy=True, requires_grad=requires_grad)


def _varargs_shape(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``zeros(3, 4)`` as well as ``zeros((3, 4))``."""
    def create(*shape: Any, **kwargs: Any) -> Tensor:
        if len(shape) == 1 and not isinstance(shape[0], int):
            shape = shape[0]
        return fn(tuple(shape) if isinstance(shape, Sequence) else shape, **kwargs)
    create.__name__ = fn.__name__
    create.__doc__ = fn.__doc__
    return create


# name -> implementation.  NAMESPACE entries become ``tracejit.<name>``; METHODS entries become
# ``Tensor.<name>`` (called with the tensor first).
NAMESPACE: dict[str, Callable[..., Any]] = {
    "unsqueeze": unsqueeze,
    "transpose": transpose,
    "flatten": flatten,
    "clamp": clamp,
    "cat": cat,
    "concatenate": cat,
    "numel": numel,
    "rand": random.rand,
    "randn": random.randn,
    "cumsum": cumsum,
    "clone": clone,
    "isclose": isclose,
    "allclose": allclose,
    "tensor": tensor,
}

METHODS: dict[str, Callable[..., Any]] = {
    "unsqueeze": unsqueeze,
    "transpose": transpose,
    "flatten": flatten,
    "clamp": clamp,
    "numel": numel,
    "dim": lambda x: x.ndim,
    "contiguous": lambda x: x,
    "float": _cast(dt.float32),
    "double": _cast(dt.float64),
    "half": _cast(dt.float16),
    "long": _cast(dt.int64),
    "int": _cast(dt.int32),
    "bool": _cast(dt.bool_),
    "type_as": lambda x, other: _cast(other.dtype)(x),
    "cpu": lambda x: x.to_device("cpu"),
    "fill_": _fill_,
    "zero_": _zero_,
    "squeeze": _squeeze,
    "cumsum": cumsum,
    "clone": clone,
    **{name: _reduction(name) for name in ("sum", "prod", "mean", "all", "any", "max", "min",
                                            "argmax", "argmin")},
}

# creation with varargs shapes, as PyTorch allows: the standard's functions accept them too
VARARGS_CREATION = ("zeros", "ones", "empty")


def install(namespace: dict[str, Any]) -> list[str]:
    """Put the aliases into ``namespace`` (the ``tracejit`` module's) and onto Tensor."""
    for name, fn in METHODS.items():
        setattr(Tensor, name, fn)
    for name in VARARGS_CREATION:
        namespace[name] = _varargs_shape(getattr(creation, name))
    namespace.update(NAMESPACE)
    return list(NAMESPACE)
