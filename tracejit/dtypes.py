"""Data types and the type-promotion rules (Python Array API standard, 2023.12).

Dtypes are NumPy dtype objects, so ``tj.float32 == np.float32`` and NumPy interop needs no
translation.  Promotion follows the standard's table within a kind.  Where the standard
leaves mixed kinds to the implementation, tracejit follows PyTorch: ``bool`` with a number
takes the number's type, an integer with a float takes the float's type (so float32 data
stays float32).  Python scalars are *weakly typed*: they take the tensor's dtype when the
kinds are compatible (``x_f32 * 2.0`` is float32, ``x_i8 + 1`` is int8), else the default
dtype of their kind.

``bfloat16`` is ml_dtypes' NumPy dtype: a storage format.  Arithmetic on it computes in float32
and rounds each result back to bfloat16 (round to nearest even), eagerly and in kernels alike
(``prims.bind`` widens the operands); mixed with float16 it promotes to float32, as in PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

bool_ = np.dtype("bool")  # exported as ``tracejit.bool``
int8 = np.dtype("int8")
int16 = np.dtype("int16")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
uint8 = np.dtype("uint8")
uint16 = np.dtype("uint16")
uint32 = np.dtype("uint32")
uint64 = np.dtype("uint64")
float16 = np.dtype("float16")
bfloat16 = np.dtype(ml_dtypes.bfloat16)
float32 = np.dtype("float32")
float64 = np.dtype("float64")
complex64 = np.dtype("complex64")
complex128 = np.dtype("complex128")

ALL_DTYPES = (bool_, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, bfloat16, float32,
              float64, complex64, complex128)
INT_DTYPES = (int8, int16, int32, int64, uint8, uint16, uint32, uint64)
FLOAT_DTYPES = (float16, bfloat16, float32, float64)
COMPLEX_DTYPES = (complex64, complex128)
NUMERIC_DTYPES = INT_DTYPES + FLOAT_DTYPES + COMPLEX_DTYPES

default_float = float32
default_int = int64
default_uint = uint64       # sums of unsigned integers (the standard: as many bits as default_int)
default_complex = complex64

DType = np.dtype


def is_float(dt: np.dtype) -> bool:
    return dt.kind == "f" or dt == bfloat16


def is_complex(dt: np.dtype) -> bool:
    return dt.kind == "c"


def is_inexact(dt: np.dtype) -> bool:
    """Real or complex floating point (bfloat16 included)."""
    return dt.kind in "fc" or dt == bfloat16


def real_dtype(dt: np.dtype) -> np.dtype:
    """The dtype of the real and imaginary parts of ``dt`` (``dt`` itself when real)."""
    return float32 if dt == complex64 else float64 if dt == complex128 else dt


def complex_dtype(dt: np.dtype) -> np.dtype:
    """The complex dtype with parts of ``dt`` (float16 and float32: complex64)."""
    return complex128 if dt in (float64, complex128) else complex64


def is_int(dt: np.dtype) -> bool:
    return dt.kind in "iu"


def is_bool(dt: np.dtype) -> bool:
    return dt.kind == "b"


def canonical(dtype: Any) -> np.dtype:
    """Turn a user's dtype spelling into one of ours, or raise naming it."""
    if dtype is float:
        return default_float
    if dtype is int:
        return default_int
    if dtype is complex:
        return default_complex
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"data type not understood: {dtype!r}") from None
    if dt not in ALL_DTYPES:
        supported = ", ".join(d.name for d in ALL_DTYPES)
        raise TypeError(f"unsupported data type {dt.name}; tracejit supports {supported}")
    return dt


def _promote_pair(a: np.dtype, b: np.dtype) -> np.dtype:
    if a == b:
        return a
    if is_bool(a):
        return b
    if is_bool(b):
        return a
    if is_complex(a) or is_complex(b):
        # complex with any number: complex with parts as wide as the widest float involved
        wide = any(d in (float64, complex128) for d in (a, b))
        return complex128 if wide else complex64
    if is_float(a) and is_float(b):
        if a.itemsize == b.itemsize == 2:     # float16 with bfloat16: neither holds the other
            return float32
        return a if a.itemsize >= b.itemsize else b
    if is_float(a):
        return a
    if is_float(b):
        return b
    # both integers: the standard's table (an unsigned type with a signed one widens to fit)
    if a.kind == b.kind:
        return a if a.itemsize >= b.itemsize else b
    signed, unsigned = (a, b) if a.kind == "i" else (b, a)
    if signed.itemsize > unsigned.itemsize:
        return signed
    if unsigned == uint64:
        raise TypeError(f"no integer dtype holds every value of both {a.name} and {b.name} (the standard "
                        "leaves this promotion undefined); cast one operand explicitly")
    return np.dtype(f"int{unsigned.itemsize * 16}")


def promote_types(*dtypes: np.dtype) -> np.dtype:
    """The dtype that every one of ``dtypes`` converts to (strongly typed operands only)."""
    if not dtypes:
        raise ValueError("promote_types needs at least one dtype")
    out = dtypes[0]
    for d in dtypes[1:]:
        out = _promote_pair(out, d)
    return out


