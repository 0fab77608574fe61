"""A stand-in GPU for testing the CUDA front end without one.

:class:`SimulatedDevice` is a :class:`runtime.cuda.CudaDevice` whose memory is host memory and
whose launches compile the kernel to PTX and assemble it with ptxas (so every kernel the front
end launches is checked as a real driver would load it), then run the same kir kernel with the
CPU code generator.  Program execution, the caching allocator, strided copies, extern matmul
(its tiled kernel assembled, the product taken by NumPy) and host fallbacks are the real runtime
code; a custom op's PTX kernel is assembled and its launch packed, its host routine computing
the result.  :func:`installed` swaps it in as ``cuda:0``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from codegen import ptx, ptx_matmul, ptx_scatter
from runtime import cpu, cuda, cuda_user
from runtime.cuda_alloc import CachingAllocator
from runtime.ptx_cache import default_ptx_cache


class HostMemory:
    """The allocator's driver: each allocation is a NumPy byte array, its address the handle."""

    def __init__(self) -> None:
        self.blocks: dict[int, np.ndarray] = {}

    def alloc(self, nbytes: int) -> int:
        a = np.zeros(max(nbytes, 1) + 256, dtype=np.uint8)
        start = -a.ctypes.data % 256           # cuMemAlloc's alignment
        block = a[start:start + nbytes]
        self.blocks[block.ctypes.data] = block
        return block.ctypes.data

    def free(self, handle: int) -> None:
        del self.blocks[handle]

    def address(self, handle: int) -> int:
        return handle


