"""Convolutions: ``conv1d``/``conv2d``/``conv_transpose1d``/``conv_transpose2d`` and their modules.

A convolution is an explicit im2col through strided views followed by one GEMM:

    cols[c*K + k, n*P + p] = x_padded[n, c, window k at output position p]      (C*K, N*P)
    y[o, n*P + p]          = weight.reshape(O, C*K) @ cols                        (O, N*P)

``cols`` is a stack of ``K = prod(kernel)`` strided slices of the padded input, so under
``jit`` one elementwise kernel writes it (the slices and the padding are index arithmetic),
the product runs on the generated GEMM, and the bias add and whatever elementwise ops follow
(an activation, a batch norm's scale and shift) fuse into the one kernel that reads the GEMM's
output through the ``(O, N, ...) -> (N, O, ...)`` permutation.  The gradient with respect to
the input is the GEMM ``weight.T @ dy`` and one kernel summing the ``K`` windows back (pads of
the slices); the weight gradient is ``dy @ cols.T``.  Groups are one GEMM per group.

A transposed convolution is a convolution of the stride-dilated (zero-interleaved) input with
the flipped, transposed weight, which is how PyTorch defines it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import api as A
from .. import dtypes as dt
from .. import prims as P
from ..tensors import Tensor
from . import init
from .modules import Module, _param
from .windows import check_input, ntuple, output_size, pad_spatial, windows

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "Conv1d", "Conv2d",
           "ConvTranspose1d", "ConvTranspose2d"]

_PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _conv_pads(padding: Any, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
               op: str) -> tuple[tuple[int, int], ...]:
    nd = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' needs stride 1, got stride {tuple(stride)}")
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in total)
        raise ValueError(f"{op}: padding must be 'valid', 'same', an int or a tuple, got {padding!r}")
    return tuple((p, p) for p in ntuple(padding, nd, "padding", op))


def _float_operands(op: str, *ts: Tensor | None) -> list[Tensor | None]:
    for t in ts:
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected Tensors, got {type(t).__name__}")
    dtype = dt.promote_types(*(t.dtype for t in ts if t is not None))
    if not dt.is_float(dtype):
        raise TypeError(f"{op}: needs floating-point input and weight, got {dtype.name}")
    return [None if t is None else P.cast(t, dtype) for t in ts]


def _unbatched(x: Tensor, nd: int) -> bool:
    return isinstance(x, Tensor) and x.ndim == nd + 1


def _conv(x: Tensor, weight: Tensor, bias: Tensor | None, stride: Any, padding: Any, dilation: Any,
          groups: int, nd: int, op: str) -> Tensor:
    if _unbatched(x, nd):     # (C, *spatial), as PyTorch accepts
        return A.squeeze(_conv(A.expand_dims(x, axis=0), weight, bias, stride, padding, dilation,
                               groups, nd, op), axis=0)
    check_input(x, nd, op)
    x, weight, bias = _float_operands(op, x, weight, bias)
    if weight.ndim != nd + 2:
        raise ValueError(f"{op}: weight must be {nd + 2}-D (out_channels, in_channels/groups, *kernel), "
                         f"got shape {weight.shape}")
    stride = ntuple(stride, nd, "stride", op, 1)
    dilation = ntuple(dilation, nd, "dilation", op, 1)
    kernel = tuple(weight.shape[2:])
    n, c = x.shape[:2]
    o, cg = weight.shape[:2]
    if not isinstance(groups, int) or groups < 1 or c % groups or o % groups or cg * groups != c:
        raise ValueError(f"{op}: input with {c} channels, weight {weight.shape} and groups={groups} do not "
                         f"fit (need in_channels = weight.shape[1] * groups, out_channels divisible "
                         f"by groups)")
    if bias is not None and bias.shape != (o,):
        raise ValueError(f"{op}: bias must have shape ({o},), got {bias.shape}")
    pads = _conv_pads(padding, kernel, stride, dilation, op)
    out = tuple(output_size(s, k, st, lo, hi, d)
                for s, k, st, (lo, hi), d in zip(x.shape[2:], kernel, stride, pads, dilation))
    if any(m <= 0 for m in out):
        raise ValueError(f"{op}: input spatial size {x.shape[2:]} (padded by {pads}) is smaller than the "
                         f"dilated kernel {tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))}")
    k_size, p_size = math.prod(kernel), math.prod(out)
    spatial = tuple(range(2, 2 + nd))
    views = windows(pad_spatial(x, pads), kernel, stride, dilation, out)
    # (C, N, *out) per window, stacked to (C, K, N, *out): rows c*K + k, as weight.reshape(O, C*K)
    cols = A.stack([P.permute(v, perm=(1, 0) + spatial) for v in views], axis=1)
    cols = A.reshape(cols, (c * k_size, n * p_size))
    w2 = A.reshape(weight, (o, cg * k_size))
    if groups == 1:
        y = A.matmul(w2, cols)
    else:
        og, rows = o // groups, cg * k_size
        y = A.concat([A.matmul(w2[g * og:(g + 1) * og], cols[g * rows:(g + 1) * rows])
                      for g in range(groups)], axis=0)
    if bias is not None:
        y = y + A.reshape(bias, (o, 1))
    return P.permute(A.reshape(y, (o, n) + out), perm=(1, 0) + spatial)


def _dilate(x: Tensor, stride: Sequence[int]) -> Tensor:
    """Insert ``stride - 1`` zeros between neighbours along each trailing dim (a reshape, a pad
    of a new unit dim and a crop: movement ops only)."""
    lead = x.ndim - len(stride)
    for i, s in enumerate(stride):
        if s == 1:
            continue
        ax = lead + i
        m = x.shape[ax]
        x = A.reshape(x, x.shape[:ax + 1] + (1,) + x.shape[ax + 1:])
        x = P.pad(x, pads=tuple((0, s - 1) if j == ax + 1 else (0, 0) for j in range(x.ndim)), value=0.0)
        x = A.reshape(x, x.shape[:ax] + (m * s,) + x.shape[ax + 2:])
        x = P.slice(x, start=(0,) * x.ndim,
                    stop=tuple((m - 1) * s + 1 if j == ax else d for j, d in enumerate(x.shape)),
                    step=(1,) * x.ndim)
    return x


def _conv_transpose(x: Tensor, weight: Tensor, bias: Tensor | None, stride: Any, padding: Any,
                    output_padding: Any, groups: int, dilation: Any, nd: int, op: str) -> Tensor:
    if _unbatched(x, nd):
        return A.squeeze(_conv_transpose(A.expand_dims(x, axis=0), weight, bias, stride, padding,
                                         output_padding, groups, dilation, nd, op), axis=0)
    check_input(x, nd, op)
    x, weight, bias = _float_operands(op, x, weight, bias)
    if weight.ndim != nd + 2:
        raise ValueError(f"{op}: weight must be {nd + 2}-D (in_channels, out_channels/groups, *kernel), "
                         f"got shape {weight.shape}")
    stride = ntuple(stride, nd, "stride", op, 1)
    dilation = ntuple(dilation, nd, "dilation", op, 1)
    padding = ntuple(padding, nd, "padding", op)
    output_padding = ntuple(output_padding, nd, "output_padding", op)
    for op_, s, d in zip(output_padding, stride, dilation):
        if op_ >= max(s, d):
            raise ValueError(f"{op}: output_padding {output_padding} must be smaller than stride {stride} "
                             f"or dilation {dilation}")
    cin, og = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    if not isinstance(groups, int) or groups < 1 or x.shape[1] != cin or cin % groups:
        raise ValueError(f"{op}: input with {x.shape[1]} channels, weight {weight.shape} (in_channels "
                         f"first) and groups={groups} do not fit")
    if bias is not None and bias.shape != (og * groups,):
        raise ValueError(f"{op}: bias must have shape ({og * groups},), got {bias.shape}")
    pads = [(d * (k - 1) - p, d * (k - 1) - p + e)
            for k, d, p, e in zip(kernel, dilation, padding, output_padding)]
    xp = pad_spatial(_dilate(x, stride), pads)
    w = weight
    for ax in range(2, 2 + nd):
        w = P.flip(w, ax)
    w = A.reshape(w, (groups, cin // groups, og) + kernel)
    w = P.permute(w, perm=(0, 2, 1) + tuple(range(3, 3 + nd)))
    w = A.reshape(w, (groups * og, cin // groups) + kernel)
    return _conv(xp, w, bias, 1, 0, dilation, groups, nd, op)


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,  # noqa: A002
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """1-D convolution (cross-correlation, as PyTorch's) of ``(N, C, L)`` input with weight
    ``(out_channels, C / groups, k)``; ``padding`` is an int, a 1-tuple, ``'valid'`` or ``'same'``."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1, "conv1d")


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,  # noqa: A002
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation, as PyTorch's) of ``(N, C, H, W)`` input with weight
    ``(out_channels, C / groups, kh, kw)``; ``padding`` is an int, a pair, ``'valid'`` or ``'same'``."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2, "conv2d")


def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,  # noqa: A002
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """Transposed 1-D convolution; weight ``(C, out_channels / groups, k)`` (PyTorch's layout)."""
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, 1,
                           "conv_transpose1d")


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,  # noqa: A002
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """Transposed 2-D convolution; weight ``(C, out_channels / groups, kh, kw)`` (PyTorch's layout)."""
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation, 2,
                           "conv_transpose2d")


