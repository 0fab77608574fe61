"""Data-parallel training: ``DistributedDataParallel`` keeps a model's replicas equal across ranks.

At construction every parameter and buffer is broadcast from rank 0.  During ``backward`` the
gradients are averaged over the ranks in *buckets* (about ``bucket_cap_mb`` each, parameters in
reverse order, the order backward produces their gradients): a leaf's post-accumulate hook
marks its gradient ready, and a bucket whose gradients are all ready is copied into one flat
buffer and its all-reduce started as a non-blocking MPI request, while the backward pass goes
on with the layers below.  When ``backward`` has accumulated every gradient, the requests are
waited and the averages copied back into ``.grad``, so ``optimizer.step()`` (any ``tj.optim``
optimizer, unchanged) sees the averaged gradients.  Buckets start in a fixed order on every
rank, as MPI needs.

Under ``tj.jit`` the hooks run while the step is traced: each bucket's all-reduce becomes two
steps of the compiled program, a start recorded where the bucket's gradients are complete and
a wait recorded after the whole backward pass; steps run in the order they were recorded
where dependencies allow, so the kernels of the layers below run while the reduction is in
flight (polled by the process group's helper thread).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import prims as P
from ..autograd import queue_callback
from ..device import host_array, write_back
from ..distributed import process_group as pg
from ..tensors import CPU, Tensor
from ..tracing import current_trace
from .modules import Module

_TAGS = itertools.count(1)      # pairs a traced reduction's start and wait steps


@dataclass
class _Bucket:
    index: int
    params: list[Tensor]
    names: list[str]
    offsets: list[int]
    sizes: dict[int, int]        # offset -> elements of the parameter there
    dtype: np.dtype
    size: int
    flat: np.ndarray | None = None
    ready: set[int] = field(default_factory=set)
    work: pg.Work | None = None
    token: Tensor | None = None          # under jit: the started reduction
    tag: int = 0


@dataclass
class _Pass:
    """The backward pass in progress (kept off the module's attributes, which jit guards)."""

    active: bool = False
    next_launch: int = 0                 # buckets before this one are started
    last_flat: Tensor | None = None      # under jit: the last bucket's gradients


@dataclass
class CommStats:
    """What the last backward spent on gradient all-reduces (host seconds, bytes per rank)."""

    buckets: int = 0
    bytes: int = 0
    wait_s: float = 0.0          # waiting for the reductions after backward finished (not hidden)
    comm_s: float = 0.0          # summed over buckets: from its start to its completion
    hidden_s: float = 0.0        # the part of comm_s before backward had its last gradient
    started_early: int = 0       # buckets whose reduction started before backward ended
    steps: int = 0


class DistributedDataParallel(Module):
    """Wrap ``module`` so that its gradients are averaged over all ranks during ``backward``.

    ``bucket_cap_mb``: the size of one all-reduce; ``overlap=False`` starts every reduction only
    after backward ends (to measure how much the overlap hides).
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25.0, overlap: bool = True,
                 process_group: pg.ProcessGroup | None = None) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel needs a tracejit.nn.Module, "
                            f"got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        self.group = process_group if process_group is not None else pg.current()
        self.bucket_cap_bytes = int(bucket_cap_mb * 2**20)
        self.overlap = bool(overlap)
        self.comm_stats = CommStats()
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._check_same_model([(n, p.shape, p.dtype.name) for n, p in module.named_parameters()])
        self._broadcast_state()
        self._buckets = self._make_buckets(named)
        self._bucket_of = {id(p): b for b in self._buckets for p in b.params}
        self._offset_of = {id(p): off for b in self._buckets for p, off in zip(b.params, b.offsets)}
        self._pass = _Pass()
        self._handles = [p.register_post_accumulate_grad_hook(self._grad_ready) for _, p in named]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    # ---------------------------------------------------------------- setup
    def _check_same_model(self, signature: list[tuple[str, tuple, str]]) -> None:
        theirs = self.group.bcast_object(signature, src=0)
        if theirs != signature:
            diff = next((f"{a} on rank 0, {b} here" for a, b in zip(theirs, signature) if a != b),
                        f"{len(theirs)} parameters on rank 0, {len(signature)} here")
            raise ValueError(f"DistributedDataParallel: rank {self.group.rank}'s model differs from rank 0's "
                             f"({diff}); every rank must build the same model")

    def _broadcast_state(self) -> None:
        if self.group.world_size == 1:
            return
        works = [(t, self.group.broadcast(host_array(t._value, t.device), src=0))
                 for t in list(self.module.parameters()) + list(self.module.buffers())]
        for t, w in works:
            write_back(t, w.wait(), CPU)

    def _make_buckets(self, named: list[tuple[str, Tensor]]) -> list[_Bucket]:
        buckets: list[_Bucket] = []
        for name, p in reversed(named):      # backward makes the last layers' gradients first
            n = int(np.prod(p.shape))
            nbytes = n * p.dtype.itemsize
            b = buckets[-1] if buckets else None
            if b is None or b.dtype != p.dtype or (b.size * b.dtype.itemsize + nbytes > self.bucket_cap_bytes
                                                    and b.params):
                b = _Bucket(len(buckets), [], [], [], {}, p.dtype, 0)
                buckets.append(b)
            b.params.append(p)
            b.names.append(name)
            b.offsets.append(b.size)
            b.sizes[b.size] = n
            b.size += n
        return buckets

    @property
    def bucket_sizes(self) -> list[int]:
        """Elements per bucket, in launch order."""
        return [b.size for b in self._buckets]

    # ---------------------------------------------------------------- during backward
    def _grad_ready(self, p: Tensor) -> None:
        if not self._pass.active:
            self._pass.active = True
            queue_callback(self._finish)
        b = self._bucket_of[id(p)]
        if current_trace() is None:
            if b.flat is None:
                b.flat = np.empty(b.size, b.dtype)
            off = self._offset_of[id(p)]
            b.flat[off:off + b.sizes[off]] = host_array(p.grad._value, p.grad.device).reshape(-1)
        b.ready.add(id(p))
        if self.overlap:
            self._launch_ready()
        for other in self._buckets[:self._pass.next_launch]:
            if other.work is not None:
                other.work.test()           # MPI progresses non-blocking collectives when polled

    def _launch_ready(self) -> None:
        """Start the buckets that are complete, in bucket order (the same order on every rank)."""
        while self._pass.next_launch < len(self._buckets):
            b = self._buckets[self._pass.next_launch]
            if len(b.ready) < len(b.params):
                return
            self._launch(b)
            self._pass.next_launch += 1

    def _launch(self, b: _Bucket) -> None:
        scale = 1.0 / self.group.world_size
        if current_trace() is None:
            if scale != 1.0:
                np.multiply(b.flat, scale, out=b.flat, casting="unsafe")
            b.work = self.group.all_reduce(b.flat, "sum")
            self.group.progress_in_background(b.work)
            return
        flat = P.concat(*[P.reshape(p.grad, shape=(b.sizes[off],))
                                 for p, off in zip(b.params, b.offsets)], axis=0) \
            if len(b.params) > 1 else P.reshape(b.params[0].grad, shape=(b.size,))
        if scale != 1.0:
            flat = P.mul(flat, P.full_like(flat, scale))
        b.tag = next(_TAGS)
        b.token = P.bind("all_reduce_start", flat, op="sum", tag=b.tag)
        self._pass.last_flat = flat

    def _finish(self) -> None:
        """After backward: every bucket started and waited, the averages back in ``.grad``."""
        self._pass.active = False
        missing = [n for b in self._buckets for n, p in zip(b.names, b.params) if id(p) not in b.ready]
        try:
            if missing:
                raise RuntimeError(
                    "DistributedDataParallel: these parameters received no gradient in this backward pass: "
                    + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
                    + "; every parameter that requires grad must take part in the loss (or set "
                    "requires_grad=False on it before wrapping the model)")
            t0 = time.perf_counter()
            comm = hidden = 0.0
            early = sum(b.work is not None for b in self._buckets)
            self._launch_ready()
            for b in self._buckets:
                if b.work is not None:
                    reduced = b.work.wait()
                    comm += b.work.completed - b.work.started
                    hidden += max(0.0, min(b.work.completed, t0) - b.work.started)
                    for p, off in zip(b.params, b.offsets):
                        write_back(p.grad, reduced[off:off + b.sizes[off]].reshape(p.shape), CPU)
                elif b.token is not None:
                    # after the last bucket's gradients: the end of the backward pass
                    reduced_t = P.bind("all_reduce_wait", b.token, self._pass.last_flat, tag=b.tag,
                                       shape=(b.size,), dtype=b.dtype.name)
                    for p, off in zip(b.params, b.offsets):
                        piece = P.slice(reduced_t, start=(off,), stop=(off + b.sizes[off],), step=(1,))
                        p.grad._assign(P.reshape(piece, shape=p.shape))
            stats = self.comm_stats
            stats.wait_s = time.perf_counter() - t0
            stats.comm_s, stats.hidden_s, stats.started_early = comm, hidden, early
            stats.buckets = len(self._buckets)
            stats.bytes = sum(b.size * b.dtype.itemsize for b in self._buckets)
            stats.steps += 1
        finally:
            for b in self._buckets:
                b.ready.clear()
                b.work = b.token = None
            self._pass.next_launch, self._pass.last_flat = 0, None      # the same object: jit guards it


__all__ = ["DistributedDataParallel", "CommStats"]
