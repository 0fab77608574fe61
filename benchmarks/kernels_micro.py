"""Micro benchmarks of the CPU kernels through ``tj.jit``: milliseconds per workload.

Run ``python -m benchmarks.kernels_micro [NAME ...] [--kernels] [--reps N]``.  Workloads are written
inline with primitive ops so they do not depend on ``tj.nn``.  ``--kernels`` prints each compiled
program's kernels.  This drives code generator work; the full comparison with peers lives in
``benchmarks/__main__.py``.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np

import tracejit as tj

_S2PI = math.sqrt(2.0 / math.pi)


def w1(x, b):
    return (tj.tanh(x * 1.5 + b) * 0.5 + 0.5) * tj.exp(-x * x) + tj.sin(x)


def w2(x):
    return 0.5 * x * (1.0 + tj.tanh(_S2PI * (x + 0.044715 * x * x * x)))


def w3(x):
    e = tj.exp(x - tj.max(x, axis=-1, keepdims=True))
    return e / tj.sum(e, axis=-1, keepdims=True)


def w4(x, w, b):
    mu = tj.mean(x, axis=-1, keepdims=True)
    d = x - mu
    var = tj.mean(d * d, axis=-1, keepdims=True)
    return d / tj.sqrt(var + 1e-5) * w + b


def w5a(x):
    return tj.sum(x)


def w5b(x):
    return tj.mean(x, axis=0)


def w7(x):
    return x * 2.0 + 1.0


def _inputs(rng: np.random.Generator) -> dict[str, tuple[Callable, tuple[np.ndarray, ...]]]:
    def randn(*s: int) -> np.ndarray:
        return rng.standard_normal(s, dtype=np.float32)

    n = 1 << 24
    return {
        "W1": (w1, (randn(n), randn(n))),
        "W2": (w2, (randn(4096, 4096),)),
        "W3": (w3, (randn(8192, 1024) * 2,)),
        "W4": (w4, (randn(8192, 1024), randn(1024), randn(1024))),
        "W5a": (w5a, (rng.random(n, dtype=np.float32),)),
        "W5b": (w5b, (randn(4096, 4096),)),
        "W7": (w7, (randn(16),)),
    }


def timings_ms(fn: Callable, args: tuple, reps: int) -> tuple[float, float, float]:
    """(median wall, min wall, process CPU time per call) in ms.  The VM is shared and noisy:
    CPU time (all threads) is the steadiest measure of a kernel's own cost."""
    fn(*args)
    times = []
    cpu0 = time.process_time()
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / reps
    return statistics.median(times) * 1e3, min(times) * 1e3, cpu * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="*", help="workloads to run (default: all)")
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--kernels", action="store_true", help="print each program's kernels")
    args = ap.parse_args()
    from codegen.kir import format_kernel

    for name, (fn, arrays) in _inputs(np.random.default_rng(0)).items():
        if args.names and name not in args.names:
            continue
        f = tj.jit(fn)
        xs = tuple(tj.asarray(a) for a in arrays)
        reps = args.reps * 50 if name == "W7" else args.reps
        med, low, cpu = timings_ms(f, xs, reps)
        if name == "W7":
            line = f"{name:4s} median {med * 1e3:7.1f} us  min {low * 1e3:7.1f} us"
        else:
            line = f"{name:4s} median {med:7.2f} ms  min {low:7.2f} ms  cpu {cpu:7.2f} ms"
        prog = f.lower(*xs).entry.executable
        if name == "W7":
            med, low, _ = timings_ms(prog._run, arrays, reps)
            line += f"   (CpuProgram alone: median {med * 1e3:.1f} us, min {low * 1e3:.1f} us)"
        print(line, flush=True)
        if args.kernels:
            for k in prog.kernels:
                print(format_kernel(k))


if __name__ == "__main__":
    main()
