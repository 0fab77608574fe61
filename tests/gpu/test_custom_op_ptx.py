"""A custom op with its own PTX kernel on a GPU: launched as that kernel (eagerly and under jit),
never through the host; on the simulated device everywhere, on a real GPU where there is one."""
from __future__ import annotations

import numpy as np
import pytest
from simulated_cuda import installed

import tracejit as tj
from codegen import ptx
from runtime import cuda
from tests.custom_ptx import affine_np, affine_ptx
from tracejit import eager_device

affine = tj.custom_op("t_ptx_affine_gpu", affine_np, ptx=affine_ptx("t_ptx_affine_gpu"))


@pytest.fixture
def gpu(monkeypatch):
    def no_host_trip(*args, **kwargs):
        raise AssertionError("a custom op with a PTX kernel went through the host")
    monkeypatch.setattr(cuda._ProgramRun, "host_extern", no_host_trip)
    monkeypatch.setattr(eager_device, "_on_host", no_host_trip)
    eager_device.cache_clear()         # cached one-op programs hold the previous device
    with installed() as dev:
        yield dev
    eager_device.cache_clear()


def test_jitted_program_launches_the_kernel(gpu, rng):
    a = rng.standard_normal((5, 300)).astype(np.float32)
    x = tj.asarray(a).to("cuda")
    f = tj.jit(lambda x: affine(x * 2.0) + 1.0)
    np.testing.assert_allclose(f(x).numpy(), affine_np(2 * a) + 1, rtol=1e-6)
    ((entry, blocks, args),) = gpu.user_launches
    assert (entry, blocks, args.fmt) == ("t_ptx_affine_gpu", -(-a.size // 256), "PqPq")
    assert args.values[1] == args.values[3] == a.size              # n0, n_out: element counts
    if ptx.ptxas_available():                                        # what a driver would load
        assert affine.ptx_kernel.key in gpu.assembled


def test_eager_op_on_a_strided_gpu_tensor_launches_the_kernel(gpu, rng):
    a = rng.standard_normal((40, 3)).astype(np.float32)
    x = tj.asarray(a).to("cuda").T                                  # made dense for the kernel
    y = affine(x)
    assert y.device == "cuda:0"
    np.testing.assert_allclose(y.numpy(), affine_np(a.T), rtol=1e-6)
    assert [e for e, _, _ in gpu.user_launches] == ["t_ptx_affine_gpu"]


def test_empty_operand_launches_nothing(gpu):
    y = tj.jit(lambda x: affine(x))(tj.zeros((0, 4)).to("cuda"))
    assert y.shape == (0, 4) and gpu.user_launches == []


@pytest.mark.gpu
@pytest.mark.skipif(not cuda.is_available(), reason=f"needs an NVIDIA GPU: {cuda.unavailable_reason()}")
def test_kernel_on_a_real_gpu(rng):
    eager_device.cache_clear()
    a = rng.standard_normal((3, 1000)).astype(np.float32)
    x = tj.asarray(a).to("cuda")
    np.testing.assert_allclose(affine(x).numpy(), affine_np(a), rtol=1e-6)
    np.testing.assert_allclose(tj.jit(lambda x: affine(x.T) * 2.0)(x).numpy(), affine_np(a.T) * 2, rtol=1e-6)
