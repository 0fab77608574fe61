"""CUDA runtime through pycuda: device, caching allocator, PTX modules, launches, programs.

pycuda is imported lazily, so importing this module (and everything CPU) works without it;
:func:`is_available` / :func:`unavailable_reason` say whether a GPU can be used and why not.

All work goes to the default stream of the device's primary context.  Kernels come from
:mod:`codegen.ptx` through the PTX cache (a program holds kir kernels, so running one needs the
code generator).  Extern ``matmul`` runs the tiled shared-memory kernel of
:mod:`codegen.ptx_matmul` for floats and a kir reduction otherwise (see :mod:`runtime.cuda_extern`);
an extern with a user PTX kernel (:mod:`runtime.cuda_user`) launches it; any other extern runs
its host routine on copies.
"""
from __future__ import annotations

import functools
import importlib
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime import cuda_user
from runtime.cuda_alloc import Block, CachingAllocator
from runtime.cuda_args import PackedArgs, pack_launch
from runtime.program import Extern, Launch, Program, View, checked_indices
from runtime.scatter_layout import gather_layout, scatter_layout

_MAX_GRID_Z = 65535
_ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "uint16": 2, "uint32": 4,
             "uint64": 8, "complex64": 8, "complex128": 16,
             "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


# --------------------------------------------------------------------------- availability

def probe(import_module: Callable[[str], Any] = importlib.import_module) -> tuple[Any, str | None]:
    """``(pycuda.driver or None, reason it cannot be used or None)``; ``import_module`` is injectable."""
    try:
        drv = import_module("pycuda.driver")
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "pycuda":
            return None, "pycuda is not installed (pip install 'tracejit[cuda]')"
        return None, f"no CUDA driver: importing pycuda failed ({e})"
    except ImportError as e:  # pycuda's extension links libcuda: a missing driver shows up here
        return None, f"no CUDA driver: importing pycuda failed ({e})"
    try:
        drv.init()
    except Exception as e:  # pycuda raises its own driver errors
        return None, f"no CUDA driver: cuInit failed ({e})"
    try:
        count = drv.Device.count()
    except Exception as e:
        return None, f"no CUDA device: cannot count devices ({e})"
    if count == 0:
        return None, "no CUDA device: the driver reports 0 GPUs"
    return drv, None


@functools.cache
def _probe_once() -> tuple[Any, str | None]:
    return probe()


def is_available() -> bool:
    return _probe_once()[1] is None


def unavailable_reason() -> str | None:
    """Why the GPU cannot be used: pycuda not installed / no driver / no device (None if it can)."""
    return _probe_once()[1]


def driver() -> Any:
    drv, reason = _probe_once()
    if reason is not None:
        raise RuntimeError(f"CUDA is not available: {reason}")
    return drv


def itemsize(dtype: str) -> int:
    return _ITEMSIZE[dtype]


def device_count() -> int:
    """Number of visible GPUs (0 when CUDA cannot be used)."""
    return driver().Device.count() if is_available() else 0


@functools.cache
def device_properties(index: int = 0) -> tuple[str, str]:
    """``(name, "sm_XY")`` of GPU ``index``, asked of the driver without creating a context."""
    dev = driver().Device(index)
    major, minor = dev.compute_capability()
    return dev.name(), f"sm_{major}{minor}"


# --------------------------------------------------------------------------- buffers

class _PycudaMemory:
    """The allocator's driver interface on top of pycuda (OOM becomes Python's MemoryError)."""

    def __init__(self, drv: Any) -> None:
        self._drv = drv

    def alloc(self, nbytes: int) -> Any:
        try:
            return self._drv.mem_alloc(nbytes)
        except self._drv.MemoryError as e:
            raise MemoryError(str(e)) from e

    def free(self, handle: Any) -> None:
        handle.free()

    def address(self, handle: Any) -> int:
        return int(handle)


