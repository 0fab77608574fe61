"""Optimizers: PyTorch's update rules step for step, state_dict, and jitted training steps."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

nn, F = tj.nn, tj.nn.functional

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05, eps=1e-6)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, weight_decay=0.1, amsgrad=True)),
]


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 5)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(8).astype(np.float32) * 0.1
    w2 = rng.standard_normal((3, 8)).astype(np.float32) * 0.3
    xs = [rng.standard_normal((6, 5)).astype(np.float32) for _ in range(7)]
    ys = [rng.integers(0, 3, 6) for _ in range(7)]
    return [w1, b1, w2], xs, ys


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_matches_torch_optim(name: str, kw: dict) -> None:
    torch = pytest.importorskip("torch")
    init, xs, ys = _data()
    tp = [torch.tensor(a, requires_grad=True) for a in init]
    jp = [tj.asarray(a.copy(), requires_grad=True) for a in init]
    topt = getattr(torch.optim, name)(tp, **kw)
    jopt = getattr(tj.optim, name)(jp, **kw)
    for x, y in zip(xs, ys):
        topt.zero_grad()
        tl = torch.nn.functional.cross_entropy(torch.relu(torch.tensor(x) @ tp[0].T + tp[1]) @ tp[2].T,
                                               torch.tensor(y))
        tl.backward()
        topt.step()
        jopt.zero_grad()
        jl = F.cross_entropy(F.relu(tj.asarray(x) @ jp[0].T + jp[1]) @ jp[2].T, tj.asarray(y))
        jl.backward()
        jopt.step()
        np.testing.assert_allclose(float(jl), float(tl.detach()), rtol=1e-4, atol=1e-5)
    for a, b in zip(jp, tp):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-3, atol=1e-4)


def _model():
    tj.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.GELU(), nn.Dropout(0.1), nn.LayerNorm(16), nn.Linear(16, 3))


@pytest.mark.parametrize("opt_name,kw", [("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1)),
                                         ("AdamW", dict(lr=0.01))])
def test_jitted_training_steps_match_eager(jit_backend: str, opt_name: str, kw: dict) -> None:
    _, xs, ys = _data(1)
    runs = {}
    for mode in ("eager", "jit"):
        model = _model()
        opt = getattr(tj.optim, opt_name)(model.parameters(), **kw)
        tj.manual_seed(123)   # dropout masks: same stream in both runs

        def step(x, y, model=model, opt=opt):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss

        fn = tj.jit(step, backend=jit_backend) if mode == "jit" else step
        losses = [float(fn(tj.asarray(xs[i % 7]), tj.asarray(ys[i % 7]))) for i in range(20)]
        runs[mode] = losses, [p.numpy().copy() for p in model.parameters()], opt
        if mode == "jit":
            assert fn.cache_info()["traces"] == 1
    (le, pe, _), (lj, pj, oj) = runs["eager"], runs["jit"]
    np.testing.assert_allclose(lj, le, rtol=1e-5, atol=1e-6)
    for a, b in zip(pj, pe):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if opt_name == "AdamW":
        assert float(next(iter(oj.state.values()))["step"]) == 20.0


def test_optimizer_state_dict_round_trip() -> None:
    init, xs, ys = _data()

    def run(opt, ps, n):
        for x, y in list(zip(xs, ys))[:n]:
            opt.zero_grad()
            F.cross_entropy(F.relu(tj.asarray(x) @ ps[0].T + ps[1]) @ ps[2].T, tj.asarray(y)).backward()
            opt.step()

    ps = [tj.asarray(a.copy(), requires_grad=True) for a in init]
    opt = tj.optim.Adam(ps, lr=0.01)
    run(opt, ps, 3)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0, 1, 2] and set(sd["state"][0]) >= {"step", "exp_avg"}
    ps2 = [tj.asarray(p.numpy().copy(), requires_grad=True) for p in ps]
    opt2 = tj.optim.Adam(ps2, lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.01
    run(opt, ps, 5)
    run(opt2, ps2, 5)
    for a, b in zip(ps, ps2):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_param_groups_zero_grad_and_errors() -> None:
    a = tj.asarray([1.0], requires_grad=True)
    b = tj.asarray([2.0], requires_grad=True)
    opt = tj.optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    (a * 3 + b * 5).sum().backward()
    opt.step()
    np.testing.assert_allclose(a.numpy(), [0.7])
    np.testing.assert_allclose(b.numpy(), [-3.0])
    opt.zero_grad(set_to_none=False)
    assert float(a.grad.sum()) == 0.0
    opt.zero_grad()
    assert a.grad is None
    with pytest.raises(ValueError, match="empty"):
        tj.optim.Adam([])
    with pytest.raises(ValueError, match="more than one"):
        tj.optim.SGD([{"params": [a]}, {"params": [a]}])


def test_compiled_training_step_kernel_count() -> None:
    try:
        import tracejit.compiler  # noqa: F401
    except ImportError:
        pytest.skip("needs the llvm backend")
    model = _model()
    opt = tj.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    lowered = tj.jit(step, backend="llvm").lower(tj.spec((32, 5), tj.float32), tj.spec((32,), tj.int64))
    # forward (linear, gelu, dropout, layer_norm, linear, cross_entropy), backward and the AdamW
    # update of 6 parameters (each parameter's m, v, step and new value in one kernel), and the
    # count of labels that are not ignore_index (the mean's divisor): 27 kernels for a graph of
    # 463 nodes, where running it op by op would launch one per node.  (Four of them store once
    # what several kernels would otherwise each recompute: dropout's random key, broadcast to
    # every element, and three reductions read by kernels that do not read their inputs.)
    n = len(lowered.kernels)
    assert n <= 27, f"{n} kernels for {len(lowered.graph)} graph nodes"
    assert len(lowered.graph) > 10 * n
