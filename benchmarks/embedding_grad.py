"""E1: an embedding's forward and backward pass (the gather and its scatter_add gradient).

``python -m benchmarks.embedding_grad`` times one step — ``(emb(ids) * upstream).sum()``, its
backward pass into ``emb.weight.grad`` (reset to None first) — for tracejit eager, tracejit
``jit`` and torch eager, at a word-level vocabulary (32,000 x 128, 8 x 128 ids) and a
character-level one (65 x 64, 8 x 32 ids).  Before timing, every implementation's gradient is
checked against ``np.add.at``, and the jitted program against a tokens x vocabulary temporary.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

KEY = "E1"
CASES = {"word": (32000, 128, (8, 128)), "char": (65, 64, (8, 32))}


def problem(vocab: int, width: int, ids_shape: tuple[int, ...], seed: int = 0):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((vocab, width), dtype=np.float32)
    ids = rng.integers(0, vocab, ids_shape)
    upstream = rng.standard_normal(ids_shape + (width,), dtype=np.float32)
    want = np.zeros_like(table)
    np.add.at(want, ids.reshape(-1), upstream.reshape(-1, width))
    return table, ids, upstream, want


def tracejit_step(table, ids, upstream, jit: bool) -> tuple[Callable[[], None], Callable[[], np.ndarray]]:
    import tracejit as tj
    emb = tj.nn.Embedding(*table.shape)
    emb.weight = tj.nn.Parameter(tj.asarray(table))
    i, up = tj.asarray(ids), tj.asarray(upstream)

    def step(i):
        emb.weight.grad = None
        (emb(i) * up).sum().backward()
    run = tj.jit(step) if jit else step
    if jit:
        program = run.lower(i).entry.executable.program
        tokens = ids.size * table.shape[0] * 4
        assert max(program.slot_nbytes) < tokens, "a tokens x vocabulary temporary"
    return (lambda: run(i)), (lambda: emb.weight.grad.numpy())


def torch_step(table, ids, upstream) -> tuple[Callable[[], None], Callable[[], np.ndarray]]:
    import torch
    emb = torch.nn.Embedding(*table.shape)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(table))
    i, up = torch.from_numpy(ids), torch.from_numpy(upstream)

    def step():
        emb.weight.grad = None
        (emb(i) * up).sum().backward()
    return step, (lambda: emb.weight.grad.numpy())


def seconds_per_call(runs: dict[str, Callable[[], None]], repeats: int,
                     min_sample_s: float = 0.02) -> dict[str, float]:
    """Median per-call seconds of each run over ``repeats`` samples of at least ``min_sample_s``,
    the runs' samples interleaved (a shared machine's load then weighs on each alike)."""
    inner = {}
    for name, run in runs.items():
        for _ in range(3):
            run()
        t0 = time.perf_counter()
        run()
        inner[name] = max(1, int(min_sample_s / max(time.perf_counter() - t0, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    gc.disable()
    try:
        for _ in range(repeats):
            for name, run in runs.items():
                t0 = time.perf_counter()
                for _ in range(inner[name]):
                    run()
                samples[name].append((time.perf_counter() - t0) / inner[name])
    finally:
        gc.enable()
    return {name: statistics.median(s) for name, s in samples.items()}


def impls(table, ids, upstream) -> dict[str, tuple]:
    out = {"tracejit eager": tracejit_step(table, ids, upstream, jit=False),
           "tracejit jit": tracejit_step(table, ids, upstream, jit=True)}
    try:
        out["torch eager"] = torch_step(table, ids, upstream)
    except ImportError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--case", choices=sorted(CASES), action="append")
    ap.add_argument("--threads", type=int, help="threads for torch and tracejit (default: theirs)")
    args = ap.parse_args()
    if args.threads:
        os.environ["TRACEJIT_NUM_THREADS"] = str(args.threads)
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'case':<34} {'impl':<16} {'us/step':>9} {'vs torch':>9}")
    for name in args.case or list(CASES):
        vocab, width, ids_shape = CASES[name]
        table, ids, upstream, want = problem(vocab, width, ids_shape)
        label = f"{KEY} {name} {vocab}x{width}, ids {'x'.join(map(str, ids_shape))}"
        runs = {}
        for impl, (run, grad) in impls(table, ids, upstream).items():
            run()
            np.testing.assert_allclose(grad(), want, rtol=1e-5, atol=1e-5, err_msg=impl)
            runs[impl] = run
        times = seconds_per_call(runs, args.repeats)
        ref = times.get("torch eager")
        for impl, t in times.items():
            ratio = f"{t / ref:8.2f}x" if ref else "-"
            print(f"{label:<34} {impl:<16} {t * 1e6:9.1f} {ratio:>9}")


if __name__ == "__main__":
    main()
