"""Device selection, moving tensors between devices, and what a program needs per device.

A CPU tensor's value is a NumPy array; a CUDA tensor's value is a :class:`runtime.cuda.DeviceArray`
(a strided view of a device buffer).  Everything that touches pycuda goes through
:mod:`runtime.cuda`, imported lazily, so CPU-only use never needs it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from codegen import kir
from runtime.program import Extern, Launch, Program

from .ops import AVal
from .tensors import CPU, Device, Tensor

_default: Device | None = None


def default_device() -> Device:
    global _default
    if _default is None:
        d = Device.parse(os.environ.get("TRACEJIT_DEVICE", "cpu"))
        if d.type == "cuda":
            require_cuda("TRACEJIT_DEVICE")
        _default = d
    return _default


def set_default_device(device: str | Device) -> None:
    """Device for new tensors created without ``device=`` (also ``TRACEJIT_DEVICE``)."""
    global _default
    d = Device.parse(device)
    if d.type == "cuda":
        require_cuda(f"set_default_device({str(device)!r})")
    _default = d


def require_cuda(what: str = "CUDA") -> None:
    """Raise a RuntimeError saying why the GPU cannot be used (pycuda missing, no driver, no GPU)."""
    from runtime import cuda
    if not cuda.is_available():
        raise RuntimeError(f"{what}: CUDA was requested but is not available: {cuda.unavailable_reason()}")


def cuda_device(device: Device) -> Any:
    """The runtime's :class:`~runtime.cuda.CudaDevice` for ``device`` (checked available)."""
    require_cuda(f"device {device}")
    from runtime import cuda
    return cuda.device(device.index)


# --------------------------------------------------------------------------- tensors

def to_device(t: Tensor, device: Device) -> Tensor:
    if t.device == device:
        return t
    if t.is_tracer and t._trace.is_lazy:
        t._trace.flush()        # lazy mode: moving a pending value computes it
    if t.is_tracer:
        from .errors import UnsupportedUnderJitError
        raise UnsupportedUnderJitError("moving a traced tensor between devices inside jit is not "
                                       "supported: a jitted function runs on one device; move its "
                                       "inputs before the call")
    if device.type == "cuda":
        dev = cuda_device(device)
        return Tensor._from_array(dev.upload(t._host_value()), device)
    return Tensor._from_array(t._host_value(), CPU)


def host_array(value: Any, device: Device) -> np.ndarray:
    """A tensor value as a NumPy array (a download for device arrays)."""
    if device.type == "cpu":
        return value
    return cuda_device(device).array_to_host(value)


def device_input(leaf: Any, aval: AVal, device: Device) -> Any:
    """A dense device array for a program input: a GPU tensor as is (copied only when strided),
    anything on the host (tensors, arrays, Python scalars) uploaded."""
    dev = cuda_device(device)
    if isinstance(leaf, Tensor) and leaf.device == device:
        return dev.contiguous(leaf._value)
    host = leaf._host_value() if isinstance(leaf, Tensor) else leaf
    return dev.upload(np.asarray(host, dtype=aval.dtype))


def write_back(t: Tensor, value: Any, source: Device | None = None) -> None:
    """Copy a value on device ``source`` (default: ``t``'s own) into ``t``'s memory: in-place
    updates, under jit of tensors the program captured (a GPU program updates the host
    tensor of a random generator's state, say)."""
    source = source or t.device
    if t.device.type == "cpu":
        np.copyto(t._value, value if source.type == "cpu" else host_array(value, source))
    elif source == t.device:
        cuda_device(t.device).copy(value, t._value)
    else:
        cuda_device(t.device).copy(cuda_device(t.device).upload(host_array(value, source)), t._value)


# --------------------------------------------------------------------------- lowering

@dataclass(frozen=True)
class LoweredKernel(kir.Kernel):
    """A fused kernel with its generated code: PTX for CUDA, optimized LLVM IR on the CPU."""
    ptx: Any = field(default=None, compare=False, repr=False)   # codegen.ptx.PtxKernel (CUDA only)

    @classmethod
    def of(cls, k: kir.Kernel, ptx: Any = None) -> LoweredKernel:
        return cls(**{f.name: getattr(k, f.name) for f in fields(kir.Kernel)}, ptx=ptx)

    @property
    def source(self) -> str:
        if self.ptx is not None:
            return self.ptx.ptx
        from codegen import cpu
        return cpu.optimized_ir(self)


def target_arch(device: Device) -> str:
    """The GPU's ``sm_XY`` when one can be asked (no context is created), else ``sm_90``:
    lowering for CUDA needs no GPU."""
    from codegen.ptx import DEFAULT_ARCH
    from runtime import cuda
    return cuda.device_properties(device.index)[1] if cuda.is_available() else DEFAULT_ARCH


def program_kernels(program: Program) -> list[kir.Kernel]:
    """Every kir kernel a program launches on the GPU, once each (matmul externs that are no
    tiled matmul included)."""
    from runtime.cuda_extern import batch_slices, matmul_launch, tiled
    seen: dict[str, kir.Kernel] = {}
    for s in program.steps:
        if isinstance(s, Launch):
            seen.setdefault(s.kernel.key, s.kernel)
        elif isinstance(s, Extern) and s.name == "matmul" and not tiled(s.dtype):
            views = (*s.inputs, *s.outputs)
            for shapes, strides, _ in batch_slices(s.shapes, tuple(tuple(v.strides) for v in views),
                                                   tuple(v.offset for v in views)):
                k, _, _ = matmul_launch(s.dtype, shapes, strides)
                seen.setdefault(k.key, k)
    return list(seen.values())


def compile_ptx(program: Program, device: Device) -> dict[str, Any]:
    """PTX for every kernel of ``program`` by kernel key, through the PTX cache (disk and memory),
    so the first run only loads modules; custom ops' own PTX kernels included."""
    from runtime.ptx_cache import default_ptx_cache
    arch = target_arch(device)
    cache = default_ptx_cache()
    from codegen.ptx_matmul import compile_matmul
    from runtime.cuda_extern import tiled
    from runtime.cuda_user import KERNELS
    out = {k.key: cache.get(k, arch) for k in program_kernels(program)}
    for s in program.steps:
        if isinstance(s, Extern) and s.name == "matmul" and tiled(s.dtype):
            pk = compile_matmul(s.dtype, arch)
            out[pk.key] = pk
        elif isinstance(s, Extern) and s.name in KERNELS:
            out[KERNELS[s.name].key] = KERNELS[s.name]
    return out
