"""Collectives on tensors, eager or under ``jit`` (where each is an extern step of the program).

``all_reduce`` and ``broadcast`` update their tensor in place and return it, as
``torch.distributed`` does; ``all_gather`` and ``reduce_scatter`` return new tensors (the
forms of ``all_gather_into_tensor`` / ``reduce_scatter_tensor``, stacked / split along a new
or the leading axis).  ``all_reduce`` (sum, mean), ``all_gather`` and ``reduce_scatter`` are
differentiable: their gradients are the adjoint collectives.
"""
from __future__ import annotations

from typing import Any

from .. import prims as P
from ..tensors import Tensor
from . import process_group as pg


class ReduceOp:
    """``torch.distributed.ReduceOp``'s names for the reductions (plain strings work too)."""

    SUM = "sum"
    AVG = "mean"
    MEAN = "mean"
    MAX = "max"
    MIN = "min"


def _tensor(x: Any, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} needs a tracejit Tensor, got {type(x).__name__}")
    return x


def _op(op: Any, what: str) -> str:
    name = str(op).lower()
    if name == "avg":
        name = "mean"
    if name not in pg.REDUCE_OPS:
        raise ValueError(f"{what}: op must be one of {', '.join(pg.REDUCE_OPS)} (or ReduceOp.*), got {op!r}")
    return name


def all_reduce(tensor: Tensor, op: Any = ReduceOp.SUM) -> Tensor:
    """Reduce ``tensor`` element-wise over all ranks (sum, mean, max, min), in place; returns it."""
    t = _tensor(tensor, "all_reduce")
    pg.current()
    t._assign(P.bind("all_reduce", t, op=_op(op, "all_reduce")))
    return t


def all_reduced(tensor: Tensor, op: Any = ReduceOp.SUM) -> Tensor:
    """The reduction over all ranks as a new tensor (differentiable for sum and mean)."""
    pg.current()
    return P.bind("all_reduce", _tensor(tensor, "all_reduced"), op=_op(op, "all_reduced"))


def broadcast(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s value, in place; returns it."""
    t = _tensor(tensor, "broadcast")
    pg.current()._check_rank(src, "broadcast")
    t._assign(P.bind("broadcast", t, src=int(src)))
    return t


def all_gather(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` stacked along a new leading axis: shape ``[world_size, *tensor.shape]``."""
    t = _tensor(tensor, "all_gather")
    return P.bind("all_gather", t, world_size=pg.current().world_size)


def reduce_scatter(tensor: Tensor, op: Any = ReduceOp.SUM) -> Tensor:
    """Reduce ``tensor`` over ranks and keep this rank's block of the leading axis
    (``tensor.shape[0]`` must be a multiple of the world size)."""
    t = _tensor(tensor, "reduce_scatter")
    return P.bind("reduce_scatter", t, op=_op(op, "reduce_scatter"), world_size=pg.current().world_size)
