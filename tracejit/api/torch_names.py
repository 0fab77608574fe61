"""PyTorch-style names, as thin aliases over the Array API namespace (one table).

Each entry below is the whole of a name's implementation: a call of the standard functions
with PyTorch's argument names (``dim`` for ``axis``) and habits (varargs shapes).  Where the
two disagree the Array API function keeps the standard's meaning; only the alias differs
(docs/TORCH_NAMES.md lists every name and the differences).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import prims as P
from .. import random
from ..autograd import zero_ as _zero_
from ..nn import functional as F
from ..tensors import Tensor
from . import creation, elementwise, linalg, manipulation, searching, statistical
from . import torch_functions as tf
from .elementwise import clip
from .torch_functions import ValuesIndices


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


def cat(tensors: Sequence[Tensor], dim: int = 0, *, axis: int | None = None) -> Tensor:
    """``concat`` along ``dim`` (or NumPy's ``axis=``)."""
    return manipulation.concat(tensors, axis=dim if axis is None else axis)


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
    # introspection (inspect.signature) reports the standard's signature, which still holds
    functools.update_wrapper(create, fn)
    return create


class ElementCount(int):
    """``x.size``: the standard's element count (an int), which PyTorch code can also call:
    ``x.size()`` is the shape and ``x.size(d)`` the extent of dimension ``d``."""

    def __call__(self, dim: int | None = None) -> Any:
        if dim is None:
            return self.shape
        nd = len(self.shape)
        if not -nd <= dim < nd:
            raise IndexError(f"size({dim}): dimension out of range for a {nd}-D tensor")
        return self.shape[dim]

    def __reduce__(self) -> Any:        # pickles (and copies) as the plain int
        return int, (int(self),)


def _size(x: Tensor) -> ElementCount:
    n = ElementCount(math.prod(x.shape))
    n.shape = x.shape
    return n


def _sizes(args: tuple) -> tuple[int, ...]:
    """``f(2, 3)`` or ``f((2, 3))``."""
    return tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else tuple(args)


def _view(x: Tensor, *sizes: Any) -> Tensor:
    """PyTorch's ``x.view(2, 3)``: a reshape that shares ``x``'s memory, refused (as PyTorch
    refuses it) where the strides cannot express it, so writes through it always reach ``x``."""
    if len(sizes) == 1 and (isinstance(sizes[0], (np.dtype, type, str))):
        raise TypeError("view(dtype) reinterprets bits, which tracejit does not do; use astype for a "
                        "value conversion")
    out = manipulation.reshape(x, _sizes(sizes))
    if out is x or x.size == 0 or _shares_memory(x, out):
        return out
    raise RuntimeError(
        f"view: a {x.shape} tensor with these strides cannot be viewed as {out.shape} (a dimension "
        "spans two separate runs of memory); use .reshape(...), which copies where it must")


def _shares_memory(x: Tensor, out: Tensor) -> bool:
    trace = out._trace
    if trace is not None:
        return id(out) in trace.aliasing.views        # (a reshape the trace took for a view)
    if x.device.type != "cpu":
        return True             # (on a GPU a view is what reshape makes there)
    return np.shares_memory(x._value, out._value)


def _expand(x: Tensor, *sizes: Any) -> Tensor:
    """PyTorch's ``x.expand(2, 3)``: ``broadcast_to``, where -1 keeps a dimension's size."""
    shape = _sizes(sizes)
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"expand: {shape} has fewer dimensions than the tensor's shape {x.shape}")
    if any(n == -1 for n in shape[:lead]):
        raise ValueError(f"expand: -1 is not allowed for a new leading dimension, got {shape}")
    return manipulation.broadcast_to(
        x, tuple(x.shape[i - lead] if n == -1 else n for i, n in enumerate(shape)))


def _repeat(x: Tensor, *sizes: Any) -> Tensor:
    """PyTorch's ``x.repeat(2, 3)``: the whole tensor repeated per dimension (``tile``).  The
    standard's ``tracejit.repeat`` repeats each element (``numpy.repeat``)."""
    reps = _sizes(sizes)
    if len(reps) < x.ndim:
        raise ValueError(f"repeat: {len(reps)} repeat counts for a {x.ndim}-D tensor; give one per dimension")
    return manipulation.tile(x, reps)


def _softmax(x: Tensor, dim: int = -1, dtype: Any = None) -> Tensor:
    """``nn.functional.softmax`` along ``dim`` (after a cast to ``dtype``, when given)."""
    return F.softmax(x if dtype is None else manipulation.astype(x, dtype), dim)


