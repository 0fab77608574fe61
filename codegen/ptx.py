"""PTX code generation: :func:`compile_kernel` turns a :class:`kir.Kernel` into PTX text.

Launch convention (what a runtime passes, in order; see :func:`param_types`):

* one pointer per input, then per output (the view's base, its element offset applied);
* the ``ndim`` extents of the iteration space (int64);
* for each operand in the same order, ``ndim`` strides in elements (int64).

:func:`launch_geometry` gives ``(grid, block, shared_bytes)``; kernels use a 1-D grid and
block and only static shared memory, so ``shared_bytes`` is always 0.

Every PTX produced here is meant to pass :func:`ptxas_check` (``ptxas -arch=sm_90``).
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass

import llvmlite.binding as llvm

from codegen import kir
from codegen.ptx_lower import DATA_LAYOUT, TRIPLE, lower, vector_width

__all__ = ["PtxKernel", "PtxasError", "compile_kernel", "lower_to_llvm", "launch_geometry",
           "param_types", "emit_ptx", "ptxas_check", "ptxas_available", "arch_of", "DEFAULT_ARCH", "TRIPLE",
           "DATA_LAYOUT", "CODEGEN_VERSION"]

DEFAULT_ARCH = "sm_90"
CODEGEN_VERSION = 1  # bump whenever the generated PTX changes (part of the disk cache key)
REDUCE_BLOCK = 256
ELEMENTWISE_BLOCK = 256
# grid-stride loops make any grid correct; this caps launch overhead for huge tensors while
# keeping far more resident blocks than an H100 (132 SMs) can hold at once
MAX_GRID = 65535

# Lowest PTX ISA version that supports each target (CUDA toolkit release notes).  Using the
# lowest one keeps the PTX loadable by the oldest driver that knows the GPU.
_PTX_ISA = {75: 63, 80: 70, 86: 71, 87: 74, 89: 78, 90: 78, 100: 86, 101: 86, 120: 87}


@dataclass(frozen=True)
class PtxKernel:
    """A compiled GPU kernel: PTX text plus what a runtime needs to launch it."""
    key: str            # kir structural key (cache key together with ``arch``)
    entry: str          # the ``.entry`` name in ``ptx``
    arch: str           # "sm_90"
    ptx: str
    ndim: int
    n_reduce: int
    n_operands: int
    vector_width: int   # elements per thread-iteration of an elementwise kernel


class PtxasError(RuntimeError):
    """ptxas rejected a PTX module; the message carries ptxas's diagnostics."""


def arch_of(arch: str | tuple[int, int]) -> str:
    """Normalise ``"sm_90"``, ``"90"``, ``(9, 0)`` to ``"sm_90"`` and check it is supported."""
    if isinstance(arch, tuple):
        arch = f"sm_{arch[0]}{arch[1]}"
    m = re.fullmatch(r"(?:sm_)?(\d+)(a?)", str(arch))
    if not m or int(m.group(1)) < 75:
        raise ValueError(f"unsupported GPU architecture {arch!r}: tracejit needs sm_75 or newer")
    return f"sm_{m.group(1)}{m.group(2)}"


# LLVM's global context and a shared TargetMachine are not thread-safe
_lock = threading.RLock()


def _ptx_feature(arch: str) -> str:
    sm = int(re.sub(r"\D", "", arch))
    known = [a for a in sorted(_PTX_ISA) if a <= sm]
    return f"+ptx{_PTX_ISA[known[-1]]}"


@functools.cache
def _init_llvm() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


@functools.cache
def _target_machine(arch: str) -> llvm.TargetMachine:
    _init_llvm()
    target = llvm.Target.from_triple(TRIPLE)
    return target.create_target_machine(cpu=arch, features=_ptx_feature(arch), opt=3)


