"""Array API (2023.12) conformance details, checked against the Array API test suite.

Each test pins one behaviour the standard specifies and tracejit once got wrong.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import jitted

import tracejit as tj


@pytest.mark.parametrize("dtype", [tj.float16, tj.float32, tj.float64])
def test_finfo_limits_are_python_scalars(dtype):
    # np.finfo gives float16/float32 scalars, which are not Python floats
    info, ref = tj.finfo(dtype), np.finfo(dtype)
    for name in ("eps", "max", "min", "smallest_normal"):
        value = getattr(info, name)
        assert type(value) is float and value == float(getattr(ref, name)), name
    assert type(info.bits) is int and info.bits == ref.bits
    assert info.dtype == dtype
    assert tj.finfo(tj.ones(2, dtype=dtype)) == info


@pytest.mark.parametrize("dtype", [tj.int8, tj.int16, tj.int32, tj.int64, tj.uint8])
def test_iinfo_limits_are_python_ints(dtype):
    info, ref = tj.iinfo(dtype), np.iinfo(dtype)
    assert (info.bits, info.min, info.max, info.dtype) == (ref.bits, ref.min, ref.max, dtype)
    assert all(type(v) is int for v in (info.bits, info.min, info.max))
    assert tj.iinfo(tj.zeros(2, dtype=dtype)) == info


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["eager", "interpret", "llvm"])
def test_mean_and_var_of_equal_values_are_exact(dtype, backend):
    # sum * (1/n) rounds twice: the mean of 9 equal float64 values came out off by one ulp
    x = np.full((3, 3), 3.00059637e15, dtype=dtype)

    def f(t):
        return tj.mean(t), tj.var(t), tj.std(t, axis=0, correction=1)
    out = f(tj.asarray(x)) if backend == "eager" else jitted(f, backend)(tj.asarray(x))
    mean, var, std = (np.asarray(o.numpy()) for o in out)
    assert mean == np.mean(x)
    assert var == 0 and np.all(std == 0)


def test_zero_d_integer_tensor_indexes_like_an_int():
    x = np.arange(24).reshape(2, 3, 4)
    t = tj.asarray(x)
    np.testing.assert_array_equal(t[tj.asarray(1)].numpy(), x[1])
    np.testing.assert_array_equal(t[tj.asarray(1), ..., tj.asarray(-1)].numpy(), x[1, ..., -1])


@pytest.mark.parametrize("key", [True, False, (True, 0), (0, False, slice(None))])
def test_python_bool_index_is_a_zero_d_mask(key):
    # bool is an int subclass: x[True] must add an axis (as in NumPy), not pick x[1]
    x = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(tj.asarray(x)[key].numpy(), x[key])


@pytest.mark.parametrize("key", [(slice(None), 1, "m4"), (0, "m3"), (1, "m3", 2), (0, "m3", slice(1, 3))])
def test_boolean_mask_after_integer_index(key):
    # an int before the mask drops its axis, so the mask starts one axis further left
    x = np.arange(24).reshape(2, 3, 4)
    masks = {"m4": np.array([True, False, True, True]), "m3": np.array([False, True, True])}
    np_key = tuple(masks.get(k, k) if isinstance(k, str) else k for k in key)
    tj_key = tuple(tj.asarray(k) if isinstance(k, np.ndarray) else k for k in np_key)
    np.testing.assert_array_equal(tj.asarray(x)[tj_key].numpy(), x[np_key])


@pytest.mark.parametrize("obj", [[1.0, 2.0], (1, 2), 3, 2.5, True])
def test_asarray_copy_false_refuses_python_objects(obj):
    # copy=False must never copy, and a tensor made from Python objects always is one
    with pytest.raises(ValueError):
        tj.asarray(obj, copy=False)
    np.testing.assert_array_equal(tj.asarray(obj).numpy(), np.asarray(obj))


def test_asarray_copy_false_shares_buffers():
    a = np.array([1.0, 2.0], dtype=np.float32)
    t = tj.asarray(a, copy=False)
    a[0] = 9.0
    assert t.numpy()[0] == 9.0


@pytest.mark.parametrize("shape", [(2, 3), (6,)])
def test_reshape_copy_true_does_not_alias(shape):
    x = tj.asarray(np.arange(6.0))
    y = tj.reshape(x, shape, copy=True)
    y[(0,) * len(shape)] = -1.0
    np.testing.assert_array_equal(x.numpy(), np.arange(6.0))


def test_reshape_copy_false_refuses_to_copy():
    x = tj.asarray(np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(tj.reshape(x, (12,), copy=False).numpy(), np.arange(12.0))
    with pytest.raises(ValueError):
        tj.reshape(x[:, :3], (9,), copy=False)


def test_expand_dims_out_of_range_axis_is_an_index_error():
    with pytest.raises(IndexError, match=r"axis -2 is out of range \[-1, 0\] for a 0-D tensor"):
        tj.expand_dims(tj.asarray(1.0), axis=-2)
    assert tj.expand_dims(tj.zeros(3), axis=-2).shape == (1, 3)


def test_unique_inverse_of_a_zero_d_array_is_zero_d():
    assert tj.unique_inverse(tj.asarray(False)).inverse_indices.shape == ()
    assert tj.unique_all(tj.asarray(3)).inverse_indices.shape == ()


def test_creation_functions_report_the_standards_signature():
    import inspect
    for name in ("zeros", "ones", "empty"):
        first = next(iter(inspect.signature(getattr(tj, name)).parameters.values()))
        assert first.name == "shape" and first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert tj.zeros(2, 3).shape == (2, 3)          # the PyTorch spelling still works


def test_vecdot_conjugates_the_first_operand_and_keeps_its_dtype():
    a, b = np.array([1j, 2j, 3j]), np.array([1, 2j, 3])
    assert complex(tj.linalg.vecdot(tj.asarray(a), tj.asarray(b))) == np.vdot(a, b)
    u = tj.ones(3, dtype=tj.uint8)
    assert tj.vecdot(u, u).dtype == tj.uint8


def test_clip_result_has_the_broadcast_shape_of_its_bounds():
    assert tj.clip(tj.asarray(0, dtype=tj.uint8), max=tj.zeros((0,), dtype=tj.uint8)).shape == (0,)
    np.testing.assert_array_equal(tj.clip(tj.asarray(3.0), min=tj.asarray([1.0, 4.0])).numpy(), [3.0, 4.0])
