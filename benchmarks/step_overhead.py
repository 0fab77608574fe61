"""What a cached compiled call costs around its kernels: a small training step.

Run ``python -m benchmarks.step_overhead [--reps N]``.  The step of benchmark T1 (forward,
backward, AdamW) on an MLP small enough that its kernels take little of the time (64-128-128-10,
batch 32), compiled and run with the native step runner, then with the same program's steps
walked from Python, and PyTorch eager where installed: each the best of 5 rounds (taken in
turns) of the median of N calls.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from . import training
from .harness import TJ_JIT, TORCH, Unavailable

DIMS = (64, 128, 128, 10)
BATCH = 32


def best_medians_us(variants: dict[str, Callable[[], object]], reps: int,
                    rounds: int = 5) -> dict[str, float]:
    """Per variant, the best over ``rounds`` of the median of ``reps`` calls; the variants take
    their rounds in turn, so a machine whose speed drifts weighs on all of them alike."""
    for step in variants.values():
        for _ in range(20):
            step()
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for name, step in variants.items():
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
            best[name] = min(best[name], statistics.median(times))
    return {name: t * 1e6 for name, t in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    args = ap.parse_args()
    params, x, y = training.make_problem(dims=DIMS, batch=BATCH)
    tr = training.make_trainer(TJ_JIT, params, x, y)
    tr.step()
    (entry,) = tr.fn.entries()
    program = entry.executable._run
    def steps_walked_from_python() -> object:
        program.native_steps = False
        try:
            return tr.step()
        finally:
            program.native_steps = runner

    runner = program.native_steps
    variants: dict[str, Callable[[], object]] = {
        "tracejit jit, native step runner" if runner else "tracejit jit (no step runner here)": tr.step}
    if runner:
        variants["tracejit jit, steps walked from Python"] = steps_walked_from_python
    try:
        variants[TORCH] = training.make_trainer(TORCH, params, x, y).step
    except Unavailable as e:
        print(f"  {TORCH}: {e}")
    rows = best_medians_us(variants, args.reps).items()
    print(f"train step MLP {'-'.join(map(str, DIMS))} batch {BATCH}: {len(program.steps)} steps, "
          f"best of 5 rounds of the median of {args.reps} calls")
    for name, us in rows:
        print(f"  {name:40s} {us:8.1f} us")


if __name__ == "__main__":
    main()