class DeviceBuffer:
    """Device memory from the caching allocator; returned to the pool when collected or freed."""

    def __init__(self, allocator: CachingAllocator, nbytes: int) -> None:
        self.nbytes = nbytes
        self._block: Block = allocator.allocate(nbytes)
        self._release = weakref.finalize(self, allocator.free, self._block)

    @property
    def ptr(self) -> int:
        return self._block.ptr

    def free(self) -> None:
        """Give the memory back to the pool now (the buffer must not be used afterwards)."""
        self._release()

    def __repr__(self) -> str:
        return f"DeviceBuffer(ptr={self.ptr:#x}, nbytes={self.nbytes})"


@dataclass(frozen=True)
class DeviceArray:
    """A strided view of a device buffer: what a program returns per output."""
    buffer: DeviceBuffer
    offset: int                  # elements
    strides: tuple[int, ...]     # elements
    shape: tuple[int, ...]
    dtype: str

    @property
    def is_contiguous(self) -> bool:
        """Dense row-major from the start of its buffer: what a program input must be."""
        return self.offset == 0 and _is_contiguous(self.shape, self.strides)


_COMPLEX_PARTS = {"complex64": "float32", "complex128": "float64"}


def _float_parts(arr: DeviceArray) -> DeviceArray:
    """A complex view as a view of its float parts (a last dim of 2); others as they are:
    kernels have no complex lanes."""
    part = _COMPLEX_PARTS.get(arr.dtype)
    if part is None:
        return arr
    strides = tuple(2 * s for s in arr.strides) + (1,)
    return DeviceArray(arr.buffer, 2 * arr.offset, strides, arr.shape + (2,), part)


# --------------------------------------------------------------------------- device

