"""Basic slicing matches NumPy for every (start, stop, step), eagerly and under jit, for reads and
writes; and functions NumPy documents as returning a new array never hand back their input."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import tracejit as tj

_BOUNDS = [None, -7, -5, -3, -2, -1, 0, 1, 2, 3, 5, 7]
_STEPS = [None, -3, -2, -1, 1, 2, 3]
SLICES = [slice(b, e, s) for b, e, s in itertools.product(_BOUNDS, _BOUNDS, _STEPS)]


def _data(n: int) -> np.ndarray:
    return np.arange(n * 2, dtype=np.float32).reshape(n, 2)


@pytest.mark.parametrize("n", range(6))
def test_getitem_every_slice_eager(n) -> None:
    a = _data(n)
    x = tj.asarray(a)
    for sl in SLICES:
        got = x[sl].numpy()
        assert got.shape == a[sl].shape, sl
        np.testing.assert_array_equal(got, a[sl], err_msg=str(sl))


@pytest.mark.parametrize("n", range(6))
def test_getitem_every_slice_jit(n) -> None:
    a = _data(n)
    # one trace reads every slice (one compile per length, not per slice)
    outs = tj.jit(lambda x: tuple(x[sl] * 1 for sl in SLICES))(tj.asarray(a))
    for sl, got in zip(SLICES, outs):
        assert got.shape == a[sl].shape, sl
        np.testing.assert_array_equal(got.numpy(), a[sl], err_msg=str(sl))


def _values(a: np.ndarray) -> list[np.ndarray]:
    return [np.arange(a[sl].size, dtype=np.float32).reshape(a[sl].shape) + 100 for sl in SLICES]


def _expected(a: np.ndarray, sl: slice, v: np.ndarray) -> np.ndarray:
    out = a.copy()
    out[sl] = v
    return out


@pytest.mark.parametrize("n", range(6))
def test_setitem_every_slice_eager(n) -> None:
    a = _data(n)
    for sl, v in zip(SLICES, _values(a)):
        x = tj.asarray(a.copy())
        x[sl] = tj.asarray(v)
        np.testing.assert_array_equal(x.numpy(), _expected(a, sl, v), err_msg=str(sl))


@pytest.mark.parametrize("n", range(6))
def test_setitem_every_slice_jit(n) -> None:
    a = _data(n)
    vals = _values(a)

    def f(x, vs):
        outs = []
        for sl, v in zip(SLICES, vs):
            y = x * 1
            y[sl] = v
            outs.append(y)
        return tuple(outs)

    outs = tj.jit(f)(tj.asarray(a), [tj.asarray(v) for v in vals])
    for sl, v, got in zip(SLICES, vals, outs):
        np.testing.assert_array_equal(got.numpy(), _expected(a, sl, v), err_msg=str(sl))


# ---- setitem broadcasts the value as NumPy does -------------------------------------------------

BROADCAST_CASES = [
    ((4, 3), (slice(0, 2),), (1, 2, 3)),
    ((4, 3), (slice(0, 2),), (1, 1, 3)),
    ((4, 3), (slice(0, 2),), (1, 1, 1, 1)),
    ((4, 3), (1,), (1, 3)),
    ((4, 3), (1, slice(None, None, 2)), (1, 1, 2)),
    ((4, 3), (slice(0, 2), None), (2, 1, 3)),
    ((4, 3), (Ellipsis, 0), (1, 4)),
    ((2, 3, 4), (slice(None), 1), (1, 2, 4)),
]


def _set(x, key, v):
    x = x * 1
    x[key] = v
    return x


@pytest.mark.parametrize("shape,key,vshape", BROADCAST_CASES)
def test_setitem_value_with_leading_ones(shape, key, vshape) -> None:
    a = np.zeros(shape, np.float32)
    v = np.arange(np.prod(vshape), dtype=np.float32).reshape(vshape) + 1
    want = a.copy()
    want[key] = v
    x = tj.asarray(a.copy())
    x[key] = tj.asarray(v)
    np.testing.assert_array_equal(x.numpy(), want)
    got = tj.jit(lambda x, v: _set(x, key, v))(tj.asarray(a), tj.asarray(v))
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("vshape", [(2, 2, 3), (3, 3), (2, 1, 3)])
def test_setitem_value_that_does_not_broadcast(vshape) -> None:
    a = np.zeros((4, 3), np.float32)
    v = np.ones(vshape, np.float32)
    with pytest.raises(ValueError):
        a.copy()[0:2] = v
    with pytest.raises(ValueError):
        tj.asarray(a.copy())[0:2] = tj.asarray(v)
    with pytest.raises(ValueError, match="broadcast"):
        tj.jit(lambda x, v: _set(x, slice(0, 2), v))(tj.asarray(a), tj.asarray(v))
