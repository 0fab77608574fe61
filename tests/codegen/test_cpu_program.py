"""CpuProgram buffer binding: small slots outside the pool, outputs returned as allocated,
persistent temporaries, pooled large buffers; results never alias each other across calls."""
from __future__ import annotations

import numpy as np
from cpu_helpers import CACHE, C, L, op

from codegen import kir
from runtime.cpu import SMALL_SLOT, SMALL_WORK, CpuProgram, data_address, plan_ranges, point_cost
from runtime.program import Launch, Program, View


def _scale(factor: float) -> kir.Kernel:
    vec = kir.Operand("float32", ("c",))
    body = kir.Store(0, op("mul", "float32", L(0), C(factor, "float32")))
    return kir.Kernel(f"scale{factor}", 1, 0, (vec,), (vec,), (body,))


def _chain(n: int, outputs) -> Program:
    """slot 0 (input) -x2-> slot 1 (temporary) -x3-> slot 2."""
    return Program(
        n_inputs=1, slot_nbytes=[4 * n] * 3, slot_dtypes=["float32"] * 3, constants={},
        steps=[Launch(_scale(2.0), (n,), (View(0, 0, (1,)),), (View(1, 0, (1,)),)),
               Launch(_scale(3.0), (n,), (View(1, 0, (1,)),), (View(2, 0, (1,)),))],
        outputs=outputs)


def test_data_address_matches_numpy():
    a = np.arange(40.0, dtype=np.float32).reshape(5, 8)
    for v in (a, a[1:], a[:, 3], a.T, np.float32(2) * a):
        assert data_address(v) == v.__array_interface__["data"][0]


def test_small_outputs_are_fresh_arrays_and_temporaries_persist():
    n = 16
    prog = CpuProgram(_chain(n, [(View(2, 0, (1,)), (n,), "float32"),
                                 (View(2, 1, (2,)), (n // 2,), "float32")]), cache=CACHE)
    x = np.arange(n, dtype=np.float32)
    first, odd = prog(x)
    second, _ = prog(x + 1)
    np.testing.assert_array_equal(first, x * 6)          # not overwritten by the second call
    np.testing.assert_array_equal(odd, (x * 6)[1::2])
    np.testing.assert_array_equal(second, (x + 1) * 6)
    assert first.flags.writeable and first.shape == (n,) and first.dtype == np.float32
    assert not np.shares_memory(first, second)


def test_direct_output_is_returned_with_its_shape():
    n = 12
    prog = CpuProgram(_chain(n, [(View(2, 0, (4, 1)), (3, 4), "float32")]), cache=CACHE)
    x = np.linspace(-1, 1, n, dtype=np.float32)
    (out,) = prog(x)
    assert out.shape == (3, 4) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, (x * 6).reshape(3, 4))


def test_large_outputs_come_from_the_pool_and_stay_intact():
    n = SMALL_SLOT // 4 + 1000
    prog = CpuProgram(_chain(n, [(View(2, 0, (1,)), (n,), "float32")]), cache=CACHE)
    x = np.ones(n, np.float32)
    (a,) = prog(x)
    (b,) = prog(x * 2)
    np.testing.assert_array_equal(a, 6.0)
    np.testing.assert_array_equal(b, 12.0)


def test_input_passthrough_is_copied_and_non_contiguous_inputs_work():
    n = 10
    prog = CpuProgram(_chain(n, [(View(2, 0, (1,)), (n,), "float32"), (View(0, 0, (1,)), (n,), "float32")]),
                      cache=CACHE)
    x = np.arange(2 * n, dtype=np.float32)[::2]
    out, same = prog(x)
    np.testing.assert_array_equal(out, x * 6)
    np.testing.assert_array_equal(same, x)
    assert not np.shares_memory(same, x)


def test_thread_split_weighs_work_per_point():
    cheap, dear = _scale(2.0), kir.Kernel("tanh", 1, 0, _scale(2.0).inputs, _scale(2.0).outputs,
                                          (kir.Store(0, op("tanh", "float32", L(0))),))
    n = int(SMALL_WORK / point_cost(cheap)) - 1000
    assert point_cost(dear) > 4 * point_cost(cheap)
    assert len(plan_ranges((n,), 1, threads=2, cost=point_cost(cheap))) == 1
    assert len(plan_ranges((n,), 1, threads=2, cost=point_cost(dear))) == 2
    assert len(plan_ranges((16,), 1, threads=2, cost=point_cost(dear))) == 1