class SimulatedDevice(cuda.CudaDevice):
    def __init__(self) -> None:          # no driver, no context
        self.index, self.name, self.arch = 0, "simulated GPU", "sm_90"
        self.memory = HostMemory()
        self.allocator = CachingAllocator(self.memory)
        self._functions: dict[Any, Any] = {}
        self._constants: dict[Any, Any] = {}
        self.launches = 0
        self.user_launches: list[tuple[str, int, Any]] = []     # (entry, blocks, packed args)
        self.assembled: set[str] = set()
        self.indexed_launches: list[str] = []

    def make_current(self) -> None:      # no driver context to switch
        pass

    def _bytes(self, buf: cuda.DeviceBuffer) -> np.ndarray:
        return self.memory.blocks[buf.ptr]

    def to_device(self, array: np.ndarray) -> cuda.DeviceBuffer:
        a = np.ascontiguousarray(array)
        buf = self.empty(a.nbytes)
        self._bytes(buf)[:a.nbytes] = a.reshape(-1).view(np.uint8)
        return buf

    def to_host(self, buf: cuda.DeviceBuffer, shape: tuple[int, ...], dtype: str,
                offset: int = 0) -> np.ndarray:
        out = np.empty(shape, dtype=np.dtype(dtype))
        start = offset * out.itemsize
        if start + out.nbytes > buf.nbytes:
            raise ValueError(f"reading {out.nbytes} bytes at element {offset} overruns {buf}")
        out.reshape(-1).view(np.uint8)[:] = self._bytes(buf)[start:start + out.nbytes]
        return out

    def view(self, arr: cuda.DeviceArray) -> np.ndarray:
        dt = np.dtype(arr.dtype)
        raw = self._bytes(arr.buffer)
        base = raw[: raw.size // dt.itemsize * dt.itemsize].view(dt)
        return np.lib.stride_tricks.as_strided(base[arr.offset:], arr.shape,
                                               tuple(s * dt.itemsize for s in arr.strides))

    def launch_kernel(self, kernel, shape, inputs, outputs) -> None:
        shape = tuple(int(s) for s in shape)
        n_outer = len(shape) - kernel.n_reduce
        if int(np.prod(shape[:n_outer])) == 0 or (kernel.n_reduce == 0 and int(np.prod(shape)) == 0):
            return
        pk = default_ptx_cache().get(kernel, self.arch)
        if pk.key not in self.assembled and ptx.ptxas_available():
            ptx.ptxas_check(pk.ptx, self.arch)      # what a real driver would have to load
            self.assembled.add(pk.key)
        self._run_on_host(kernel, shape, [*inputs, *outputs])
        self.launches += 1

    @staticmethod
    def _run_on_host(kernel, shape: tuple[int, ...], ops) -> None:
        """The kir kernel through the CPU code generator on the operands' raw addresses (pointer
        plus offset, as the GPU gets them: an operand read only inside a range of the index, such
        as a concatenation's, may start before its buffer, which no NumPy view can express)."""
        ptrs = np.array([a.buffer.ptr + a.offset * np.dtype(a.dtype).itemsize for a in ops], dtype=np.uintp)
        strides = np.array([list(a.strides) for a in ops], dtype=np.int64).reshape(-1)
        shape_a = np.array(shape or (0,), dtype=np.int64)
        strides_a = strides if strides.size else np.zeros(1, dtype=np.int64)
        fn = cpu.default_cache().get(kernel).fn
        ranges = cpu.plan_ranges(shape, kernel.n_outer, cost=cpu.point_cost(kernel))
        if ranges:
            cpu.launch(fn, ranges, shape_a.ctypes.data, strides_a.ctypes.data, ptrs.ctypes.data)

    def launch_matmul(self, dtype, a, b, out) -> None:
        if not cuda.matmul_launches(dtype, a, b, out):     # the real argument packing
            return
        pk = ptx_matmul.compile_matmul(dtype, self.arch)
        if pk.key not in self.assembled and ptx.ptxas_available():
            ptx.ptxas_check(pk.ptx, self.arch)
            self.assembled.add(pk.key)
        # the kernel itself is checked numerically by the thread emulator (tests/codegen)
        x, y = self.view(a), self.view(b)
        acc = np.float32 if dtype == "float16" else dtype
        self.view(out)[...] = np.matmul(x.astype(acc), y.astype(acc)).astype(dtype)
        self.launches += 1

    def launch_indexed(self, kind, dtype, pointers, ints) -> None:
        """A gather or scatter-add kernel: its PTX assembled, its IR run by the thread emulator
        on the packed arguments (simulated memory is host memory), two blocks striding over all."""
        from tests.codegen.ptx_emulator import run_ir
        pk = ptx_scatter.compile_kernel(kind, dtype, self.arch)
        if pk.key not in self.assembled and ptx.ptxas_available():
            ptx.ptxas_check(pk.ptx, self.arch)
            self.assembled.add(pk.key)
        blocks, threads = ptx_scatter.launch_geometry(kind, tuple(ints[:4]))
        run_ir(str(ptx_scatter.build(kind, dtype)), pk.entry, (min(blocks, 2), 1, 1), threads,
               list(pointers), list(ints))
        self.indexed_launches.append(kind)
        self.launches += 1

    def run_user_kernel(self, kernel, inputs, out) -> None:
        """A custom op's PTX kernel: its launch packed and its module assembled as on a GPU, the
        op's host routine standing in for the kernel's arithmetic (no PTX runs on the CPU)."""
        args = cuda_user.launch_args([(cuda._address(a), cuda._size(a.shape)) for a in inputs],
                                     (cuda._address(out), cuda._size(out.shape)))
        if kernel.key not in self.assembled and ptx.ptxas_available():
            ptx.ptxas_check(kernel.ptx, self.arch)
            self.assembled.add(kernel.key)
        self.user_launches.append((kernel.entry, cuda_user.grid(cuda._size(out.shape)), args))
        self.view(out)[...] = cpu.EXTERNS[kernel.op](*(self.view(a) for a in inputs))
        self.launches += 1

    def synchronize(self) -> None:
        pass


@contextlib.contextmanager
def installed() -> Iterator[SimulatedDevice]:
    """Make ``runtime.cuda`` report an available GPU that is a :class:`SimulatedDevice`."""
    dev = SimulatedDevice()
    saved = (cuda._probe_once, cuda.device_properties, cuda.device_count, dict(cuda._devices))
    cuda._probe_once = lambda: (object(), None)
    cuda.device_properties = lambda index=0: (dev.name, dev.arch)
    cuda.device_count = lambda: 1
    cuda._devices.clear()
    cuda._devices[0] = dev
    try:
        yield dev
    finally:
        cuda._probe_once, cuda.device_properties, cuda.device_count = saved[:3]
        cuda._devices.clear()
        cuda._devices.update(saved[3])
