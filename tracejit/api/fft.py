"""The Array API ``fft`` extension (2023.12), exported as ``tracejit.fft``.

The transforms are one host primitive (``tracejit/ops_fft.py``: ``numpy.fft``, host steps
under jit); ``fftshift``/``ifftshift`` are rolls (views and a concat, so they fuse) and
``fftfreq``/``rfftfreq`` constants.  Real inputs of the complex transforms are promoted to the
complex dtype of their precision; integer inputs are a TypeError.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import prims as P
from ..tensors import Tensor
from ._convert import as_int, as_tensor, int_sequence, normalize_axis

_COMPLEX_IN = ("fft", "ifft", "fftn", "ifftn", "irfft", "irfftn", "hfft")


def _operand(x: Any, kind: str) -> Tensor:
    t = as_tensor(x)
    if not dt.is_inexact(t.dtype):
        raise TypeError(f"fft.{kind} needs a floating-point array, got {t.dtype.name}")
    if kind in _COMPLEX_IN and not dt.is_complex(t.dtype):
        t = P.cast(t, dt.complex_dtype(t.dtype))
    if kind not in _COMPLEX_IN and dt.is_complex(t.dtype):
        raise TypeError(f"fft.{kind} needs a real floating-point array, got {t.dtype.name}")
    return t


def _one(kind: str, x: Any, n: int | None, axis: int, norm: str) -> Tensor:
    t = _operand(x, kind)
    ax = normalize_axis(axis, t.ndim, f"fft.{kind}")
    if n is None:
        n = 2 * (t.shape[ax] - 1) if kind in ("irfft", "hfft") else t.shape[ax]
    else:
        n = as_int(n, "n", f"fft.{kind}")
    return P.bind("fft", t, kind=kind, s=(n,), axes=(ax,), norm=norm)


def _many(kind: str, x: Any, s: Sequence[int] | None, axes: Sequence[int] | None, norm: str) -> Tensor:
    t = _operand(x, kind)
    op = f"fft.{kind}"
    if axes is None:
        axes_t = tuple(range(t.ndim)) if s is None else tuple(range(t.ndim - len(s), t.ndim))
    else:
        axes_t = tuple(normalize_axis(a, t.ndim, op) for a in int_sequence(axes, "axes", op))
    if len(set(axes_t)) != len(axes_t):
        raise ValueError(f"{op}: repeated axes in {axes}")
    if s is None:
        lengths = [t.shape[a] for a in axes_t]
        if kind == "irfftn" and axes_t:
            lengths[-1] = 2 * (t.shape[axes_t[-1]] - 1)
    else:
        lengths = list(int_sequence(s, "s", op))
        if len(lengths) != len(axes_t):
            raise ValueError(f"{op}: s {tuple(lengths)} and axes {axes_t} differ in length")
        lengths = [t.shape[a] if n == -1 else n for n, a in zip(lengths, axes_t)]
    if not axes_t:
        return t
    return P.bind("fft", t, kind=kind, s=tuple(lengths), axes=axes_t, norm=norm)


def fft(x: Tensor, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """The one-dimensional discrete Fourier transform along ``axis`` (``n`` points: cropped or
    zero-padded)."""
    return _one("fft", x, n, axis, norm)


def ifft(x: Tensor, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """The one-dimensional inverse discrete Fourier transform."""
    return _one("ifft", x, n, axis, norm)


def fftn(x: Tensor, /, *, s: Sequence[int] | None = None, axes: Sequence[int] | None = None,
         norm: str = "backward") -> Tensor:
    """The n-dimensional discrete Fourier transform over ``axes`` (all axes by default)."""
    return _many("fftn", x, s, axes, norm)


def ifftn(x: Tensor, /, *, s: Sequence[int] | None = None, axes: Sequence[int] | None = None,
          norm: str = "backward") -> Tensor:
    """The n-dimensional inverse discrete Fourier transform."""
    return _many("ifftn", x, s, axes, norm)


def rfft(x: Tensor, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """The transform of real data: the ``n // 2 + 1`` non-negative frequencies."""
    return _one("rfft", x, n, axis, norm)


