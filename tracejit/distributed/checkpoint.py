"""Checkpoints in a distributed run: one rank writes, every rank reads.

Ranks hold the same parameters and optimizer state (DistributedDataParallel keeps them equal),
so rank 0's copy is the checkpoint.  What differs per rank is the random generator's state
(each rank may draw its own dropout masks): :func:`gather_rng_state` collects every rank's,
and :func:`restore_rng_state` gives each rank its own back.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import random as tj_random
from ..serialization import load_state
from ..serialization import save as save_file
from . import process_group as pg


def save(obj: Any, path: str | os.PathLike, src: int = 0) -> None:
    """Rank ``src`` writes ``obj`` (``tj.save``'s format); returns on every rank once it is on disk."""
    group = pg.current()
    group._check_rank(src, "save")
    if group.rank == src:
        save_file(obj, path)
    group.barrier()


def load(path: str | os.PathLike) -> Any:
    """Every rank reads the checkpoint (``tj.load_state``); the file must be visible to all ranks."""
    pg.current().check_peers("load")
    return load_state(path)


def gather_rng_state(generator: tj_random.Generator | None = None) -> np.ndarray:
    """Every rank's generator state, one row per rank (``[world_size, 2]`` int64), on every rank."""
    gen = generator if generator is not None else tj_random.default_generator
    return pg.current().all_gather(gen.get_state()).wait()


def restore_rng_state(states: Any, generator: tj_random.Generator | None = None) -> None:
    """Set this rank's generator to its row of ``states`` (from :func:`gather_rng_state`)."""
    group = pg.current()
    rows = np.asarray(states.numpy() if hasattr(states, "numpy") else states, dtype=np.int64)
    if rows.ndim != 2 or rows.shape[0] != group.world_size:
        raise ValueError(f"restore_rng_state: the checkpoint holds generator states of shape {rows.shape}, "
                         f"one row per rank is needed for world size {group.world_size} (resume with "
                         "the world size that saved it)")
    (generator if generator is not None else tj_random.default_generator).set_state(rows[group.rank])
