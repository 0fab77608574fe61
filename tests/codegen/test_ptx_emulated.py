"""The GPU kernels' IR executed on the CPU by the thread emulator, checked against NumPy."""
from __future__ import annotations

import numpy as np
import pytest
from ptx_emulator import emulate

from codegen import ptx
from codegen.kir import Acc, Const, Index, Kernel, Load, Op, Operand, Reduce, Store


def strides_of(a: np.ndarray) -> tuple[int, ...]:
    return tuple(s // a.itemsize for s in a.strides)


def _math_ok() -> bool:
    f = "float32"
    c = Operand(f, ("c",))
    try:
        ptx.lower_to_llvm(Kernel("probe", 1, 0, (c,), (c,), (Store(0, Op("exp", (Load(0),), f)),)))
    except (ImportError, AttributeError, NotImplementedError):
        return False
    return True


def row_reduce(op: str, dtype: str, acc: str) -> Kernel:
    return Kernel(op, 2, 1, (Operand(dtype, ("s", "c")),), (Operand(acc, ("c", "b")),),
                  (Reduce(op, Load(0), acc), Store(0, Acc(0))))


@pytest.mark.parametrize("op,dtype", [("sum", "int32"), ("sum", "float64"), ("max", "float32"),
                                      ("min", "uint8"), ("max", "int8"), ("prod", "int64"),
                                      ("max", "bool"), ("argmin", "int16"), ("argmax", "float64")])
def test_row_reductions(op, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 45)) * 50).astype(dtype)
    if op == "prod":
        x = rng.integers(-3, 4, (4, 45)).astype(dtype)
    acc = "int64" if op.startswith("arg") else dtype
    out = np.zeros(4, acc)
    emulate(row_reduce(op, dtype, acc), x.shape, [(x, 0, strides_of(x)), (out, 0, (1, 0))])
    ref = getattr(np, op)(x, axis=1)
    if dtype.startswith("float") and op == "sum":
        np.testing.assert_allclose(out, ref, rtol=1e-12)      # another summation order
    else:
        np.testing.assert_array_equal(out, ref.astype(acc))


def test_argmax_ties_and_nans_follow_numpy():
    x = np.full((3, 70), 1.0, np.float32)
    x[0, [5, 40, 66]] = 7.0
    x[1, [33, 64]] = np.nan
    x[2, :] = -np.inf
    out = np.zeros(3, np.int64)
    emulate(row_reduce("argmax", "float32", "int64"), x.shape, [(x, 0, strides_of(x)), (out, 0, (1, 0))])
    np.testing.assert_array_equal(out, np.argmax(x, axis=1))
    emulate(row_reduce("argmin", "float32", "int64"), x.shape, [(x, 0, strides_of(x)), (out, 0, (1, 0))])
    np.testing.assert_array_equal(out, np.argmin(x, axis=1))


def test_max_propagates_nan():
    x = np.arange(6 * 40, dtype=np.float32).reshape(6, 40)
    x[2, 17] = np.nan
    out = np.zeros(6, np.float32)
    emulate(row_reduce("max", "float32", "float32"), x.shape, [(x, 0, strides_of(x)), (out, 0, (1, 0))])
    np.testing.assert_array_equal(out, x.max(axis=1))


def test_column_and_multi_dim_reductions():
    x = np.random.default_rng(1).standard_normal((2, 9, 7)).astype(np.float64)
    # outer = last dim, reduce over dims 0 and 1 (strided)
    k = Kernel("colsum", 3, 2, (Operand("float64", ("c", "s", "s")),), (Operand("float64", ("c", "b", "b")),),
               (Reduce("sum", Load(0), "float64"), Store(0, Acc(0))))
    out = np.zeros(7)
    st = strides_of(x)
    emulate(k, (7, 2, 9), [(x, 0, (st[2], st[0], st[1])), (out, 0, (1, 0, 0))])
    np.testing.assert_allclose(out, x.sum(axis=(0, 1)))
    full = Kernel("full", 2, 2, (Operand("float64", ("s", "c")),), (Operand("float64", ("b", "b")),),
                  (Reduce("min", Load(0), "float64"), Store(0, Acc(0))))
    y, res = x.reshape(14, 9), np.zeros(1)
    emulate(full, y.shape, [(y, 0, strides_of(y)), (res, 0, (0, 0))])
    assert res[0] == y.min()


