"""Run the NVPTX kernels of :mod:`codegen.ptx` on the CPU, one OS thread per GPU thread.

The kernel's LLVM IR is retargeted to the host: special registers, ``bar.sync`` and warp
shuffles become calls into Python (thread-local ids, a block-wide ``threading.Barrier``, a
slot exchange between barriers), shared memory becomes ordinary globals (blocks run one after
another).  Slow, but it executes the very IR that becomes PTX, so the reduction skeletons
(shuffles, shared memory, broadcasts, grid-stride loops) are checked numerically without a GPU.
Only for small tests: every shuffle costs two barrier rounds of all threads of the block.
No float16: half arithmetic on the host needs compiler-rt helpers that the JIT does not link.
"""
from __future__ import annotations

import ctypes
import re
import threading

import llvmlite.binding as llvm
import numpy as np

from codegen import kir, ptx

_I32_FN = ctypes.CFUNCTYPE(ctypes.c_int32)
_BAR_FN = ctypes.CFUNCTYPE(None, ctypes.c_int32)
_SHFL_I32 = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32)
_SHFL_F32 = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int32, ctypes.c_float, ctypes.c_int32, ctypes.c_int32)


class _Block:
    """The state of the block being run: ids, barrier, shuffle slots."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.ntid = self.nctaid = self.ctaid = 0
        self.ctaid_y = self.ctaid_z = 0
        self.barrier: threading.Barrier | None = None
        self.slots: list = []

    def shfl(self, value, lane_mask: int):
        tid = self.local.tid
        self.slots[tid] = value
        self.barrier.wait()
        src = (tid & ~31) | ((tid & 31) ^ lane_mask)
        out = self.slots[src]
        self.barrier.wait()
        return out


_state = _Block()
_callbacks = {
    "emu_tid": _I32_FN(lambda: _state.local.tid),
    "emu_ntid": _I32_FN(lambda: _state.ntid),
    "emu_ctaid": _I32_FN(lambda: _state.ctaid),
    "emu_ctaid_y": _I32_FN(lambda: _state.ctaid_y),
    "emu_ctaid_z": _I32_FN(lambda: _state.ctaid_z),
    "emu_nctaid": _I32_FN(lambda: _state.nctaid),
    "emu_barrier": _BAR_FN(lambda _: _state.barrier.wait()),
    "emu_shfl_i32": _SHFL_I32(lambda mask, v, m, c: _state.shfl(v, m)),
    "emu_shfl_f32": _SHFL_F32(lambda mask, v, m, c: _state.shfl(v, m)),
}
_RENAMES = {
    "llvm.nvvm.read.ptx.sreg.tid.x": "emu_tid", "llvm.nvvm.read.ptx.sreg.ntid.x": "emu_ntid",
    "llvm.nvvm.read.ptx.sreg.ctaid.x": "emu_ctaid", "llvm.nvvm.read.ptx.sreg.nctaid.x": "emu_nctaid",
    "llvm.nvvm.read.ptx.sreg.ctaid.y": "emu_ctaid_y", "llvm.nvvm.read.ptx.sreg.ctaid.z": "emu_ctaid_z",
    "llvm.nvvm.barrier.cta.sync.aligned.all": "emu_barrier",
    "llvm.nvvm.shfl.sync.bfly.i32": "emu_shfl_i32", "llvm.nvvm.shfl.sync.bfly.f32": "emu_shfl_f32",
}
def _thread(fn, args: list, tid: int, errors: list) -> None:
    _state.local.tid = tid
    try:
        fn(*args)
    except BaseException as e:  # surfaced by emulate()
        errors.append(e)


_engines: list = []   # keep compiled code alive
_lock = threading.Lock()


def host_ir(kernel: kir.Kernel | str) -> str:
    """The NVPTX IR of a kernel (or IR text) rewritten for the host."""
    text = ptx.lower_to_llvm(kernel) if isinstance(kernel, kir.Kernel) else kernel
    for old, new in _RENAMES.items():
        text = text.replace(f'@"{old}"', f'@"{new}"')
    text = text.replace("define ptx_kernel void", "define void")
    text = text.replace(" addrspace(3)", "").replace("addrspacecast", "bitcast")
    text = re.sub(r'target triple = ".*"', f'target triple = "{llvm.get_process_triple()}"', text)
    return re.sub(r'target datalayout = ".*"', "", text)


def _compile(text: str, entry: str) -> int:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    for name, cb in _callbacks.items():
        llvm.add_symbol(name, ctypes.cast(cb, ctypes.c_void_p).value)
    mod = llvm.parse_assembly(host_ir(text))
    mod.verify()
    tm = llvm.Target.from_default_triple().create_target_machine(opt=0)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    _engines.append(engine)
    return engine.get_function_address(entry)


def _run_blocks(fn, args: list, grid: tuple[int, int, int], block: int) -> None:
    """Every block of ``grid`` in turn, each with ``block`` threads."""
    _state.ntid, _state.nctaid = block, grid[0]
    _state.slots = [0] * block
    for z in range(grid[2]):
        for y in range(grid[1]):
            for x in range(grid[0]):
                _state.ctaid, _state.ctaid_y, _state.ctaid_z = x, y, z
                _state.barrier = threading.Barrier(block)
                errors: list[BaseException] = []
                threads = [threading.Thread(target=_thread, args=(fn, args, t, errors)) for t in range(block)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                if errors:
                    raise errors[0]


def run_ir(text: str, entry: str, grid: tuple[int, int, int], block: int, pointers: list[int],
           ints: list[int]) -> None:
    """Run the NVPTX IR ``text`` (entry ``entry``: pointer parameters, then int64 ones) over a
    3-d ``grid`` of 1-d blocks."""
    ftype = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * len(pointers)), *([ctypes.c_int64] * len(ints)))
    with _lock:
        _run_blocks(ftype(_compile(text, entry)), [*pointers, *ints], grid, block)


Operand = tuple[np.ndarray, int, tuple[int, ...]]


def emulate(kernel: kir.Kernel, shape: tuple[int, ...], operands: list[Operand], max_blocks: int = 3) -> None:
    """Run ``kernel`` over ``shape``; operands are (base array, element offset, iteration strides).

    At most ``max_blocks`` blocks are launched: the kernels' grid-stride loops cover the rest.
    """
    grid, block, _ = ptx.launch_geometry(kernel, shape)
    grid = min(grid, max_blocks)
    n_ops = len(operands)
    n_ints = kernel.ndim * (1 + n_ops)
    ftype = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * n_ops), *([ctypes.c_int64] * n_ints))
    with _lock:
        fn = ftype(_compile(ptx.lower_to_llvm(kernel), ptx.entry_name(kernel)))
        args = [a.ctypes.data + off * a.itemsize for a, off, _ in operands]
        args += list(shape) + [s for _, _, st in operands for s in st]
        _run_blocks(fn, args, (grid, 1, 1), block)