def _in_place(op: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``x.add_(y)`` and the like: ``op``'s result written into ``x`` (as ``x += y`` does,
    through views, on the tape and under jit)."""
    def method(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        x._assign(op(x, *args, **kwargs))
        return x
    method.__name__ = f"{op.__name__}_"
    return method




def _copy_(x: Tensor, src: Any) -> Tensor:
    """``x.copy_(src)``: ``src`` broadcast to ``x``'s shape and cast to its dtype, in place."""
    src = manipulation.broadcast_to(creation.asarray(src, device=x.device), x.shape)
    x._assign(P.bind("cast", src, dtype=x.dtype))    # always a new value, even for a same-dtype src
    return x


_UNSET: Any = object()


def _spread(name: str) -> Callable[..., Tensor]:
    """``var``/``std`` as methods.  PyTorch's spellings (a positional ``dim``, ``dim=``,
    ``keepdim=``, ``unbiased=``) give PyTorch's default ``correction=1``; no arguments, or only
    the standard's ``axis=``/``keepdims=``/``correction=``, give the standard's 0."""
    fn = getattr(statistical, name)

    def method(x: Tensor, dim: Any = _UNSET, unbiased: Any = _UNSET, keepdim: Any = _UNSET, *,
               axis: Any = None, keepdims: bool | None = None, correction: float | None = None) -> Tensor:
        if isinstance(dim, bool):             # x.var(False): PyTorch's var(unbiased)
            dim, unbiased = _UNSET, dim
        torch_style = any(v is not _UNSET for v in (dim, unbiased, keepdim))
        if correction is None:
            correction = (1 if unbiased is _UNSET or unbiased else 0) if torch_style else 0
        elif unbiased is not _UNSET:
            raise TypeError(f"{name}: give unbiased or correction, not both")
        keep = bool(keepdim) if keepdims is None and keepdim is not _UNSET else bool(keepdims)
        return fn(x, axis=axis if dim is _UNSET else dim, correction=correction, keepdims=keep)
    method.__name__ = name
    method.__doc__ = _spread.__doc__
    return method


