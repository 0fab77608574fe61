"""The CUDA front end against NumPy: eager ops, jit, in-place updates, memory reuse, errors.

Shared by ``test_cuda_frontend.py`` (a real GPU) and ``test_cuda_simulated.py`` (a stand-in
device that runs the kernels on the CPU); each provides the ``gpu`` fixture, the runtime device.
"""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit import eager_device

F = tj.nn.functional


def on_gpu(a: np.ndarray) -> tj.Tensor:
    return tj.asarray(a, device="cuda")


def close(t: tj.Tensor, expected: np.ndarray, rtol: float = 2e-5, atol: float = 1e-5) -> None:
    assert t.device == "cuda:0", t.device
    a = t.numpy()
    assert a.dtype == np.asarray(expected).dtype, (a.dtype, np.asarray(expected).dtype)
    np.testing.assert_allclose(a, expected, rtol=rtol, atol=atol)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_placement_and_round_trip(gpu, rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    t = on_gpu(x)
    assert t.device == "cuda" and t.shape == (3, 5) and t.dtype == tj.float32
    np.testing.assert_array_equal(t.numpy(), x)
    back = t.to("cpu")
    assert back.device == "cpu"
    np.testing.assert_array_equal(np.asarray(back), x)
    assert tj.zeros((2, 2), device="cuda").device == "cuda:0"
    assert "device='cuda:0'" in repr(t)


def test_eager_elementwise_and_reductions(gpu, rng):
    x = rng.standard_normal((5, 7)).astype(np.float32)
    y = rng.standard_normal((5, 7)).astype(np.float32)
    tx, ty = on_gpu(x), on_gpu(y)
    close(tj.exp(tx) * 2 + tx.sum(axis=1, keepdims=True), np.exp(x) * 2 + x.sum(axis=1, keepdims=True),
          rtol=1e-5)
    close(tj.maximum(tx, ty) - tj.tanh(ty) / 3, np.maximum(x, y) - np.tanh(y) / 3)
    close(tj.where(tx > ty, tx, 0.5), np.where(x > y, x, np.float32(0.5)))
    close(tj.mean(tx, axis=0), x.mean(axis=0))
    close(tj.max(tx), np.max(x))
    close(tj.argmax(tx, axis=1), np.argmax(x, axis=1))
    i = rng.integers(-50, 50, (4, 6)).astype(np.int32)
    close(on_gpu(i) * 3 // 2 + 1, i * 3 // 2 + 1)
    close(on_gpu(x).astype(tj.float64) ** 2, x.astype(np.float64) ** 2)
    close(F.softmax(tx, axis=-1), np.exp(x) / np.exp(x).sum(-1, keepdims=True), rtol=1e-5)


def test_eager_views_matmul_and_host_ops(gpu, rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    t = on_gpu(x)
    close(t.reshape(3, 8), x.reshape(3, 8))
    close(t.T, x.T)
    close(t[1:, ::2], x[1:, ::2])
    close(t @ on_gpu(w), x @ w, rtol=1e-5)
    close(tj.concat([t, t], axis=0), np.concatenate([x, x]))
    close(tj.sort(t, axis=1), np.sort(x, axis=1))                     # host op: round trip
    close(tj.take(t, on_gpu(np.array([3, 0])), axis=1), x[:, [3, 0]])
    close(tj.cumulative_sum(t, axis=0), np.cumsum(x, axis=0), rtol=1e-5)


def test_in_place_updates(gpu, rng):
    x = rng.standard_normal((4, 4)).astype(np.float32)
    t = on_gpu(x)
    t += 1
    t *= t
    close(t, (x + 1) * (x + 1))


def test_repeated_eager_op_reuses_its_program_and_memory(gpu, rng):
    t = on_gpu(rng.standard_normal((256, 256)).astype(np.float32))
    for _ in range(2):
        (t * 2 + 1).sum()
    programs = len(eager_device._programs)
    allocs = tj.cuda.memory_stats()["num_allocs"]
    for _ in range(5):
        (t * 2 + 1).sum()
    assert len(eager_device._programs) == programs
    assert tj.cuda.memory_stats()["num_allocs"] == allocs      # served from the caching allocator


def test_jit_matches_numpy(gpu, rng):
    x = rng.standard_normal((64, 128)).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)

    def w1(x, b):
        return (tj.tanh(x * 1.5 + b) * 0.5 + 0.5) * tj.exp(-x * x) + tj.sin(x)
    ref = (np.tanh(x * 1.5 + b) * 0.5 + 0.5) * np.exp(-x * x) + np.sin(x)
    close(tj.jit(w1)(on_gpu(x), on_gpu(b)), ref, rtol=1e-5)
    close(tj.jit(lambda x: F.softmax(x, axis=-1))(on_gpu(x)),
          np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    close(tj.jit(lambda x, w, b: F.layer_norm(x, (128,), w, b, 1e-5))(on_gpu(x), on_gpu(b), on_gpu(b)),
          (x - mu) / np.sqrt(var + 1e-5) * b + b, rtol=1e-4, atol=1e-4)
    close(tj.jit(lambda x: tj.sum(x))(on_gpu(x)), x.sum(dtype=np.float64).astype(np.float32), rtol=1e-4)
    close(tj.jit(lambda x: tj.mean(x, axis=0))(on_gpu(x)), x.mean(axis=0))
    w = rng.standard_normal((128, 32)).astype(np.float32)
    c = rng.standard_normal(32).astype(np.float32)
    close(tj.jit(lambda x, w, c: F.relu(x @ w + c))(on_gpu(x), on_gpu(w), on_gpu(c)),
          np.maximum(x @ w + c, 0), rtol=1e-4, atol=1e-4)


def test_jit_in_place_update_writes_back(gpu, rng):
    p = rng.standard_normal(100).astype(np.float32)
    g = rng.standard_normal(100).astype(np.float32)

    @tj.jit
    def step(p, g):
        p -= 0.1 * g
    tp = on_gpu(p)
    step(tp, on_gpu(g))
    step(tp, on_gpu(g))
    close(tp, p - np.float32(0.1) * g - np.float32(0.1) * g)


def test_jit_second_call_allocates_nothing_new(gpu, rng):
    f = tj.jit(lambda x: F.softmax(x * 2, axis=-1))
    t = on_gpu(rng.standard_normal((512, 256)).astype(np.float32))
    f(t), f(t)
    allocs = tj.cuda.memory_stats()["num_allocs"]
    for _ in range(3):
        f(t)
    assert tj.cuda.memory_stats()["num_allocs"] == allocs
    assert f.cache_info()["traces"] == 1


def test_grad_on_gpu(gpu, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    g = tj.grad(lambda x, w: tj.sum(tj.tanh(x) * w))(on_gpu(x), on_gpu(w))
    close(g, (1 - np.tanh(x) ** 2) * w, rtol=1e-5)


def test_mixing_devices_names_both(gpu, rng):
    t = on_gpu(np.ones((2, 3), np.float32))
    c = tj.asarray(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"cuda:0.*cpu|cpu.*cuda:0"):
        t + c
    with pytest.raises(ValueError, match=r"cuda:0.*cpu|cpu.*cuda:0"):
        tj.jit(lambda a, b: a + b)(t, c)


def test_jit_without_arguments_runs_on_its_captured_tensors_device(gpu, rng):
    a = rng.standard_normal((4, 5)).astype(np.float32)
    w = on_gpu(a)
    f = tj.jit(lambda: (w * 2).sum())
    close(f(), np.asarray((w * 2).sum().numpy()), rtol=1e-6)     # as eagerly
    close(f(), (a * 2).sum(dtype=np.float64).astype(np.float32), rtol=1e-5)


def test_jit_reads_a_modules_parameters_on_their_device(gpu):
    tj.manual_seed(1)
    model = tj.nn.Linear(4, 3).to("cuda")
    f = tj.jit(lambda: model.weight @ model.weight.T + model.bias)
    w, b = model.weight.detach().numpy(), model.bias.detach().numpy()
    close(f(), w @ w.T + b, rtol=1e-5)
    model.to("cpu")                     # (in place: the same parameters, now on the host)
    out = f()
    assert out.device == "cpu"
    np.testing.assert_allclose(out.numpy(), w @ w.T + b, rtol=1e-5)


def test_jit_refuses_arguments_and_captured_tensors_on_different_devices(gpu, rng):
    a = rng.standard_normal((2, 3)).astype(np.float32)
    on_device, on_host = on_gpu(a), tj.asarray(a)
    with pytest.raises(ValueError, match=r"cpu \(the arguments\).*cuda:0 \(a captured tensor"):
        tj.jit(lambda x: x + on_device)(on_host)
    with pytest.raises(ValueError, match=r"cuda:0 \(the arguments\).*cpu \(a captured tensor"):
        tj.jit(lambda x: x + on_host)(on_device)
    # a host number is read from the host next to GPU tensors, eagerly and under jit alike
    scale = tj.asarray(np.float32(3.0))
    close(tj.jit(lambda x: x * scale)(on_device), a * np.float32(3.0))
    close(tj.jit(lambda: on_device * scale)(), a * np.float32(3.0))


def test_jit_retraces_when_a_capture_is_rebound_to_another_device(gpu, rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    w = on_gpu(a)
    f = tj.jit(lambda: w * 2)
    close(f(), a * 2)
    w = tj.asarray(a + 1)               # the same name, now a host tensor
    out = f()
    assert out.device == "cpu"
    np.testing.assert_array_equal(out.numpy(), (a + 1) * 2)
    w = on_gpu(a - 1)
    close(f(), (a - 1) * 2)
    assert f.cache_info()["traces"] == 3


def test_namespace(gpu):
    assert tj.cuda.is_available() and tj.cuda.unavailable_reason() is None
    assert tj.cuda.device_count() >= 1
    assert isinstance(tj.cuda.get_device_name(), str)
    tj.cuda.synchronize()
    tj.cuda.empty_cache()
    assert {"allocated", "reserved", "peak"} <= set(tj.cuda.memory_stats())
