"""Type promotion: the standard's table for every pair of our dtypes, weak Python scalars,
result_type and can_cast."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import tracejit as tj

B, I8, I16, I32, I64, U8 = tj.bool, tj.int8, tj.int16, tj.int32, tj.int64, tj.uint8
F16, F32, F64 = tj.float16, tj.float32, tj.float64
DTYPES = [B, I8, I16, I32, I64, U8, F16, F32, F64]

# the Array API standard's promotion table (same-kind pairs)
STANDARD = {
    (I8, I16): I16, (I8, I32): I32, (I8, I64): I64, (I16, I32): I32, (I16, I64): I64, (I32, I64): I64,
    (U8, I8): I16, (U8, I16): I16, (U8, I32): I32, (U8, I64): I64, (F16, F32): F32, (F16, F64): F64,
    (F32, F64): F64,
}


def expected_promotion(a, b):
    """The standard within a kind; across kinds (left to implementations) tracejit follows PyTorch:
    bool takes the other type, an integer with a float takes the float."""
    if a == b:
        return a
    if (a, b) in STANDARD or (b, a) in STANDARD:
        return STANDARD.get((a, b)) or STANDARD[(b, a)]
    if a == B or b == B:
        return b if a == B else a
    return a if a.kind == "f" else b


@pytest.mark.parametrize("a,b", list(itertools.product(DTYPES, DTYPES)), ids=str)
def test_promotion_table(a, b):
    want = expected_promotion(a, b)
    assert tj.result_type(a, b) == want
    x, y = tj.ones((2,), dtype=a), tj.ones((3, 1), dtype=b)
    if a == B and b == B:
        assert tj.logical_and(x, y).dtype == want
    else:
        assert (x + y).dtype == want
        assert (x + y).shape == (3, 2)
    assert tj.can_cast(a, b) == (want == b)


@pytest.mark.parametrize("dtype,scalar,want", [
    (I8, 1, I8), (U8, 200, U8), (I16, True, I16), (F16, 2.0, F16), (F32, 2, F32), (F64, 0.5, F64),
    (I32, 1.5, F32), (B, 1, I64), (B, 1.5, F32), (B, True, B),
])
def test_weak_python_scalars(dtype, scalar, want):
    x = tj.ones((2,), dtype=dtype)
    assert tj.result_type(x, scalar) == want
    if dtype == B and isinstance(scalar, bool):
        assert (x & scalar).dtype == want
    else:
        assert (x * scalar).dtype == want
        assert (scalar * x).dtype == want


def test_scalar_out_of_range_and_result_type_errors():
    with pytest.raises(OverflowError, match="1000 out of bounds for int8"):
        tj.ones((2,), dtype=tj.int8) + 1000
    with pytest.raises(ValueError, match="at least one"):
        tj.result_type()
    assert tj.result_type(1, 2.0) == tj.float32
    assert tj.result_type(tj.ones(2, dtype=tj.int16), tj.int8, 3) == tj.int16


def test_can_cast_and_astype():
    assert tj.can_cast(tj.int8, tj.int64) and not tj.can_cast(tj.int64, tj.int8)
    assert tj.can_cast(tj.zeros(2, dtype=tj.float16), tj.float32)
    assert not tj.can_cast(tj.float64, tj.float32)
    x = tj.asarray([1.7, -2.2])
    assert tj.astype(x, tj.int32).tolist() == [1, -2]
    assert tj.astype(x, tj.bool).dtype == tj.bool


def test_isdtype_finfo_iinfo():
    assert tj.isdtype(tj.float32, "real floating") and tj.isdtype(tj.uint8, ("bool", "integral"))
    assert not tj.isdtype(tj.int8, "unsigned integer")
    assert tj.finfo(tj.float32).eps == np.finfo(np.float32).eps
    assert tj.iinfo(tj.int8).min == -128
    with pytest.raises(TypeError, match="unsupported data type"):
        tj.zeros(2, dtype=np.dtype("datetime64[s]"))
