"""The tiled shared-memory matmul: its IR run by the thread emulator against NumPy, its PTX
assembled by ptxas."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from ptx_emulator import run_ir

from codegen import ptx, ptx_matmul
from codegen.ptx_matmul import Tiles

# the emulator runs one OS thread per GPU thread: small blocks, but still several micro-tile
# rows/columns per thread and several threads per slab row
SMALL = Tiles(tm=16, tn=16, bk=8, tx=8, ty=8)
SKEWED = Tiles(tm=8, tn=16, bk=4, tx=8, ty=4)   # TM != TN, one A element per thread and slab


def strides_of(a: np.ndarray) -> tuple[int, ...]:
    return tuple(s // a.itemsize for s in a.strides)


def run_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, t: Tiles) -> None:
    """``out[...] = a @ b`` by the emulated kernel; 2-d operands broadcast over the batch."""
    def batched(x: np.ndarray) -> tuple[int, int, int]:
        st = strides_of(x)
        return st if x.ndim == 3 else (0, *st)
    M, K = a.shape[-2:]
    N = b.shape[-1]
    grid, threads = ptx_matmul.launch_geometry(out.shape[0] if out.ndim == 3 else 1, M, N, t)
    dtype = a.dtype.name
    run_ir(ptx_matmul.lower_to_llvm(dtype, t), ptx_matmul.entry_name(dtype, t), grid, threads,
           [x.ctypes.data for x in (a, b, out)],
           [M, N, K, *batched(a), *batched(b), *batched(out)])


def operands(rng, shape_a, shape_b, dtype):
    return (rng.standard_normal(shape_a).astype(dtype), rng.standard_normal(shape_b).astype(dtype))


def check(a, b, out) -> None:
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    tol = 1e-12 if out.dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m,n,k", [(16, 16, 8), (24, 40, 20), (5, 3, 7), (1, 17, 1), (17, 1, 9)])
def test_matches_numpy_including_partial_tiles(dtype, m, n, k):
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    a, b = operands(rng, (m, k), (k, n), dtype)
    out = np.full((m, n), np.nan, dtype)
    run_matmul(a, b, out, SMALL)
    check(a, b, out)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_transposed_operands_and_output(dtype):
    rng = np.random.default_rng(1)
    at, bt = operands(rng, (19, 21), (13, 19), dtype)   # a = at.T is (21, 19), b = bt.T is (19, 13)
    a, b = at.T, bt.T
    out_t = np.full((13, 21), np.nan, dtype)
    run_matmul(a, b, out_t.T, SMALL)                     # C written through a transposed view
    check(a, b, out_t.T)


def test_strided_slices_and_skewed_tiles():
    rng = np.random.default_rng(2)
    big_a, big_b = operands(rng, (30, 50), (44, 40), "float32")
    a, b = big_a[1::2, ::3], big_b[::2, 5:32]            # (15, 17) @ (22, ...) needs k to match
    a = a[:, :11]
    b = b[:11]
    out = np.full((40, 60), np.nan, np.float32)
    view = out[3:3 + 15:1, 2:2 + 2 * 27:2]
    run_matmul(a, b, view, SKEWED)
    check(a, b, view)
    # the kernel wrote inside the view only
    mask = np.ones(out.shape, bool)
    mask[3:18, 2:56:2] = False
    assert np.isnan(out[mask]).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_via_grid_z_and_broadcast_batch(dtype):
    rng = np.random.default_rng(3)
    a, b = operands(rng, (2, 18, 10), (2, 10, 20), dtype)
    out = np.full((2, 18, 20), np.nan, dtype)
    run_matmul(a, b, out, SMALL)
    check(a, b, out)
    w = b[0]                                             # 2-d right operand: batch stride 0
    out2 = np.full((2, 18, 20), np.nan, dtype)
    run_matmul(a.transpose(0, 2, 1).copy().transpose(0, 2, 1), w, out2, SKEWED)
    check(a, w, out2)


def test_tiles_are_validated_and_geometry():
    with pytest.raises(ValueError, match="micro-tiles"):
        Tiles(tm=16, tn=16, bk=8, tx=3, ty=8)
    with pytest.raises(ValueError, match="same number"):
        Tiles(tm=16, tn=16, bk=3, tx=8, ty=8)
    assert ptx_matmul.launch_geometry(3, 65, 129) == ((3, 2, 3), 256)
    assert ptx_matmul.TILES.shared_bytes("float32") == (65 * 16 + 16 * 64) * 4
    with pytest.raises(ValueError, match="supports"):
        ptx_matmul.build("int32")


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")
@pytest.mark.parametrize("arch", ["sm_90", "sm_75"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_ptx_assembles_with_shared_slabs_and_fma(dtype, arch):
    pk = ptx_matmul.compile_matmul(dtype, arch)
    ptx.ptxas_check(pk.ptx, arch)
    assert "llvm." not in pk.ptx and ".extern" not in pk.ptx and f".target {arch}" in pk.ptx
    assert len(re.findall(r"\bbar\.sync\b", pk.ptx)) == 2
    acc = "f64" if dtype == "float64" else "f32"
    t = ptx_matmul.TILES
    # the unrolled slab: one fma per micro-tile element and k, all operands from shared memory
    assert pk.ptx.count(f"fma.rn.{acc}") == t.bk * (t.tm // t.ty) * (t.tn // t.tx)
    assert ".shared" in pk.ptx and "ld.shared" in pk.ptx and ".local" not in pk.ptx
    ptx.ptxas_check(ptx_matmul.compile_matmul(dtype, arch, SMALL).ptx, arch)
