"""User-written PTX kernels of opaque custom ops: checking the text, registry, launch arguments.

A kernel computes an extern step ``name`` on the GPU instead of its host routine.  Its entry
takes a pointer and an element count per input, then the same for the output, every parameter
64-bit::

    .entry NAME(.param .u64 in0, .param .u64 n0, ..., .param .u64 out, .param .u64 n_out)

on dense (C-contiguous) operands, launched on a 1-D grid of ``ceil(n_out / BLOCK)`` blocks of
:data:`BLOCK` threads (so a thread's index must be checked against ``n_out``).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.cuda_args import PackedArgs

BLOCK = 256
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_ENTRY = re.compile(r"\.entry\s+([A-Za-z_$%][\w$]*)\s*\(([^)]*)\)")
_TYPE = re.compile(r"\.([usbf]\d+)\b")
_TARGET = re.compile(r"\.target\s+(sm_\d+a?)")
_WORDS = ("u64", "s64", "b64")


@dataclass(frozen=True)
class UserPtxKernel:
    """A checked user kernel (the attributes a program's PTX listing shows for every kernel)."""
    op: str             # the extern step it computes
    entry: str
    ptx: str
    n_inputs: int
    arch: str           # the module's ``.target`` ("" when it names none)

    @property
    def key(self) -> str:
        return f"ptx-op:{self.op}:{hashlib.sha256(self.ptx.encode()).hexdigest()[:16]}"

    @property
    def n_operands(self) -> int:
        return self.n_inputs + 1

    ndim, n_reduce, vector_width = 0, 0, 1    # no iteration space: the kernel indexes by itself

    @property
    def param_format(self) -> str:
        """pycuda's ``prepare`` format: a pointer and an int64 count per operand."""
        return "Pq" * self.n_operands


KERNELS: dict[str, UserPtxKernel] = {}


def signature(entry: str, n_inputs: int | None) -> str:
    """The parameter list ``entry`` must have for ``n_inputs`` inputs (``...`` when unknown)."""
    ins = [f".param .u64 in{i}, .param .u64 n{i}" for i in range(n_inputs)] if n_inputs is not None \
        else [".param .u64 in0, .param .u64 n0, ..."]
    return f".entry {entry}({', '.join([*ins, '.param .u64 out, .param .u64 n_out'])})"


def entries(ptx: str) -> dict[str, list[str]]:
    """Each ``.entry`` of a PTX module with its parameters' declarations, comments removed."""
    text = _COMMENTS.sub(" ", ptx)
    return {m.group(1): [p.strip() for p in m.group(2).split(",") if p.strip()]
            for m in _ENTRY.finditer(text)}


def check(op: str, ptx: str, entry: str, n_inputs: int | None) -> UserPtxKernel:
    """``ptx`` as the kernel of extern ``op``; ``ValueError`` saying what does not match
    :func:`signature` (``n_inputs`` None: as many inputs as the parameters give)."""
    if not isinstance(ptx, str):
        raise TypeError(f"ptx must be PTX source text (a str), got {type(ptx).__name__}")
    found = entries(ptx)
    if entry not in found:
        named = ", ".join(sorted(found)) or "none"
        raise ValueError(f"its PTX has no .entry named {entry!r} (entries found: {named}); "
                         f"expected {signature(entry, n_inputs)}")
    params = found[entry]
    for i, p in enumerate(params):
        kind = _TYPE.search(p)
        if not p.startswith(".param") or kind is None or kind.group(1) not in _WORDS:
            raise ValueError(f"parameter {i} of .entry {entry} ({p!r}) is not a 64-bit .param "
                             f"(.u64, .s64 or .b64); expected {signature(entry, n_inputs)}")
    want = 2 * (n_inputs + 1) if n_inputs is not None else None
    if len(params) != want if want is not None else (len(params) < 4 or len(params) % 2):
        takes = want if want is not None else "a pointer and a count per input and for the output"
        raise ValueError(f".entry {entry} has {len(params)} parameters, it must take {takes}: "
                         f"{signature(entry, n_inputs)}")
    target = _TARGET.search(_COMMENTS.sub(" ", ptx))
    return UserPtxKernel(op, entry, ptx, len(params) // 2 - 1, target.group(1) if target else "")


def register(kernel: UserPtxKernel) -> None:
    """Make extern steps named ``kernel.op`` run ``kernel`` on a GPU."""
    KERNELS[kernel.op] = kernel


def launch_args(inputs: Sequence[tuple[int, int]], output: tuple[int, int]) -> PackedArgs:
    """The parameters of one launch from ``(address, element count)`` per input and the output."""
    values = tuple(int(x) for ptr_n in (*inputs, output) for x in ptr_n)
    return PackedArgs("Pq" * (len(inputs) + 1), values)


def grid(n_out: int) -> int:
    """Blocks of :data:`BLOCK` threads covering ``n_out`` output elements, one thread each."""
    return max(1, -(-int(n_out) // BLOCK))
