"""Device selection and moving tensors between devices."""
from __future__ import annotations

import os

from .tensor import CPU, Device, Tensor

_default: Device | None = None


def default_device() -> Device:
    global _default
    if _default is None:
        _default = Device.parse(os.environ.get("TRACEJIT_DEVICE", "cpu"))
    return _default


def set_default_device(device: str | Device) -> None:
    """Device for new tensors created without ``device=`` (also ``TRACEJIT_DEVICE``)."""
    global _default
    d = Device.parse(device)
    if d.type == "cuda":
        require_cuda()
    _default = d


def require_cuda() -> None:
    from runtime import cuda
    if not cuda.is_available():
        raise RuntimeError(f"CUDA was requested but is not available: {cuda.unavailable_reason()}")


def to_device(t: Tensor, device: Device) -> Tensor:
    if t.device == device:
        return t
    if t.is_tracer:
        raise NotImplementedError("moving a traced tensor between devices inside jit is not supported")
    if device.type == "cuda":
        require_cuda()
        from runtime import cuda
        return Tensor._from_array(cuda.to_device(t.numpy()), device)  # type: ignore[arg-type]
    return Tensor._from_array(t._host_value(), CPU)
