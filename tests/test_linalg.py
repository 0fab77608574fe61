"""matmul, tensordot and vecdot vs NumPy, eager and jit."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj

MATMUL_SHAPES = [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4, 5)),
                 ((2, 1, 3, 4), (5, 4, 2)), ((0, 4), (4, 3)), ((3, 0), (0, 2))]


@pytest.mark.parametrize("s1,s2", MATMUL_SHAPES, ids=str)
def test_matmul(s1, s2, rng, jit_backend):
    a = rng.standard_normal(s1).astype(np.float32)
    b = rng.standard_normal(s2).astype(np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    assert_close(tj.asarray(a) @ tj.asarray(b), expected, rtol=1e-5, atol=1e-5)
    assert_close(jitted(tj.matmul, jit_backend)(tj.asarray(a), tj.asarray(b)), expected, rtol=1e-5,
                 atol=1e-5)


def test_matmul_views_and_promotion(rng, jit_backend):
    a = rng.standard_normal((6, 4))
    f = jitted(lambda x: x.T @ x, jit_backend)
    assert_close(f(tj.asarray(a)), a.T @ a)
    out = tj.matmul(tj.asarray(np.ones((2, 2), np.int32)), tj.asarray(np.ones((2, 2), np.float32)))
    assert out.dtype == tj.float32
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        tj.matmul(tj.zeros((2, 3)), tj.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least 1-D"):
        tj.matmul(tj.asarray(1.0), tj.zeros((2,)))


def test_tensordot_vecdot(rng, jit_backend):
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 4, 5))
    assert_close(tj.tensordot(tj.asarray(a), tj.asarray(b)), np.tensordot(a, b))
    assert_close(tj.tensordot(tj.asarray(a), tj.asarray(b), axes=([1], [0])), np.tensordot(a, b, ([1], [0])))
    assert_close(tj.tensordot(tj.asarray(a), tj.asarray(b), axes=0), np.tensordot(a, b, 0))
    f = jitted(lambda x, y: tj.tensordot(x, y, axes=1), jit_backend)
    c = rng.standard_normal((4, 2))
    assert_close(f(tj.asarray(a), tj.asarray(c)), np.tensordot(a, c, 1))
    u, v = rng.standard_normal((3, 4)), rng.standard_normal((4,))
    assert_close(tj.vecdot(tj.asarray(u), tj.asarray(v)), u @ v)
    assert_close(jitted(tj.vecdot, jit_backend)(tj.asarray(u), tj.asarray(v)), u @ v)
    assert_close(tj.vecdot(tj.asarray(u), tj.asarray(u), axis=0), (u * u).sum(0))
