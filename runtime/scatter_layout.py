"""A scatter-add's (or a gather's) operands in its kernels' terms: the output's dims before the
scattered axis, the axis, the index dims and the dims after it, each walked with one stride.
The CPU kernel (:mod:`runtime.cpu_scatter`) and the GPU kernels (:mod:`runtime.cuda`) take them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from runtime.program import Extern


def merged_stride(shape: Sequence[int], strides: Sequence[int]) -> int | None:
    """The one stride that walks ``shape``'s dims flattened in C order (0 when they have at most
    one element, none, or are all broadcast), or None when no single stride does."""
    dims = [(n, s) for n, s in zip(shape, strides) if n != 1]
    if not dims or 0 in shape:
        return 0
    for (_, outer), (n, inner) in zip(dims, dims[1:]):
        if outer != inner * n:
            return None
    return dims[-1][1]


class ScatterLayout:
    """A scatter_add's sizes ``(P, N, M, C)`` and element strides, in the kernel's terms."""

    def __init__(self, base_shape: Sequence[int], idx_shape: Sequence[int], axis: int,
                 out_strides: Sequence[int], base_strides: Sequence[int], src_strides: Sequence[int],
                 idx_strides: Sequence[int]):
        k = len(idx_shape)
        before, after = tuple(base_shape[:axis]), tuple(base_shape[axis + 1:])
        self.sizes = (math.prod(before), base_shape[axis], math.prod(idx_shape), math.prod(after))
        src_shape = before + tuple(idx_shape) + after

        def groups(shape, strides, cut):
            return [merged_stride(shape[a:b], strides[a:b]) for a, b in zip((0,) + cut, cut + (len(shape),))]
        out_p, out_n, out_c = groups(tuple(base_shape), out_strides, (axis, axis + 1))
        base_p, base_n, base_c = groups(tuple(base_shape), base_strides, (axis, axis + 1))
        src_p, src_m, src_c = groups(src_shape, src_strides, (axis, axis + k))
        idx_m = merged_stride(idx_shape, idx_strides)
        if not math.prod(src_shape):        # (no row is added: an empty array's strides are any)
            src_p, src_m, src_c, idx_m = 0, 0, 1, 0
        wide = self.sizes[3] > 1
        # every operand walks each of the three groups with one stride (what the GPU kernel needs)
        self.strided = None not in (out_p, out_n, out_c, base_p, base_n, base_c, src_p, src_m, src_c, idx_m)
        # ... and the columns contiguously (what this kernel's vector loads need)
        self.ok = self.strided and (not wide or (out_c == 1 and src_c == 1 and base_c in (0, 1)))
        self.strides = (out_p, out_n, base_p, base_n, base_c if wide else 1, src_p, src_m, idx_m)
        self.out_strides, self.src_strides = (out_p, out_n, out_c), (src_p, src_m, src_c)


def scatter_layout(step: Extern) -> ScatterLayout:
    """The layout of a program's ``scatter_add(base, idx, src)`` step."""
    base, idx, src = step.inputs
    axis = dict(step.params)["axis"]
    return ScatterLayout(step.shapes[0], step.shapes[1], axis, step.outputs[0].strides, base.strides,
                         src.strides, idx.strides)


def gather_layout(step: Extern) -> ScatterLayout:
    """The layout of a program's ``take(table, idx)`` step: the table shaped as a scatter's
    output, the gathered rows as its source."""
    table, idx = step.inputs
    axis = dict(step.params)["axis"]
    return ScatterLayout(step.shapes[0], step.shapes[1], axis, table.strides, table.strides,
                         step.outputs[0].strides, idx.strides)
