"""The GPU gather and scatter-add: their IR run by the thread emulator against NumPy
(``np.take``, ``np.add.at``: repeated indices, other axes, an empty index), their PTX
assembled by ptxas."""
from __future__ import annotations

import numpy as np
import pytest
from ptx_emulator import run_ir

from codegen import ptx, ptx_scatter

CASES = [((50, 8), 0, (12,)), ((4, 7, 5), 1, (9,)), ((4, 7, 5), 2, (6,)), ((6,), 0, (10,)), ((5, 3), 0, (0,))]


def strides3(a: np.ndarray, axis: int) -> tuple[int, int, int]:
    """``a``'s element strides as (before, axis, after), for C-ordered ``a``."""
    st = [s // a.itemsize for s in a.strides]
    after = st[axis + 1] if axis + 1 < a.ndim else 1
    before = st[axis - 1] if axis else 0
    return before, st[axis], after


def sizes(shape, axis, m) -> tuple[int, int, int, int]:
    return (int(np.prod(shape[:axis])), shape[axis], m, int(np.prod(shape[axis + 1:])))


def run(kind: str, out: np.ndarray, other: np.ndarray, idx: np.ndarray, axis: int, base_shape) -> None:
    p, n, m, c = sizes(base_shape, axis, idx.size)
    dtype = out.dtype.name
    # two small blocks: the grid-stride loops cover the rest of the work
    run_ir(str(ptx_scatter.build(kind, dtype)), ptx_scatter.entry_name(kind, dtype), (2, 1, 1), 8,
           [out.ctypes.data, other.ctypes.data, idx.ctypes.data],
           [p, n, m, c, *strides3(out, axis), *strides3(other, axis), 1])


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("shape,axis,ishape", CASES)
def test_take_matches_numpy(dtype, shape, axis, ishape):
    rng = np.random.default_rng(len(shape) * 10 + axis)
    table = (rng.standard_normal(shape) * 10).astype(dtype)
    idx = rng.integers(0, shape[axis], ishape)
    out = np.full(shape[:axis] + ishape + shape[axis + 1:], -1, dtype)
    run("take", out, table, idx, axis, shape)
    np.testing.assert_array_equal(out, np.take(table, idx, axis=axis))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
@pytest.mark.parametrize("shape,axis,ishape", CASES)
def test_scatter_add_matches_add_at(dtype, shape, axis, ishape):
    rng = np.random.default_rng(len(shape) * 10 + axis + 1)
    base = (rng.standard_normal(shape) * 10).astype(dtype)
    idx = rng.integers(0, shape[axis], ishape)
    idx[: min(3, idx.size)] = 0                                         # repeated
    src = (rng.standard_normal(shape[:axis] + ishape + shape[axis + 1:]) * 10).astype(dtype)
    out = base.copy()                        # (the runtime copies the base in first)
    run("scatter_add", out, src, idx, axis, shape)
    want = base.copy()
    np.add.at(np.moveaxis(want, axis, 0), idx, np.moveaxis(src, axis, 0))
    np.testing.assert_array_equal(out, want)


def test_launch_geometry_is_a_thread_per_element_or_column():
    assert ptx_scatter.launch_geometry("take", (1, 32000, 1024, 128)) == (1024, 128)
    assert ptx_scatter.launch_geometry("scatter_add", (1, 32000, 1024, 128)) == (1, 128)
    assert ptx_scatter.launch_geometry("scatter_add", (1, 5, 0, 0)) == (1, 128)
    with pytest.raises(ValueError):
        ptx_scatter.build("scatter_add", "float16")


@pytest.mark.parametrize("kind", ptx_scatter.KINDS)
@pytest.mark.parametrize("dtype", ptx_scatter.DTYPES)
def test_ptx_assembles(kind, dtype):
    if not ptx.ptxas_available():
        pytest.skip("ptxas is not on PATH (install the CUDA toolkit)")
    pk = ptx_scatter.compile_kernel(kind, dtype, "sm_90")
    assert f".entry {ptx_scatter.entry_name(kind, dtype)}" in pk.ptx and "atom" not in pk.ptx
    ptx.ptxas_check(pk.ptx, "sm_90")
