"""A compiled program as data: buffers, kernel launches and extern calls.

``tracejit`` builds a :class:`Program`; a device runtime executes it; ``export`` writes it.
Nothing here knows about tensors, tracing or graphs.

Buffers are numbered *slots*.  The first ``n_inputs`` slots are bound to the caller's input
arrays (contiguous), constants are bound once, everything else is allocated by the runtime
(from its pool) with ``slot_nbytes[slot]`` bytes.  Every operand of a step is a strided view
of a slot: ``(slot, element offset, strides in elements)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from codegen.kir import Kernel


@dataclass(frozen=True)
class View:
    slot: int
    offset: int                 # in elements (of a launch operand's dtype; of the slot's for externs)
    strides: tuple[int, ...]    # in elements, one per iteration dim (or per array dim for externs)


@dataclass(frozen=True)
class Launch:
    """Run ``kernel`` over iteration space ``shape``; ``inputs``/``outputs`` match the kernel's operands."""
    kernel: Kernel
    shape: tuple[int, ...]
    inputs: tuple[View, ...]
    outputs: tuple[View, ...]


@dataclass(frozen=True)
class Extern:
    """A call into a library routine (``"matmul"``: out[b, m, n] = sum_k a[b, m, k] * b[b, k, n]).

    ``shapes`` gives each operand's array shape (inputs then outputs), matching the views' strides.
    """
    name: str
    inputs: tuple[View, ...]
    outputs: tuple[View, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtype: str
    params: tuple[tuple[str, Any], ...] = ()
    source: str = ""        # the user's line that made it, named when it raises


Step = Launch | Extern


@dataclass
class Program:
    n_inputs: int
    slot_nbytes: list[int]                     # bytes per slot (inputs included, for checking)
    slot_dtypes: list[str]
    constants: dict[int, Any]                  # slot -> numpy array (contiguous)
    steps: list[Step]
    outputs: list[tuple[View, tuple[int, ...], str]]   # (view, shape, dtype) per program output
    # (input slot, output index): write the output back into the caller's input buffer
    writebacks: list[tuple[int, int]] = field(default_factory=list)
    # slot -> slot it may reuse (buffer plan); filled by the scheduler
    aliases: dict[int, int] = field(default_factory=dict)
    # output index -> input slot: the output is computed in the caller's input buffer itself
    # (an in-place update); the runtime returns that input array as the output.
    inplace: dict[int, int] = field(default_factory=dict)

    @property
    def kernels(self) -> list[Kernel]:
        seen: dict[str, Kernel] = {}
        for s in self.steps:
            if isinstance(s, Launch):
                seen.setdefault(s.kernel.key, s.kernel)
        return list(seen.values())


def checked_indices(p: Program, slot: int, size: int) -> bool:
    """Whether ``slot`` holds what an ``index_check`` step into an axis of ``size`` wrote (the
    whole slot): indices in ``[0, size)``, which a kernel may use without a bounds check."""
    return any(isinstance(s, Extern) and s.name == "index_check" and s.outputs[0].slot == slot
               and dict(s.params).get("size") == size for s in p.steps)