def irfft(x: Tensor, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """The inverse of ``rfft``: ``n`` real points (default ``2 * (m - 1)``)."""
    return _one("irfft", x, n, axis, norm)


def rfftn(x: Tensor, /, *, s: Sequence[int] | None = None, axes: Sequence[int] | None = None,
          norm: str = "backward") -> Tensor:
    """The n-dimensional transform of real data (the last axis halved)."""
    return _many("rfftn", x, s, axes, norm)


def irfftn(x: Tensor, /, *, s: Sequence[int] | None = None, axes: Sequence[int] | None = None,
           norm: str = "backward") -> Tensor:
    """The inverse of ``rfftn``."""
    return _many("irfftn", x, s, axes, norm)


def hfft(x: Tensor, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """The transform of a Hermitian-symmetric signal (given by its first half): ``n`` real points."""
    return _one("hfft", x, n, axis, norm)


def ihfft(x: Tensor, /, *, n: int | None = None, axis: int = -1, norm: str = "backward") -> Tensor:
    """The inverse of ``hfft``: real data to its ``n // 2 + 1`` Hermitian half-spectrum."""
    return _one("ihfft", x, n, axis, norm)


def _freq_dtype(dtype: Any) -> np.dtype:
    d = dt.default_float if dtype is None else dt.canonical(dtype)
    if not dt.is_float(d):
        raise TypeError(f"fftfreq needs a real floating-point dtype, got {d.name}")
    return d


def fftfreq(n: int, /, *, d: float = 1.0, dtype: Any = None, device: Any = None) -> Tensor:
    """The sample frequencies of an ``n``-point transform with sample spacing ``d``."""
    from .creation import asarray
    n = as_int(n, "n", "fft.fftfreq")
    if n < 1:
        raise ValueError(f"fft.fftfreq: n must be positive, got {n}")
    return asarray(np.fft.fftfreq(n, d=d).astype(_freq_dtype(dtype)), device=device)


def rfftfreq(n: int, /, *, d: float = 1.0, dtype: Any = None, device: Any = None) -> Tensor:
    """The non-negative sample frequencies of an ``n``-point ``rfft``."""
    from .creation import asarray
    n = as_int(n, "n", "fft.rfftfreq")
    if n < 1:
        raise ValueError(f"fft.rfftfreq: n must be positive, got {n}")
    return asarray(np.fft.rfftfreq(n, d=d).astype(_freq_dtype(dtype)), device=device)


def _shift(x: Any, axes: int | Sequence[int] | None, inverse: bool) -> Tensor:
    from .manipulation import roll
    t = as_tensor(x)
    op = "fft.ifftshift" if inverse else "fft.fftshift"
    axes_t = tuple(range(t.ndim)) if axes is None else tuple(
        normalize_axis(a, t.ndim, op) for a in int_sequence(axes, "axes", op))
    if not axes_t:
        return t
    shifts = [-(t.shape[a] // 2) if inverse else t.shape[a] // 2 for a in axes_t]
    return roll(t, shifts, axis=axes_t)


def fftshift(x: Tensor, /, *, axes: int | Sequence[int] | None = None) -> Tensor:
    """The zero frequency moved to the middle (a roll by ``n // 2`` along each of ``axes``)."""
    return _shift(x, axes, inverse=False)


def ifftshift(x: Tensor, /, *, axes: int | Sequence[int] | None = None) -> Tensor:
    """The inverse of ``fftshift``."""
    return _shift(x, axes, inverse=True)


__all__ = ["fft", "ifft", "fftn", "ifftn", "rfft", "irfft", "rfftn", "irfftn", "hfft", "ihfft",
           "fftfreq", "rfftfreq", "fftshift", "ifftshift"]
