"""CPU GEMM micro benchmark: the generated GEMM (:mod:`runtime.cpu_gemm`) against NumPy's BLAS
and PyTorch (where installed) on the training benchmark's matmul shapes.

Run ``python -m benchmarks.gemm_micro [--reps N] [--rounds R] [--threads T] [--dtype DTYPE]``
(float32, float64 or bfloat16).
``bfloat16``: bfloat16 operands, float32 results (the AVX-512 BF16 kernel where the CPU has it);
NumPy, which has no bfloat16 GEMM, runs float32 on the widened operands, torch its bfloat16 ``mm``.
Each implementation writes into a preallocated output; the table shows milliseconds and GF/s,
the best over R rounds of the median of N calls.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import ml_dtypes
import numpy as np

from runtime.cpu import num_threads
from runtime.cpu_gemm import gemm

B = 256
# name, A's shape, B's shape, A transposed, B transposed (a view of a contiguous array)
SHAPES = [
    ("x@W1", (B, 784), (784, 512), False, False),
    ("h@W2", (B, 512), (512, 512), False, False),
    ("h@W3", (B, 512), (512, 10), False, False),
    ("dW1=x.T@g", (784, B), (B, 512), True, False),
    ("dW2=h.T@g", (512, B), (B, 512), True, False),
    ("dh=g@W2.T", (B, 512), (512, 512), False, True),
    ("dh2=g@W3.T", (B, 10), (10, 512), False, True),
]


def median_seconds(fn: Callable[..., object], args: tuple, reps: int) -> float:
    for _ in range(5):
        fn(*args)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def operands(shape_a, shape_b, ta: bool, tb: bool, dtype, rng) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal(shape_a[::-1] if ta else shape_a).astype(dtype)
    b = rng.standard_normal(shape_b[::-1] if tb else shape_b).astype(dtype)
    return (a.T if ta else a), (b.T if tb else b)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"))
    args = ap.parse_args(argv)
    threads = args.threads or num_threads()
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    cases = []
    low = args.dtype == "bfloat16"
    dtype = ml_dtypes.bfloat16 if low else args.dtype
    for name, sa, sb, ta, tb in SHAPES:
        a, b = operands(sa, sb, ta, tb, dtype, rng)
        out = np.empty((a.shape[0], b.shape[1]), np.float32 if low else args.dtype)
        gemm(a, b, out, threads)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        if not np.allclose(out, ref, rtol=1e-3, atol=1e-3 * np.sqrt(a.shape[1])):
            raise AssertionError(f"{name}: generated GEMM disagrees with NumPy")
        cases.append((name, a, b, out))
    impls: dict[str, Callable] = {"tracejit": lambda a, b, out: gemm(a, b, out, threads),
                                  "numpy": lambda a, b, out: np.matmul(a, b, out=out)}
    if torch is not None:
        impls["torch"] = lambda a, b, out: torch.mm(torch.from_numpy(a), torch.from_numpy(b),
                                                    out=torch.from_numpy(out))
    if low:
        cases = [(name, a, b, out, _widened(a), _widened(b)) for name, a, b, out in cases]
        impls["numpy"] = lambda a, b, out, a32, b32: np.matmul(a32, b32, out=out)
        impls["tracejit"] = lambda a, b, out, a32, b32: gemm(a, b, out, threads)
        if torch is not None:
            impls["torch"] = _torch_bf16_mm(torch)
    else:
        cases = [(name, a, b, out) for name, a, b, out in cases]
    # One implementation at a time, after a pause: OpenBLAS's and OpenMP's workers spin for a
    # while after each call and would steal the cores from the next implementation.  Several
    # rounds, keeping each case's best median, so a burst of other work on the machine does not
    # decide the table.
    seconds: dict[str, list[float]] = {impl: [float("inf")] * len(cases) for impl in impls}
    # torch's bfloat16 operands are made once, outside the timing
    args_of = [{impl: (c[1:] if not (low and impl == "torch") else _torch_args(torch, c)) for impl in impls}
               for c in cases]
    for _ in range(args.rounds):
        for impl, fn in impls.items():
            time.sleep(0.3)
            for i in range(len(cases)):
                seconds[impl][i] = min(seconds[impl][i], median_seconds(fn, args_of[i][impl], args.reps))
    print(f"{args.dtype}, {threads} threads, best of {args.rounds} rounds of the median of {args.reps} "
          "calls: ms and GF/s")
    print(f"{'shape':12s} {'(M,K)x(K,N)':>20s}" + "".join(f" {impl:>17s}" for impl in impls))
    for i, (name, a, b, *_) in enumerate(cases):
        flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
        dims = f"({a.shape[0]},{a.shape[1]})x({b.shape[0]},{b.shape[1]})"
        cells = "".join(f" {seconds[impl][i] * 1e3:7.3f} ms {flops / seconds[impl][i] / 1e9:4.0f} GF"
                        for impl in impls)
        print(f"{name:12s} {dims:>20s}{cells}")

def _widened(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32)


def _torch_args(torch, case) -> tuple:
    """bfloat16 tensors of a case's operands (torch.from_numpy takes no ml_dtypes arrays)."""
    _, a, b, out, *_ = case
    def t(x):
        return torch.from_numpy(np.ascontiguousarray(x).view(np.int16)).view(torch.bfloat16).reshape(x.shape)
    ta = t(a.T).T if not a.flags.c_contiguous else t(a)
    tb = t(b.T).T if not b.flags.c_contiguous else t(b)
    return ta, tb, torch.empty(out.shape, dtype=torch.bfloat16)


def _torch_bf16_mm(torch) -> Callable:
    return lambda a, b, out: torch.mm(a, b, out=out)


if __name__ == "__main__":
    main()