class _ConvNd(Module):
    _nd = 0
    _transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", output_padding: Any = 0, dtype: Any = None) -> None:
        super().__init__()
        name, nd = type(self).__name__, self._nd
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must "
                             f"be divisible by groups ({groups})")
        if padding_mode not in _PADDING_MODES or (self._transposed and padding_mode != "zeros"):
            allowed = "'zeros'" if self._transposed else ", ".join(map(repr, _PADDING_MODES))
            raise ValueError(f"{name}: padding_mode must be one of {allowed}, got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = ntuple(kernel_size, nd, "kernel_size", name, 1)
        self.stride = ntuple(stride, nd, "stride", name, 1)
        self.dilation = ntuple(dilation, nd, "dilation", name, 1)
        self.padding = padding if isinstance(padding, str) else ntuple(padding, nd, "padding", name)
        self.output_padding = ntuple(output_padding, nd, "output_padding", name)
        self.padding_mode = padding_mode
        shape = ((in_channels, out_channels // groups) if self._transposed
                 else (out_channels, in_channels // groups)) + self.kernel_size
        self.weight = _param(shape, dtype)
        if bias:
            self.bias = _param((out_channels,), dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's init: kaiming-uniform weight (a = sqrt(5)), bias uniform in +-1/sqrt(fan_in)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def _padded(self, x: Tensor) -> tuple[Tensor, Any]:
        """Non-zero padding modes pad explicitly (``tj.pad``), then convolve unpadded."""
        if self.padding_mode == "zeros":
            return x, self.padding
        pads = _conv_pads(self.padding, self.kernel_size, self.stride, self.dilation, type(self).__name__)
        widths = ((0, 0),) * (x.ndim - self._nd) + pads
        return A.pad(x, widths, mode=_PADDING_MODES[self.padding_mode]), 0

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * self._nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv1d(_ConvNd):
    """1-D convolution over ``(N, C, L)``; ``weight`` (out, in/groups, k), ``bias`` (out,)."""
    _nd = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        x, padding = self._padded(x)
        return conv1d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class Conv2d(_ConvNd):
    """2-D convolution over ``(N, C, H, W)``; ``weight`` (out, in/groups, kh, kw), ``bias`` (out,)."""
    _nd = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        x, padding = self._padded(x)
        return conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class ConvTranspose1d(_ConvNd):
    """Transposed 1-D convolution; ``weight`` (in, out/groups, k), ``bias`` (out,)."""
    _nd, _transposed = 1, True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, padding_mode: str = "zeros", dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, output_padding, dtype)

    def forward(self, x: Tensor) -> Tensor:
        return conv_transpose1d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                self.groups, self.dilation)


class ConvTranspose2d(_ConvNd):
    """Transposed 2-D convolution; ``weight`` (in, out/groups, kh, kw), ``bias`` (out,)."""
    _nd, _transposed = 2, True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, padding_mode: str = "zeros", dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, output_padding, dtype)

    def forward(self, x: Tensor) -> Tensor:
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                self.groups, self.dilation)
