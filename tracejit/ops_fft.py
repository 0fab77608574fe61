"""The discrete Fourier transforms of the op table: ``numpy.fft`` references, host steps under jit.

One primitive, ``fft``, with the transform's name (``fft``, ``ifft``, ``rfft``, ``irfft``,
``hfft``, ``ihfft`` and the n-dimensional ``fftn``, ``ifftn``, ``rfftn``, ``irfftn``), the
lengths ``s`` and ``axes`` already normalized (one entry per transformed axis) and ``norm``.
Results keep the operand's precision (float32 data gives complex64, as NumPy 2 and PyTorch).
"""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .ops import AVal, Prim, _register

# transforms from complex to real and from real to complex; the rest are complex to complex
TO_REAL = frozenset({"irfft", "irfftn", "hfft"})
FROM_REAL = frozenset({"rfft", "rfftn", "ihfft"})
KINDS = frozenset({"fft", "ifft", "fftn", "ifftn"}) | TO_REAL | FROM_REAL
NORMS = ("backward", "ortho", "forward")


def _fft_infer(a: AVal, *, kind: str, s: tuple[int, ...], axes: tuple[int, ...], norm: str) -> AVal:
    if kind not in KINDS:
        raise ValueError(f"fft: unknown transform {kind!r}")
    if norm not in NORMS:
        raise ValueError(f"fft.{kind}: norm must be 'backward', 'ortho' or 'forward', got {norm!r}")
    want = "f" if kind in FROM_REAL else "c"
    if a.dtype.kind != want:
        words = "a real floating-point" if want == "f" else "a complex floating-point"
        raise TypeError(f"fft.{kind} needs {words} dtype, got {a.dtype.name}")
    shape = list(a.shape)
    for n, ax in zip(s, axes):
        if n < 1:
            raise ValueError(f"fft.{kind}: invalid number of data points {n} along axis {ax}")
        shape[ax] = n
    if kind in FROM_REAL:       # the last transformed axis keeps n // 2 + 1 frequencies
        shape[axes[-1]] = s[-1] // 2 + 1
    out = dt.real_dtype(a.dtype) if kind in TO_REAL else dt.complex_dtype(a.dtype)
    return AVal(tuple(shape), out)


def _fft_impl(a: np.ndarray, *, kind: str, s: tuple[int, ...], axes: tuple[int, ...],
              norm: str) -> np.ndarray:
    fn = getattr(np.fft, kind)
    if kind.endswith("n"):
        r = fn(a, s=s, axes=axes, norm=norm)
    else:
        r = fn(a, n=s[0], axis=axes[0], norm=norm)
    want = dt.real_dtype(a.dtype) if kind in TO_REAL else dt.complex_dtype(a.dtype)
    return r.astype(want, copy=False)


_DUAL_NORM = {"backward": "forward", "forward": "backward", "ortho": "ortho"}
_INVERSE = {"fft": "ifft", "ifft": "fft", "fftn": "ifftn", "ifftn": "fftn"}


def _vjp_fft(g, out, a, *, kind, s, axes, norm):
    # a complex-to-complex transform is linear, F or F^H scaled: its adjoint is the inverse
    # transform with the dual normalization (PyTorch's convention for complex gradients)
    if kind not in _INVERSE or any(n != a.shape[ax] for n, ax in zip(s, axes)):
        raise NotImplementedError(f"the gradient of fft.{kind} is implemented for the complex transforms "
                                  "(fft, ifft, fftn, ifftn) without padding or cropping")
    from . import prims
    return (prims.fft(g, kind=_INVERSE[kind], s=s, axes=axes, norm=_DUAL_NORM[norm]),)


_register(Prim("fft", "host", _fft_infer, _fft_impl, vjp=_vjp_fft))
