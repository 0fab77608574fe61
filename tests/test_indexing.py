"""Indexing: basic (views), integer arrays, boolean masks (eager only), setitem, take."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj

BASIC_KEYS = [
    1, -1, slice(1, None), slice(None, None, -2), (Ellipsis, 0), (None, 1), (slice(None), None, -1),
    (0, slice(1, 3), Ellipsis), (slice(5, 1, -1), 2), (slice(0, 0),), (Ellipsis,), (), (-2, -1, 0),
]


@pytest.mark.parametrize("key", BASIC_KEYS, ids=repr)
def test_basic_getitem(key, rng, jit_backend):
    a = rng.standard_normal((6, 4, 3))
    expected = a[key]
    assert_close(tj.asarray(a)[key], expected)
    assert_close(jitted(lambda x: x[key], jit_backend)(tj.asarray(a)), expected)


def test_integer_array_indexing(rng, jit_backend):
    a = rng.standard_normal((5, 4))
    idx = np.array([[0, 4], [-1, 2]])
    assert_close(tj.asarray(a)[tj.asarray(idx)], a[idx])
    assert_close(tj.asarray(a)[:, tj.asarray([3, 0])], a[:, [3, 0]])
    f = jitted(lambda x, i: x[i], jit_backend)
    assert_close(f(tj.asarray(a), tj.asarray(np.array([1, 3, 0]))), a[[1, 3, 0]])


def test_take(rng, jit_backend):
    a = rng.standard_normal((4, 5))
    i = np.array([4, 0, 0])
    for axis in (0, 1, -1):
        if i.max() >= a.shape[axis]:
            continue
        assert_close(tj.take(tj.asarray(a), tj.asarray(i), axis=axis), np.take(a, i, axis=axis))
        f = jitted(lambda x, j, axis=axis: tj.take(x, j, axis=axis), jit_backend)
        assert_close(f(tj.asarray(a), tj.asarray(i)), np.take(a, i, axis=axis))
    with pytest.raises(IndexError, match="out of range"):
        tj.take(tj.asarray(a), tj.asarray([7]), axis=0)


def test_boolean_mask_eager(rng):
    a = rng.standard_normal((3, 4))
    m = a > 0
    assert_close(tj.asarray(a)[tj.asarray(m)], a[m])
    assert_close(tj.asarray(a)[tj.asarray(m[:, 0])], a[m[:, 0]])


def test_setitem_eager_and_jit(rng, jit_backend):
    a = rng.standard_normal((4, 5)).astype(np.float32)
    x = tj.asarray(a.copy())
    x[1:3, ::2] = 7.0
    ref = a.copy()
    ref[1:3, ::2] = 7.0
    assert_close(x, ref)

    def f(x, v):
        x[0] = v
        x[..., -1] = 0.0
        return x * 2
    x = tj.asarray(a.copy())
    v = rng.standard_normal(5).astype(np.float32)
    out = jitted(f, jit_backend)(x, tj.asarray(v))
    ref = a.copy()
    ref[0] = v
    ref[..., -1] = 0
    assert_close(out, ref * 2)
    assert_close(x, ref)                        # in-place update of the argument is written back


def test_index_errors():
    x = tj.zeros((2, 3))
    with pytest.raises(IndexError, match="out of bounds"):
        x[2]
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0]
    with pytest.raises(IndexError, match="single ellipsis"):
        x[..., ...]