@pytest.mark.skipif(not _math_ok(), reason="transcendental lowering (codegen.mathlib) unavailable")
def test_softmax_single_kernel():
    f = "float32"
    x = (np.random.default_rng(2).standard_normal((5, 50)) * 4).astype(np.float32)
    e = Op("exp", (Op("sub", (Load(0), Acc(0)), f),), f)
    k = Kernel("softmax", 2, 1, (Operand(f, ("s", "c")),), (Operand(f, ("s", "c")),),
               (Reduce("max", Load(0), f), Reduce("sum", e, f), Store(0, Op("div", (e, Acc(1)), f), True)))
    out = np.zeros_like(x)
    emulate(k, x.shape, [(x, 0, strides_of(x)), (out, 0, strides_of(out))])
    ref = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(out, ref / ref.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_layernorm_single_kernel_with_two_outputs():
    f = "float32"
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 40)).astype(np.float32) * 3 + 1
    w, b = rng.standard_normal(40).astype(np.float32), rng.standard_normal(40).astype(np.float32)
    n = np.array([40.0], np.float32)
    mean = Op("div", (Acc(0), Load(3)), f)
    d = Op("sub", (Load(0), mean), f)
    inv = Op("rsqrt", (Op("add", (Op("div", (Acc(1), Load(3)), f), Const(1e-5, f)), f),), f)
    y = Op("add", (Op("mul", (Op("mul", (d, inv), f), Load(1)), f), Load(2)), f)
    k = Kernel("layernorm", 2, 1,
               (Operand(f, ("s", "c")), Operand(f, ("b", "c")), Operand(f, ("b", "c")),
                Operand(f, ("b", "b"))),
               (Operand(f, ("s", "c")), Operand(f, ("c", "b"))),
               (Reduce("sum", Load(0), f), Reduce("sum", Op("square", (d,), f), f), Store(0, y, True),
                Store(1, mean)))
    out, means = np.zeros_like(x), np.zeros(3, np.float32)
    emulate(k, x.shape, [(x, 0, strides_of(x)), (w, 0, (0, 1)), (b, 0, (0, 1)), (n, 0, (0, 0)),
                         (out, 0, strides_of(out)), (means, 0, (1, 0))])
    mu = x.mean(1, keepdims=True)
    ref = (x - mu) / np.sqrt(x.var(1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(means, mu[:, 0], rtol=1e-6)


@pytest.mark.parametrize("offset", [0, 1])     # 1: misaligned, so the per-element path runs
@pytest.mark.parametrize("n", [13, 64])
def test_elementwise_vector_and_scalar_paths(offset, n):
    f = "float32"
    rng = np.random.default_rng(4)
    base = rng.standard_normal(3 * n + 1).astype(np.float32)
    x = base[offset:offset + 3 * n].reshape(3, n)
    bias = rng.standard_normal(n).astype(np.float32)
    body = Op("add", (Op("mul", (Load(0), Load(1)), f), Op("cast", (Index(1),), f)), f)
    k = Kernel("ew", 2, 0, (Operand(f, ("s", "c")), Operand(f, ("b", "c"))), (Operand(f, ("s", "c")),),
               (Store(0, body),))
    out = np.zeros((3, n), np.float32)
    emulate(k, x.shape, [(base, offset, (n, 1)), (bias, 0, (0, 1)), (out, 0, strides_of(out))], max_blocks=1)
    np.testing.assert_allclose(out, x * bias + np.arange(n, dtype=np.float32), rtol=1e-6)


def test_elementwise_transposed_int_and_bool_outputs():
    x = np.arange(35, dtype=np.int16).reshape(5, 7)
    k = Kernel("t", 2, 0, (Operand("int16", ("s", "s")),),
               (Operand("int16", ("s", "c")), Operand("bool", ("s", "c"))),
               (Store(0, Op("mul", (Load(0), Const(3, "int16")), "int16")),
                Store(1, Op("gt", (Load(0), Const(10, "int16")), "bool"))))
    out, flags = np.zeros((7, 5), np.int16), np.zeros((7, 5), np.bool_)
    emulate(k, (7, 5), [(x, 0, (1, 7)), (out, 0, (5, 1)), (flags, 0, (5, 1))])
    np.testing.assert_array_equal(out, x.T * 3)
    np.testing.assert_array_equal(flags, x.T > 10)


def test_rank0_kernel():
    x, out = np.array(2.5, np.float64), np.zeros((), np.float64)
    k = Kernel("r0", 0, 0, (Operand("float64", ()),), (Operand("float64", ()),),
               (Store(0, Op("square", (Load(0),), "float64")),))
    emulate(k, (), [(x, 0, ()), (out, 0, ())])
    assert out == 6.25
