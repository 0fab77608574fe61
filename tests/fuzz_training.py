"""Differential fuzzer of training loops: random small models, optimizers, schedules and loop
shapes, run eagerly, with the step (or part of it) under ``jit``, and in lazy mode; the losses
and the parameters, gradients and optimizer state after every step must agree.

Where :mod:`tests.fuzz` checks programs, this checks the state a training loop keeps between
calls: ``.grad`` set to ``None`` or accumulated, an optimizer's buffers, a learning rate changed
by a scheduler or by hand, ``train()``/``eval()``, a parameter frozen half-way, random streams
re-seeded, gradient clipping, a checkpoint reloaded, a smaller last batch.  ``jit`` wraps one
of: the whole step, the optimizer step alone, the forward and loss, or forward and backward.

    python -m tests.fuzz_training --seconds 120 [--seed S]
"""
from __future__ import annotations

import argparse
import copy
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import tracejit as tj
import tracejit.nn as nn
import tracejit.nn.functional as F

GRANULARITIES = ("step", "optimizer", "forward", "forward_backward")
MODES = ("eager", "jit", "lazy")


@dataclass
class Config:
    """One training loop, drawn from a seed."""
    seed: int
    width: int
    layers: list[str]
    optimizer: str
    opt_args: dict[str, Any]
    scheduler: str
    loss: str
    granularity: str
    zero_grad: str               # start | end | zeros (set_to_none=False) | accumulate (every 2 steps)
    clip: float | None
    steps: int
    events: dict[int, str] = field(default_factory=dict)   # step -> lr | eval | freeze | reseed | reload
    ragged: bool = False          # the last batch is smaller (a re-trace at a new size)


def draw(seed: int) -> Config:
    r = random.Random(seed)
    layers: list[str] = []
    for _ in range(r.randint(1, 3)):
        kind = r.choice(["linear", "linear_relu", "tanh", "layer_norm", "dropout", "batch_norm"])
        if kind == "batch_norm" and layers:
            # a batch norm after a per-feature shift (a bias, a norm's affine parameters; through
            # a ReLU whose units are all on too) makes its gradient zero up to rounding, and
            # Adam-like optimizers scale that rounding up to full-size steps: chaos, not a finding
            kind = "tanh"
        layers.append(kind)
    optimizer = r.choice(["sgd", "adam", "adamw", "rmsprop", "adagrad"])
    opt_args: dict[str, Any] = {"lr": r.choice([0.01, 0.05, 0.1])}
    if optimizer == "sgd":
        opt_args.update(momentum=r.choice([0.0, 0.9]), weight_decay=r.choice([0.0, 0.01]))
        if opt_args["momentum"] and r.random() < 0.5:
            opt_args["nesterov"] = True
    elif optimizer in ("adam", "adamw"):
        opt_args["weight_decay"] = r.choice([0.0, 0.01])
    steps = r.randint(3, 6)
    events = {}
    for s in range(1, steps):
        if r.random() < 0.3:
            events[s] = r.choice(["lr", "eval", "freeze", "reseed", "reload"])
    return Config(seed, r.randint(3, 6), layers, optimizer, opt_args,
                  r.choice(["none", "step", "exponential", "lambda"]), r.choice(["mse", "cross_entropy"]),
                  r.choice(GRANULARITIES), r.choice(["start", "end", "zeros", "accumulate"]),
                  r.choice([None, None, 0.5]), steps, events, r.random() < 0.3)


def _model(cfg: Config) -> nn.Module:
    mods: list[nn.Module] = []
    w = cfg.width
    for kind in cfg.layers:
        if kind == "linear":
            mods.append(nn.Linear(w, w))
        elif kind == "linear_relu":
            mods += [nn.Linear(w, w), nn.ReLU()]
        elif kind == "tanh":
            mods.append(nn.Tanh())
        elif kind == "layer_norm":
            mods.append(nn.LayerNorm(w))
        elif kind == "dropout":
            mods.append(nn.Dropout(0.3))
        else:
            mods.append(nn.BatchNorm1d(w))
    mods.append(nn.Linear(w, 3))
    return nn.Sequential(*mods)


def _optimizer(cfg: Config, params: list) -> Any:
    cls = {"sgd": tj.optim.SGD, "adam": tj.optim.Adam, "adamw": tj.optim.AdamW,
           "rmsprop": tj.optim.RMSprop, "adagrad": tj.optim.Adagrad}[cfg.optimizer]
    return cls(params, **cfg.opt_args)


def _scheduler(cfg: Config, opt: Any) -> Any:
    S = tj.optim.lr_scheduler
    if cfg.scheduler == "step":
        return S.StepLR(opt, step_size=2, gamma=0.5)
    if cfg.scheduler == "exponential":
        return S.ExponentialLR(opt, gamma=0.8)
    if cfg.scheduler == "lambda":
        return S.LambdaLR(opt, lambda epoch: 1.0 / (1 + epoch))
    return None


