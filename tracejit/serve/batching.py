"""Dynamic batching: requests that arrive within a few milliseconds share one call.

Each request holds one or more rows along the batch dimension (axis 0 of every argument and
result).  The worker thread takes the first waiting request, then any that arrive within
``max_delay`` until ``max_batch`` rows are reached, concatenates them, makes one call and hands
each request its own rows of the results.  This is only valid for functions whose rows are
independent (no reduction across the batch); :func:`rows_are_independent` probes that.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

Run = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class Pending:
    """One request's arguments, and its results (or error) once the batch ran."""

    arrays: list[np.ndarray]
    rows: int
    done: threading.Event = field(default_factory=threading.Event)
    results: list[np.ndarray] | None = None
    error: BaseException | None = None

    def wait(self, timeout: float | None = None) -> list[np.ndarray]:
        if not self.done.wait(timeout):
            raise TimeoutError("the model did not answer in time")
        if self.error is not None:
            raise self.error
        assert self.results is not None
        return self.results


class Batcher:
    """Runs ``run`` on batches of pending requests in one worker thread.

    ``batched``: whether requests may share a call (False: each runs alone, in arrival order).
    ``stats``: calls made and rows run, and the largest batch seen."""

    def __init__(self, run: Run, batched: bool = True, max_batch: int = 64, max_delay: float = 0.002) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run, self.batched = run, batched
        self.max_batch, self.max_delay = max_batch, max_delay
        self.stats = {"calls": 0, "rows": 0, "largest_batch": 0}
        self._queue: queue.Queue[Pending | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._carry: Pending | None = None

    def start(self) -> Batcher:
        self._thread = threading.Thread(target=self._loop, name="tracejit-batcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()

    def submit(self, arrays: Sequence[np.ndarray]) -> Pending:
        rows = int(arrays[0].shape[0]) if self.batched else 1
        p = Pending(list(arrays), rows)
        self._queue.put(p)
        return p

    def _next_batch(self) -> list[Pending] | None:
        first = self._carry if self._carry is not None else self._queue.get()
        self._carry = None
        if first is None:
            return None
        batch, rows = [first], first.rows
        if not self.batched:
            return batch
        deadline = time.monotonic() + self.max_delay
        while rows < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if nxt is None:
                self._queue.put(None)
                break
            if rows + nxt.rows > self.max_batch:
                self._carry = nxt  # starts the next batch
                break
            batch.append(nxt)
            rows += nxt.rows
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run_batch(batch)

    def _run_batch(self, batch: list[Pending]) -> None:
        try:
            if len(batch) == 1:
                arrays = batch[0].arrays
            else:
                arrays = [np.concatenate(parts) for parts in zip(*(p.arrays for p in batch))]
            results = self.run(arrays)
            self.stats["calls"] += 1
            self.stats["rows"] += sum(p.rows for p in batch)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], sum(p.rows for p in batch))
            start = 0
            for p in batch:
                p.results = results if len(batch) == 1 else [r[start : start + p.rows] for r in results]
                start += p.rows
        except BaseException as e:  # (each waiting request gets the error; the worker goes on)
            for p in batch:
                p.error = e
        for p in batch:
            p.done.set()


def rows_are_independent(
    run: Run, examples: list[np.ndarray], rtol: float = 1e-5, atol: float = 1e-6
) -> bool:
    """Whether each row of a batch gets the results it gets alone (probed on ``examples``, a few
    rows per argument): a function that reduces across the batch (``x - x.mean(0)``) does not."""
    together = run(examples)
    for i in range(examples[0].shape[0]):
        alone = run([a[i : i + 1] for a in examples])
        for t, a in zip(together, alone):
            if not np.allclose(t[i : i + 1], a, rtol=rtol, atol=atol, equal_nan=True):
                return False
    return True
