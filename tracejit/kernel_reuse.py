"""A batch of one runs the kernels compiled for a batch of N.

Fusion drops extent-1 dims from a kernel's iteration space, so at batch 1 a kernel can come out
with fewer dims than at batch N, or with a layout pattern (``b``/``c``/``s``, see
:mod:`codegen.kir`) that differs from batch N's only along a dim of extent 1.  Along such a dim the
index is always 0 and the stride is never used, so every pattern is right there: the kernel
compiled for batch N computes the same values.  This module remembers the CPU kernels compiled in
this process by everything except their layouts (their *skeleton*), and points a planned kernel
that is not known yet at a known one that agrees with it on every dim of extent > 1, keeping
some of the extent-1 dims where that is what makes the two agree.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from itertools import combinations

from codegen import kir

from . import fusion
from .views import View

MAX_KEPT_DIMS = 4        # extent-1 dims tried in every combination (2**4 candidates at most)
MAX_PER_SKELETON = 8

_known: dict[str, list[kir.Kernel]] = {}
_known_keys: set[str] = set()


def _skeleton(ndim: int, n_reduce: int, inputs: tuple, outputs: tuple, stages: tuple) -> str:
    text = repr((ndim, n_reduce, tuple(o.dtype for o in inputs), tuple(o.dtype for o in outputs), stages))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def remember(plan: fusion.FusionPlan) -> None:
    """Record the kernels of a compiled plan as available to later plans."""
    for step in plan.steps:
        if isinstance(step, fusion.KernelPlan) and step.kernel.key not in _known_keys:
            k = step.kernel
            entries = _known.setdefault(_skeleton(k.ndim, k.n_reduce, k.inputs, k.outputs, k.stages), [])
            if len(entries) < MAX_PER_SKELETON:
                entries.append(k)
                _known_keys.add(k.key)


def reuse_known_kernels(plan: fusion.FusionPlan) -> int:
    """Rewrite the plan's not-yet-known kernels to known ones where extent-1 dims allow; returns
    how many were rewritten."""
    if not _known:
        return 0
    count = 0
    for i, step in enumerate(plan.steps):
        if isinstance(step, fusion.KernelPlan) and step.kernel.key not in _known_keys:
            found = _reuse(step)
            if found is not None:
                plan.steps[i] = found
                count += 1
    return count


def _reuse(kp: fusion.KernelPlan) -> fusion.KernelPlan | None:
    k = kp.kernel
    if len(kp.space_strides) != len(kp.inputs) + len(kp.outputs):
        return None
    ones = [d for d, n in enumerate(kp.space) if n == 1]
    if not ones or len(ones) > MAX_KEPT_DIMS:
        return None
    # a kernel that reads loop indices keeps every dim (no collapse): only its layouts can differ
    kept_sets = [()] if not kp.merge else [c for r in range(len(ones) + 1) for c in combinations(ones, r)]
    for keep in kept_sets:
        shape, strides, n_reduce = fusion._collapse(kp.space, kp.space_strides, kp.space_reduce,
                                                    kp.merge, frozenset(keep))
        entries = _known.get(_skeleton(len(shape), n_reduce, k.inputs, k.outputs, k.stages), ())
        for known in entries:
            if _agrees(known, shape, strides):
                n_in = len(kp.inputs)
                return replace(
                    kp, kernel=replace(known, name=k.name), shape=shape,
                    inputs=[(node, View(shape, st, v.offset)) for (node, v), st in zip(kp.inputs, strides)],
                    outputs=[(node, View(shape, st, v.offset))
                             for (node, v), st in zip(kp.outputs, strides[n_in:])])
    return None


def _agrees(known: kir.Kernel, shape: tuple[int, ...], strides: list[tuple[int, ...]]) -> bool:
    operands = known.inputs + known.outputs
    return all(n == 1 or fusion._layout(s[d]) == op.layout[d]
               for op, s in zip(operands, strides) for d, n in enumerate(shape))
