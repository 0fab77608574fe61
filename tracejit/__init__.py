"""tracejit: eager tensors on the Array API, and a tracing JIT that fuses them into kernels.

    import tracejit as tj
    x = tj.asarray([[1.0, 2.0], [3.0, 4.0]])
    y = tj.exp(x) * 2 + x.sum(axis=1, keepdims=True)      # eager, op by op

    @tj.jit
    def f(x):                                             # traced once, fused, compiled
        return tj.tanh(x * 1.5).sum(axis=-1)
"""
from . import compiler as _compiler  # noqa: F401  (loads LLVM at import, not in the first jit call)
from . import cuda, data, debug, distributed, fft, linalg, nn, optim, profiler, utils
from . import dtypes as _dtypes
from .api import *  # noqa: F403
from .api import __all__ as _api_all
from .autocast import autocast
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .checkpoint import checkpoint
from .custom_ops import custom_op
from .debug import disable_jit
from .device import default_device, set_default_device
from .dtypes import finfo, iinfo, isdtype, result_type
from .errors import ConcretizationError, InternalCompilerError, TracejitError, UnsupportedUnderJitError
from .export import export, load
from .jit import Spec, explain, jit, spec
from .lazy_mode import lazy
from .random import manual_seed
from .serialization import load_state, save
from .tensors import Device, Tensor
from .transforms import grad, value_and_grad, vjp

bool = _dtypes.bool_  # noqa: A001
int8 = _dtypes.int8
int16 = _dtypes.int16
int32 = _dtypes.int32
int64 = _dtypes.int64
uint8 = _dtypes.uint8
uint16 = _dtypes.uint16
uint32 = _dtypes.uint32
uint64 = _dtypes.uint64
complex64 = _dtypes.complex64
complex128 = _dtypes.complex128
float16 = _dtypes.float16
bfloat16 = _dtypes.bfloat16
float32 = _dtypes.float32
float64 = _dtypes.float64

e = 2.718281828459045
pi = 3.141592653589793
inf = float("inf")
nan = float("nan")
newaxis = None

__array_api_version__ = "2023.12"
__version__ = "0.1.0"


def can_cast(from_: object, to: object, /) -> "bool":  # type: ignore[valid-type]
    """Array API ``can_cast``: whether promotion of ``from_`` and ``to`` gives ``to``."""
    src = _dtypes.canonical(getattr(from_, "dtype", from_))
    dst = _dtypes.canonical(to)
    try:
        return _dtypes.promote_types(src, dst) == dst
    except TypeError:
        return False


__all__ = list(_api_all) + [
    "Tensor", "Device", "jit", "spec", "Spec", "explain", "ConcretizationError", "TracejitError",
    "UnsupportedUnderJitError", "InternalCompilerError", "default_device", "set_default_device", "finfo",
    "iinfo", "isdtype",
    "result_type", "can_cast", "bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32",
    "float64", "uint16", "uint32", "uint64", "complex64", "complex128", "e", "pi", "inf", "nan", "newaxis",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "grad", "value_and_grad", "vjp",
    "manual_seed", "nn", "optim", "data", "cuda", "save", "load_state", "profiler",
    "custom_op", "debug", "disable_jit", "utils", "export", "load", "distributed", "linalg", "fft", "lazy",
]
__all__ += ["checkpoint", "bfloat16", "autocast"]

# PyTorch-style names (x.unsqueeze, tj.cat, tj.zeros(3, 4), ...): one table, docs/TORCH_NAMES.md
from .api import torch_names as _torch_names  # noqa: E402

__all__ += _torch_names.install(globals())
