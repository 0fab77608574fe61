"""Shared fixtures: a fresh random generator per test, dtype-aware closeness, jit backends."""
from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tracejit as tj

# Every jit-vs-eager comparison runs on each backend: the reference interpreter and the compiler.
JIT_BACKENDS = ["interpret", "llvm"]

# (rtol, atol) per result dtype, against a float64 reference computed from the same inputs.
TOLERANCES = {
    np.dtype("float16"): (5e-3, 5e-3),
    np.dtype("float32"): (2e-5, 1e-6),
    np.dtype("float64"): (1e-12, 1e-14),
}


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator with a fresh seed each test; the seed is printed so a failure can be replayed."""
    seed = secrets.randbits(32)
    print(f"rng seed: {seed}")
    return np.random.default_rng(seed)


@pytest.fixture(params=JIT_BACKENDS)
def jit_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def jitted(fn: Callable, backend: str, **kwargs: Any) -> Any:
    """``tj.jit(fn)`` on the given backend: the one place tests pick a backend."""
    return tj.jit(fn, backend=backend, **kwargs)


def to_numpy(x: Any) -> Any:
    if isinstance(x, (tuple, list)):
        return type(x)(to_numpy(v) for v in x)
    return np.asarray(x) if isinstance(x, tj.Tensor) else x


def assert_close(actual: Any, expected: Any, rtol: float | None = None, atol: float | None = None,
                 dtype: Any = None) -> None:
    """``actual`` (a tensor) matches ``expected`` (ideally a float64 reference) in shape and value.

    Tolerances default to ``TOLERANCES`` for the result's dtype (exact for ints and bools);
    NaNs must be in the same places; ``dtype`` additionally checks the result dtype.
    """
    a = np.asarray(actual)
    e = np.asarray(expected)
    if dtype is not None:
        assert a.dtype == np.dtype(dtype), f"dtype {a.dtype} != expected {np.dtype(dtype)}"
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    if a.dtype.kind in "fc":
        r, t = TOLERANCES.get(a.dtype, (1e-6, 1e-6))
        np.testing.assert_allclose(a.astype(np.float64), e.astype(np.float64),
                                   rtol=r if rtol is None else rtol, atol=t if atol is None else atol,
                                   equal_nan=True)
    else:
        np.testing.assert_array_equal(a, e)
