"""Convolution, pooling and normalization on the simulated GPU (every kernel assembled by ptxas,
then run by the CPU code generator): a jitted CNN training step on ``cuda`` gives the CPU's
gradients, and a module moved with ``.to("cuda")`` keeps its batch-norm buffers there."""
from __future__ import annotations

import numpy as np
import pytest
from simulated_cuda import installed

import tracejit as tj
from tracejit import eager_device

F, nn = tj.nn.functional, tj.nn


@pytest.fixture
def gpu():
    eager_device.cache_clear()
    with installed() as dev:
        yield dev
    eager_device.cache_clear()


def loss_fn(x, w1, b1, w2, gamma, beta, y):
    h = F.max_pool2d(F.relu(F.conv2d(x, w1, b1, padding=1)), 2)
    h = F.batch_norm(F.conv2d(h, w2, stride=2, groups=2), None, None, gamma, beta, training=True)
    logits = F.adaptive_avg_pool2d(F.relu(h), 1).reshape(h.shape[0], -1)
    return F.cross_entropy(logits, y)


def test_jitted_cnn_gradients_on_the_device_equal_the_cpu(gpu):
    rng = np.random.default_rng(0)
    shapes = [(4, 3, 10, 10), (8, 3, 3, 3), (8,), (8, 4, 3, 3)]
    host = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    host += [np.ones(8, np.float32), np.zeros(8, np.float32), rng.integers(0, 8, 4)]
    grad = tj.jit(tj.grad(loss_fn, argnums=(1, 2, 3, 4, 5)))
    want = [np.asarray(g) for g in tj.grad(loss_fn, argnums=(1, 2, 3, 4, 5))(*map(tj.asarray, host))]
    got = grad(*(tj.asarray(a, device="cuda") for a in host))
    for g, w in zip(got, want):
        assert g.device.type == "cuda"
        np.testing.assert_allclose(np.asarray(g.to("cpu")), w, rtol=1e-4, atol=1e-5)


def test_batch_norm_module_trains_on_the_device(gpu):
    bn = nn.BatchNorm2d(3).to("cuda")
    x = np.random.default_rng(1).standard_normal((4, 3, 5, 5)).astype(np.float32)
    y = tj.jit(lambda x: bn(x))(tj.asarray(x, device="cuda"))
    assert y.device.type == "cuda" and bn.running_mean.device.type == "cuda"
    np.testing.assert_allclose(np.asarray(bn.running_mean.to("cpu")), 0.1 * x.mean(axis=(0, 2, 3)), atol=1e-6)
