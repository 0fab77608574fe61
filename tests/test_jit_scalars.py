"""Python scalars passed to a jitted function are traced as weakly typed 0-d values."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj


@pytest.mark.parametrize("dtype,scalar", [(tj.float16, 2.5), (tj.float32, 2.5), (tj.int8, 3), (tj.float64, 7),
                                          (tj.int32, True)])
def test_scalar_argument_promotes_like_a_python_scalar(dtype, scalar, jit_backend):
    x = tj.asarray(np.arange(4), dtype=dtype)
    f = jitted(lambda x, s: x * s + s, jit_backend)
    out = f(x, scalar)
    eager = x * scalar + scalar
    assert out.dtype == eager.dtype
    assert_close(out, np.asarray(eager))


def test_new_scalar_value_does_not_retrace(jit_backend):
    x = tj.asarray(np.linspace(0, 1, 5, dtype=np.float32))
    f = jitted(lambda x, s: tj.exp(x * s), jit_backend)
    for s in (0.5, 1.5, -2.0):
        assert_close(f(x, s), np.exp(np.asarray(x, np.float64) * s), rtol=1e-6)
    assert f.cache_info()["traces"] == 1
    f(x, 3)                                   # an int is another signature
    assert f.cache_info()["traces"] == 2


def test_scalar_only_arguments_use_default_dtypes(jit_backend):
    f = jitted(lambda a, b: a * b, jit_backend)
    assert f(2.0, 3.0).dtype == tj.float32 and float(f(2.0, 3.0)) == 6.0
    assert f(2, 3).dtype == tj.int64
