"""Datasets and a batching loader with PyTorch's names: Dataset, TensorDataset, DataLoader.

The loader builds batches on a background thread (``prefetch`` batches ahead) so the next
batch is ready while the current step runs; ``num_workers > 0`` fetches the samples of a
batch on a thread pool (threads, not processes: loading is I/O or NumPy work that releases
the GIL).  Datasets that can index many samples at once (``TensorDataset``) are fetched with
one fancy-indexing call per batch instead of one call per sample.
"""
from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .api import asarray
from .tensors import Tensor


class Dataset:
    """Map-style dataset: ``__getitem__(i)`` and ``__len__``."""

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class TensorDataset(Dataset):
    """Samples are the i-th rows of the given tensors (or arrays), all with the same first dim.

    Samples and batches are host tensors whatever the default device, as in PyTorch (loader
    threads never touch a GPU); move a batch with ``.to(device)``."""

    def __init__(self, *tensors: Any) -> None:
        arrays = [t.numpy() if isinstance(t, Tensor) else np.asarray(t) for t in tensors]
        if not arrays:
            raise ValueError("TensorDataset needs at least one tensor")
        n = arrays[0].shape[0] if arrays[0].ndim else None
        if any(a.ndim == 0 or a.shape[0] != n for a in arrays):
            raise ValueError(f"TensorDataset: tensors need the same first dim, got shapes "
                             f"{[a.shape for a in arrays]}")
        self.arrays = arrays

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(asarray(a[index], device="cpu") for a in self.arrays)

    def get_batch(self, indices: np.ndarray) -> tuple[Tensor, ...]:
        """All samples of a batch at once (already collated)."""
        return tuple(asarray(a[indices], device="cpu") for a in self.arrays)

    def __len__(self) -> int:
        return self.arrays[0].shape[0]


def default_collate(samples: Sequence[Any]) -> Any:
    """Stack samples into batch tensors, recursing into tuples, lists and dicts."""
    first = samples[0]
    if isinstance(first, (Tensor, np.ndarray, np.generic)):
        return asarray(np.stack([s.numpy() if isinstance(s, Tensor) else np.asarray(s) for s in samples]),
                       device="cpu")
    if isinstance(first, (bool, int, float)):
        return asarray(list(samples), device="cpu")
    if isinstance(first, dict):
        return {k: default_collate([s[k] for s in samples]) for k in first}
    if isinstance(first, (tuple, list)):
        if any(len(s) != len(first) for s in samples):
            raise ValueError("default_collate: samples have different lengths")
        return type(first)(default_collate(list(col)) for col in zip(*samples)) if isinstance(first, tuple) \
            else [default_collate(list(col)) for col in zip(*samples)]
    return list(samples)


class DataLoader:
    """Iterate over ``dataset`` in batches.

    ``shuffle`` draws a new order each epoch from ``seed`` (or ``generator``, a
    ``numpy.random.Generator``), so runs are reproducible; a ``sampler`` (such as
    :class:`DistributedSampler`) gives the order instead.  ``drop_last`` skips a final
    short batch.  ``collate_fn`` turns a list of samples into a batch (default: stack).
    """

    def __init__(self, dataset: Any, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 collate_fn: Callable[[list[Any]], Any] | None = None, num_workers: int = 0,
                 prefetch: int = 2, seed: int | None = None,
                 generator: np.random.Generator | None = None, sampler: Iterable[int] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler and shuffle=True exclude each other (the sampler orders)")
        self.sampler = sampler
        self.dataset = dataset
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.collate_fn = collate_fn
        self.num_workers, self.prefetch = num_workers, max(0, prefetch)
        self.generator = generator if generator is not None else np.random.default_rng(seed)

    def __len__(self) -> int:
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _batches(self) -> list[np.ndarray]:
        if self.sampler is not None:
            order = np.fromiter(iter(self.sampler), dtype=np.int64)
        else:
            n = len(self.dataset)
            order = self.generator.permutation(n) if self.shuffle else np.arange(n)
        n = len(order)
        stops = range(0, n - self.batch_size + 1 if self.drop_last else n, self.batch_size)
        return [order[i:i + self.batch_size] for i in stops]

    def _fetch(self, idx: np.ndarray, pool: ThreadPoolExecutor | None) -> Any:
        if self.collate_fn is None and hasattr(self.dataset, "get_batch"):
            return self.dataset.get_batch(idx)
        getter = self.dataset.__getitem__
        samples = list(pool.map(getter, idx.tolist())) if pool else [getter(i) for i in idx.tolist()]
        return (self.collate_fn or default_collate)(samples)

    def __iter__(self) -> Iterator[Any]:
        batches = self._batches()      # drawn now: the epoch's order does not depend on timing
        pool = ThreadPoolExecutor(self.num_workers) if self.num_workers > 0 else None
        try:
            if self.prefetch == 0:
                for idx in batches:
                    yield self._fetch(idx, pool)
            else:
                yield from self._prefetched(batches, pool)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _prefetched(self, batches: list[np.ndarray], pool: ThreadPoolExecutor | None) -> Iterator[Any]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for idx in batches:
                    if stop.is_set():
                        return
                    q.put((True, self._fetch(idx, pool)))
                q.put((True, done))
            except BaseException as e:   # handed to the consumer, raised there
                q.put((False, e))

        thread = threading.Thread(target=produce, name="tracejit-dataloader", daemon=True)
        thread.start()
        try:
            while True:
                ok, item = q.get()
                if not ok:
                    raise item
                if item is done:
                    return
                yield item
        finally:
            stop.set()
            while thread.is_alive():   # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.01)


__all__ = ["Dataset", "TensorDataset", "DataLoader", "default_collate", "DistributedSampler"]


class DistributedSampler:
    """The indices of this rank's shard of ``dataset``: every rank gets as many, none shared.

    With ``shuffle`` the order is a permutation drawn from ``seed + epoch`` (the same on every
    rank, so the shards stay disjoint); call ``set_epoch(e)`` at the start of each epoch for a
    new one.  The ``len(dataset)`` indices are padded by repeating the first ones up to a
    multiple of the number of ranks, or with ``drop_last`` cut down to one.
    """

    def __init__(self, dataset: Any, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if num_replicas is None or rank is None:
            from .distributed import process_group
            group = process_group.current()
            num_replicas = group.world_size if num_replicas is None else num_replicas
            rank = group.rank if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank {rank} is not in [0, {num_replicas})")
        self.dataset, self.num_replicas, self.rank = dataset, int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch = 0
        n = len(dataset)
        self.num_samples = n // self.num_replicas if drop_last else math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        order = np.random.default_rng(self.seed + self.epoch).permutation(n) if self.shuffle else np.arange(n)
        if self.total_size > n:
            order = np.resize(order, self.total_size)       # repeats from the start
        order = order[:self.total_size]
        return iter(order[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (the same on every rank)."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])
