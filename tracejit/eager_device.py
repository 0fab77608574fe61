"""Eager ops on GPU tensors: each primitive runs as a one-op program from the same compiler.

:func:`run` builds a one-node graph, compiles it with ``compile_graph`` (PTX through the kernel
cache) and runs it on the operands' device buffers.  The compiled program is cached by
``(primitive, params, input avals, device)``, so repeating an op costs only its launch.

* Host-kind primitives (sort, take, cumulative sums, …) have no GPU kernel: their operands are
  copied to the host, the NumPy reference runs, and the result is copied back; a custom op with
  its own PTX kernel runs as a one-op program that launches it.
* Strided operands (views from reshape/slice/expand) are made dense on the device first.
* A Python scalar reaches a primitive as a CPU constant broadcast to the operand's shape; such
  an operand (every element the same by construction) is uploaded as one element and the
  kernel reads it broadcast.  Any other CPU operand next to a GPU one is a device-mixing error.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from runtime import cuda_user

from . import tracing
from .graph import Graph, freeze
from .ops import AVal, Prim
from .tensors import Device, Tensor, check_same_device, is_host_number

_programs: dict[Any, Any] = {}      # (prim, params, avals, device) -> CompiledProgram


def on_device(inputs: tuple[Tensor, ...]) -> bool:
    """Whether an eager op must run on a GPU (any operand lives there)."""
    return any(x._device.type != "cpu" for x in inputs)


def run(prim: Prim, inputs: tuple[Tensor, ...], params: dict[str, Any], aval: AVal) -> Tensor:
    """Run ``prim`` eagerly on GPU operands; the result lives on their device."""
    for x in inputs:
        if x._trace is not None:
            raise tracing.leaked_tracer_error(x)
    device = _common_device(prim.name, inputs)
    if prim.kind == "host" and prim.name not in cuda_user.KERNELS:
        return _on_host(prim, inputs, params, device)
    scalars = tuple(x.device.type == "cpu" for x in inputs)    # host scalars, by _common_device
    avals = tuple(x.aval for x in inputs)
    key = (prim.name, freeze(params), avals, scalars, device)
    program = _programs.get(key)
    if program is None:
        program = _programs[key] = _compile(prim, params, avals, scalars, aval, device)
    (out,) = program([_operand(x, device) for x in inputs])
    return Tensor._from_array(out, device)


def cache_clear() -> None:
    _programs.clear()


def _compile(prim: Prim, params: dict[str, Any], avals: tuple[AVal, ...], scalars: tuple[bool, ...],
             aval: AVal, device: Device) -> Any:
    """A one-op program; a host scalar is a 0-d input broadcast inside the kernel (stride 0)."""
    from .compiler import compile_graph
    g = Graph()
    ins = []
    for a, scalar in zip(avals, scalars, strict=True):
        if not scalar:
            ins.append(g.add_input(a))
            continue
        n = g.add_input(AVal((), a.dtype))
        if a.shape:
            ones = (1,) * len(a.shape)
            n = g.add("reshape", (n,), {"shape": ones}, AVal(ones, a.dtype))
            n = g.add("expand", (n,), {"shape": a.shape}, a)
        ins.append(n)
    g.outputs = [g.add(prim.name, ins, params, aval)]
    return compile_graph(g, device)


def _common_device(op: str, inputs: tuple[Tensor, ...]) -> Device:
    """The GPU all operands are on, host scalars aside (else the usual error naming both)."""
    return check_same_device(op, tuple(x for x in inputs
                                       if x.device.type != "cpu" or not is_host_number(x._value)))


def _operand(x: Tensor, device: Device) -> Any:
    from .device import cuda_device
    dev = cuda_device(device)
    if x.device == device:
        return dev.contiguous(x._value)
    a = np.asarray(x._value)                       # a host scalar: upload one element
    return dev.upload(a[(0,) * a.ndim] if a.size else np.zeros((), a.dtype))


def _on_host(prim: Prim, inputs: tuple[Tensor, ...], params: dict[str, Any], device: Device) -> Tensor:
    from .device import cuda_device
    value = prim.impl(*(x._host_value() for x in inputs), **params)
    return Tensor._from_array(cuda_device(device).upload(np.asarray(value)), device)
