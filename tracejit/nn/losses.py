"""Loss functions with PyTorch's names, arguments, reductions and formulas.

Each loss is a few elementwise ops and reductions of public tensor functions, so it fuses under
``jit`` and differentiates through the primitives' VJPs.  A class label is picked with an iota
compare (``one_hot``), never a gather, so the pick fuses too; an ``ignore_index`` label matches
no class and drops out of the loss and out of the mean's divisor, as in PyTorch.

Labels are range-checked eagerly; a traced label cannot be inspected, so under ``jit`` a label
outside ``[0, C)`` that is not ``ignore_index`` contributes nothing instead of raising.
"""
from __future__ import annotations

from typing import Any

from .. import api as A
from .. import dtypes as dt
from .. import prims as P
from ..lazy_composites import replayable
from ..tensors import Tensor
from ..tracing import current_trace
from .functional import _float, _one_hot, log_softmax

__all__ = ["nll_loss", "cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits",
           "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div"]

REDUCTIONS = ("mean", "sum", "none")


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else A.asarray(x)


def _check_reduction(reduction: str, op: str, allowed: tuple[str, ...] = REDUCTIONS) -> None:
    if reduction not in allowed:
        names = ", ".join(repr(r) for r in allowed)
        raise ValueError(f"{op}: reduction must be one of {names}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    _check_reduction(reduction, op)
    if reduction == "mean":
        return A.mean(loss)
    if reduction == "sum":
        return A.sum(loss)
    return loss


def _same_shape(input: Tensor, target: Tensor, op: str) -> None:  # noqa: A002
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{op}: target shape {tuple(target.shape)} must equal input shape "
                         f"{tuple(input.shape)}")


def _classes_last(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:  # noqa: A002
    """(N, C, d1, ...) -> (N, d1, ..., C); a probability target of the same shape moves along."""
    if input.ndim > 2:
        input = A.moveaxis(input, 1, -1)
        if target.ndim == input.ndim:
            target = A.moveaxis(target, 1, -1)
    return input, target


def _class_weight(weight: Any, n_classes: int, dtype: Any, op: str) -> Tensor | None:
    if weight is None:
        return None
    w = A.astype(_tensor(weight), dtype)
    if tuple(w.shape) != (n_classes,):
        raise ValueError(f"{op}: weight must have shape ({n_classes},), one per class, got {tuple(w.shape)}")
    return w


def _check_labels(target: Tensor, scores: Tensor, ignore_index: int, op: str) -> None:
    if not dt.is_int(target.dtype):
        raise TypeError(f"{op}: class labels must be integers, got {target.dtype}")
    if tuple(target.shape) != tuple(scores.shape[:-1]):
        raise ValueError(f"{op}: label shape {tuple(target.shape)} does not match input shape "
                         f"{tuple(scores.shape)} without its class dim")
    if target.size:
        # eagerly the check raises here; traced (jit, lazy) it is a step of the program that
        # raises when it runs, rather than a flush in the middle of a lazy step
        P.bind("label_check", target, size=scores.shape[-1], ignore_index=int(ignore_index), op=op)


def _label_weights(target: Tensor, n_classes: int, weight: Tensor | None, ignore_index: int,
                   dtype: Any) -> tuple[Tensor, Tensor]:
    """Per-class pick weights (..., C) and per-label weights (...): the one-hot of each label times
    its class weight, zero for ``ignore_index``."""
    hit = _one_hot(target, n_classes, dtype)
    if 0 <= ignore_index < n_classes:                # otherwise an ignored label matches no class
        hit = hit * A.expand_dims(A.astype(A.not_equal(target, ignore_index), dtype), axis=-1)
    picked = hit if weight is None else hit * weight
    return picked, A.sum(picked, axis=-1)


def _nll_from_logp(logp: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
                   reduction: str, label_smoothing: float, op: str) -> Tensor:
    n_classes = logp.shape[-1]
    picked, label_w = _label_weights(target, n_classes, weight, ignore_index, logp.dtype)
    loss = -A.sum(picked * logp, axis=-1)
    if label_smoothing:
        # PyTorch: (1 - eps) * nll + eps / C * (-sum_c w_c logp_c), ignored labels contribute 0
        valid = A.astype(A.not_equal(target, ignore_index), logp.dtype)
        smooth = -A.sum(logp if weight is None else logp * weight, axis=-1) * valid
        loss = loss * (1.0 - label_smoothing) + smooth * (label_smoothing / n_classes)
    if reduction == "mean":                          # weighted mean over the labels not ignored
        return A.sum(loss) / A.sum(label_w)
    return A.sum(loss) if reduction == "sum" else loss


@replayable
def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, *,  # noqa: A002
             ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of integer labels given log-probabilities ``input`` (class dim 1,
    or 0 for 1-D input): ``-weight[y] * input[y]``; ``mean`` divides by the summed weights of the
    labels not equal to ``ignore_index``."""
    _check_reduction(reduction, "nll_loss")
    input, target = _classes_last(_float(input), _tensor(target))
    _check_labels(target, input, ignore_index, "nll_loss")
    weight = _class_weight(weight, input.shape[-1], input.dtype, "nll_loss")
    return _nll_from_logp(input, target, weight, ignore_index, reduction, 0.0, "nll_loss")


@replayable
def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, *,  # noqa: A002
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits ``input`` (class dim 1, or 0 for 1-D input) against integer labels
    or class probabilities of ``input``'s shape, with PyTorch's class ``weight``, ``ignore_index``
    (labels only) and ``label_smoothing`` (mixing in the uniform distribution)."""
    _check_reduction(reduction, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    input, target = _classes_last(_float(input), _tensor(target))
    n_classes = input.shape[-1]
    weight = _class_weight(weight, n_classes, input.dtype, "cross_entropy")
    logp = log_softmax(input, axis=-1)
    if dt.is_int(target.dtype):
        _check_labels(target, input, ignore_index, "cross_entropy")
        return _nll_from_logp(logp, target, weight, ignore_index, reduction, label_smoothing, "cross_entropy")
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"cross_entropy: probability target shape {tuple(target.shape)} does not match "
                         f"input shape {tuple(input.shape)}")
    probs = A.astype(target, logp.dtype)
    if label_smoothing:
        probs = probs * (1.0 - label_smoothing) + label_smoothing / n_classes
    if weight is not None:
        probs = probs * weight
    return _reduce(-A.sum(probs * logp, axis=-1), reduction, "cross_entropy")


@replayable
def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, *,  # noqa: A002
                         reduction: str = "mean") -> Tensor:
    """``-w * (y log x + (1 - y) log(1 - x))`` of probabilities ``input``, each log clamped to
    >= -100 as PyTorch does (so ``x`` of exactly 0 or 1 gives a finite loss)."""
    input, target = _float(input), _tensor(target)
    _same_shape(input, target, "binary_cross_entropy")
    trace = current_trace()
    if (trace is None or trace.is_lazy) and input.size:
        x = input.numpy()
        if not ((x >= 0) & (x <= 1)).all():
            raise ValueError("binary_cross_entropy: all elements of input must be in [0, 1] (probabilities; "
                             "use binary_cross_entropy_with_logits for logits)")
    t = A.astype(target, input.dtype)
    loss = (t - 1.0) * A.maximum(A.log1p(-input), -100.0) - t * A.maximum(A.log(input), -100.0)
    if weight is not None:
        loss = loss * A.astype(_tensor(weight), input.dtype)
    return _reduce(loss, reduction, "binary_cross_entropy")