def topk(x: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> ValuesIndices:  # noqa: A002
    """The ``k`` largest (``largest=False``: smallest) entries along ``dim`` and their indices,
    always sorted (``sorted`` is accepted for PyTorch's signature)."""
    return ValuesIndices(*searching.topk(x, k, axis=dim, largest=largest))


def randint(*args: Any, size: Any = None, dtype: Any = None,
            generator: random.Generator | None = None) -> Tensor:
    """``randint(high, size)`` or ``randint(low, high, size)``: integers in ``[low, high)``
    (int64 unless ``dtype``) from the global generator."""
    if size is None:
        if len(args) < 2:
            raise TypeError("randint(high, size) or randint(low, high, size)")
        *bounds, size = args
    else:
        bounds = list(args)
    if len(bounds) not in (1, 2):
        raise TypeError("randint(high, size) or randint(low, high, size)")
    low, high = (0, bounds[0]) if len(bounds) == 1 else bounds
    low, high = int(low), int(high)
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    shape = (size,) if isinstance(size, int) else tuple(size)
    out = random.randint(random._gen(generator).next_key(), shape, low, high)
    return out if dtype is None else manipulation.astype(out, dtype)


def randn_like(x: Tensor, *, dtype: Any = None) -> Tensor:
    """Standard normal numbers with ``x``'s shape and (floating) dtype."""
    return random.randn(x.shape, dtype=dtype or x.dtype)


def rand_like(x: Tensor, *, dtype: Any = None) -> Tensor:
    """Uniform ``[0, 1)`` numbers with ``x``'s shape and (floating) dtype."""
    return random.rand(x.shape, dtype=dtype or x.dtype)


def _with_dim(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn(x, dim, keepdim)`` positionally as PyTorch passes them (``fn`` takes ``axis``)."""
    def method(x: Tensor, dim: int = -1, *args: Any, **kwargs: Any) -> Tensor:
        return fn(x, dim, *args, **kwargs)
    functools.update_wrapper(method, fn)
    return method


# the standard's elementwise functions that PyTorch also has as methods, under the same name
_UNARY = ("sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh",
          "floor", "ceil", "trunc", "round", "sign", "square", "reciprocal", "rsqrt", "log1p", "expm1",
          "log2", "log10", "exp2", "erf", "isnan", "isinf", "isfinite", "logical_not", "signbit",
          "negative", "positive", "conj")
_BINARY = ("maximum", "minimum", "atan2", "remainder", "floor_divide", "logical_and", "logical_or",
           "logical_xor", "hypot", "copysign", "bitwise_and", "bitwise_or", "bitwise_xor", "logaddexp")
_COMPARISONS = {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
                "ge": "greater_equal"}
# torch_functions entries that are both ``torch.<name>(x, ...)`` and ``x.<name>(...)``
_SHARED = ("narrow", "split", "chunk", "unbind", "index_select", "index_add", "gather", "masked_fill",
           "repeat_interleave", "cumprod", "diagonal", "diag", "trace")

# name -> implementation.  NAMESPACE entries become ``tracejit.<name>``; METHODS entries become
# ``Tensor.<name>`` (called with the tensor first; ``size`` is a property, the callable count).
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
    "einsum": linalg.einsum,
    "outer": linalg.outer,
    "topk": topk,
    "randint": randint,
    "randn_like": randn_like,
    "rand_like": rand_like,
    "softmax": _softmax,
    "sigmoid": F.sigmoid,
    "relu": F.relu,
    "logsumexp": _with_dim(F.logsumexp),
    "log_softmax": _with_dim(F.log_softmax),
    "permute": lambda x, dims: manipulation.permute_dims(x, tuple(dims)),
    "long": dt.int64, "half": dt.float16, "double": dt.float64, "short": dt.int16,
    "cfloat": dt.complex64, "cdouble": dt.complex128,
    "mul": elementwise.multiply, "sub": tf.sub, "div": tf.div, "neg": elementwise.negative,
    **{name: getattr(tf, name) for name in _SHARED + ("mm", "bmm", "addmm", "lerp", "is_tensor")},
    "from_numpy": tf.from_numpy,
    **{torch: getattr(elementwise, std) for torch, std in _COMPARISONS.items()},
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
    "size": property(_size),
    "expand": _expand,
    "view": _view,
    "repeat": _repeat,
    "softmax": _softmax,
    "pow": elementwise.pow,
    "topk": topk,
    "add_": _in_place(tf.add),
    "sub_": _in_place(tf.sub),
    "mul_": _in_place(elementwise.multiply),
    "div_": _in_place(elementwise.divide),
    "clamp_": _in_place(clamp),
    "copy_": _copy_,
    "var": _spread("var"),
    "std": _spread("std"),
    "logsumexp": _with_dim(F.logsumexp),
    "log_softmax": _with_dim(F.log_softmax),
    "masked_fill_": _in_place(tf.masked_fill),
    "index_add_": _in_place(tf.index_add),
    "tril": creation.tril, "triu": creation.triu,
    "t": tf.t, "view_as": tf.view_as, "expand_as": tf.expand_as,
    "sort": tf.sort, "argsort": tf.argsort, "roll": tf.roll,
    "new_zeros": tf.new_zeros, "new_ones": tf.new_ones, "new_full": tf.new_full,
    "add": tf.add, "sub": tf.sub, "mul": elementwise.multiply, "div": tf.div, "neg": elementwise.negative,
    **{name: getattr(tf, name) for name in _SHARED + ("mm", "bmm")},
    **{name: getattr(elementwise, name) for name in _UNARY + _BINARY},
    **{torch: getattr(elementwise, std) for torch, std in _COMPARISONS.items()},
    **{name: _reduction(name) for name in ("sum", "prod", "mean", "all", "any", "max", "min",
                                            "argmax", "argmin")},
}

# creation with varargs shapes, as PyTorch allows: the standard's functions accept them too
VARARGS_CREATION = ("zeros", "ones", "empty")

# Functions of the standard that PyTorch spells with ``dim``-style arguments and sometimes other
# results (``torch.max(x, dim=1)`` and ``torch.sort`` give (values, indices)): name -> (how many
# positional arguments the standard takes, PyTorch's form).  A call with more positional
# arguments or a PyTorch keyword takes PyTorch's form; any other call is the standard's.
TORCH_FORMS: dict[str, tuple[int, Callable[..., Any]]] = {
    **{name: (1, METHODS[name]) for name in ("sum", "prod", "mean", "all", "any", "max", "min",
                                             "argmax", "argmin", "var", "std", "sort", "argsort")},
    "roll": (2, tf.roll),
    "flip": (1, lambda x, dims: manipulation.flip(x, axis=dims)),
    "stack": (1, lambda tensors, dim=0: manipulation.stack(tensors, axis=dim)),
}
_TORCH_KEYWORDS = frozenset({"dim", "keepdim", "dims", "shifts", "unbiased"})   # (not the standard's)


def _standard_or_torch(standard: Callable[..., Any], positional: int,
                       torch_form: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(standard)          # (its signature is the standard's, for introspection)
    def either(*args: Any, **kwargs: Any) -> Any:
        if len(args) > positional or not _TORCH_KEYWORDS.isdisjoint(kwargs):
            return torch_form(*args, **kwargs)
        return standard(*args, **kwargs)
    return either


def install(namespace: dict[str, Any]) -> list[str]:
    """Put the aliases into ``namespace`` (the ``tracejit`` module's) and onto Tensor."""
    for name, fn in METHODS.items():
        setattr(Tensor, name, fn)
    for name in VARARGS_CREATION:
        namespace[name] = _varargs_shape(getattr(creation, name))
    namespace.update(NAMESPACE)
    for name, (positional, torch_form) in TORCH_FORMS.items():
        namespace[name] = _standard_or_torch(namespace[name], positional, torch_form)
    return list(NAMESPACE) + list(TORCH_FORMS)
