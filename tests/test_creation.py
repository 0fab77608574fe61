"""Creation functions and the namespace's inspection info."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj


@pytest.mark.parametrize("args,kw,ref", [
    ((5,), {}, np.arange(5)), ((1, 7, 2), {}, np.arange(1, 7, 2)),
    ((0.0, 1.0, 0.25), {}, np.arange(0, 1, 0.25)), ((5, 0, -2), {}, np.arange(5, 0, -2)),
    ((3,), {"dtype": tj.float64}, np.arange(3.0)), ((0,), {}, np.arange(0)),
])
def test_arange(args, kw, ref):
    out = tj.arange(*args, **kw)
    assert_close(out, ref.astype(out.dtype))
    assert out.dtype == (kw.get("dtype") or (tj.float32 if ref.dtype.kind == "f" else tj.int64))


def test_fill_functions():
    assert_close(tj.zeros((2, 3)), np.zeros((2, 3)), dtype="float32")
    assert_close(tj.ones(4, dtype=tj.int8), np.ones(4), dtype="int8")
    assert_close(tj.full((2,), 7), np.full(2, 7), dtype="int64")
    assert_close(tj.full((2,), True), np.full(2, True), dtype="bool")
    assert_close(tj.full((), 1.5), np.array(1.5), dtype="float32")
    assert tj.empty((0, 3)).shape == (0, 3)
    x = tj.asarray(np.arange(6).reshape(2, 3))
    for fn, ref in [(tj.zeros_like, np.zeros_like), (tj.ones_like, np.ones_like)]:
        assert_close(fn(x), ref(np.asarray(x)), dtype="int64")
    assert tj.empty_like(x, dtype=tj.float16).dtype == tj.float16
    assert_close(tj.full_like(x, 3), np.full((2, 3), 3))
    with pytest.raises(ValueError, match="negative dimensions"):
        tj.zeros((2, -1))


def test_linspace_eye_tri(rng, jit_backend):
    assert_close(tj.linspace(0, 1, 5), np.linspace(0, 1, 5))
    assert_close(tj.linspace(0, 1, 4, endpoint=False), np.linspace(0, 1, 4, endpoint=False))
    assert_close(tj.eye(3, 4, k=1), np.eye(3, 4, k=1))
    a = rng.standard_normal((4, 5))
    for k in (-1, 0, 2):
        assert_close(tj.tril(tj.asarray(a), k=k), np.tril(a, k))
        assert_close(tj.triu(tj.asarray(a), k=k), np.triu(a, k))
        assert_close(jitted(lambda x, k=k: tj.triu(x, k=k), jit_backend)(tj.asarray(a)), np.triu(a, k))


def test_meshgrid():
    x, y = np.arange(3), np.arange(4)
    for indexing in ("xy", "ij"):
        for got, want in zip(tj.meshgrid(tj.asarray(x), tj.asarray(y), indexing=indexing),
                             np.meshgrid(x, y, indexing=indexing)):
            assert_close(got, want)


def test_asarray_dtypes_and_copies():
    assert tj.asarray([1, 2]).dtype == tj.int64
    assert tj.asarray([1.0, 2]).dtype == tj.float32
    assert tj.asarray([True]).dtype == tj.bool
    assert tj.asarray(np.float64(1.0)).dtype == tj.float64
    assert tj.asarray([[1, 2], [3, 4]], dtype=tj.float16).dtype == tj.float16
    src = np.arange(3.0)
    shared, copied = tj.asarray(src), tj.asarray(src, copy=True)
    src[0] = 9
    assert shared.tolist()[0] == 9 and copied.tolist()[0] == 0
    with pytest.raises(ValueError, match="copy=False"):
        tj.asarray(src, dtype=tj.float32, copy=False)
    with pytest.raises(OverflowError, match="int8"):
        tj.asarray(np.array([300]), dtype=tj.int8)
    with pytest.raises(TypeError, match="cannot make a tensor"):
        tj.asarray(["a"])


def test_dlpack_roundtrip():
    a = np.arange(6.0).reshape(2, 3)
    t = tj.from_dlpack(a)
    assert_close(t, a)
    assert_close(np.from_dlpack(t), a)
    assert t.__dlpack_device__() == (1, 0)


def test_namespace_info():
    info = tj.__array_namespace_info__()
    caps = info.capabilities()
    assert caps["boolean indexing"] is True and caps["data-dependent shapes"] is True
    assert info.default_device() == "cpu"
    assert "cpu" in [str(d) for d in info.devices()]
    defaults = info.default_dtypes()
    assert defaults["real floating"] == tj.float32 and defaults["integral"] == tj.int64
    assert defaults["indexing"] == tj.int64
    # the standard's dtypes (float16 works, but is not one of them)
    assert set(info.dtypes()) == {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                                  "uint64", "float32", "float64", "complex64", "complex128"}
    assert set(info.dtypes(kind="real floating")) == {"float32", "float64"}
    assert set(info.dtypes(kind=("bool", "unsigned integer"))) == {"bool", "uint8", "uint16", "uint32",
                                                                   "uint64"}
    assert set(info.dtypes(kind="complex floating")) == {"complex64", "complex128"}
    assert defaults["complex floating"] == tj.complex64
    with pytest.raises(ValueError, match="unknown dtype kind"):
        info.dtypes(kind="complex")
    assert tj.asarray(1.0).__array_namespace__() is tj
