"""H1: what the profiler's hooks cost when no profile records, on W7.

Run ``python -m benchmarks.hook_overhead [--reps N] [--rounds R]``.  W7 (``x * 2 + 1`` on 16
floats) is timed jitted (a cached call) and eagerly, in one process, with the code as it is and
with the same functions recompiled from their source minus the checks (``profiler`` in
``runtime.cpu.CpuProgram.__call__``, ``eager_hook`` in ``prims.bind``), and (a control for
what recompiling alone changes) recompiled with them.  The debugging switches
(``tj.disable_jit``, ``TRACEJIT_DEBUG_NANS``) swap methods when turned on, so they have no
check to remove.  The two variants take their rounds in turn, each going first every other
round, so the machine's drift weighs on both alike; each figure is the median over rounds of
the median of N calls, with the best round after it.  NumPy, torch eager and jax.jit run the
same function in the same rounds; last, for scale, the jitted call while a profile records.
"""
from __future__ import annotations

import argparse
import inspect
import statistics
import textwrap
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _recompiled(func: Callable, removals: list[tuple[str, str]]) -> Callable:
    """``func`` compiled again from its source with each ``old`` replaced by ``new``."""
    src = inspect.getsource(func)
    for old, new in removals:
        if old not in src:
            raise RuntimeError(f"{func.__qualname__}: the check {old.strip()!r} is not in its source")
        src = src.replace(old, new)
    src = textwrap.dedent(src)
    ns: dict[str, Any] = {}
    exec(compile(src, f"<{func.__qualname__} without checks>", "exec"), func.__globals__, ns)
    return ns[func.__name__]


def _variants() -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    """(install the code as shipped, the same recompiled with its checks (a control: what
    recompiling alone changes), and recompiled without the checks)."""
    from runtime import cpu
    from tracejit import prims
    shipped = (cpu.CpuProgram.__call__, prims.bind)
    bare = (
        _recompiled(cpu.CpuProgram.__call__, [(
            "            if profiler is not None:\n"
            "                profiler.run_steps(self, bufs, addresses)\n"
            "            elif self.native_steps:", "            if self.native_steps:")]),
        _recompiled(prims.bind, [(
            " if eager_hook is None \\\n                else eager_hook(prim, inputs, params)", "")]),
    )

    control = tuple(_recompiled(f, []) for f in shipped)

    def install(fns: tuple) -> Callable[[], None]:
        def go() -> None:
            cpu.CpuProgram.__call__, prims.bind = fns
        return go
    return install(shipped), install(control), install(bare)


def _median_us(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000, help="calls per round (eager: a tenth)")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    import tracejit as tj
    a = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    x = tj.asarray(a)
    f = tj.jit(lambda x: x * 2 + 1)
    shipped, control, bare = _variants()
    cases: dict[str, tuple[Callable[[], object], int]] = {
        "tracejit jit": (lambda: f(x), args.reps), "tracejit eager": (lambda: x * 2 + 1, args.reps // 10),
        "numpy": (lambda: a * 2 + 1, args.reps)}
    try:
        import torch
        t = torch.from_numpy(a.copy())
        cases["torch eager"] = (lambda: t * 2 + 1, args.reps)
    except ImportError:
        pass
    try:
        import jax
        import jax.numpy as jnp
        jf, ja = jax.jit(lambda v: v * 2 + 1), jnp.asarray(a)
        cases["jax.jit"] = (lambda: jf(ja).block_until_ready(), args.reps)
    except ImportError:
        pass
    for fn, _ in cases.values():
        for _ in range(50):
            fn()
    results: dict[str, list[float]] = {}
    order = [("with checks", shipped), ("recompiled, with checks", control), ("without", bare)]
    for r in range(args.rounds):
        for variant, install in order[r % 3:] + order[:r % 3]:     # each goes first in turn
            install()
            for name in ("tracejit jit", "tracejit eager"):
                fn, reps = cases[name]
                results.setdefault(f"{name} ({variant})", []).append(_median_us(fn, reps))
        for name in ("numpy", "torch eager", "jax.jit"):
            if name in cases:
                fn, reps = cases[name]
                results.setdefault(name, []).append(_median_us(fn, reps))
    shipped()
    profiled = []                 # for scale: the same jitted call while a profile records
    for _ in range(max(1, args.rounds // 5)):
        with tj.profiler.profile():
            profiled.append(_median_us(cases["tracejit jit"][0], args.reps // 10))
    results["tracejit jit (while profiling)"] = profiled
    print(f"H1 W7 x*2+1 on 16 float32: median over {args.rounds} rounds of the median of {args.reps} calls "
          "(eager: a tenth), best round in brackets")
    for name, ts in results.items():
        print(f"  {name:40s} {statistics.median(ts):8.2f} us  [{min(ts):8.2f} us]")
    for name in ("tracejit jit", "tracejit eager"):
        w = statistics.median(results[f"{name} (with checks)"])
        c = statistics.median(results[f"{name} (recompiled, with checks)"])
        wo = statistics.median(results[f"{name} (without)"])
        print(f"  {name}: with / without checks = {w / wo:.3f}, recompiled with / without = {c / wo:.3f}")


if __name__ == "__main__":
    main()