class CudaDevice:
    """One GPU: primary context, allocator, module cache, launches and program execution."""

    def __init__(self, index: int = 0) -> None:
        drv = driver()
        self._drv = drv
        self.index = index
        self._dev = drv.Device(index)
        self.name = self._dev.name()
        major, minor = self._dev.compute_capability()
        self.arch = f"sm_{major}{minor}"
        self._ctx = self._dev.retain_primary_context()
        self.make_current()
        self.allocator = CachingAllocator(_PycudaMemory(drv))
        self._functions: dict[tuple[str, str], Any] = {}
        self._constants: dict[int, tuple[weakref.ref, dict[int, DeviceBuffer]]] = {}

    def make_current(self) -> None:
        """Make this GPU's primary context the calling thread's (replacing another GPU's)."""
        if self._drv.Context.get_current() is not None:
            self._drv.Context.pop()
        self._ctx.push()

    # memory ------------------------------------------------------------------------------------
    def empty(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(self.allocator, nbytes)

    def to_device(self, array: np.ndarray) -> DeviceBuffer:
        a = np.ascontiguousarray(array)
        buf = self.empty(a.nbytes)
        if a.nbytes:
            self._drv.memcpy_htod(buf.ptr, a)
        return buf

    def to_host(self, buf: DeviceBuffer, shape: tuple[int, ...], dtype: str, offset: int = 0) -> np.ndarray:
        """Copy a contiguous region (``offset`` in elements) into a new NumPy array."""
        out = np.empty(shape, dtype=np.dtype(dtype))
        if out.nbytes:
            if offset * out.itemsize + out.nbytes > buf.nbytes:
                raise ValueError(f"reading {out.nbytes} bytes at element {offset} overruns {buf}")
            self._drv.memcpy_dtoh(out, buf.ptr + offset * out.itemsize)
        return out

    def upload(self, array: np.ndarray) -> DeviceArray:
        """A new contiguous device array holding a copy of ``array``."""
        a = np.asarray(array)
        if not a.flags.c_contiguous:        # (np.ascontiguousarray would make a 0-d array 1-d)
            a = a.copy()
        return DeviceArray(self.to_device(a), 0, _contiguous_strides(a.shape), a.shape, a.dtype.name)

    def contiguous(self, arr: DeviceArray) -> DeviceArray:
        """``arr`` itself when it is dense from offset 0, else a dense copy."""
        return arr if arr.is_contiguous else self.copy(arr)

    def array_to_host(self, arr: DeviceArray) -> np.ndarray:
        """Copy any strided device view to a new contiguous NumPy array."""
        if _is_contiguous(arr.shape, arr.strides):
            return self.to_host(arr.buffer, arr.shape, arr.dtype, arr.offset)
        dense = self.copy(arr)
        return self.to_host(dense.buffer, arr.shape, arr.dtype)

    def copy(self, arr: DeviceArray, out: DeviceArray | None = None) -> DeviceArray:
        """Copy a strided view into ``out`` (default: a new contiguous array) on the device."""
        from runtime.cuda_extern import copy_kernel
        if out is None:
            out = self._empty_like(arr)
        if out.shape != arr.shape:
            raise ValueError(f"copy between shapes {arr.shape} and {out.shape}")
        src, dst = _float_parts(arr), _float_parts(out)
        k = copy_kernel(src.dtype, src.strides, dst.strides)
        self.launch_kernel(k, src.shape, [src], [dst])
        return out

    def memory_stats(self) -> dict[str, int]:
        return self.allocator.memory_stats()

    def empty_cache(self) -> None:
        self.allocator.empty_cache()

    # modules and launches ----------------------------------------------------------------------
    def function(self, pk: Any, param_format: str | None = None) -> Any:
        """The loaded, prepared function of a :class:`codegen.ptx.PtxKernel` (cached by key, arch);
        ``param_format`` for kernels of another launch convention."""
        key = (pk.key, pk.arch)
        fn = self._functions.get(key)
        if fn is None:
            module = self._drv.module_from_buffer(pk.ptx.encode())
            fn = module.get_function(pk.entry)
            fn.prepare(param_format or _param_format(pk))
            fn._tracejit_module = module  # keep the module alive with its function
            self._functions[key] = fn
        return fn

    def launch(self, pk: Any, grid: int, block: int, args: PackedArgs, shared: int = 0) -> None:
        fn = self.function(pk)
        fn.prepared_call((grid, 1, 1), (block, 1, 1), *args.values, shared_size=shared)

    def launch_kernel(self, kernel: Any, shape: Sequence[int], inputs: Sequence[DeviceArray],
                      outputs: Sequence[DeviceArray]) -> None:
        """Compile (cached) and run a kir kernel over ``shape`` on strided device arrays."""
        from codegen.ptx import launch_geometry
        from runtime.ptx_cache import default_ptx_cache
        shape = tuple(int(s) for s in shape)
        ops = [*inputs, *outputs]
        n_outer = len(shape) - kernel.n_reduce
        if _size(shape[:n_outer]) == 0:
            return
        if kernel.n_reduce == 0 and _size(shape) == 0:
            return
        pk = default_ptx_cache().get(kernel, self.arch)
        args = pack_launch([a.buffer.ptr for a in ops], [a.offset for a in ops],
                           [itemsize(a.dtype) for a in ops], shape, [a.strides for a in ops])
        grid, block, shared = launch_geometry(pk, shape)
        self.launch(pk, grid, block, args, shared)

    def launch_matmul(self, dtype: str, a: DeviceArray, b: DeviceArray, out: DeviceArray) -> None:
        """``out = a @ b`` (2-d or batched 3-d strided views) with the tiled matmul kernel."""
        from codegen import ptx_matmul
        launches = matmul_launches(dtype, a, b, out)
        if launches:
            fn = self.function(ptx_matmul.compile_matmul(dtype, self.arch))
            for grid, threads, args in launches:
                fn.prepared_call(grid, (threads, 1, 1), *args.values)

    def launch_indexed(self, kind: str, dtype: str, pointers: Sequence[int], ints: Sequence[int]) -> None:
        """One launch of :mod:`codegen.ptx_scatter`'s ``kind`` kernel (``take``, ``scatter_add``)."""
        from codegen import ptx_scatter
        pk = ptx_scatter.compile_kernel(kind, dtype, self.arch)
        blocks, threads = ptx_scatter.launch_geometry(kind, tuple(ints[:4]))
        fn = self.function(pk, "P" * len(pointers) + "q" * len(ints))
        fn.prepared_call((blocks, 1, 1), (threads, 1, 1), *pointers, *ints)

    def launch_user_kernel(self, kernel: cuda_user.UserPtxKernel, inputs: Sequence[DeviceArray],
                           out: DeviceArray) -> None:
        """``out = kernel(*inputs)``: operands made dense first (the kernel's convention)."""
        ins = [a if _is_contiguous(a.shape, a.strides) else self.copy(a) for a in inputs]
        dst = out if _is_contiguous(out.shape, out.strides) else self._empty_like(out)
        if _size(dst.shape):
            self.run_user_kernel(kernel, ins, dst)
        if dst is not out:
            self.copy(dst, out)

    def run_user_kernel(self, kernel: cuda_user.UserPtxKernel, inputs: Sequence[DeviceArray],
                        out: DeviceArray) -> None:
        """One launch of ``kernel`` on dense operands (``out`` not empty)."""
        args = cuda_user.launch_args([(_address(a), _size(a.shape)) for a in inputs],
                                     (_address(out), _size(out.shape)))
        fn = self.function(kernel, kernel.param_format)
        fn.prepared_call((cuda_user.grid(_size(out.shape)), 1, 1), (cuda_user.BLOCK, 1, 1), *args.values)

    def _empty_like(self, arr: DeviceArray) -> DeviceArray:
        """A new dense array of ``arr``'s shape and dtype."""
        return DeviceArray(self.empty(_size(arr.shape) * itemsize(arr.dtype)), 0,
                           _contiguous_strides(arr.shape), arr.shape, arr.dtype)

    # timing ------------------------------------------------------------------------------------
    def event(self) -> Any:
        """A recorded CUDA event (``end.time_since(start)`` gives milliseconds)."""
        ev = self._drv.Event()
        ev.record()
        return ev

    def synchronize(self) -> None:
        self._drv.Context.synchronize()

    # programs ----------------------------------------------------------------------------------
    def run_program(self, program: Program, inputs: Sequence[DeviceBuffer]) -> list[DeviceArray]:
        """Execute ``program`` with its first slots bound to ``inputs``; returns its outputs."""
        return _ProgramRun(self, program, inputs).run()

    def _program_constants(self, program: Program) -> dict[int, DeviceBuffer]:
        entry = self._constants.get(id(program))
        if entry is None or entry[0]() is not program:
            bufs = {slot: self.to_device(np.asarray(v)) for slot, v in program.constants.items()}
            entry = (weakref.ref(program), bufs)
            self._constants[id(program)] = entry
        return entry[1]


def matmul_launches(dtype: str, a: DeviceArray, b: DeviceArray,
                    out: DeviceArray) -> list[tuple[tuple[int, int, int], int, PackedArgs]]:
    """``(grid, threads, args)`` of each tiled-matmul launch computing ``out = a @ b``.

    gridDim.z (the batch) is at most 65535: larger batches go in slices, each from its own base.
    """
    from codegen import ptx_matmul
    from runtime.cuda_extern import matmul_dims
    ops = (a, b, out)
    (B, M, N, K), strides = matmul_dims(tuple(x.shape for x in ops), tuple(x.strides for x in ops))
    if 0 in (M, N):
        return []
    launches = []
    for b0 in range(0, B, _MAX_GRID_Z):
        offsets = [x.offset + b0 * st[0] for x, st in zip(ops, strides, strict=True)]
        args = pack_launch([x.buffer.ptr for x in ops], offsets, [itemsize(dtype)] * 3, (M, N, K), strides)
        grid, threads = ptx_matmul.launch_geometry(min(_MAX_GRID_Z, B - b0), M, N)
        launches.append((grid, threads, args))
    return launches


def _param_format(pk: Any) -> str:
    return "P" * pk.n_operands + "q" * (pk.ndim * (1 + pk.n_operands))


def _size(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _address(arr: DeviceArray) -> int:
    """Where a view's first element is (what a kernel taking a plain pointer gets)."""
    return arr.buffer.ptr + arr.offset * itemsize(arr.dtype)


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= int(n)
    return tuple(reversed(strides))


def _is_contiguous(shape: Sequence[int], strides: Sequence[int]) -> bool:
    return all(n == 1 or s == c for n, s, c in zip(shape, strides, _contiguous_strides(shape), strict=True))


class _ProgramRun:
    """One execution of a program: slot binding, steps in order, outputs and writebacks."""

    def __init__(self, dev: CudaDevice, program: Program, inputs: Sequence[DeviceBuffer]) -> None:
        if len(inputs) != program.n_inputs:
            raise ValueError(f"program takes {program.n_inputs} inputs, got {len(inputs)}")
        self.dev, self.p = dev, program
        self.slots: dict[int, DeviceBuffer] = {}
        for i, buf in enumerate(inputs):
            if buf.nbytes < program.slot_nbytes[i]:
                raise ValueError(f"input {i} has {buf.nbytes} bytes, the program needs "
                                 f"{program.slot_nbytes[i]}")
            self.slots[i] = buf
        self.slots.update(dev._program_constants(program))

    def buffer(self, slot: int) -> DeviceBuffer:
        buf = self.slots.get(slot)
        if buf is None:
            target = self.p.aliases.get(slot)
            buf = self.buffer(target) if target is not None else self.dev.empty(self.p.slot_nbytes[slot])
            self.slots[slot] = buf
        return buf

    def array(self, view: View, shape: tuple[int, ...], dtype: str) -> DeviceArray:
        return DeviceArray(self.buffer(view.slot), view.offset, tuple(view.strides), shape, dtype)

    def step(self, step: Launch | Extern) -> None:
        if isinstance(step, Launch):
            k = step.kernel
            ins = [self.array(v, step.shape, o.dtype) for v, o in zip(step.inputs, k.inputs, strict=True)]
            outs = [self.array(v, step.shape, o.dtype)
                    for v, o in zip(step.outputs, k.outputs, strict=True)]
            self.dev.launch_kernel(k, step.shape, ins, outs)
        elif isinstance(step, Extern):
            self.extern(step)
        else:
            raise TypeError(f"unknown program step {step!r}")

    def run(self) -> list[DeviceArray]:
        if profiler is not None:
            profiler.run_gpu_steps(self)
        else:
            for step in self.p.steps:
                self.step(step)
        results = [self.array(v, tuple(shape), dtype) for v, shape, dtype in self.p.outputs]
        # like the CPU runtime: an output never aliases the caller's input or a cached constant
        results = [self.dev.copy(r) if v.slot < self.p.n_inputs or v.slot in self.p.constants else r
                   for r, (v, _, _) in zip(results, self.p.outputs, strict=True)]
        for slot, out_index in self.p.writebacks:
            res = results[out_index]
            dst = DeviceArray(self.slots[slot], 0, _contiguous_strides(res.shape), res.shape, res.dtype)
            if dst.buffer is not res.buffer or res.offset or dst.strides != res.strides:
                self.dev.copy(res, dst)
        return results

    def extern(self, step: Extern) -> None:
        if step.name in cuda_user.KERNELS:
            self.user_kernel(step, cuda_user.KERNELS[step.name])
            return
        if step.name == "scatter_add" and self.scatter_add(step):
            return
        if step.name == "take_checked" and self.take(step):
            return
        if step.name != "matmul":
            self.host_extern(step)
            return
        from runtime.cuda_extern import batch_slices, matmul_launch, tiled
        views = [*step.inputs, *step.outputs]
        buffers = [self.buffer(v.slot) for v in views]
        for shapes, strides, offsets in batch_slices(step.shapes, tuple(tuple(v.strides) for v in views),
                                                     tuple(v.offset for v in views)):
            if tiled(step.dtype):
                self.dev.launch_matmul(step.dtype, *(DeviceArray(buf, off, st, shape, step.dtype)
                                                     for buf, off, st, shape in zip(buffers, offsets, strides,
                                                                                    shapes, strict=True)))
                continue
            kernel, shape, kstrides = matmul_launch(step.dtype, shapes, strides)
            ops = [DeviceArray(buf, off, st, shape, step.dtype)
                   for buf, off, st in zip(buffers, offsets, kstrides, strict=True)]
            self.dev.launch_kernel(kernel, shape, ops[:2], ops[2:])

    def scatter_add(self, step: Extern) -> bool:
        """A scatter_add with checked indices on the GPU: the base copied into the output, then
        the column-per-thread kernel (:mod:`codegen.ptx_scatter`); False when it does not apply
        (the step then goes through the host)."""
        from codegen import ptx_scatter
        base, idx, src = step.inputs
        out = step.outputs[0]
        axis = dict(step.params)["axis"]
        if step.dtype not in ptx_scatter.DTYPES or self.p.slot_dtypes[idx.slot] != "int64" \
                or out.slot in {v.slot for v in step.inputs} \
                or not checked_indices(self.p, idx.slot, step.shapes[0][axis]):
            return False
        layout = scatter_layout(step)
        if not layout.strided:
            return False
        base_a, idx_a, src_a, out_a = self.operands(step)
        self.dev.copy(base_a, out_a)
        if _size(step.shapes[2]):
            ints = [*layout.sizes, *layout.out_strides, *layout.src_strides, layout.strides[-1]]
            pointers = [_address(a) for a in (out_a, src_a, idx_a)]
            self.dev.launch_indexed("scatter_add", step.dtype, pointers, ints)
        return True

    def take(self, step: Extern) -> bool:
        """A gather with checked indices on the GPU: a thread per output element
        (:mod:`codegen.ptx_scatter`); False when it does not apply (then the host runs it)."""
        from codegen import ptx_scatter
        table, idx = step.inputs
        axis = dict(step.params)["axis"]
        if step.dtype not in ptx_scatter.DTYPES or self.p.slot_dtypes[idx.slot] != "int64" \
                or not checked_indices(self.p, idx.slot, step.shapes[0][axis]):
            return False
        layout = gather_layout(step)
        if not layout.strided:
            return False
        table_a, idx_a, out_a = self.operands(step)
        if _size(step.shapes[2]):
            ints = [*layout.sizes, *layout.src_strides, *layout.out_strides, layout.strides[-1]]
            pointers = [_address(a) for a in (out_a, table_a, idx_a)]
            self.dev.launch_indexed("take", step.dtype, pointers, ints)
        return True

    def operands(self, step: Extern) -> list[DeviceArray]:
        """An extern's operands (inputs, then the output) as device views."""
        return [self.array(v, tuple(shape), self.p.slot_dtypes[v.slot])
                for v, shape in zip([*step.inputs, *step.outputs], step.shapes, strict=True)]

    def user_kernel(self, step: Extern, kernel: cuda_user.UserPtxKernel) -> None:
        if step.params:
            raise TypeError(f"extern {step.name!r}: its PTX kernel takes no parameters, got "
                            f"{sorted(dict(step.params))}")
        *ins, out = self.operands(step)
        self.dev.launch_user_kernel(kernel, ins, out)

    def host_extern(self, step: Extern) -> None:
        """An extern without a GPU kernel (pad, concat, …) runs through the CPU runtime's
        NumPy routine: its operands go to the host and the result comes back (slow, but correct)."""
        from runtime.cpu import EXTERNS
        fn = EXTERNS.get(step.name)
        if fn is None:
            raise NotImplementedError(f"extern {step.name!r} has no GPU kernel and no host routine")
        *ins, out = self.operands(step)
        result = fn(*(self.dev.array_to_host(a) for a in ins), **dict(step.params))
        host = np.broadcast_to(np.asarray(result, dtype=out.dtype), out.shape).copy()
        self.dev.copy(self.dev.upload(host), out)


# --------------------------------------------------------------------------- process-wide

_devices: dict[int, CudaDevice] = {}

# While a profile records (``tracejit.profiler``), the object that runs each program step and
# times it; None otherwise, so an unprofiled program pays one check.
profiler: Any = None
_lock = threading.Lock()
_current = threading.local()        # .index: the GPU whose context is current in this thread


def device(index: int = 0) -> CudaDevice:
    """The process-wide :class:`CudaDevice` for GPU ``index`` (created on first use), its
    context made current in the calling thread (a driver context is per thread, and GPU work
    may come from any thread)."""
    with _lock:
        dev = _devices.get(index)
        if dev is None:
            dev = _devices[index] = CudaDevice(index)
            _current.index = index          # (creating it made its context current here)
    if getattr(_current, "index", None) != index:
        dev.make_current()
        _current.index = index
    return dev


def synchronize() -> None:
    for dev in list(_devices.values()):
        dev.synchronize()


def memory_stats(index: int = 0) -> dict[str, int]:
    return device(index).memory_stats()


def empty_cache() -> None:
    for dev in list(_devices.values()):
        dev.empty_cache()
