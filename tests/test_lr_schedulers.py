"""RMSprop, Adagrad and the learning-rate schedules against torch.optim, and a scheduled jitted step."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
nn, F = tj.nn, tj.nn.functional
LRS = tj.optim.lr_scheduler

OPT_CONFIGS = [
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.05)),
    ("RMSprop", dict(lr=0.005, momentum=0.9, centered=True)),
    ("RMSprop", dict(lr=0.005, momentum=0.5, maximize=True)),
    ("Adagrad", dict(lr=0.05)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.1, weight_decay=0.01, initial_accumulator_value=0.2)),
    ("Adagrad", dict(lr=0.02, eps=1e-6, maximize=True)),
]


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 5)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(8).astype(np.float32) * 0.1
    w2 = rng.standard_normal((3, 8)).astype(np.float32) * 0.3
    xs = [rng.standard_normal((6, 5)).astype(np.float32) for _ in range(5)]
    ys = [rng.integers(0, 3, 6) for _ in range(5)]
    return [w1, b1, w2], xs, ys


@pytest.mark.parametrize("name,kw", OPT_CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPT_CONFIGS)])
def test_optimizer_matches_torch_over_many_steps(name: str, kw: dict) -> None:
    init, xs, ys = _problem()
    tp = [torch.tensor(a, requires_grad=True) for a in init]
    jp = [tj.asarray(a.copy(), requires_grad=True) for a in init]
    topt, jopt = getattr(torch.optim, name)(tp, **kw), getattr(tj.optim, name)(jp, **kw)
    for i in range(25):
        x, y = xs[i % 5], ys[i % 5]
        topt.zero_grad()
        torch.nn.functional.cross_entropy(torch.relu(torch.tensor(x) @ tp[0].T + tp[1]) @ tp[2].T,
                                          torch.tensor(y)).backward()
        topt.step()
        jopt.zero_grad()
        F.cross_entropy(F.relu(tj.asarray(x) @ jp[0].T + jp[1]) @ jp[2].T, tj.asarray(y)).backward()
        jopt.step()
        for a, b in zip(jp, tp):
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=f"step {i}")
    # the state tensors are torch's too
    for key in ("square_avg", "grad_avg", "momentum_buffer", "sum"):
        if key in topt.state[tp[0]]:
            np.testing.assert_allclose(jopt.state[id(jp[0])][key].numpy(), topt.state[tp[0]][key].numpy(),
                                       rtol=1e-4, atol=1e-6)


def test_optimizer_hyperparameter_errors() -> None:
    p = tj.asarray([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="alpha"):
        tj.optim.RMSprop([p], alpha=-0.1)
    with pytest.raises(ValueError, match="lr_decay"):
        tj.optim.Adagrad([p], lr_decay=-1.0)


# ---------------------------------------------------------------------------- schedules

def _pair(opt_name: str = "SGD", groups: int = 2, **kw):
    """A torch optimizer and ours with the same param groups (different base lrs)."""
    lrs = [0.1, 0.03][:groups]
    tg = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs]
    jg = [{"params": [tj.asarray(np.zeros(2, np.float32), requires_grad=True)], "lr": lr} for lr in lrs]
    return getattr(torch.optim, opt_name)(tg, lr=0.1, **kw), getattr(tj.optim, opt_name)(jg, lr=0.1, **kw)


def _torch_sched(name: str, opt, *args, **kw):
    sched = getattr(torch.optim.lr_scheduler, name)
    return sched(opt, *args, **kw)


SCHEDULES = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[2, 5, 5, 9], gamma=0.3)),
    ("ConstantLR", dict(factor=0.25, total_iters=4)),
    ("LinearLR", dict(start_factor=0.1, total_iters=6)),                    # warm-up
    ("LinearLR", dict(start_factor=1.0, end_factor=0.2, total_iters=7)),    # linear decay
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=5, eta_min=0.001)),                   # past T_max: rises again
    ("CosineAnnealingLR", dict(T_max=12)),
    ("LambdaLR", dict(lr_lambda=lambda e: 1.0 / (1 + e) ** 0.5)),
    ("MultiplicativeLR", dict(lr_lambda=lambda e: 0.95)),
]


@pytest.mark.parametrize("name,kw", SCHEDULES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SCHEDULES)])
def test_schedule_sequence_matches_torch(name: str, kw: dict) -> None:
    topt, jopt = _pair()
    ts, js = _torch_sched(name, topt, **kw), getattr(LRS, name)(jopt, **kw)
    assert js.get_last_lr() == ts.get_last_lr()
    for i in range(20):
        topt.step()
        jopt.step()
        ts.step()
        js.step()
        np.testing.assert_allclose(js.get_last_lr(), ts.get_last_lr(), rtol=1e-13, err_msg=f"step {i}")
        assert [g["lr"] for g in jopt.param_groups] == js.get_last_lr()


@pytest.mark.parametrize("name,kw", [s for s in SCHEDULES if s[0] in
                                     ("StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR",
                                      "CosineAnnealingLR")])
def test_schedule_closed_form_matches_torch(name: str, kw: dict) -> None:
    topt, jopt = _pair()
    ts, js = _torch_sched(name, topt, **kw), getattr(LRS, name)(jopt, **kw)
    for epoch in (3, 7, 1, 11):
        with pytest.warns(UserWarning):
            ts.step(epoch)
        with pytest.warns(UserWarning, match="deprecated"):
            js.step(epoch)
        np.testing.assert_allclose(js.get_last_lr(), ts.get_last_lr(), rtol=1e-13)


ONECYCLE = [
    dict(max_lr=0.5, total_steps=20),
    dict(max_lr=[0.5, 0.2], total_steps=17, pct_start=0.4, anneal_strategy="linear"),
    dict(max_lr=0.3, epochs=3, steps_per_epoch=7, three_phase=True, div_factor=10.0, final_div_factor=100.0),
    dict(max_lr=0.3, total_steps=15, three_phase=True, anneal_strategy="linear", base_momentum=0.8),
]


@pytest.mark.parametrize("opt_name,opt_kw", [("SGD", dict(momentum=0.9)), ("Adam", {})])
@pytest.mark.parametrize("kw", ONECYCLE)
def test_onecycle_phases_and_momentum_match_torch(opt_name: str, opt_kw: dict, kw: dict) -> None:
    topt, jopt = _pair(opt_name, **opt_kw)
    ts, js = torch.optim.lr_scheduler.OneCycleLR(topt, **kw), LRS.OneCycleLR(jopt, **kw)
    total = kw.get("total_steps") or kw["epochs"] * kw["steps_per_epoch"]
    key = "betas" if opt_name == "Adam" else "momentum"
    for i in range(total):
        np.testing.assert_allclose(js.get_last_lr(), ts.get_last_lr(), rtol=1e-12, err_msg=f"step {i}")
        for tg, jg in zip(topt.param_groups, jopt.param_groups):
            np.testing.assert_allclose(np.ravel(jg[key]), np.ravel(tg[key]), rtol=1e-12)
        if i < total - 1:
            topt.step()
            jopt.step()
            ts.step()
            js.step()
    with pytest.raises(ValueError, match="total_steps"):
        js.step()
        js.step()


def test_onecycle_without_momentum_and_errors() -> None:
    topt, jopt = _pair("Adagrad", groups=1)
    ts = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.2, total_steps=8, cycle_momentum=False)
    js = LRS.OneCycleLR(jopt, max_lr=0.2, total_steps=8, cycle_momentum=False)
    for _ in range(7):
        ts.step()
        js.step()
        np.testing.assert_allclose(js.get_last_lr(), ts.get_last_lr(), rtol=1e-12)
    with pytest.raises(ValueError, match="cycle_momentum"):
        LRS.OneCycleLR(_pair("Adagrad", groups=1)[1], max_lr=0.2, total_steps=8)
    with pytest.raises(ValueError, match="anneal_strategy"):
        LRS.OneCycleLR(jopt, max_lr=0.2, total_steps=8, anneal_strategy="exp", cycle_momentum=False)
    with pytest.raises(ValueError, match="total_steps"):
        LRS.OneCycleLR(jopt, max_lr=0.2, cycle_momentum=False)


def test_sequential_warmup_then_decay_matches_torch() -> None:
    topt, jopt = _pair()

    def build(mod, opt):
        warm = mod.LinearLR(opt, start_factor=0.1, total_iters=4)
        decay = mod.CosineAnnealingLR(opt, T_max=10, eta_min=0.002)
        drop = mod.StepLR(opt, step_size=2, gamma=0.5)
        return mod.SequentialLR(opt, [warm, decay, drop], milestones=[4, 12])

    ts, js = build(torch.optim.lr_scheduler, topt), build(LRS, jopt)
    np.testing.assert_allclose(js.get_last_lr(), ts.get_last_lr(), rtol=1e-13)
    for i in range(20):
        topt.step()
        jopt.step()
        ts.step()
        js.step()
        np.testing.assert_allclose(js.get_last_lr(), ts.get_last_lr(), rtol=1e-13, err_msg=f"step {i}")
    with pytest.raises(ValueError, match="milestones"):
        LRS.SequentialLR(jopt, [LRS.StepLR(jopt, 2)], milestones=[3])


def test_scheduler_state_dict_resume() -> None:
    _, jopt = _pair()
    s = LRS.CosineAnnealingLR(jopt, T_max=9)
    for _ in range(4):
        s.step()
    saved, lrs = s.state_dict(), s.get_last_lr()
    assert "optimizer" not in saved and saved["last_epoch"] == 4
    s.step()
    after = s.get_last_lr()
    s.load_state_dict(saved)
    for g, lr in zip(jopt.param_groups, lrs):
        g["lr"] = lr
    s.step()
    assert s.get_last_lr() == after
    with pytest.raises(KeyError, match="initial_lr"):
        LRS.StepLR(tj.optim.SGD([tj.asarray([0.0], requires_grad=True)], lr=0.1), step_size=2, last_epoch=3)
    with pytest.raises(TypeError, match="not an Optimizer"):
        LRS.StepLR(object(), step_size=2)
    with pytest.raises(ValueError, match="step_size"):
        LRS.StepLR(jopt, step_size=0)


# ---------------------------------------------------------------------------- jitted and scheduled

def _model():
    tj.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 12), nn.GELU(), nn.Linear(12, 3))


@pytest.mark.parametrize("opt_name,kw,sched", [
    ("SGD", dict(lr=0.1, momentum=0.9), lambda o: LRS.OneCycleLR(o, max_lr=0.3, total_steps=12)),
    ("Adam", dict(lr=0.01), lambda o: LRS.OneCycleLR(o, max_lr=0.05, total_steps=12, three_phase=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.5), lambda o: LRS.SequentialLR(
        o, [LRS.LinearLR(o, start_factor=0.2, total_iters=3), LRS.ExponentialLR(o, gamma=0.8)], [3])),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01), lambda o: LRS.CosineAnnealingLR(o, T_max=6)),
])
def test_scheduled_jitted_step_compiles_once_and_matches_eager(opt_name, kw, sched) -> None:
    _, xs, ys = _problem(1)
    runs = {}
    for mode in ("eager", "jit"):
        model = _model()
        opt = getattr(tj.optim, opt_name)(model.parameters(), **kw)
        scheduler = sched(opt)

        def step(x, y, model=model, opt=opt):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss

        fn = tj.jit(step, backend="llvm") if mode == "jit" else step
        losses, lrs, kernels = [], [], []
        for i in range(11):
            losses.append(float(fn(tj.asarray(xs[i % 5]), tj.asarray(ys[i % 5]))))
            scheduler.step()
            lrs.append(opt.param_groups[0]["lr"])
            if mode == "jit":
                info = fn.cache_info()
                kernels.append(info["kernels_compiled"] + info["kernels_disk_hits"])
        runs[mode] = losses, [p.numpy().copy() for p in model.parameters()], lrs
        if mode == "jit":
            # the lr changed at every step: one trace, and no kernel built or loaded after the first call
            assert len(set(lrs)) >= 10
            assert info["traces"] == 1 and info["hits"] == 10, info
            assert kernels == kernels[:1] * 11, kernels
    (le, pe, lre), (lj, pj, lrj) = runs["eager"], runs["jit"]
    assert lre == lrj
    np.testing.assert_allclose(lj, le, rtol=1e-5, atol=1e-6)
    for a, b in zip(pj, pe):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not math.isclose(le[0], le[-1])