@replayable
def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None, *,  # noqa: A002
                                     reduction: str = "mean", pos_weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of ``sigmoid(input)`` computed from the logits without overflow;
    ``pos_weight`` scales the positive term (per class, broadcast along the last dim)."""
    input, target = _float(input), _tensor(target)
    _same_shape(input, target, "binary_cross_entropy_with_logits")
    t = A.astype(target, input.dtype)
    # -log(sigmoid(x)) = max(-x, 0) + log1p(exp(-|x|)), finite for any x
    neg_log_sigmoid = A.maximum(-input, 0.0) + A.log1p(A.exp(-A.abs(input)))
    if pos_weight is not None:
        neg_log_sigmoid = neg_log_sigmoid * ((A.astype(_tensor(pos_weight), input.dtype) - 1.0) * t + 1.0)
    loss = (1.0 - t) * input + neg_log_sigmoid
    if weight is not None:
        loss = loss * A.astype(_tensor(weight), input.dtype)
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


@replayable
def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Mean (or sum, or elementwise) squared error."""
    d = A.subtract(input, target)
    return _reduce(d * d, reduction, "mse_loss")


@replayable
def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Mean (or sum, or elementwise) absolute error."""
    return _reduce(A.abs(A.subtract(input, target)), reduction, "l1_loss")


@replayable
def smooth_l1_loss(input: Tensor, target: Tensor, reduction: str = "mean", beta: float = 1.0) -> Tensor:  # noqa: A002
    """``0.5 d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``beta=0``: L1)."""
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    d = A.subtract(input, target)
    if beta == 0:
        return _reduce(A.abs(d), reduction, "smooth_l1_loss")
    ad = A.abs(d)
    return _reduce(A.where(ad < beta, d * d * (0.5 / beta), ad - 0.5 * beta), reduction, "smooth_l1_loss")


@replayable
def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0) -> Tensor:  # noqa: A002
    """``0.5 d**2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``."""
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be > 0, got {delta}")
    d = A.subtract(input, target)
    ad = A.abs(d)
    return _reduce(A.where(ad < delta, d * d * 0.5, (ad - 0.5 * delta) * delta), reduction, "huber_loss")


@replayable
def kl_div(input: Tensor, target: Tensor, reduction: str = "mean", log_target: bool = False) -> Tensor:  # noqa: A002
    """KL divergence ``target * (log target - input)`` for log-probabilities ``input``; with
    ``log_target`` the target is a log-probability too.  ``batchmean`` divides the sum by the
    batch size (the true KL divergence); ``mean`` by the element count, as PyTorch."""
    _check_reduction(reduction, "kl_div", REDUCTIONS + ("batchmean",))
    input = _float(input)
    target = A.astype(_tensor(target), input.dtype)
    if log_target:
        loss = A.exp(target) * (target - input)
    else:
        # xlogy(t, t): 0 where t == 0 (and its gradient there finite), as PyTorch
        positive = target > 0
        loss = A.where(positive, target * A.log(A.where(positive, target, 1.0)), 0.0) - target * input
    if reduction == "batchmean":
        return A.sum(loss) / input.shape[0] if input.ndim else A.sum(loss)
    return _reduce(loss, reduction, "kl_div")
