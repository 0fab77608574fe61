"""``tj.fft`` (the Array API fft extension) vs NumPy and PyTorch, eagerly and under jit."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj

STANDARD_FUNCTIONS = ["fft", "ifft", "fftn", "ifftn", "rfft", "irfft", "rfftn", "irfftn", "hfft", "ihfft",
                      "fftfreq", "rfftfreq", "fftshift", "ifftshift"]
NORMS = ["backward", "ortho", "forward"]


def test_namespace_has_every_function_of_the_extension():
    assert [f for f in STANDARD_FUNCTIONS if not callable(getattr(tj.fft, f, None))] == []


@pytest.mark.parametrize("norm", NORMS)
def test_one_dimensional_transforms_match_numpy(norm, rng):
    x = rng.standard_normal((4, 6))
    z = x + 1j * rng.standard_normal((4, 6))
    for kind in ("fft", "ifft", "hfft", "irfft"):
        for n in (None, 5, 8):
            assert_close(getattr(tj.fft, kind)(tj.asarray(z), n=n, axis=0, norm=norm),
                         getattr(np.fft, kind)(z, n=n, axis=0, norm=norm), rtol=1e-12, atol=1e-13)
    for kind in ("rfft", "ihfft"):
        for n in (None, 5, 8):
            assert_close(getattr(tj.fft, kind)(tj.asarray(x), n=n, norm=norm),
                         getattr(np.fft, kind)(x, n=n, norm=norm), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("norm", NORMS)
def test_n_dimensional_transforms_match_numpy(norm, rng):
    x = rng.standard_normal((3, 4, 6))
    z = x + 1j * rng.standard_normal((3, 4, 6))
    for kind, a in (("fftn", z), ("ifftn", z), ("irfftn", z), ("rfftn", x)):
        for s, axes in ((None, None), ((3, 4), (1, 2)), (None, (0,)), ((5,), (-1,)), ((2, 3, 8), None)):
            assert_close(getattr(tj.fft, kind)(tj.asarray(a), s=s, axes=axes, norm=norm),
                         getattr(np.fft, kind)(a, s=s, axes=axes if axes is not None or s is None
                                               else list(range(a.ndim - len(s), a.ndim)), norm=norm),
                         rtol=1e-12, atol=1e-12)


def test_precision_and_dtypes(rng):
    x32 = rng.standard_normal(8).astype(np.float32)
    assert tj.fft.fft(tj.asarray(x32)).dtype == tj.complex64       # real input promoted
    assert tj.fft.rfft(tj.asarray(x32)).dtype == tj.complex64
    assert tj.fft.irfft(tj.fft.rfft(tj.asarray(x32))).dtype == tj.float32
    assert_close(tj.fft.fft(tj.asarray(x32)), np.fft.fft(x32.astype(np.float64)), rtol=1e-5, atol=1e-5)
    assert tj.fft.fftfreq(4).dtype == tj.float32
    assert tj.fft.rfftfreq(4, dtype=tj.float64).dtype == tj.float64


def test_shifts_and_frequencies(rng):
    x = rng.standard_normal((4, 5))
    assert_close(tj.fft.fftshift(tj.asarray(x)), np.fft.fftshift(x))
    assert_close(tj.fft.ifftshift(tj.asarray(x), axes=1), np.fft.ifftshift(x, axes=1))
    assert_close(tj.fft.ifftshift(tj.fft.fftshift(tj.asarray(x))), x)
    assert_close(tj.fft.fftfreq(7, d=0.25, dtype=tj.float64), np.fft.fftfreq(7, d=0.25))
    assert_close(tj.fft.rfftfreq(8, d=2.0, dtype=tj.float64), np.fft.rfftfreq(8, d=2.0))


def test_bad_input_names_what_is_wrong():
    with pytest.raises(ValueError, match="norm"):
        tj.fft.fft(tj.zeros(4), norm="none")
    with pytest.raises(TypeError, match="floating-point"):
        tj.fft.fft(tj.asarray([1, 2, 3]))
    with pytest.raises(TypeError, match="real floating-point"):
        tj.fft.rfft(tj.asarray([1j, 2j]))
    with pytest.raises(ValueError, match="data points"):
        tj.fft.fft(tj.zeros(4), n=0)
    with pytest.raises(ValueError, match="differ in length"):
        tj.fft.fftn(tj.zeros((2, 2)), s=(2,), axes=(0, 1))
    with pytest.raises(ValueError, match="positive"):
        tj.fft.fftfreq(0)


def _spectra(z, x):
    return (tj.fft.irfft(tj.fft.rfft(x) * 2.0, n=x.shape[-1]), tj.abs(tj.fft.fftn(z, norm="ortho")),
            tj.fft.fftshift(x), tj.fft.ihfft(x), tj.fft.hfft(z, n=7, axis=0))


def test_jit_equals_eager(rng, jit_backend):
    z = tj.asarray(rng.standard_normal((4, 6)) + 1j * rng.standard_normal((4, 6)))
    x = tj.asarray(rng.standard_normal((4, 6)))
    eager = _spectra(z, x)
    for e, c in zip(eager, jitted(_spectra, jit_backend)(z, x)):
        assert_close(c, e.numpy(), rtol=1e-13, atol=1e-13)
    assert_close(eager[0], 2 * x.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind,norm", [("fft", "backward"), ("ifft", "ortho"), ("fftn", "forward"),
                                       ("ifftn", "backward")])
def test_gradient_matches_torch(kind, norm, rng):
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    w = rng.standard_normal((3, 4))

    def loss(a):
        return tj.sum(tj.abs(getattr(tj.fft, kind)(a, norm=norm)) ** 2 * tj.asarray(w))
    ours = tj.grad(loss)(tj.asarray(z)).numpy()
    zt = torch.tensor(z, requires_grad=True)
    (torch.abs(getattr(torch.fft, kind)(zt, norm=norm)) ** 2 * torch.tensor(w)).sum().backward()
    assert_close(ours, zt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_gradient_of_padded_transform_is_refused():
    z = tj.asarray(np.ones(4, np.complex128))
    with pytest.raises(NotImplementedError, match="fft.fft"):
        tj.grad(lambda a: tj.sum(tj.abs(tj.fft.fft(a, n=6))))(z)
