"""Losses against torch.nn.functional, forward and backward, each reduction; under jit equal to eager."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
F, TF = tj.nn.functional, torch.nn.functional
REDUCTIONS = ["mean", "sum", "none"]


def _compare(tj_fn, torch_fn, inputs: dict, grad_of: tuple[str, ...], rng, rtol: float = 1e-10) -> None:
    """Forward value and the gradient of ``sum(loss * cotangent)`` w.r.t. ``grad_of``, in float64."""
    jt = {k: tj.asarray(v, requires_grad=k in grad_of) for k, v in inputs.items()}
    tt = {k: torch.tensor(v, requires_grad=k in grad_of) for k, v in inputs.items()}
    jl, tl = tj_fn(**jt), torch_fn(**tt)
    np.testing.assert_allclose(jl.numpy(), tl.detach().numpy(), rtol=rtol, atol=1e-12)
    cot = rng.standard_normal(tuple(tl.shape))
    (jl * tj.asarray(cot)).sum().backward()
    (tl * torch.tensor(cot)).sum().backward()
    for k in grad_of:
        np.testing.assert_allclose(jt[k].grad.numpy(), tt[k].grad.numpy(), rtol=rtol, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", ["plain", "weight", "ignore", "ignore_in_range", "spatial", "1d"])
def test_nll_loss(reduction: str, case: str, rng) -> None:
    shape, lshape = {"spatial": ((3, 4, 2, 5), (3, 2, 5)), "1d": ((4,), ())}.get(case, ((7, 4), (7,)))
    x = rng.standard_normal(shape)
    y = rng.integers(0, 4, lshape)
    kw: dict = {"reduction": reduction}
    if case in ("weight", "spatial", "ignore_in_range"):
        kw["weight"] = rng.uniform(0.2, 2.0, 4)
    if case == "ignore":
        y[[1, 4]] = -100
    if case == "ignore_in_range":
        kw["ignore_index"] = 2
    inputs = {"input": x, "target": y} | ({"weight": kw.pop("weight")} if "weight" in kw else {})
    _compare(lambda **a: F.nll_loss(**a, **kw), lambda **a: TF.nll_loss(**a, **kw), inputs, ("input",), rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
@pytest.mark.parametrize("case", ["plain", "weight", "ignore", "weight_ignore_in_range", "spatial", "probs",
                                  "probs_weight"])
def test_cross_entropy(reduction: str, smoothing: float, case: str, rng) -> None:
    spatial = case == "spatial"
    x = rng.standard_normal((3, 5, 4) if spatial else (8, 5)) * 2
    y = rng.integers(0, 5, (3, 4) if spatial else 8)
    kw: dict = {"reduction": reduction, "label_smoothing": smoothing}
    inputs = {"input": x, "target": y}
    if case.startswith("probs"):
        p = rng.uniform(0, 1, x.shape)
        inputs["target"] = p / p.sum(1, keepdims=True)
    if "weight" in case or spatial:
        inputs["weight"] = rng.uniform(0.2, 2.0, 5)
    if case == "ignore":
        y[[0, 3, 5]] = -100
    if case == "weight_ignore_in_range":
        kw["ignore_index"] = 1
        y[2] = 1
    grad_of = ("input", "target") if case.startswith("probs") else ("input",)
    _compare(lambda **a: F.cross_entropy(**a, **kw), lambda **a: TF.cross_entropy(**a, **kw), inputs,
             grad_of, rng)


def test_cross_entropy_all_ignored_mean_is_nan_as_torch() -> None:
    x, y = np.zeros((2, 3)), np.array([-100, -100])
    assert np.isnan(float(F.cross_entropy(tj.asarray(x), tj.asarray(y))))
    assert np.isnan(float(TF.cross_entropy(torch.tensor(x), torch.tensor(y))))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy(reduction: str, weighted: bool, rng) -> None:
    x = rng.uniform(0.02, 0.98, (6, 3))
    x[0, 0], x[1, 1] = 0.0, 1.0          # clamped logs: finite loss, as torch
    inputs = {"input": x, "target": rng.uniform(0, 1, (6, 3))}
    if weighted:
        inputs["weight"] = rng.uniform(0.5, 2, (3,))
    jt = {k: tj.asarray(v) for k, v in inputs.items()}
    tt = {k: torch.tensor(v) for k, v in inputs.items()}
    np.testing.assert_allclose(F.binary_cross_entropy(**jt, reduction=reduction).numpy(),
                               TF.binary_cross_entropy(**tt, reduction=reduction).numpy(), rtol=1e-10)
    x[0, 0], x[1, 1] = 0.3, 0.6          # gradients away from the clamp
    _compare(lambda **a: F.binary_cross_entropy(**a, reduction=reduction),
             lambda **a: TF.binary_cross_entropy(**a, reduction=reduction), inputs, ("input", "target"), rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("extra", ["none", "weight", "pos_weight", "both"])
def test_binary_cross_entropy_with_logits(reduction: str, extra: str, rng) -> None:
    x = rng.standard_normal((5, 4)) * 4
    x[0, :2] = [-200.0, 300.0]          # no overflow in exp
    inputs = {"input": x, "target": rng.uniform(0, 1, (5, 4))}
    if extra in ("weight", "both"):
        inputs["weight"] = rng.uniform(0.5, 2, (5, 1))
    if extra in ("pos_weight", "both"):
        inputs["pos_weight"] = rng.uniform(0.5, 3, (4,))
    _compare(lambda **a: F.binary_cross_entropy_with_logits(**a, reduction=reduction),
             lambda **a: TF.binary_cross_entropy_with_logits(**a, reduction=reduction), inputs,
             ("input", "target"), rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,kw", [("smooth_l1_loss", {}), ("smooth_l1_loss", {"beta": 0.3}),
                                     ("smooth_l1_loss", {"beta": 0.0}), ("huber_loss", {}),
                                     ("huber_loss", {"delta": 2.5}), ("l1_loss", {}), ("mse_loss", {})])
def test_regression_losses(reduction: str, name: str, kw: dict, rng) -> None:
    inputs = {"input": rng.standard_normal((4, 6)) * 2, "target": rng.standard_normal((4, 6))}
    _compare(lambda **a: getattr(F, name)(**a, reduction=reduction, **kw),
             lambda **a: getattr(TF, name)(**a, reduction=reduction, **kw), inputs, ("input", "target"), rng)


@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction: str, log_target: bool, rng) -> None:
    logq = np.log(rng.dirichlet(np.ones(5), 4))
    p = rng.dirichlet(np.ones(5), 4)
    p[0, 1] = 0.0                        # 0 * log 0 = 0
    target = np.log(p + 1e-3) if log_target else p
    kw = {"reduction": reduction, "log_target": log_target}
    _compare(lambda **a: F.kl_div(**a, **kw), lambda **a: TF.kl_div(**a, **kw),
             {"input": logq, "target": target}, ("input",), rng)


def test_loss_modules_match_torch(rng) -> None:
    x = rng.standard_normal((6, 3)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    y[1] = -100
    t = rng.uniform(0, 1, (6, 3)).astype(np.float32)
    w = np.array([0.5, 1.0, 2.0], np.float32)
    pairs = [
        (tj.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1), torch.nn.CrossEntropyLoss(
            weight=torch.tensor(w), label_smoothing=0.1), x, y),
        (tj.nn.NLLLoss(reduction="sum"), torch.nn.NLLLoss(reduction="sum"), x, y),
        (tj.nn.BCEWithLogitsLoss(pos_weight=w), torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(w)), x, t),
        (tj.nn.BCELoss(weight=w), torch.nn.BCELoss(weight=torch.tensor(w)), 1 / (1 + np.exp(-x)), t),
        (tj.nn.SmoothL1Loss(beta=0.5), torch.nn.SmoothL1Loss(beta=0.5), x, t),
        (tj.nn.HuberLoss(delta=0.7), torch.nn.HuberLoss(delta=0.7), x, t),
        (tj.nn.L1Loss(), torch.nn.L1Loss(), x, t),
        (tj.nn.MSELoss(), torch.nn.MSELoss(), x, t),
        (tj.nn.KLDivLoss(reduction="batchmean"), torch.nn.KLDivLoss(reduction="batchmean"),
         np.log(t / t.sum(1, keepdims=True)), t[::-1] / t[::-1].sum(1, keepdims=True)),
    ]
    for mine, theirs, a, b in pairs:
        np.testing.assert_allclose(float(mine(tj.asarray(a), tj.asarray(b))),
                                   float(theirs(torch.tensor(a), torch.tensor(b))), rtol=2e-6,
                                   err_msg=type(mine).__name__)
    assert "weight" in tj.nn.CrossEntropyLoss(weight=w).state_dict()


def test_losses_under_jit_equal_eager(rng) -> None:
    """One compiled program computing every loss and its input gradient equals eager."""
    x = rng.standard_normal((8, 5)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    y[[2, 6]] = -100
    t = rng.uniform(0, 1, (8, 5)).astype(np.float32)
    w = rng.uniform(0.5, 2, 5).astype(np.float32)

    def losses(x, y, t, w):
        logp = F.log_softmax(x, axis=1)
        return (F.cross_entropy(x, y, w, label_smoothing=0.1), F.cross_entropy(x, y, reduction="none"),
                F.nll_loss(logp, tj.where(y < 0, 3, y), ignore_index=3),
                F.binary_cross_entropy(F.sigmoid(x), t),
                F.binary_cross_entropy_with_logits(x, t, pos_weight=w),
                F.smooth_l1_loss(x, t, beta=0.5), F.huber_loss(x, t, delta=0.5),
                F.kl_div(logp, t / t.sum(1, keepdims=True), reduction="batchmean"),
                F.kl_div(logp, logp * 0.5, log_target=True))

    def total(x, y, t, w):
        return sum(tj.sum(v) for v in losses(x, y, t, w))

    args = [tj.asarray(a) for a in (x, y, t, w)]
    compiled = tj.jit(lambda *a: (losses(*a), tj.grad(total)(*a)))
    (lj, gj), le, ge = compiled(*args), losses(*args), tj.grad(total)(*args)
    for a, b in zip(lj, le):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gj.numpy(), ge.numpy(), rtol=1e-5, atol=1e-6)
    assert np.isfinite(gj.numpy()).all() and np.abs(gj.numpy()).sum() > 0


def test_loss_errors() -> None:
    x = tj.zeros((2, 3))
    with pytest.raises(IndexError, match=r"labels must be in \[0, 3\) or equal ignore_index=-100, got 3"):
        F.cross_entropy(x, tj.asarray([0, 3]))
    with pytest.raises(IndexError, match="got -1"):
        F.nll_loss(x, tj.asarray([0, -1]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.nll_loss(x, tj.asarray([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.cross_entropy(x, tj.asarray([0, 1]), tj.ones(4))
    with pytest.raises(ValueError, match="label shape"):
        F.cross_entropy(x, tj.asarray([0, 1, 2]))
    with pytest.raises(TypeError, match="class labels must be integers"):
        F.nll_loss(x, tj.asarray([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        F.binary_cross_entropy(tj.asarray([0.5, 1.5]), tj.asarray([0.0, 1.0]))
    with pytest.raises(ValueError, match="target shape"):
        F.binary_cross_entropy_with_logits(x, tj.zeros((3, 2)))
    with pytest.raises(ValueError, match="beta"):
        F.smooth_l1_loss(x, x, beta=-1.0)
    with pytest.raises(ValueError, match="delta"):
        F.huber_loss(x, x, delta=0.0)
    with pytest.raises(ValueError, match="batchmean"):
        F.kl_div(x, x, reduction="batch")


@pytest.mark.parametrize("labels", [[0, 3], [0, -1]])
def test_out_of_range_labels_raise_under_jit_and_lazy(labels) -> None:
    """Traced, the label check is a step of the program: jit raises naming the user's line
    instead of a loss computed from an all-zero one-hot row."""
    x = tj.zeros((2, 3))
    step = tj.jit(lambda s, y: F.cross_entropy(s, y))
    with pytest.raises(IndexError, match=r"labels must be in \[0, 3\).*\(at .*test_losses.py:\d+\)"):
        step(x, tj.asarray(labels))
    assert float(step(x, tj.asarray([0, 2]))) == pytest.approx(np.log(3))     # valid labels still run
    with pytest.raises(IndexError, match=r"labels must be in \[0, 3\)"):
        with tj.lazy():
            float(F.nll_loss(x, tj.asarray(labels)))


def test_lazy_loss_does_not_flush_to_check_its_labels() -> None:
    from tracejit import lazy_mode
    x, y = tj.asarray(np.ones((4, 5), np.float32)), tj.asarray([0, 1, 4, -100])
    before = lazy_mode.stats["flushes"]
    with tj.lazy():
        loss = F.cross_entropy(tj.exp(x) * 2, y)
        assert lazy_mode.stats["flushes"] == before
        value = float(loss)
    assert lazy_mode.stats["flushes"] == before + 1
    assert value == pytest.approx(np.log(5))
