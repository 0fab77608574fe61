"""Loss modules: ``nn.CrossEntropyLoss(weight=..., ignore_index=...)`` and the rest, each a
:class:`Module` that holds its options (a class ``weight`` or ``pos_weight`` as a buffer, so it
moves with ``.to()`` and is saved in ``state_dict``) and calls the function in ``losses.py``."""
from __future__ import annotations

from typing import Any

from ..api import asarray
from ..tensors import Tensor
from . import losses as L
from .modules import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "MSELoss", "L1Loss", "SmoothL1Loss",
           "HuberLoss", "KLDivLoss"]


class _WeightedLoss(Module):
    def __init__(self, weight: Any = None, reduction: str = "mean") -> None:
        super().__init__()
        self.register_buffer("weight", None if weight is None else asarray(weight))
        self.reduction = reduction


class CrossEntropyLoss(_WeightedLoss):
    """:func:`~tracejit.nn.functional.cross_entropy` with fixed options."""

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return L.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_WeightedLoss):
    """:func:`~tracejit.nn.functional.nll_loss` with fixed options."""

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(weight, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return L.nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class BCELoss(_WeightedLoss):
    """:func:`~tracejit.nn.functional.binary_cross_entropy` with fixed options."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return L.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_WeightedLoss):
    """:func:`~tracejit.nn.functional.binary_cross_entropy_with_logits` with fixed options."""

    def __init__(self, weight: Any = None, reduction: str = "mean", pos_weight: Any = None) -> None:
        super().__init__(weight, reduction)
        self.register_buffer("pos_weight", None if pos_weight is None else asarray(pos_weight))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return L.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)


class _ElementwiseLoss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction


class MSELoss(_ElementwiseLoss):
    """:func:`~tracejit.nn.functional.mse_loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return L.mse_loss(input, target, self.reduction)


class L1Loss(_ElementwiseLoss):
    """:func:`~tracejit.nn.functional.l1_loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return L.l1_loss(input, target, self.reduction)


class SmoothL1Loss(_ElementwiseLoss):
    """:func:`~tracejit.nn.functional.smooth_l1_loss` with a fixed ``beta``."""

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = beta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return L.smooth_l1_loss(input, target, self.reduction, self.beta)


class HuberLoss(_ElementwiseLoss):
    """:func:`~tracejit.nn.functional.huber_loss` with a fixed ``delta``."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = delta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return L.huber_loss(input, target, self.reduction, self.delta)


class KLDivLoss(_ElementwiseLoss):
    """:func:`~tracejit.nn.functional.kl_div` with fixed options."""

    def __init__(self, reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__(reduction)
        self.log_target = log_target

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return L.kl_div(input, target, self.reduction, self.log_target)