# the dtype holding a Python number as Python computes with it: a jit argument is traced at it,
# and arithmetic among such numbers alone is done at it
PY_SCALAR_WIDTHS = {bool: bool_, int: int64, float: float64, complex: complex128}


def python_width(value: Any) -> np.dtype:
    """The dtype a Python (or NumPy) number keeps its full value in."""
    if isinstance(value, np.generic):
        return canonical(np.dtype(type(value)))
    return PY_SCALAR_WIDTHS.get(type(value)) or scalar_dtype(value)


def default_of_kind(dtype: np.dtype) -> np.dtype:
    """The default dtype of ``dtype``'s kind: what a Python number of that kind is on its own."""
    return scalar_dtype(np.dtype(dtype).type(0).item())


def scalar_dtype(value: Any) -> np.dtype:
    """The default dtype of a Python scalar taken on its own."""
    if isinstance(value, (bool, np.bool_)):
        return bool_
    if isinstance(value, (int, np.integer)):
        return default_int
    if isinstance(value, (float, np.floating)):
        return default_float
    if isinstance(value, (complex, np.complexfloating)):
        return default_complex
    raise TypeError(f"expected a bool, int, float or complex scalar, got {type(value).__name__}")


def weak_scalar_dtype(value: Any, strong: np.dtype) -> np.dtype:
    """The dtype a Python scalar takes next to a tensor of dtype ``strong``."""
    if isinstance(value, (bool, np.bool_)):
        return strong
    if isinstance(value, (int, np.integer)):
        if is_bool(strong):
            return default_int
        if is_int(strong):
            info = np.iinfo(strong)
            if not info.min <= value <= info.max:
                raise OverflowError(f"Python integer {value} out of bounds for {strong.name}")
        return strong
    if isinstance(value, (float, np.floating)):
        return strong if is_inexact(strong) else default_float
    if isinstance(value, (complex, np.complexfloating)):
        return complex_dtype(strong) if is_inexact(strong) else default_complex
    raise TypeError(f"expected a bool, int, float or complex scalar, got {type(value).__name__}")


def result_type(*items: Any) -> np.dtype:
    """Array API ``result_type``: dtypes, tensors and (weak) Python scalars."""
    strong = [canonical(getattr(i, "dtype", i)) for i in items if not _is_py_scalar(i)]
    weak = [i for i in items if _is_py_scalar(i)]
    if not strong:
        if not weak:
            raise ValueError("result_type needs at least one argument")
        return promote_types(*(scalar_dtype(w) for w in weak))
    out = promote_types(*strong)
    for w in weak:
        out = weak_scalar_dtype(w, out)
    return out


def _is_py_scalar(x: Any) -> bool:
    return isinstance(x, (bool, int, float, complex)) and not isinstance(x, np.generic)


@dataclass(frozen=True)
class finfo_object:  # noqa: N801 - the standard's name
    bits: int
    eps: float
    max: float
    min: float
    smallest_normal: float
    dtype: np.dtype


@dataclass(frozen=True)
class iinfo_object:  # noqa: N801 - the standard's name
    bits: int
    max: int
    min: int
    dtype: np.dtype


def finfo(type: Any, /) -> finfo_object:  # noqa: A002 - the standard's parameter name
    """Array API ``finfo``: limits as Python scalars (``np.finfo`` gives float16/float32 scalars)."""
    dt = canonical(getattr(type, "dtype", type))
    if not is_inexact(dt):
        raise TypeError(f"finfo needs a floating-point dtype, got {dt.name}")
    f = ml_dtypes.finfo(dt) if dt == bfloat16 else np.finfo(dt)   # (of a complex dtype: its parts')
    return finfo_object(int(f.bits), float(f.eps), float(f.max), float(f.min), float(f.smallest_normal),
                        real_dtype(dt))


def iinfo(type: Any, /) -> iinfo_object:  # noqa: A002 - the standard's parameter name
    """Array API ``iinfo`` (bits, max, min, dtype)."""
    dt = canonical(getattr(type, "dtype", type))
    if not is_int(dt):
        raise TypeError(f"iinfo needs an integer dtype, got {dt.name}")
    i = np.iinfo(dt)
    return iinfo_object(int(i.bits), int(i.max), int(i.min), dt)


def isdtype(dtype: Any, kind: Any) -> bool:
    """Array API ``isdtype``."""
    dt = canonical(dtype)
    if isinstance(kind, tuple):
        return any(isdtype(dt, k) for k in kind)
    if isinstance(kind, str):
        kinds = {
            "bool": is_bool(dt),
            "signed integer": dt.kind == "i",
            "unsigned integer": dt.kind == "u",
            "integral": is_int(dt),
            "real floating": is_float(dt),
            "complex floating": is_complex(dt),
            "numeric": not is_bool(dt),
        }
        if kind not in kinds:
            raise ValueError(f"unknown dtype kind {kind!r}")
        return kinds[kind]
    return dt == canonical(kind)

