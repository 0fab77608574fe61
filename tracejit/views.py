"""Strided views: how movement ops become index arithmetic instead of copies.

A :class:`View` maps a logical multi-index to an element offset in a buffer:
``offset + sum(idx[d] * strides[d])``.  Reshape, permute, expand and slice act on views the
way NumPy's do; a reshape that no strides can express returns None and the fusion pass
materializes the value first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(strides))


@dataclass(frozen=True)
class View:
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @staticmethod
    def contiguous(shape: tuple[int, ...]) -> View:
        return View(tuple(shape), contiguous_strides(tuple(shape)), 0)

    def apply(self, op: str, params: dict[str, Any], out_shape: tuple[int, ...]) -> View | None:
        if op == "reshape":
            return self.reshape(out_shape)
        if op == "permute":
            perm = params["perm"]
            return View(tuple(self.shape[p] for p in perm), tuple(self.strides[p] for p in perm), self.offset)
        if op == "expand":
            strides = tuple(0 if n != m else s for n, m, s in zip(self.shape, out_shape, self.strides))
            return View(out_shape, strides, self.offset)
        if op == "slice":
            off = self.offset + sum(b * s for b, s in zip(params["start"], self.strides))
            strides = tuple(s * st for s, st in zip(self.strides, params["step"]))
            # an empty result never reads memory; keep its offset in range
            return View(out_shape, strides, off if math.prod(out_shape) else self.offset)
        if op == "window":
            # index ``start + step * i`` of the operand at index ``i`` (a concatenation's or a
            # pad's operand read at its position): only the points inside the operand are read
            off = self.offset + sum(b * s for b, s in zip(params["start"], self.strides))
            return View(out_shape, tuple(s * st for s, st in zip(self.strides, params["step"])), off)
        raise ValueError(f"{op} is not a view op")

    def reshape(self, shape: tuple[int, ...]) -> View | None:
        """NumPy's no-copy reshape: merge/split runs of dims that are contiguous with each other."""
        shape = tuple(shape)
        if math.prod(shape) == 0 or shape == self.shape:
            return View(shape, contiguous_strides(shape), self.offset) if shape != self.shape else self
        old = [(n, s) for n, s in zip(self.shape, self.strides) if n != 1]
        new_strides: list[int] = []
        oi, ni = 0, 0
        new = list(shape)
        while ni < len(new):
            if new[ni] == 1:
                new_strides.append(0)
                ni += 1
                continue
            if oi >= len(old):
                return None
            # take old dims until their product covers the next new dims' product
            o_prod, n_prod = old[oi][0], new[ni]
            o_start, n_start = oi, ni
            while o_prod != n_prod:
                if o_prod < n_prod:
                    oi += 1
                    if oi >= len(old):
                        return None
                    o_prod *= old[oi][0]
                else:
                    ni += 1
                    while ni < len(new) and new[ni] == 1:
                        ni += 1
                    if ni >= len(new):
                        return None
                    n_prod *= new[ni]
            for k in range(o_start, oi):            # the old run must be contiguous in itself
                if old[k][1] != old[k + 1][1] * old[k + 1][0]:
                    return None
            stride = old[oi][1]
            run = []
            for k in range(ni, n_start - 1, -1):    # innermost new dim first
                run.append(0 if new[k] == 1 else stride)
                if new[k] != 1:
                    stride *= new[k]
            new_strides.extend(reversed(run))
            oi += 1
            ni += 1
        if oi != len(old):
            return None
        return View(shape, tuple(new_strides), self.offset)
