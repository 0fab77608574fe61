"""Bad arguments raise TypeError/ValueError/IndexError naming the function and the argument.

NumPy's rules: sizes, axes and counts are integers (Python or NumPy ints; never floats, even
2.0, nor bools), sizes are non-negative, axes in range; devices are 'cpu', 'cpu:0', 'cuda' or
'cuda:N'.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import tracejit as tj
from tracejit.tensors import Device

x = tj.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
v = tj.asarray(np.arange(3, dtype=np.float32))



def _set_float(t):
    t = t * 1
    t[0.0] = 1.0
    return t


BAD = [
    # creation: shapes
    ("zeros float dim", lambda: tj.zeros((2.5, 3)), TypeError, r"zeros.*shape"),
    ("zeros whole float", lambda: tj.zeros(2.0), TypeError, r"zeros.*shape"),
    ("zeros bool dim", lambda: tj.zeros((True, 3)), TypeError, r"zeros.*shape"),
    ("zeros str", lambda: tj.zeros("3"), TypeError, r"zeros.*shape"),
    ("zeros None dim", lambda: tj.zeros((None, 3)), TypeError, r"zeros.*shape"),
    ("zeros negative", lambda: tj.zeros((-1, 3)), ValueError, r"zeros.*shape"),
    ("ones float", lambda: tj.ones((3, 1.0)), TypeError, r"ones.*shape"),
    ("ones negative", lambda: tj.ones(-2), ValueError, r"ones.*shape"),
    ("empty float", lambda: tj.empty((1.5,)), TypeError, r"empty.*shape"),
    ("empty negative", lambda: tj.empty((2, -3)), ValueError, r"empty.*shape"),
    ("full float", lambda: tj.full((2.5,), 1.0), TypeError, r"full.*shape"),
    ("full negative", lambda: tj.full((-1,), 1.0), ValueError, r"full.*shape"),
    ("full complex fill into a real dtype", lambda: tj.full((2,), 1j, dtype=tj.float32), TypeError,
     r"full.*fill_value"),
    ("full str fill", lambda: tj.full((2,), "a"), TypeError, r"full.*fill_value"),
    ("zeros bad dtype", lambda: tj.zeros((2,), dtype="datetime64[s]"), TypeError, r"dtype"),
    ("zeros dtype str", lambda: tj.zeros((2,), dtype=str), TypeError, r"dtype"),
    ("eye float", lambda: tj.eye(2.0), TypeError, r"eye.*n_rows"),
    ("eye negative", lambda: tj.eye(-1), ValueError, r"eye.*n_rows"),
    ("eye cols float", lambda: tj.eye(2, 2.5), TypeError, r"eye.*n_cols"),
    ("eye cols negative", lambda: tj.eye(2, -2), ValueError, r"eye.*n_cols"),
    ("eye k float", lambda: tj.eye(2, k=0.5), TypeError, r"eye.*\bk\b"),
    ("eye bool", lambda: tj.eye(True), TypeError, r"eye.*n_rows"),
    ("linspace num float", lambda: tj.linspace(0, 1, 2.5), TypeError, r"linspace.*num"),
    ("linspace num negative", lambda: tj.linspace(0, 1, -1), ValueError, r"linspace.*num"),
    ("linspace num bool", lambda: tj.linspace(0, 1, True), TypeError, r"linspace.*num"),
    ("arange step zero", lambda: tj.arange(0, 5, 0), ValueError, r"arange.*step"),
    ("arange str", lambda: tj.arange("5"), TypeError, r"arange.*stop"),
    ("arange complex", lambda: tj.arange(0, 5j), TypeError, r"arange.*stop"),
    ("arange None start", lambda: tj.arange(None), TypeError, r"arange.*stop|arange.*start"),
    ("tril k float", lambda: tj.tril(x, k=0.5), TypeError, r"tril.*\bk\b"),
    ("triu k str", lambda: tj.triu(x, k="1"), TypeError, r"triu.*\bk\b"),
    ("tril 1-D", lambda: tj.tril(v), ValueError, r"tril"),
    ("zeros_like bad dtype", lambda: tj.zeros_like(x, dtype="U3"), TypeError, r"dtype"),
    ("meshgrid indexing", lambda: tj.meshgrid(v, indexing="yx"), ValueError, r"meshgrid.*indexing"),
    # devices
    ("device cpu:7", lambda: tj.zeros((2,), device="cpu:7"), ValueError, r"cpu:7"),
    ("device cpu:1", lambda: tj.asarray([1.0], device="cpu:1"), ValueError, r"cpu:1"),
    ("device tpu", lambda: tj.zeros((2,), device="tpu"), ValueError, r"tpu"),
    ("device cuda:x", lambda: tj.ones((2,), device="cuda:x"), ValueError, r"cuda:x"),
    ("device cuda:-1", lambda: tj.ones((2,), device="cuda:-1"), ValueError, r"cuda:-1"),
    ("device empty", lambda: tj.ones((2,), device=""), ValueError, r"device"),
    ("device int", lambda: tj.ones((2,), device=0), TypeError, r"device"),
    ("device uppercase", lambda: tj.ones((2,), device="CPU"), ValueError, r"CPU"),
    ("set_default_device cpu:3", lambda: tj.set_default_device("cpu:3"), ValueError, r"cpu:3"),
    ("to_device cpu:2", lambda: x.to_device("cpu:2"), ValueError, r"cpu:2"),
    # reductions: axis
    ("sum axis float", lambda: tj.sum(x, axis=1.5), TypeError, r"sum.*axis"),
    ("sum axis whole float", lambda: tj.sum(x, axis=1.0), TypeError, r"sum.*axis"),
    ("sum axis bool", lambda: tj.sum(x, axis=True), TypeError, r"sum.*axis"),
    ("sum axis str", lambda: tj.sum(x, axis="0"), TypeError, r"sum.*axis"),
    ("sum axis out of range", lambda: tj.sum(x, axis=2), ValueError, r"sum.*axis"),
    ("sum axis tuple float", lambda: tj.sum(x, axis=(0, 1.0)), TypeError, r"sum.*axis"),
    ("sum axis repeated", lambda: tj.sum(x, axis=(0, -2)), ValueError, r"sum.*axis"),
    ("mean axis float", lambda: tj.mean(x, axis=0.0), TypeError, r"mean.*axis"),
    ("max axis out of range", lambda: tj.max(x, axis=-3), ValueError, r"max.*axis"),
    ("prod axis float", lambda: tj.prod(x, axis=1.5), TypeError, r"prod.*axis"),
    ("var axis float", lambda: tj.var(x, axis=1.5), TypeError, r"var.*axis"),
    ("argmax axis float", lambda: tj.argmax(x, axis=1.5), TypeError, r"argmax.*axis"),
    ("argmin axis out of range", lambda: tj.argmin(x, axis=5), ValueError, r"argmin.*axis"),
    ("all axis float", lambda: tj.all(x, axis=0.5), TypeError, r"all.*axis"),
    ("cumulative_sum axis float", lambda: tj.cumulative_sum(x, axis=1.5), TypeError, r"cumulative_sum.*axis"),
    ("sort axis float", lambda: tj.sort(x, axis=1.5), TypeError, r"sort.*axis"),
    ("method sum axis float", lambda: x.sum(axis=1.5), TypeError, r"sum.*axis"),
    # manipulation
    ("reshape float", lambda: tj.reshape(x, (2.0, 3)), TypeError, r"reshape.*shape"),
    ("reshape bool", lambda: tj.reshape(x, (True, 6)), TypeError, r"reshape.*shape"),
    ("reshape str", lambda: tj.reshape(x, "6"), TypeError, r"reshape.*shape"),
    ("reshape negative", lambda: tj.reshape(x, (-2, -3)), ValueError, r"reshape.*shape"),
    ("reshape two -1", lambda: tj.reshape(x, (-1, -1)), ValueError, r"reshape"),
    ("reshape wrong size", lambda: tj.reshape(x, (4, 2)), ValueError, r"reshape"),
    ("method reshape float", lambda: x.reshape(3.0, 2), TypeError, r"reshape.*shape"),
    ("permute_dims float", lambda: tj.permute_dims(x, (1.0, 0)), TypeError, r"permute_dims.*axes"),
    ("permute_dims repeated", lambda: tj.permute_dims(x, (0, 0)), ValueError, r"permute_dims.*axes"),
    ("permute_dims short", lambda: tj.permute_dims(x, (0,)), ValueError, r"permute_dims.*axes"),
    ("permute_dims out of range", lambda: tj.permute_dims(x, (0, 2)), ValueError, r"permute_dims.*ax"),
    ("permute_dims int", lambda: tj.permute_dims(x, 1), TypeError, r"permute_dims.*axes"),
    ("expand_dims float", lambda: tj.expand_dims(x, axis=0.5), TypeError, r"expand_dims.*axis"),
    ("expand_dims out of range", lambda: tj.expand_dims(x, axis=4), ValueError, r"expand_dims.*axis"),
    ("squeeze float", lambda: tj.squeeze(x, axis=0.0), TypeError, r"squeeze.*axis"),
    ("squeeze not 1", lambda: tj.squeeze(x, axis=0), ValueError, r"squeeze.*axis"),
    ("flip float", lambda: tj.flip(x, axis=1.5), TypeError, r"flip.*axis"),
    ("flip out of range", lambda: tj.flip(x, axis=3), ValueError, r"flip.*axis"),
    ("roll shift float", lambda: tj.roll(x, 1.5, axis=0), TypeError, r"roll.*shift"),
    ("roll shift float None", lambda: tj.roll(x, 1.5), TypeError, r"roll.*shift"),
    ("roll axis float", lambda: tj.roll(x, 1, axis=0.0), TypeError, r"roll.*axis"),
    ("roll lengths", lambda: tj.roll(x, (1, 2, 3), axis=(0, 1)), ValueError, r"roll.*shift"),
    ("tile float", lambda: tj.tile(x, (2.0,)), TypeError, r"tile.*repetitions"),
    ("tile negative", lambda: tj.tile(x, (-1,)), ValueError, r"tile.*repetitions"),
    ("tile int", lambda: tj.tile(x, 2), TypeError, r"tile.*repetitions"),
    ("repeat float", lambda: tj.repeat(x, 2.0), TypeError, r"repeat.*repeats"),
    ("repeat bool", lambda: tj.repeat(x, True), TypeError, r"repeat.*repeats"),
    ("repeat negative", lambda: tj.repeat(x, -1), ValueError, r"repeat.*repeats"),
    ("repeat axis float", lambda: tj.repeat(x, 2, axis=1.0), TypeError, r"repeat.*axis"),
    ("concat axis float", lambda: tj.concat([x, x], axis=0.0), TypeError, r"concat.*axis"),
    ("concat axis out of range", lambda: tj.concat([x, x], axis=2), ValueError, r"concat.*axis"),
    ("concat empty list", lambda: tj.concat([]), ValueError, r"concat"),
    ("stack axis float", lambda: tj.stack([x, x], axis=1.5), TypeError, r"stack.*axis"),
    ("stack axis out of range", lambda: tj.stack([x, x], axis=4), ValueError, r"stack.*axis"),
    ("moveaxis float", lambda: tj.moveaxis(x, 0.0, 1), TypeError, r"moveaxis.*source"),
    ("moveaxis dest float", lambda: tj.moveaxis(x, 0, 1.0), TypeError, r"moveaxis.*destination"),
    ("moveaxis out of range", lambda: tj.moveaxis(x, 0, 2), ValueError, r"moveaxis.*destination"),
    ("unstack axis float", lambda: tj.unstack(x, axis=0.0), TypeError, r"unstack.*axis"),
    ("broadcast_to float", lambda: tj.broadcast_to(v, (2.0, 3)), TypeError, r"broadcast_to.*shape"),
    ("broadcast_to negative", lambda: tj.broadcast_to(v, (-1, 3)), ValueError, r"broadcast_to.*shape"),
    ("broadcast_to incompatible", lambda: tj.broadcast_to(v, (2, 4)), ValueError, r"broadcast_to"),
    ("take axis float", lambda: tj.take(x, tj.asarray([0]), axis=0.0), TypeError, r"take.*axis"),
    ("take axis out of range", lambda: tj.take(x, tj.asarray([0]), axis=2), ValueError, r"take.*axis"),
    ("astype bad dtype", lambda: tj.astype(x, "datetime64[s]"), TypeError, r"dtype"),
    # indexing
    ("index float", lambda: x[1.5], IndexError, r"valid indices.*float"),
    ("index str", lambda: x["a"], IndexError, r"valid indices.*str"),
    ("index float in tuple", lambda: x[0, 1.0], IndexError, r"valid indices.*float"),
    ("jit setitem float index", lambda: tj.jit(_set_float)(x), IndexError, r"valid indices.*float"),
    ("index out of range", lambda: x[2], IndexError, r"index 2"),
    ("index slice float", lambda: x[0:1.5], TypeError, r"slice"),
    ("index slice step zero", lambda: x[::0], ValueError, r"slice step"),
    ("index too many", lambda: x[0, 0, 0], IndexError, r"too many indices"),
    ("index two ellipses", lambda: x[..., ...], IndexError, r"ellipsis"),
    ("index float array", lambda: x[tj.asarray([0.5])], IndexError, r"integer or boolean"),
]


def test_table_is_large() -> None:
    assert len(BAD) >= 60


@pytest.mark.parametrize("fn,exc,pattern", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(fn, exc, pattern) -> None:
    with pytest.raises(exc) as info:
        fn()
    assert re.search(pattern, str(info.value)), str(info.value)


GOOD = [
    ("numpy int dims", lambda: tj.zeros((np.int64(2), np.int32(3))).shape == (2, 3)),
    ("numpy int shape", lambda: tj.ones(np.int8(4)).shape == (4,)),
    ("empty dims", lambda: tj.zeros((0, 3)).shape == (0, 3)),
    ("list shape", lambda: tj.empty([2, 1]).shape == (2, 1)),
    ("numpy int axis", lambda: tj.sum(x, axis=np.int64(1)).shape == (2,)),
    ("numpy int axes", lambda: tj.sum(x, axis=(np.int32(0), 1)).shape == ()),
    ("negative axis", lambda: tj.sum(x, axis=-1).shape == (2,)),
    ("reshape -1", lambda: tj.reshape(x, (-1,)).shape == (6,)),
    ("reshape numpy ints", lambda: tj.reshape(x, (np.int64(3), 2)).shape == (3, 2)),
    ("method reshape varargs", lambda: x.reshape(3, 2).shape == (3, 2)),
    ("permute numpy ints", lambda: tj.permute_dims(x, (np.int64(1), 0)).shape == (3, 2)),
    ("roll numpy int", lambda: tj.roll(x, np.int64(1)).shape == (2, 3)),
    ("tile numpy ints", lambda: tj.tile(x, (np.int64(2), 1)).shape == (4, 3)),
    ("repeat numpy int", lambda: tj.repeat(v, np.int64(2)).shape == (6,)),
    ("repeat list of counts", lambda: tj.repeat(v, [1, 0, 2]).shape == (3,)),
    ("eye numpy int", lambda: tj.eye(np.int64(2), k=np.int64(1)).shape == (2, 2)),
    ("linspace numpy int", lambda: tj.linspace(0, 1, np.int64(3)).shape == (3,)),
    ("arange numpy numbers", lambda: tj.arange(np.int64(1), np.float64(3.5)).shape == (3,)),
    ("arange 0-d tensor", lambda: tj.arange(tj.asarray(3)).shape == (3,)),
    ("index numpy int", lambda: x[np.int64(1)].shape == (3,)),
    ("index bool mask", lambda: x[True].shape == (1, 2, 3)),
    ("device cpu:0", lambda: tj.zeros((2,), device="cpu:0").device == "cpu"),
    ("device Device", lambda: tj.zeros((2,), device=Device("cpu")).device == "cpu"),
    ("device cuda parses", lambda: Device.parse("cuda:3").index == 3),
]


@pytest.mark.parametrize("fn", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_input(fn) -> None:
    assert fn()
