"""Packing of GPU kernel launch arguments (the convention of :mod:`codegen.ptx`).

Parameters, in order: one pointer per operand (inputs then outputs; base address plus the
view's byte offset), the iteration-space extents, then every operand's strides in elements.
All are 8 bytes, so the parameter buffer is a flat array of 64-bit words.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PackedArgs:
    fmt: str                 # pycuda ``prepare`` format: "P" pointer, "q" int64
    values: tuple[int, ...]

    def to_bytes(self) -> bytes:
        """The raw parameter buffer (little-endian, 8 bytes per parameter)."""
        return struct.pack("<" + self.fmt.replace("P", "Q"), *self.values)


def pack_launch(pointers: Sequence[int], offsets: Sequence[int], itemsizes: Sequence[int],
                shape: Sequence[int], strides: Sequence[Sequence[int]]) -> PackedArgs:
    """Arguments of one kernel launch.

    ``pointers``/``offsets`` (elements)/``itemsizes``/``strides`` have one entry per operand,
    inputs first; each operand has one stride per iteration dim.
    """
    n, ndim = len(pointers), len(shape)
    if not (len(offsets) == len(itemsizes) == len(strides) == n):
        raise ValueError("pointers, offsets, itemsizes and strides need one entry per operand")
    for i, st in enumerate(strides):
        if len(st) != ndim:
            raise ValueError(f"operand {i} has {len(st)} strides for a {ndim}-d iteration space")
    if any(int(s) < 0 for s in shape):
        raise ValueError(f"negative extent in shape {tuple(shape)}")
    addrs = tuple(int(p) + int(o) * int(sz) for p, o, sz in zip(pointers, offsets, itemsizes, strict=True))
    values = addrs + tuple(int(s) for s in shape) + tuple(int(x) for st in strides for x in st)
    return PackedArgs("P" * n + "q" * (ndim + n * ndim), values)
