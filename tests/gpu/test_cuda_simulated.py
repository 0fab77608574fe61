"""The CUDA front end on a simulated device (kernels run on the CPU), so it is tested everywhere;
plus the errors a user gets when CUDA is asked for but cannot be used."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_frontend_cases import *  # noqa: F403
from simulated_cuda import installed

import tracejit as tj
from runtime import cuda
from tracejit import device as tj_device
from tracejit import eager_device


@pytest.fixture
def gpu():
    eager_device.cache_clear()         # cached one-op programs hold the previous device
    with installed() as dev:
        yield dev
    eager_device.cache_clear()


REASON = "no CUDA device: the driver reports 0 GPUs"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(cuda, "_probe_once", lambda: (None, REASON))


def test_to_cuda_names_the_reason(no_cuda):
    x = tj.asarray(np.ones(3, np.float32))
    with pytest.raises(RuntimeError, match=REASON):
        x.to("cuda")
    with pytest.raises(RuntimeError, match=REASON):
        tj.ones(3, device="cuda")


def test_set_default_device_names_the_reason(no_cuda):
    before = tj.default_device()
    with pytest.raises(RuntimeError, match=rf"set_default_device\('cuda'\).*{REASON}"):
        tj.set_default_device("cuda")
    assert tj.default_device() == before


def test_env_default_device_names_the_reason(no_cuda, monkeypatch):
    monkeypatch.setenv("TRACEJIT_DEVICE", "cuda")
    monkeypatch.setattr(tj_device, "_default", None)
    with pytest.raises(RuntimeError, match=rf"TRACEJIT_DEVICE.*{REASON}"):
        tj.zeros(3)


def test_namespace_without_cuda(no_cuda):
    assert not tj.cuda.is_available()
    assert tj.cuda.unavailable_reason() == REASON
    assert tj.cuda.device_count() == 0
    tj.cuda.synchronize()               # nothing to wait for
    with pytest.raises(RuntimeError, match=REASON):
        tj.cuda.memory_stats()


def test_default_device_cuda_places_new_tensors(gpu, monkeypatch):
    monkeypatch.setattr(tj_device, "_default", None)
    tj.set_default_device("cuda")
    assert tj.zeros(3).device == "cuda:0" and tj.arange(4).device == "cuda:0"
    np.testing.assert_array_equal(tj.arange(4).numpy(), np.arange(4))