def entry_name(kernel: kir.Kernel) -> str:
    """A PTX-safe, content-addressed entry name (the kernel's name is only a hint for humans)."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", kernel.name)[:40] or "k"
    return f"{base}_{kernel.key[:12]}"


def lower_to_llvm(kernel: kir.Kernel) -> str:
    """The (unoptimised) LLVM IR text of ``kernel`` for ``nvptx64-nvidia-cuda``."""
    return str(lower(kernel, entry_name(kernel)))


def _optimize(mod: llvm.ModuleRef, tm: llvm.TargetMachine) -> None:
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)


def emit_ptx(text: str, arch: str, what: str) -> str:
    """Verify, optimise and emit the NVPTX LLVM IR ``text`` (``what`` names it in errors)."""
    with _lock:
        tm = _target_machine(arch)
        try:
            mod = llvm.parse_assembly(text)
            mod.verify()
        except RuntimeError as e:
            raise RuntimeError(f"invalid LLVM IR for kernel {what}: {e}\n{text}") from e
        _optimize(mod, tm)
        return tm.emit_assembly(mod)


def compile_kernel(kernel: kir.Kernel, arch: str = DEFAULT_ARCH) -> PtxKernel:
    """Lower, optimise and emit PTX for ``kernel`` on ``arch`` (``sm_75`` or newer)."""
    arch = arch_of(arch)
    ptx = emit_ptx(lower_to_llvm(kernel), arch, f"{kernel.name} [{kernel.key}]")
    return PtxKernel(key=kernel.key, entry=entry_name(kernel), arch=arch, ptx=ptx, ndim=kernel.ndim,
                     n_reduce=kernel.n_reduce, n_operands=len(kernel.inputs) + len(kernel.outputs),
                     vector_width=vector_width(kernel))


def param_types(kernel: kir.Kernel | PtxKernel) -> str:
    """Parameter kinds in order, one letter each: ``P`` pointer, ``q`` int64 (pycuda's ``prepare``)."""
    n_ops = kernel.n_operands if isinstance(kernel, PtxKernel) else len(kernel.inputs) + len(kernel.outputs)
    return "P" * n_ops + "q" * (kernel.ndim * (1 + n_ops))


def launch_geometry(kernel: kir.Kernel | PtxKernel, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(grid, block, shared_bytes)`` for running ``kernel`` over iteration space ``shape``.

    Reductions: one block per outer point; the block is the reduce size rounded up to a whole
    warp, at most :data:`REDUCE_BLOCK` (shuffles use the full-warp mask).  Elementwise: one
    thread per ``vector_width`` elements of the last dim.
    """
    if len(shape) != kernel.ndim:
        raise ValueError(f"shape {shape} has {len(shape)} dims, kernel expects {kernel.ndim}")
    n_reduce = kernel.n_reduce
    if n_reduce:
        outer = _prod(shape[:len(shape) - n_reduce])
        red = _prod(shape[len(shape) - n_reduce:])
        block = min(REDUCE_BLOCK, max(32, -(-red // 32) * 32))
        return max(1, min(outer, MAX_GRID)), block, 0
    V = kernel.vector_width if isinstance(kernel, PtxKernel) else vector_width(kernel)
    work = _prod(shape[:-1]) * -(-shape[-1] // V) if shape else 1
    return max(1, min(-(-work // ELEMENTWISE_BLOCK), MAX_GRID)), ELEMENTWISE_BLOCK, 0


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n


def ptxas_available() -> bool:
    return shutil.which("ptxas") is not None


def ptxas_check(ptx: str, arch: str = DEFAULT_ARCH) -> None:
    """Assemble ``ptx`` with ``ptxas -arch=<arch>``; raise :class:`PtxasError` with its message.

    Raises ``FileNotFoundError`` when ptxas is not on PATH (tests turn that into a skip).
    """
    exe = shutil.which("ptxas")
    if exe is None:
        raise FileNotFoundError("ptxas not found on PATH (install the CUDA toolkit)")
    with tempfile.TemporaryDirectory(prefix="tracejit-ptxas-") as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        res = subprocess.run([exe, f"-arch={arch_of(arch)}", src, "-o", os.path.join(d, "k.cubin")],
                             capture_output=True, text=True)
    if res.returncode != 0:
        raise PtxasError(f"ptxas -arch={arch} failed:\n{res.stderr.strip() or res.stdout.strip()}")
