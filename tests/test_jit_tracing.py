"""Tracing and the trace cache: re-trace only on new signatures, static args, pytrees, captures."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj

# tests count traces through a closure list the traced function appends to: jit warns about that
pytestmark = pytest.mark.filterwarnings("ignore:jit.*changed Python state")


def counting(fn, backend, **kw):
    calls = []

    @functools.wraps(fn)   # keeps the signature, so static_argnames map to positions
    def wrapped(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)
    return jitted(wrapped, backend, **kw), calls


def test_same_signature_does_not_retrace(rng, jit_backend):
    f, calls = counting(lambda x, y: x * y + 1, jit_backend)
    for _ in range(3):
        a, b = rng.standard_normal((3, 4)), rng.standard_normal((4,))
        assert_close(f(tj.asarray(a), tj.asarray(b)), a * b + 1)
    assert f.cache_info()["traces"] == 1 and len(calls) == 1
    assert f.cache_info()["hits"] == 2


def test_new_shape_or_dtype_retraces(jit_backend):
    f, _ = counting(lambda x: x * 2, jit_backend)
    f(tj.zeros((2, 3)))
    f(tj.zeros((5, 3)))
    f(tj.zeros((5, 3), dtype=tj.float64))
    f(tj.zeros((5, 3)))
    assert f.cache_info()["traces"] == 3


def test_static_args_keyed_by_value(rng, jit_backend):
    f, calls = counting(lambda x, n, mode="add": x + n if mode == "add" else x * n, jit_backend,
                        static_argnames=("n", "mode"))
    a = rng.standard_normal(3)
    assert_close(f(tj.asarray(a), 2), a + 2)
    assert_close(f(tj.asarray(a), 2), a + 2)
    assert_close(f(tj.asarray(a), 3), a + 3)
    assert_close(f(tj.asarray(a), 3, mode="mul"), a * 3)
    assert_close(f(tj.asarray(a), 3, mode="mul"), a * 3)
    assert len(calls) == 3
    assert_close(f(tj.asarray(a), n=5), a + 5)          # a static name passed by keyword


def test_python_scalars_are_traced_not_baked_in(jit_backend):
    f, calls = counting(lambda x, s: x * s, jit_backend)
    assert_close(f(tj.ones(2), 2.0), [2.0, 2.0])
    assert_close(f(tj.ones(2), 5.0), [5.0, 5.0])
    assert len(calls) == 1


class Pair(NamedTuple):
    a: tj.Tensor
    b: tj.Tensor


@dataclass
class Params:
    w: tj.Tensor
    scale: tj.Tensor


def test_pytrees_never_mix_up_arguments(rng, jit_backend):
    f, calls = counting(lambda t: t["x"] - t["y"][0] * t["y"][1], jit_backend)
    x, y0, y1 = (rng.standard_normal(3) for _ in range(3))
    assert_close(f({"x": tj.asarray(x), "y": (tj.asarray(y0), tj.asarray(y1))}), x - y0 * y1)
    assert_close(f({"y": (tj.asarray(y1), tj.asarray(y0)), "x": tj.asarray(x)}), x - y1 * y0)
    assert len(calls) == 1
    assert_close(f({"x": tj.asarray(x), "y": [tj.asarray(y0), tj.asarray(y1)]}), x - y0 * y1)
    assert len(calls) == 2                       # list vs tuple is a different structure
    g = jitted(lambda p, q: (p.a - p.b, Pair(q.w * q.scale, p.a)), jit_backend)
    out = g(Pair(tj.asarray(x), tj.asarray(y0)), Params(tj.asarray(y1), tj.asarray(2.0)))
    assert isinstance(out[1], Pair)
    assert_close(out[0], x - y0)
    assert_close(out[1].a, y1 * 2)
    assert_close(out[1].b, x)


def test_outputs_keep_structure_and_python_values(jit_backend):
    f = jitted(lambda x: {"y": x + 1, "n": 3, "none": None}, jit_backend)
    out = f(tj.zeros(2))
    assert out["n"] == 3 and out["none"] is None
    assert_close(out["y"], np.ones(2))


def test_captured_tensors_are_read_at_call_time(jit_backend):
    w = tj.asarray(np.ones(3, np.float32))
    f = jitted(lambda x: x * w, jit_backend)
    assert_close(f(tj.ones(3)), np.ones(3))
    w[...] = 4.0                                  # updated in place: the next call sees it
    assert_close(f(tj.ones(3)), np.full(3, 4.0))
    assert f.cache_info()["traces"] == 1


def test_inplace_updates_written_back(jit_backend):
    state = tj.zeros(3)

    def step(p, g):
        p -= 0.5 * g
        state[...] = p
        return p.sum()
    p = tj.ones(3)
    f = jitted(step, jit_backend)
    f(p, tj.ones(3))
    out = f(p, tj.ones(3))
    assert_close(p, np.zeros(3))
    assert_close(state, np.zeros(3))
    assert_close(out, np.array(0.0))


def test_nested_jit_inlines(rng, jit_backend):
    inner = jitted(lambda x: tj.exp(x), jit_backend)
    outer = jitted(lambda x: inner(x) + 1, jit_backend)
    a = rng.standard_normal(4)
    assert_close(outer(tj.asarray(a)), np.exp(a) + 1)
    assert inner.cache_info()["traces"] == 0


def test_numpy_arrays_as_arguments(rng, jit_backend):
    a = rng.standard_normal((2, 3))
    f = jitted(lambda x: x * 2, jit_backend)
    assert_close(f(a), a * 2)
    assert_close(f(tj.asarray(a)), a * 2)
    assert f.cache_info()["traces"] == 1        # same shape/dtype/device: one entry


def test_single_result_tensor_describes_its_array():
    """A jitted call's single result is built from the traced aval (no per-call inspection):
    its shape and dtype must be those of the array it holds, views and scalars included."""
    x = tj.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    for fn in (lambda a: a * 2, lambda a: a.sum(), lambda a: a.T, lambda a: a[1], lambda a: a > 3,
               lambda a: tj.astype(a, tj.int64)[:, ::2], lambda a: a.reshape(2, 6) @ a.reshape(6, 2)):
        out = tj.jit(fn)(x)
        value = out._value
        assert out.shape == value.shape and out.dtype == value.dtype
        np.testing.assert_array_equal(value, np.asarray(fn(x)))
