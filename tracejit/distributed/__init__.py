"""Data-parallel training across processes: a process group on MPI, and collectives on tensors.

    import tracejit.distributed as dist
    dist.init_process_group()              # rank and world size from mpirun; alone: rank 0 of 1
    dist.all_reduce(t, op="mean")          # eager, or an extern step inside tj.jit
    model = tj.nn.parallel.DistributedDataParallel(model)

See docs/DISTRIBUTED.md.
"""
from __future__ import annotations

from . import process_group as _pg
from .checkpoint import gather_rng_state, load, restore_rng_state, save
from .collectives import ReduceOp, all_gather, all_reduce, all_reduced, broadcast, reduce_scatter
from .process_group import DistributedError, ProcessGroup, launched_by_mpi

_BACKENDS = ("mpi", None)


def init_process_group(backend: str | None = None, timeout: float | None = None) -> ProcessGroup:
    """Join the job's process group: every rank of an ``mpirun`` job, or this process alone.

    ``backend``: ``"mpi"`` (or ``None``); ``timeout``: seconds a collective waits for the other
    ranks before it raises :class:`DistributedError` (default ``TRACEJIT_DIST_TIMEOUT`` or 300).
    """
    if backend not in _BACKENDS:
        raise ValueError(f"init_process_group: backend {backend!r} is not available here; use 'mpi' "
                         "(the NCCL design is in docs/DISTRIBUTED.md)")
    if is_initialized():
        raise RuntimeError("init_process_group was already called in this process; "
                           "call destroy_process_group() first to start a new group")
    group = ProcessGroup(timeout)
    _pg.set_current(group)
    return group


def destroy_process_group() -> None:
    """Leave the group (after this, collectives raise until ``init_process_group`` is called again)."""
    if is_initialized():
        _pg.current().barrier()
    _pg.set_current(None)


def is_initialized() -> bool:
    return bool(_pg._current)


def get_rank() -> int:
    """This process's rank (0 without a launcher)."""
    return _pg.current().rank


def get_world_size() -> int:
    """The number of ranks (1 without a launcher)."""
    return _pg.current().world_size


def barrier() -> None:
    """Wait until every rank got here (with the group's timeout)."""
    _pg.current().barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """A small picklable Python object from rank ``src`` to every rank (a path, a config)."""
    return _pg.current().bcast_object(obj, src)


def get_backend() -> str:
    return _pg.current().backend


__all__ = ["init_process_group", "destroy_process_group", "is_initialized", "get_rank", "get_world_size",
           "get_backend", "barrier", "broadcast_object", "all_reduce", "all_reduced", "broadcast",
           "all_gather", "reduce_scatter", "ReduceOp", "DistributedError", "ProcessGroup", "launched_by_mpi",
           "save", "load", "gather_rng_state", "restore_rng_state"]
