"""The reference executor: runs a graph op by op through the op table's NumPy references.

It is the differential reference for the compiled backends and a debugging aid
(``jit(f, backend="interpret")``).  For a GPU program it runs on the host, its inputs
downloaded and its outputs uploaded (:class:`OnHost`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .graph import Graph
from .ops import PRIMS


class Interpreter:
    """A graph turned into a flat list of steps, executed on NumPy arrays."""

    def __init__(self, g: Graph) -> None:
        order = g.topo()
        slot = {nid: i for i, nid in enumerate(order)}
        self.n_slots = len(order)
        self.input_slots = [slot[i] for i in g.inputs]
        self.output_slots = [slot[o] for o in g.outputs]
        self.steps: list[tuple[Any, tuple[int, ...], dict[str, Any], int]] = []
        for nid in order:
            n = g.node(nid)
            if n.op != "input":
                self.steps.append((PRIMS[n.op].impl, tuple(slot[i] for i in n.inputs), n.params, slot[nid]))

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        env: list[Any] = [None] * self.n_slots
        for s, v in zip(self.input_slots, inputs):
            env[s] = v
        for impl, ins, params, out in self.steps:
            env[out] = np.asarray(impl(*(env[i] for i in ins), **params))
        # an output may be a NumPy view of an input (``x[0:1] * 1`` simplified to the slice):
        # copy it, as the compiled runtime does, so a write-back into that input after the
        # call does not change it
        return [o.copy() if any(np.may_share_memory(o, x) for x in inputs) else o
                for o in (env[s] for s in self.output_slots)]


class OnHost:
    """An interpreter for a GPU program: device inputs in, device outputs out, NumPy between."""

    def __init__(self, interpreter: Interpreter, device: Any) -> None:
        from .device import cuda_device
        self.interpreter, self.gpu = interpreter, cuda_device(device)

    def __call__(self, inputs: list[Any]) -> list[Any]:
        outs = self.interpreter([self.gpu.array_to_host(a) for a in inputs])
        return [self.gpu.upload(np.asarray(o)) for o in outs]
