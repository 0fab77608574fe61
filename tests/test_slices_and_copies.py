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


# ---- results NumPy makes new never alias the input -----------------------------------------------

_A = np.arange(6, dtype=np.float32).reshape(2, 3)
_V = np.arange(3, dtype=np.float32)

# (name, tracejit call, NumPy call, input): NumPy returns a new array for each of these
NEW_ARRAYS = [
    ("roll 0", lambda x: tj.roll(x, 0), lambda a: np.roll(a, 0), _A),
    ("roll 0 axis", lambda x: tj.roll(x, 0, axis=1), lambda a: np.roll(a, 0, axis=1), _A),
    ("roll by the axis length", lambda x: tj.roll(x, 3, axis=1), lambda a: np.roll(a, 3, axis=1), _A),
    ("roll (0, 0)", lambda x: tj.roll(x, (0, 0), axis=(0, 1)), lambda a: np.roll(a, (0, 0), axis=(0, 1)), _A),
    ("tile ()", lambda x: tj.tile(x, ()), lambda a: np.tile(a, ()), _A),
    ("tile (1, 1)", lambda x: tj.tile(x, (1, 1)), lambda a: np.tile(a, (1, 1)), _A),
    ("tile (1,) of 1-D", lambda x: tj.tile(x, (1,)), lambda a: np.tile(a, (1,)), _V),
    ("tile (1, 1) of 1-D", lambda x: tj.tile(x, (1, 1)), lambda a: np.tile(a, (1, 1)), _V),
    ("concat of one", lambda x: tj.concat([x]), lambda a: np.concatenate([a]), _A),
    ("concat of one, axis None", lambda x: tj.concat([x], axis=None),
     lambda a: np.concatenate([a], axis=None), _V),
    ("concat with an empty part", lambda x: tj.concat([x, tj.zeros((0, 3))]),
     lambda a: np.concatenate([a, np.zeros((0, 3), np.float32)]), _A),
    ("stack of one", lambda x: tj.stack([x]), lambda a: np.stack([a]), _A),
    ("repeat 1", lambda x: tj.repeat(x, 1, axis=0), lambda a: np.repeat(a, 1, axis=0), _A),
    ("repeat 1, axis None", lambda x: tj.repeat(x, 1), lambda a: np.repeat(a, 1), _V),
    ("astype same dtype", lambda x: tj.astype(x, tj.float32), lambda a: a.astype(np.float32), _A),
    ("meshgrid of one", lambda x: tj.meshgrid(x)[0], lambda a: np.meshgrid(a)[0], _V),
    ("from_dlpack copy=True", lambda x: tj.from_dlpack(x, copy=True),
     lambda a: np.from_dlpack(a, copy=True), _A),
    ("meshgrid of two", lambda x: tj.meshgrid(x, x)[1], lambda a: np.meshgrid(a, a)[1], _V),
]


@pytest.mark.parametrize("fn,ref,a", [c[1:] for c in NEW_ARRAYS], ids=[c[0] for c in NEW_ARRAYS])
def test_new_array_eager(fn, ref, a) -> None:
    x = tj.asarray(a.copy())
    out = fn(x)
    assert out is not x
    np.testing.assert_array_equal(out.numpy(), ref(a))
    out[...] = 99          # writable, and writing leaves the input alone
    np.testing.assert_array_equal(x.numpy(), a)


@pytest.mark.parametrize("fn,ref,a", [c[1:] for c in NEW_ARRAYS], ids=[c[0] for c in NEW_ARRAYS])
def test_new_array_jit(fn, ref, a) -> None:
    def f(x):
        out = fn(x)
        out[...] = 99      # under jit too, the write must not reach the argument
        return out

    x = tj.asarray(a.copy())
    out = tj.jit(f)(x)
    np.testing.assert_array_equal(x.numpy(), a)
    np.testing.assert_array_equal(out.numpy(), np.full(ref(a).shape, 99, np.float32))
    assert not np.shares_memory(tj.jit(fn)(x).numpy(), x.numpy())


def test_copies_keep_gradients() -> None:
    x = tj.asarray(np.arange(3.0), requires_grad=True)
    (tj.roll(x, 0) * 2 + tj.tile(x, ()) + tj.concat([x])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 4.0, 4.0])


def test_concat_checks_empty_parts_too() -> None:
    with pytest.raises(ValueError):
        np.concatenate([np.zeros((0, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="concat"):
        tj.concat([tj.zeros((0, 3)), tj.ones((2, 4))])
