"""Generated PTX kernels and the CUDA runtime on a real GPU, checked against NumPy."""
from __future__ import annotations

import numpy as np
import pytest

from runtime import cuda

if not cuda.is_available():
    pytest.skip(f"needs an NVIDIA GPU: {cuda.unavailable_reason()}", allow_module_level=True)

from codegen.kir import Acc, Const, Index, Kernel, Load, Op, Operand, Reduce, Store  # noqa: E402
from runtime.cuda import DeviceArray  # noqa: E402
from runtime.program import Extern, Launch, Program, View  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def dev():
    return cuda.device()


def upload(dev, a: np.ndarray) -> DeviceArray:
    a = np.ascontiguousarray(a)
    strides = tuple(s // a.itemsize for s in a.strides)
    return DeviceArray(dev.to_device(a), 0, strides, a.shape, str(a.dtype))


def empty(dev, shape, dtype) -> DeviceArray:
    n = int(np.prod(shape))
    strides = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    return DeviceArray(dev.empty(n * np.dtype(dtype).itemsize), 0, strides, tuple(shape), dtype)


def iter_view(arr: DeviceArray, strides) -> DeviceArray:
    return DeviceArray(arr.buffer, arr.offset, tuple(strides), arr.shape, arr.dtype)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int8"])
@pytest.mark.parametrize("n", [1, 7, 1000, 4099])
def test_elementwise_broadcast_add(dev, dtype, n):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, n)) * 10).astype(dtype)
    b = (rng.standard_normal((n,)) * 10).astype(dtype)
    k = Kernel("add", 2, 0, (Operand(dtype, ("s", "c")), Operand(dtype, ("b", "c"))),
               (Operand(dtype, ("s", "c")),), (Store(0, Op("add", (Load(0), Load(1)), dtype)),))
    dx, db, out = upload(dev, x), upload(dev, b), empty(dev, (3, n), dtype)
    dev.launch_kernel(k, (3, n), [dx, iter_view(db, (0, 1))], [out])
    np.testing.assert_array_equal(dev.array_to_host(out), x + b)


def test_elementwise_misaligned_and_transposed(dev):
    f = "float32"
    x = np.arange(64 * 33, dtype=np.float32).reshape(64, 33)
    k = Kernel("t", 2, 0, (Operand(f, ("s", "s")),), (Operand(f, ("s", "c")),),
               (Store(0, Op("mul", (Load(0), Const(2.0, f)), f)),))
    dx = upload(dev, x)
    out = empty(dev, (33, 63), f)
    # transposed read of x[1:, :] (offset 33 elements), contiguous write
    src = DeviceArray(dx.buffer, 33, (1, 33), (33, 63), f)
    dev.launch_kernel(k, (33, 63), [src], [out])
    np.testing.assert_array_equal(dev.array_to_host(out), x[1:].T * 2)


def test_transcendentals_and_index(dev):
    f = "float32"
    x = np.linspace(-3, 3, 1001, dtype=np.float32)
    body = Op("add", (Op("tanh", (Load(0),), f), Op("cast", (Index(0),), f)), f)
    k = Kernel("tanh", 1, 0, (Operand(f, ("c",)),), (Operand(f, ("c",)),), (Store(0, body),))
    out = empty(dev, x.shape, f)
    dev.launch_kernel(k, x.shape, [upload(dev, x)], [out])
    np.testing.assert_allclose(dev.array_to_host(out), np.tanh(x) + np.arange(x.size), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(5, 3), (64, 1000), (3, 100000), (1, 1)])
