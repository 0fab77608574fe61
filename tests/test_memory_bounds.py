"""Memory stays bounded: functions that differ in a number, and a function called at many shapes."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import tracejit as tj

compiler = pytest.importorskip("tracejit.compiler", reason="needs the llvm backend")


def _resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc")
def test_a_thousand_functions_differing_in_a_constant_stay_small(rng):
    # once: ~1,300 kernels and +100 MB, since machine code is never unloaded; now one kernel
    x = tj.asarray(rng.standard_normal(64).astype(np.float32))
    tj.jit(lambda a: a * 0.3 - 2.5)(x)
    gc.collect()
    before_kernels = compiler.kernel_cache_stats()["kernels_compiled"]
    before = _resident_mib()
    for k in range(1000):
        f = tj.jit(lambda a, c=1.1 + k / 3: a * c - 2.5)     # (never 0, 1 or 2: those fold)
        f(x)
        del f
    gc.collect()
    compiled = compiler.kernel_cache_stats()["kernels_compiled"] - before_kernels
    grown = _resident_mib() - before
    assert compiled == 0 and grown < 25, f"{compiled} kernels compiled, {grown:.1f} MiB more resident"


def test_the_trace_cache_of_a_function_called_at_many_shapes_is_bounded(rng):
    f = tj.jit(lambda a: a * 2 + 1, max_traces=8)
    with pytest.warns(UserWarning, match="more than 8 traces"):
        for n in range(1, 60):
            f(tj.ones((n,)))
    assert f.cache_info()["entries"] == 8
    np.testing.assert_array_equal(f(tj.ones((5,))).numpy(), np.full(5, 3.0))
