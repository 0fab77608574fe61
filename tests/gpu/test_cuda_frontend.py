"""The CUDA front end on a real GPU (eager ops, jit, memory, errors) against NumPy."""
from __future__ import annotations

import pytest

from runtime import cuda

if not cuda.is_available():
    pytest.skip(f"needs an NVIDIA GPU: {cuda.unavailable_reason()}", allow_module_level=True)

from cuda_frontend_cases import *  # noqa: E402, F403

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu():
    return cuda.device()