def test_softmax_one_kernel(dev, shape):
    f = "float32"
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 5
    e = Op("exp", (Op("sub", (Load(0), Acc(0)), f),), f)
    k = Kernel("softmax", 2, 1, (Operand(f, ("s", "c")),), (Operand(f, ("s", "c")),),
               (Reduce("max", Load(0), f), Reduce("sum", e, f), Store(0, Op("div", (e, Acc(1)), f), True)))
    out = empty(dev, shape, f)
    dev.launch_kernel(k, shape, [upload(dev, x)], [out])
    ref = np.exp(x - x.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(dev.array_to_host(out), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("op", ["sum", "prod", "max", "min", "argmax", "argmin"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint8", "float16"])
def test_row_and_column_reductions(dev, op, dtype):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, (37, 300)).astype(dtype) if op == "prod" else \
        (rng.standard_normal((37, 300)) * 20).astype(dtype)
    if op == "prod":
        x = np.where(x == 0, 1, x)[:, :8].copy()
    acc = "int64" if op.startswith("arg") else dtype
    ref_fn = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min,
              "argmax": np.argmax, "argmin": np.argmin}[op]
    for axis in (1, 0):
        outer = x.shape[1 - axis]
        k = Kernel(op, 2, 1, (Operand(dtype, ("c", "s") if axis == 0 else ("s", "c")),),
                   (Operand(acc, ("c", "b")),), (Reduce(op, Load(0), acc), Store(0, Acc(0))))
        dx = upload(dev, x)
        view = iter_view(dx, (1, x.shape[1]) if axis == 0 else (x.shape[1], 1))
        out = empty(dev, (outer,), acc)
        dev.launch_kernel(k, (outer, x.shape[axis]), [view], [iter_view(out, (1, 0))])
        got, ref = dev.array_to_host(out), np.asarray(ref_fn(x, axis=axis))
        if dtype.startswith("float") and op in ("sum", "prod"):
            # the block folds in another order than NumPy
            rtol = 5e-2 if dtype == "float16" else 1e-5
            ref64 = ref.astype(np.float64)
            np.testing.assert_allclose(got.astype(np.float64), ref64, rtol=rtol,
                                       atol=rtol * np.abs(ref64).max())
        else:
            np.testing.assert_array_equal(got, ref.astype(acc))   # integer sums wrap like the dtype


def test_argmax_first_occurrence_and_nan(dev):
    x = np.array([[1, 3, 3, 2], [np.nan, 1, np.nan, 5], [2, 2, 2, 2]], dtype=np.float32)
    k = Kernel("am", 2, 1, (Operand("float32", ("s", "c")),), (Operand("int64", ("c", "b")),),
               (Reduce("argmax", Load(0), "int64"), Store(0, Acc(0))))
    out = empty(dev, (3,), "int64")
    dev.launch_kernel(k, x.shape, [upload(dev, x)], [iter_view(out, (1, 0))])
    np.testing.assert_array_equal(dev.array_to_host(out), np.argmax(x, axis=1))


def test_program_with_matmul_extern_and_writeback(dev):
    f = "float32"
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((33, 65)).astype(f), rng.standard_normal((65, 17)).astype(f)
    relu = Kernel("relu", 2, 0, (Operand(f, ("s", "c")),), (Operand(f, ("s", "c")),),
                  (Store(0, Op("max", (Load(0), Const(0.0, f)), f)),))
    prog = Program(
        n_inputs=2, slot_nbytes=[a.nbytes, b.nbytes, 33 * 17 * 4, 33 * 17 * 4], slot_dtypes=[f] * 4,
        constants={},
        steps=[Extern("matmul", (View(0, 0, (65, 1)), View(1, 0, (17, 1))), (View(2, 0, (17, 1)),),
                      ((33, 65), (65, 17), (33, 17)), f),
               Launch(relu, (33, 17), (View(2, 0, (17, 1)),), (View(3, 0, (17, 1)),))],
        outputs=[(View(3, 0, (17, 1)), (33, 17), f)])
    res, = dev.run_program(prog, [dev.to_device(a), dev.to_device(b)])
    np.testing.assert_allclose(dev.array_to_host(res), np.maximum(a @ b, 0), rtol=1e-4, atol=1e-4)


def test_allocator_reuses_device_memory(dev):
    before = dev.memory_stats()["num_allocs"]
    for _ in range(10):
        buf = dev.empty(12345)
        del buf
    assert dev.memory_stats()["num_allocs"] <= before + 1


def test_events_time_a_kernel(dev):
    start = dev.event()
    dev.to_device(np.zeros(1 << 20, np.float32))
    end = dev.event()
    end.synchronize()
    assert end.time_since(start) >= 0.0
    cuda.synchronize()
