"""Datasets and the DataLoader."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import tracejit as tj
from tracejit.data import DataLoader, Dataset, TensorDataset


def test_batches_in_order_with_last_partial() -> None:
    ds = TensorDataset(np.arange(10.0).reshape(10, 1), np.arange(10))
    batches = list(DataLoader(ds, batch_size=4))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][0].shape == (4, 1) and isinstance(batches[0][0], tj.Tensor)
    assert len(DataLoader(ds, batch_size=4)) == 3
    dl = DataLoader(ds, batch_size=4, drop_last=True)
    assert len(dl) == 2 and [len(b[1]) for b in dl] == [4, 4]


def test_shuffle_is_seeded_and_changes_per_epoch() -> None:
    ds = TensorDataset(np.arange(50))
    a = DataLoader(ds, batch_size=50, shuffle=True, seed=1)
    b = DataLoader(ds, batch_size=50, shuffle=True, seed=1)
    e1, e2 = next(iter(a))[0].tolist(), next(iter(a))[0].tolist()
    assert e1 == next(iter(b))[0].tolist() and e1 != e2 and sorted(e1) == list(range(50))
    g = np.random.default_rng(3)
    assert sorted(next(iter(DataLoader(ds, batch_size=50, shuffle=True, generator=g)))[0].tolist()) == \
        list(range(50))


class Squares(Dataset):
    def __init__(self) -> None:
        self.threads: set[str] = set()

    def __len__(self) -> int:
        return 9

    def __getitem__(self, i: int):
        self.threads.add(threading.current_thread().name)
        return {"x": np.full(2, i, np.float32), "y": i * i}


@pytest.mark.parametrize("workers,prefetch", [(0, 0), (0, 2), (3, 2)])
def test_map_dataset_collate_workers_prefetch(workers: int, prefetch: int) -> None:
    ds = Squares()
    out = list(DataLoader(ds, batch_size=4, num_workers=workers, prefetch=prefetch))
    assert [b["y"].tolist() for b in out] == [[0, 1, 4, 9], [16, 25, 36, 49], [64]]
    assert out[0]["x"].dtype == tj.float32 and out[0]["x"].shape == (4, 2)
    if prefetch or workers:
        assert threading.current_thread().name not in ds.threads


def test_custom_collate_and_errors_propagate() -> None:
    ds = Squares()
    out = list(DataLoader(ds, batch_size=5, collate_fn=lambda s: [d["y"] for d in s]))
    assert out == [[0, 1, 4, 9, 16], [25, 36, 49, 64]]

    class Broken(Squares):
        def __getitem__(self, i):
            if i == 6:
                raise KeyError("sample 6 missing")
            return super().__getitem__(i)
    with pytest.raises(KeyError, match="sample 6"):
        list(DataLoader(Broken(), batch_size=2))


def test_early_break_stops_the_prefetch_thread() -> None:
    ds = TensorDataset(np.arange(1000))
    before = threading.active_count()
    for _ in DataLoader(ds, batch_size=1, prefetch=2):
        break
    assert threading.active_count() <= before + 1
    with pytest.raises(ValueError, match="same first dim"):
        TensorDataset(np.zeros(3), np.zeros(4))
