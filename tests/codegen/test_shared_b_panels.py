"""Shared packed B panels: a program's products of one weight pack it once per run.

The kernel's ``B_PACK`` / ``B_PACKED`` modes against NumPy over shapes that cross the blocking
(several K blocks, partial panels, several NC blocks, rows or columns split), and programs whose
weight changes between two products of one call, and between calls: a cache that served the
panels of the weight as it was would give the old product.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
from cpu_helpers import CACHE, C, L, op

from codegen import cpu_gemm as kernel
from codegen import kir
from runtime import cpu_gemm as rt
from runtime.addresses import data_address, element_strides
from runtime.cpu import CpuProgram, _PreparedMatmul, _slot_sharers
from runtime.program import Extern, Launch, Program, View


def _call(a: np.ndarray, b: np.ndarray, out: np.ndarray, threads: int) -> rt.GemmCall:
    return rt.GemmCall(a.dtype.name, out.shape[0], out.shape[1], a.shape[1], element_strides(a),
                       element_strides(b), element_strides(out), threads)


def _panels(call: rt.GemmCall) -> tuple[np.ndarray, int]:
    buf = np.full(call.shared_b_bytes() + 64, 0xFF, np.uint8)       # NaN where nothing was packed
    return buf, (data_address(buf) + 63) // 64 * 64


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k,n,b_layout", [(256, 1024, "t"), (1024, 256, "c"), (300, 77, "c"),
                                          (520, 1100, "t"), (5, 40, "c"), (700, 33, "t")])
@pytest.mark.parametrize("threads", [1, 2])
def test_products_reading_shared_panels_match_numpy(dtype, k, n, b_layout, threads):
    """One call packs B into the shared panels, calls of other A (other heights, rows split
    across threads for the tall one) read them and pack nothing of B."""
    rng = np.random.default_rng(k * n)
    b = rng.standard_normal((k, n) if b_layout == "c" else (n, k)).astype(dtype)
    b = b if b_layout == "c" else b.T
    a0 = rng.standard_normal((64, k)).astype(dtype)
    out0 = np.empty((64, n), dtype)
    lead = _call(a0, b, out0, threads)
    if not lead.packs_all_of_b:         # (a narrow C splits its rows: one range packs then)
        lead = _call(a0, b, out0, 1)
    buf, address = _panels(lead)
    lead.share_b(kernel.B_PACK, address)
    lead.run(data_address(a0), data_address(b), data_address(out0))
    np.testing.assert_allclose(out0, a0 @ b, rtol=1e-4 if dtype == "float32" else 1e-10, atol=1e-3)
    for m in (1, 64, 500):
        a = rng.standard_normal((m, k)).astype(dtype)
        out = np.full((m, n), np.nan, dtype)
        follow = _call(a, b, out, threads)
        follow.share_b(kernel.B_PACKED, address)
        # B's own memory is not read: a follower given another B still multiplies the packed one
        follow.run(data_address(a), data_address(np.zeros_like(b)), data_address(out))
        np.testing.assert_allclose(out, a @ b, rtol=1e-4 if dtype == "float32" else 1e-10, atol=1e-3)


def test_a_call_splitting_rows_may_not_fill_shared_panels():
    a, b = np.zeros((1024, 256), np.float32), np.zeros((256, 64), np.float32)
    call = _call(a, b, np.zeros((1024, 64), np.float32), 2)
    assert call.shape[3] == 1 and len(call.ranges) == 2 and not call.packs_all_of_b
    with pytest.raises(ValueError, match="split C's columns"):
        call.share_b(kernel.B_PACK, 0)


def _times(factor: float) -> kir.Kernel:
    vec = kir.Operand("float32", ("c",))
    return kir.Kernel(f"times{factor}", 1, 0, (vec,), (vec,),
                      (kir.Store(0, op("mul", "float32", L(0), C(factor, "float32"))),))


M, K, N = 64, 256, 512


def _weight_program(update_between: bool) -> Program:
    """slot 0: W (K, N), updated in place; slots 1-4: four A (M, K); slots 5-8: ``A_i @ W``.
    With ``update_between``, W *= 3 after the second product (so the last two see 3 W), and
    W *= 2 at the end either way (an optimizer's update: the next call's W)."""
    w_view = View(0, 0, (N, 1))

    def product(i: int) -> Extern:
        return Extern("matmul", (View(1 + i, 0, (K, 1)), w_view), (View(5 + i, 0, (N, 1)),),
                      ((M, K), (K, N), (M, N)), "float32")

    def scale(factor: float) -> Launch:
        return Launch(_times(factor), (K * N,), (View(0, 0, (1,)),), (View(0, 0, (1,)),))
    steps = [product(0), product(1)] + ([scale(3.0)] if update_between else []) \
        + [product(2), product(3), scale(2.0)]
    return Program(n_inputs=5, slot_nbytes=[4 * K * N] + [4 * M * K] * 4 + [4 * M * N] * 4,
                   slot_dtypes=["float32"] * 9, constants={}, steps=steps,
                   outputs=[(View(5 + i, 0, (N, 1)), (M, N), "float32") for i in range(4)]
                   + [(View(0, 0, (N, 1)), (K, N), "float32")],
                   inplace={4: 0})


def _modes(prog: CpuProgram) -> list[int]:
    return [s.call.b_mode for s in prog.steps if isinstance(s, _PreparedMatmul)]


@pytest.mark.parametrize("native", [True, False])
def test_a_weight_written_between_products_is_packed_again(native):
    """W changes between the second and third product of one call, and between calls (the
    in-place update at the end): every product multiplies W as it is at that step."""
    prog = CpuProgram(_weight_program(update_between=True), cache=CACHE, native_steps=native)
    assert _modes(prog) == [kernel.B_PACK, kernel.B_PACKED] * 2
    rng = np.random.default_rng(1)
    w = rng.standard_normal((K, N)).astype(np.float32)
    for _ in range(3):
        xs = [rng.standard_normal((M, K)).astype(np.float32) for _ in range(4)]
        w_before = w.astype(np.float64)
        *outs, w_after = prog(w, *xs)
        assert w_after is w
        for i, (x, out) in enumerate(zip(xs, outs)):
            expect = x @ (w_before * (3 if i >= 2 else 1))
            np.testing.assert_allclose(out, expect, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(w, w_before * 6, rtol=1e-6)


def test_products_of_an_unchanged_weight_share_one_packing():
    prog = CpuProgram(_weight_program(update_between=False), cache=CACHE)
    assert _modes(prog) == [kernel.B_PACK] + [kernel.B_PACKED] * 3
    rng = np.random.default_rng(2)
    w = rng.standard_normal((K, N)).astype(np.float32)
    for _ in range(2):
        xs = [rng.standard_normal((M, K)).astype(np.float32) for _ in range(4)]
        w_before = w.astype(np.float64)
        *outs, _ = prog(w, *xs)
        for x, out in zip(xs, outs):
            np.testing.assert_allclose(out, x @ w_before, rtol=1e-4, atol=1e-3)


def test_one_program_called_from_several_threads():
    """Calls from several threads (one at a time, each packing its own W) never see another's."""
    prog = CpuProgram(_weight_program(update_between=True), cache=CACHE)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(10):
                w = rng.standard_normal((K, N)).astype(np.float32)
                xs = [rng.standard_normal((M, K)).astype(np.float32) for _ in range(4)]
                w_before = w.astype(np.float64)
                *outs, _ = prog(w, *xs)
                for i, (x, out) in enumerate(zip(xs, outs)):
                    np.testing.assert_allclose(out, x @ (w_before * (3 if i >= 2 else 1)),
                                               rtol=1e-4, atol=1e-3)
        except BaseException as e:      # (re-raised on the test's thread)
            errors.append(e)
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_slots_of_one_pooled_buffer_share_memory():
    p = _weight_program(update_between=False)
    p.aliases = {7: 5, 8: 5}
    sharers = _slot_sharers(p)
    assert sharers[5] == sharers[7] == sharers[8] == {5, 7, 8}
    assert sharers[0] == {0} and sharers[6] == {6}
