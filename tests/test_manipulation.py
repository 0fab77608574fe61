"""Manipulation functions vs NumPy, eager and jit, incl. negative axes, 0-d, empty and views."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, jitted, to_numpy

import tracejit as tj

# (name, tracejit call, NumPy reference, input shapes): each runs eagerly and under jit
CASES = [
    ("reshape", lambda x: tj.reshape(x, (4, -1)), lambda a: a.reshape(4, -1), [(2, 3, 4)]),
    ("reshape_0d", lambda x: tj.reshape(x, (1, 1)), lambda a: a.reshape(1, 1), [()]),
    ("permute", lambda x: tj.permute_dims(x, (2, 0, 1)), lambda a: a.transpose(2, 0, 1), [(2, 3, 4)]),
    ("mT", lambda x: x.mT, lambda a: a.swapaxes(-1, -2), [(2, 3, 4)]),
    ("expand_dims", lambda x: tj.expand_dims(x, axis=-1), lambda a: a[..., None], [(2, 3)]),
    ("squeeze", lambda x: tj.squeeze(x, axis=(0, -1)), lambda a: a.squeeze((0, -1)), [(1, 3, 1)]),
    ("broadcast_to", lambda x: tj.broadcast_to(x, (2, 3, 4)), lambda a: np.broadcast_to(a, (2, 3, 4)),
     [(3, 1)]),
    ("flip", lambda x: tj.flip(x, axis=-1), lambda a: np.flip(a, -1), [(3, 4)]),
    ("flip_all", lambda x: tj.flip(x), np.flip, [(3, 4)]),
    ("concat", lambda x, y: tj.concat([x, y], axis=-2), lambda a, b: np.concatenate([a, b], -2),
     [(2, 3), (4, 3)]),
    ("concat_none", lambda x, y: tj.concat([x, y], axis=None), lambda a, b: np.concatenate([a, b], None),
     [(2, 3), (4,)]),
    ("concat_empty", lambda x, y: tj.concat([x, y]), lambda a, b: np.concatenate([a, b]), [(0, 3), (2, 3)]),
    ("stack", lambda x, y: tj.stack([x, y], axis=-1), lambda a, b: np.stack([a, b], -1), [(2, 3), (2, 3)]),
    ("stack_0d", lambda x, y: tj.stack([x, y]), lambda a, b: np.stack([a, b]), [(), ()]),
    ("unstack", lambda x: tj.unstack(x, axis=-1), lambda a: tuple(np.moveaxis(a, -1, 0)), [(2, 3)]),
    ("roll_flat", lambda x: tj.roll(x, 5), lambda a: np.roll(a, 5), [(3, 4)]),
    ("roll_axis", lambda x: tj.roll(x, -1, axis=-1), lambda a: np.roll(a, -1, -1), [(3, 4)]),
    ("roll_tuple", lambda x: tj.roll(x, (1, 7), axis=(0, 1)), lambda a: np.roll(a, (1, 7), (0, 1)),
     [(3, 4)]),
    ("roll_empty", lambda x: tj.roll(x, 2, axis=0), lambda a: np.roll(a, 2, 0), [(0, 4)]),
    ("moveaxis", lambda x: tj.moveaxis(x, (0, 1), (-1, 0)), lambda a: np.moveaxis(a, (0, 1), (-1, 0)),
     [(2, 3, 4, 5)]),
    ("tile", lambda x: tj.tile(x, (2, 1, 3)), lambda a: np.tile(a, (2, 1, 3)), [(2, 3)]),
    ("tile_short", lambda x: tj.tile(x, (2,)), lambda a: np.tile(a, (2,)), [(2, 3)]),
    ("repeat", lambda x: tj.repeat(x, 3, axis=-1), lambda a: np.repeat(a, 3, -1), [(2, 3)]),
    ("repeat_flat", lambda x: tj.repeat(x, 2), lambda a: np.repeat(a, 2), [(2, 3)]),
    ("matrix_transpose_view", lambda x: tj.matrix_transpose(x[:, ::2]), lambda a: a[:, ::2].T, [(3, 6)]),
    ("slice_steps", lambda x: x[::-1, 1::2], lambda a: a[::-1, 1::2], [(4, 5)]),
]


@pytest.mark.parametrize("name,fn,ref,shapes", CASES, ids=[c[0] for c in CASES])
def test_manipulation(name, fn, ref, shapes, rng, jit_backend):
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    expected = ref(*arrays)
    for f in (fn, jitted(fn, jit_backend)):
        got = f(*(tj.asarray(a) for a in arrays))
        if isinstance(expected, tuple):
            assert isinstance(got, tuple) and len(got) == len(expected)
            for g, e in zip(got, expected):
                assert_close(g, e)
        else:
            assert_close(got, expected)


def test_non_contiguous_inputs(rng, jit_backend):
    base = rng.standard_normal((6, 8))
    for a in (base.T, base[::2, 1::3], base[::-1]):
        f = jitted(lambda x: tj.concat([tj.roll(x, 1, axis=0), x * 2], axis=1), jit_backend)
        expected = np.concatenate([np.roll(a, 1, 0), a * 2], 1)
        assert_close(f(tj.asarray(a)), expected)


def test_repeat_with_tensor_counts(rng, jit_backend):
    a = rng.standard_normal((3, 2))
    counts = np.array([2, 0, 1])
    assert_close(tj.repeat(tj.asarray(a), tj.asarray(counts), axis=0), np.repeat(a, counts, 0))
    assert_close(tj.repeat(tj.asarray(a), tj.asarray([2]), axis=1), np.repeat(a, 2, 1))
    with pytest.raises(tj.ConcretizationError, match="repeat"):
        jitted(lambda x, r: tj.repeat(x, r, axis=0), jit_backend)(tj.asarray(a), tj.asarray(counts))
    with pytest.raises(ValueError, match="do not match"):
        tj.repeat(tj.asarray(a), tj.asarray([1, 2]), axis=0)


def test_concat_promotes_and_checks():
    out = tj.concat([tj.asarray([1, 2], dtype=tj.int8), tj.asarray([0.5], dtype=tj.float32)])
    assert out.dtype == tj.float32
    assert to_numpy(out).tolist() == [1.0, 2.0, 0.5]
    with pytest.raises(ValueError, match=r"concat: shapes \(2, 3\) and \(2, 4\)"):
        tj.concat([tj.zeros((2, 3)), tj.zeros((2, 4))])
    with pytest.raises(ValueError, match="stack: shapes"):
        tj.stack([tj.zeros((2,)), tj.zeros((3,))])
    with pytest.raises(ValueError, match="out of range"):
        tj.moveaxis(tj.zeros((2, 3)), 2, 0)
