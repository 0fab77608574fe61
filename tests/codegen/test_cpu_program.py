"""CpuProgram buffer binding: small slots outside the pool, outputs returned as allocated,
persistent temporaries, pooled large buffers; results never alias each other across calls."""
from __future__ import annotations

import numpy as np
import pytest
from cpu_helpers import CACHE, C, L, op

from codegen import cpu_handoff, kir
from runtime.cpu import (
    SMALL_SLOT,
    SMALL_WORK,
    CpuProgram,
    _ExternCall,
    _PreparedMatmul,
    data_address,
    plan_ranges,
    point_cost,
)
from runtime.program import Extern, Launch, Program, View


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


def test_point_cost_ignores_what_is_computed_once():
    """x * exp(s) with s a broadcast scalar: the exp is hoisted out of the loop, so the point
    costs what x * c costs; exp(x) * s costs the exp at every point."""
    vec, scalar = kir.Operand("float32", ("c",)), kir.Operand("float32", ("b",))

    def kernel(expr):
        return kir.Kernel("k", 1, 0, (vec, scalar), (vec,), (kir.Store(0, expr),))
    hoisted = kernel(op("mul", "float32", L(0), op("exp", "float32", L(1))))
    plain = kernel(op("mul", "float32", L(0), L(1)))
    per_point = kernel(op("mul", "float32", op("exp", "float32", L(0)), L(1)))
    assert point_cost(hoisted) == point_cost(plain) < point_cost(per_point) - 7


def _matmul_program(out_slot_inplace: bool, a_view: View, a_shape, dtype: str = "float32") -> Program:
    """slot 0: A's buffer, slot 1: B (k, n); out = A-view @ B in slot 2 (a temporary) or in
    slot 2 as an input updated in place."""
    m, k = a_shape
    n = 5
    size = np.dtype(dtype).itemsize
    step = Extern("matmul", (a_view, View(1, 0, (n, 1))), (View(2, 0, (n, 1)),),
                  ((m, k), (k, n), (m, n)), dtype)
    return Program(n_inputs=3 if out_slot_inplace else 2,
                   slot_nbytes=[size * 64 * 64, size * k * n, size * m * n],
                   slot_dtypes=[dtype] * 3, constants={}, steps=[step],
                   outputs=[(View(2, 0, (n, 1)), (m, n), dtype)],
                   inplace={0: 2} if out_slot_inplace else {})


def test_matmul_steps_run_prepared_on_views_and_in_place_outputs():
    rng = np.random.default_rng(5)
    buf = rng.standard_normal(64 * 64).astype(np.float32)
    b = rng.standard_normal((9, 5)).astype(np.float32)
    grid = buf.reshape(64, 64)
    # A: rows 3..11 of the grid, every 2nd column from 1, transposed: (7, 9), strides (2, 64)
    a_view, a = View(0, 3 * 64 + 1, (2, 64)), grid[3:12, 1:15:2].T
    for in_place in (False, True):
        prog = CpuProgram(_matmul_program(in_place, a_view, a.shape))
        assert isinstance(prog.steps[0], _PreparedMatmul)
        args = [buf, b] + ([np.full((7, 5), np.nan, np.float32)] if in_place else [])
        (out,) = prog(*args)
        np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
        if in_place:
            assert out is args[2]


def test_matmul_step_reaching_past_its_slot_is_not_prepared():
    """A view the GEMM would read beyond its buffer goes through NumPy views, whose constructor
    refuses it with an error instead of reading foreign memory."""
    prog = CpuProgram(_matmul_program(False, View(0, 64 * 64 - 3, (1, 1)), (7, 7)))
    assert isinstance(prog.steps[0], _ExternCall)
    with pytest.raises(ValueError):
        prog(np.zeros(64 * 64, np.float32), np.zeros((7, 5), np.float32))


def test_native_step_runner_matches_python_steps():
    """A launch split over the workers, a Python extern and a prepared GEMM: the step runner
    and the Python loop give the same results, call after call."""
    from runtime.cpu import register_extern
    register_extern("test_negate", lambda x: -x)
    m, k, cols = 512, 512, 7
    n = m * k                                           # large enough that the launch is split
    # slots: 0 x (n), 1 b (k, cols) | 2 = 2x, 3 = -2x, 4 = (-2x viewed (m, k)) @ b
    steps = [Launch(_scale(2.0), (n,), (View(0, 0, (1,)),), (View(2, 0, (1,)),)),
             Extern("test_negate", (View(2, 0, (1,)),), (View(3, 0, (1,)),), ((n,), (n,)), "float32"),
             Extern("matmul", (View(3, 0, (k, 1)), View(1, 0, (cols, 1))), (View(4, 0, (cols, 1)),),
                    ((m, k), (k, cols), (m, cols)), "float32")]
    prog = Program(n_inputs=2, slot_nbytes=[4 * n, 4 * k * cols, 4 * n, 4 * n, 4 * m * cols],
                   slot_dtypes=["float32"] * 5, constants={}, steps=steps,
                   outputs=[(View(4, 0, (cols, 1)), (m, cols), "float32")])
    rng = np.random.default_rng(2)
    x = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal((k, cols)).astype(np.float32)
    want = (-2 * x.reshape(m, k).astype(np.float64)) @ b
    fast, slow = CpuProgram(prog, native_steps=True), CpuProgram(prog, native_steps=False)
    assert isinstance(fast.steps[2], _PreparedMatmul)
    assert fast.native_steps == cpu_handoff.supported()
    assert not slow.native_steps
    for _ in range(3):
        for p in (fast, slow):
            (out,) = p(x, b)
            np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-3)


def test_an_extern_that_raises_leaves_the_program_usable():
    """An exception from a Python step inside a native run propagates, releases the workers,
    and the next call runs normally."""
    from runtime.cpu import register_extern
    fail = [True]

    def flaky(x):
        if fail[0]:
            raise RuntimeError("extern failed")
        return x + 1
    register_extern("test_flaky", flaky)
    n = 1 << 18
    steps = [Launch(_scale(2.0), (n,), (View(0, 0, (1,)),), (View(1, 0, (1,)),)),
             Extern("test_flaky", (View(1, 0, (1,)),), (View(2, 0, (1,)),), ((n,), (n,)), "float32"),
             Launch(_scale(3.0), (n,), (View(2, 0, (1,)),), (View(3, 0, (1,)),))]
    prog = CpuProgram(Program(n_inputs=1, slot_nbytes=[4 * n] * 4, slot_dtypes=["float32"] * 4, constants={},
                              steps=steps, outputs=[(View(3, 0, (1,)), (n,), "float32")]))
    x = np.arange(n, dtype=np.float32)
    with pytest.raises(RuntimeError, match="extern failed"):
        prog(x)
    fail[0] = False
    (out,) = prog(x)
    np.testing.assert_array_equal(out, (x * 2 + 1) * 3)
