"""The Tensor class: attributes, operators, in-place ops, conversion and interop."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj


def test_attributes(rng):
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    x = tj.asarray(a)
    assert x.shape == (2, 3, 4) and x.ndim == 3 and x.size == 24 and x.dtype == tj.float32
    assert x.device == "cpu" and str(x.device) == "cpu"
    assert_close(x.mT, a.swapaxes(-1, -2))
    assert_close(tj.asarray(a[0]).T, a[0].T)
    with pytest.raises(ValueError, match=".T needs a 2-D"):
        _ = x.T
    assert len(x) == 2 and [t.shape for t in x] == [(3, 4), (3, 4)]


def test_operators_match_numpy(rng, jit_backend):
    a, b = rng.uniform(0.5, 2, (3, 4)), rng.uniform(0.5, 2, (4,))
    exprs = [lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x / y,
             lambda x, y: x // y, lambda x, y: x % y, lambda x, y: x ** y, lambda x, y: -x + abs(y),
             lambda x, y: (x < y) | (x >= 1.5), lambda x, y: (x == y) ^ (x != 1.0), lambda x, y: x @ y]
    for e in exprs:
        expected = e(a, b)
        assert_close(e(tj.asarray(a), tj.asarray(b)), expected)
        assert_close(jitted(e, jit_backend)(tj.asarray(a), tj.asarray(b)), expected)
    i = rng.integers(0, 8, (5,))
    assert_close((tj.asarray(i) << 2) >> 1, (i << 2) >> 1)
    assert_close(~tj.asarray(i) & 3, ~i & 3)


def test_inplace_operators(rng):
    a = rng.standard_normal((3,)).astype(np.float32)
    x = tj.asarray(a.copy())
    alias = x
    x += 1
    x *= 2
    x -= tj.asarray([1.0, 1.0, 1.0])
    x /= 4
    assert alias is x
    assert_close(x, ((a + 1) * 2 - 1) / 4)
    m = tj.asarray(np.eye(2, dtype=np.float32))
    m @= tj.asarray([[1.0, 2.0], [3.0, 4.0]])
    assert_close(m, [[1, 2], [3, 4]])


def test_conversions():
    x = tj.asarray([[1.5]])
    assert float(x) == 1.5 and int(x) == 1 and bool(x) and x.item() == 1.5
    assert tj.asarray([1, 2]).tolist() == [1, 2]
    assert [10, 20, 30][tj.asarray(1)] == 20                 # __index__ for integer tensors
    with pytest.raises(TypeError, match="only integer tensors"):
        [1, 2][tj.asarray(1.0)]
    assert np.asarray(tj.asarray([1.0]), dtype=np.float64).dtype == np.float64
    assert "tensor([1., 2.]" in repr(tj.asarray([1.0, 2.0], dtype=tj.float64))
    assert "dtype=float64" in repr(tj.asarray([1.0, 2.0], dtype=tj.float64))


def test_methods_and_to(rng):
    a = rng.standard_normal((3, 4))
    x = tj.asarray(a)
    assert_close(x.sum(axis=0), a.sum(0))
    assert_close(x.reshape(4, 3), a.reshape(4, 3))
    assert_close(x.reshape((2, 6)), a.reshape(2, 6))
    assert_close(x.permute(1, 0), a.T)
    assert_close(x.max(), a.max())
    assert x.to(tj.float32).dtype == tj.float32 and x.astype(tj.int32).dtype == tj.int32
    assert x.to("cpu") is x
    assert x.to_device("cpu") is x
