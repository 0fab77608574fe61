"""D1: what one eager op costs: dispatch on small tensors, throughput on large ones.

Run ``python -m benchmarks --only D1`` or ``python -m benchmarks.eager_dispatch [--reps N]``.
Each op runs eagerly in NumPy, PyTorch (where installed) and tracejit on the same float32
values; small tensors (16 elements) show the per-op overhead (type promotion, broadcasting,
device and autograd bookkeeping), large ones (4M elements) whether the eager path keeps up
with NumPy.  Each figure is the best of 5 rounds (taken in turns) of the median of N calls.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

from .step_overhead import best_medians_us

KEY = "D1"
SIZES = (16, 1 << 22)


def _ops(n: int) -> dict[str, dict[str, Callable[[], object]]]:
    """Per op, one callable per implementation, all on the same values."""
    import tracejit as tj
    a = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    x = tj.asarray(a)
    xg = tj.asarray(a)
    xg.requires_grad = True
    ops: dict[str, dict[str, Callable[[], object]]] = {
        "x + x": {"numpy": lambda: a + a, "tracejit": lambda: x + x},
        "exp(x)": {"numpy": lambda: np.exp(a), "tracejit": lambda: tj.exp(x)},
        "x.sum()": {"numpy": lambda: a.sum(), "tracejit": lambda: x.sum()},
        "x * x (grad)": {"numpy": lambda: a * a, "tracejit": lambda: xg * xg},
    }
    try:
        import torch
    except ImportError:
        return ops
    t = torch.from_numpy(a.copy())
    tg = torch.from_numpy(a.copy()).requires_grad_()
    ops["x + x"]["torch"] = lambda: t + t
    ops["exp(x)"]["torch"] = lambda: torch.exp(t)
    ops["x.sum()"]["torch"] = lambda: t.sum()
    ops["x * x (grad)"]["torch"] = lambda: tg * tg
    return ops


def check(op: str, variants: dict[str, Callable[[], object]]) -> None:
    """Every implementation gives NumPy's values (a fast wrong op is not a result)."""
    want = np.asarray(variants["numpy"]())
    for impl, fn in variants.items():
        got = fn()
        got = got.detach().numpy() if hasattr(got, "detach") else np.asarray(got)
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-3):
            raise AssertionError(f"{KEY} {op}: {impl} differs from NumPy")


def run(reps: int = 2000, sizes: tuple[int, ...] = SIZES) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        for op, variants in _ops(n).items():
            check(op, variants)
            us = best_medians_us(variants, reps if n < 1 << 16 else max(10, reps // 200))
            rows.append({"op": op, "elements": n, "us": us})
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    impls = ["numpy", "torch", "tracejit"]
    head = (f"{KEY} eager op cost, float32, median us (best of 5 rounds)\n"
            f"{'op':<14} {'elements':>9} " + " ".join(f"{i:>10}" for i in impls)
            + f" {'tj/numpy':>9} {'tj/torch':>9}")
    lines = [head]
    for r in rows:
        us = r["us"]
        cells = " ".join(f"{us[i]:>10.2f}" if i in us else f"{'-':>10}" for i in impls)
        vs_np = us["tracejit"] / us["numpy"]
        vs_torch = f"{us['tracejit'] / us['torch']:>8.2f}x" if "torch" in us else f"{'-':>9}"
        lines.append(f"{r['op']:<14} {r['elements']:>9} {cells} {vs_np:>8.2f}x {vs_torch}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.eager_dispatch", description=__doc__)
    ap.add_argument("--reps", type=int, default=2000, help="calls per round on small tensors")
    print(render(run(ap.parse_args().reps)))


if __name__ == "__main__":
    main()