def run(cfg: Config, mode: str, dtype: Any = np.float32) -> list[np.ndarray]:
    """The loop in ``mode``; returns every observed value (losses, then state after each step).
    ``dtype=np.float64`` runs it eagerly in double precision: how far float32 rounding alone moves
    each value, the tolerance for the float32 modes."""
    tj.manual_seed(cfg.seed)
    data = np.random.default_rng(cfg.seed)
    rows = [3 if cfg.ragged and k == cfg.steps - 1 else 5 for k in range(cfg.steps)]
    xs = [data.standard_normal((n, cfg.width)).astype(dtype) for n in rows]
    ys = [data.integers(0, 3, n) if cfg.loss == "cross_entropy" else
          data.standard_normal((n, 3)).astype(dtype) for n in rows]
    model = _model(cfg)
    if dtype == np.float64:
        model.to(tj.float64)
    opt = _optimizer(cfg, list(model.parameters()))
    sched = _scheduler(cfg, opt)
    set_to_none = cfg.zero_grad != "zeros"

    def loss_of(x, y):
        out = model(x)
        return F.cross_entropy(out, y) if cfg.loss == "cross_entropy" else ((out - y) ** 2).mean()

    def update():
        if cfg.clip is not None:
            tj.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()

    def step(x, y, do_update):
        if cfg.zero_grad in ("start", "zeros"):
            opt.zero_grad(set_to_none=set_to_none)
        loss = loss_of(x, y)
        loss.backward()
        if do_update:
            update()
            if cfg.zero_grad in ("end", "accumulate"):
                opt.zero_grad()
        return loss

    wrap = tj.jit if mode == "jit" else (lambda f: f)
    g = cfg.granularity
    whole = {True: wrap(lambda x, y: step(x, y, True)), False: wrap(lambda x, y: step(x, y, False))}
    jit_update, jit_loss = wrap(update), wrap(loss_of)

    def fwd_bwd(x, y):
        loss = loss_of(x, y)
        loss.backward()
        return loss
    jit_fwd_bwd = wrap(fwd_bwd)

    def one_step(x, y, do_update):
        if g == "step":
            return whole[do_update](x, y)
        if cfg.zero_grad in ("start", "zeros"):
            opt.zero_grad(set_to_none=set_to_none)
        if g == "optimizer":
            loss = loss_of(x, y)
            loss.backward()
        elif g == "forward":
            loss = jit_loss(x, y)
            loss.backward()
        else:
            loss = jit_fwd_bwd(x, y)
        if do_update:
            (jit_update if g == "optimizer" else update)()
            if cfg.zero_grad in ("end", "accumulate"):
                opt.zero_grad()
        return loss

    observed: list[np.ndarray] = []
    saved: tuple = ()
    for k in range(cfg.steps):
        event = cfg.events.get(k)
        if event == "lr":
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.3
        elif event == "eval":
            model.eval()
            with tj.no_grad():
                observed.append(wrap(lambda x: model(x))(tj.asarray(xs[k])).numpy().copy())
            model.train()
        elif event == "freeze":
            first = next(iter(model.parameters()))
            first.requires_grad = False
            first.grad = None
        elif event == "reseed":
            tj.manual_seed(cfg.seed + k)
        elif event == "reload":             # back to the state saved after the first step
            model.load_state_dict(saved[0])
            opt.load_state_dict(saved[1])
        do_update = cfg.zero_grad != "accumulate" or k % 2 == 1 or k == cfg.steps - 1
        x, y = tj.asarray(xs[k]), tj.asarray(ys[k])
        if mode == "lazy":
            with tj.lazy():
                loss = one_step(x, y, do_update)
        else:
            loss = one_step(x, y, do_update)
        observed.append(np.asarray(loss.numpy(), dtype=np.float64).reshape(-1))
        if sched is not None and do_update:
            sched.step()
        if k == 0:
            saved = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
        for p in model.parameters():
            observed.append(p.numpy().copy())
            observed.append(np.array([np.nan]) if p.grad is None else p.grad.numpy().copy())
        for buf in model.buffers():
            observed.append(buf.numpy().copy())
    return observed


def check(cfg: Config) -> str | None:
    """None when every mode agrees with eager, else a description of the first difference."""
    ref = run(cfg, "eager")
    precise = run(cfg, "eager", np.float64)
    # how much float32 rounding moves each value (a loop can amplify it: an optimizer that
    # divides by the gradient's size turns a near-zero gradient's rounding into a full step)
    slack = [4 * np.abs(a.astype(np.float64) - p) for a, p in zip(ref, precise)]
    for mode in MODES[1:]:
        try:
            got = run(cfg, mode)
        except Exception as e:  # noqa: BLE001  (a failure is a finding)
            return f"{mode} raised {type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
        if len(got) != len(ref):
            return f"{mode}: {len(got)} observations, eager {len(ref)}"
        for i, (a, b, tol) in enumerate(zip(ref, got, slack)):
            if a.shape != b.shape:
                return f"{mode}: observation {i} has shape {b.shape}, eager {a.shape}"
            diff = np.abs(a.astype(np.float64) - b)
            close = diff <= 1e-4 + 1e-4 * np.abs(a) + np.nan_to_num(tol, nan=0.0)
            bad = ~close & ~(np.isnan(a) & np.isnan(b))
            if bad.any():
                return f"{mode}: observation {i} differs: {b.ravel()[:6]} vs eager {a.ravel()[:6]}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(argv)
    end, seed, n, found = time.monotonic() + ns.seconds, ns.seed, 0, 0
    while time.monotonic() < end:
        cfg = draw(seed)
        problem = check(cfg)
        n += 1
        if problem:
            found += 1
            print(f"seed {seed}: {cfg}\n  {problem}", flush=True)
        seed += 1
    print(f"training loops run: {n}, findings: {found}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
