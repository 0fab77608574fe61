"""What the sequence examples share: text from Python's own standard library, a character
vocabulary, random training windows, a progress bar and a table of step times."""
from __future__ import annotations

import importlib
import inspect
import statistics
import sys

import numpy as np

MODULES = ("textwrap", "string", "fractions", "shlex", "heapq", "bisect", "calendar", "colorsys")


def stdlib_text(modules: tuple[str, ...] = MODULES) -> str:
    """The source code of a few standard-library modules (present wherever Python is)."""
    return "\n".join(inspect.getsource(importlib.import_module(m)) for m in modules)


class CharVocab:
    """Characters <-> ids; characters not seen in the training text map to id 0."""

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index.get(c, 0) for c in text], dtype=np.int64)

    def decode(self, ids: np.ndarray) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def windows(data: np.ndarray, batch: int, length: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` random windows of ``length`` ids and the same windows shifted by one (targets)."""
    start = rng.integers(0, len(data) - length - 1, batch)
    idx = start[:, None] + np.arange(length)[None, :]
    return data[idx], data[idx + 1]


def progress(mode: str, i: int, n: int, loss: float, width: int = 30) -> None:
    done = int(width * i / n)
    sys.stdout.write(f"\r  {mode:6s} [{'#' * done}{'.' * (width - done)}] {i}/{n} loss {loss:.4f}")
    sys.stdout.flush()


def step_table(times: dict[str, list[float]]) -> str:
    """Per mode: the first step (tracing and compiling included for jit) and the median of the rest."""
    rows = [f"{'mode':8s} {'first step':>12s} {'median step':>12s} {'vs eager':>9s}"]
    eager = statistics.median(times["eager"][1:]) if len(times.get("eager", [])) > 1 else None
    for mode, ts in times.items():
        med = statistics.median(ts[1:]) if len(ts) > 1 else ts[0]
        ratio = f"{eager / med:8.2f}x" if eager else "        -"
        rows.append(f"{mode:8s} {ts[0] * 1e3:10.1f}ms {med * 1e3:10.2f}ms {ratio}")
    return "\n".join(rows)
