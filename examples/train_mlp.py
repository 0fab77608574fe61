"""Train an MLP (784-512-512-10) on synthetic data, eagerly and with the whole step jitted
(and, with ``--lazy``, the unchanged eager step in lazy mode: recorded, fused and compiled).

The data are Gaussian class blobs in a 32-dim space projected to 784 dims (nothing is
downloaded).  Both runs start from the same weights, see the same batches and the same
dropout masks, so their losses agree to float32 rounding.

    python examples/train_mlp.py                       # short run (< 1 min)
    python examples/train_mlp.py --lazy                # eager, lazy and jit side by side
    python examples/train_mlp.py --epochs 5 --samples 20000 --backend interpret
    python examples/train_mlp.py --device cuda         # on a GPU (pip install 'tracejit[cuda]')
    python examples/train_mlp.py --logdir runs/        # TensorBoard: tensorboard --logdir runs/
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

import tracejit as tj

nn, F = tj.nn, tj.nn.functional


def make_data(n: int, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, 32)) * 0.35   # overlapping blobs: not separable at once
    labels = rng.integers(0, classes, n)
    latent = centers[labels] + rng.standard_normal((n, 32))
    proj = rng.standard_normal((32, 784)) / np.sqrt(32)
    x = np.tanh(latent @ proj).astype(np.float32)
    return x, labels.astype(np.int64)


def make_model(dropout: float) -> nn.Module:
    tj.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def progress(epoch: int, i: int, n: int, loss: float, width: int = 30) -> None:
    done = int(width * i / n)
    sys.stdout.write(f"\r  epoch {epoch} [{'#' * done}{'.' * (width - done)}] {i}/{n} loss {loss:.4f}")
    sys.stdout.flush()


def train(mode: str, args: argparse.Namespace, loader: tj.data.DataLoader) -> list[float]:
    model = make_model(args.dropout).to(args.device)
    opt = tj.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if args.logdir:      # the gradient's norm, before the update
            grad_norm = tj.sqrt(sum((p.grad * p.grad).sum() for p in model.parameters()))
        opt.step()
        return (loss, grad_norm) if args.logdir else loss

    def lazy_step(x: tj.Tensor, y: tj.Tensor) -> Any:
        with tj.lazy():              # the eager step recorded; reading the loss flushes it
            out = step(x, y)
            return (float(out[0]), float(out[1])) if args.logdir else float(out)

    run = tj.jit(step, backend=args.backend) if mode == "jit" else lazy_step if mode == "lazy" else step
    writer = tj.utils.tensorboard.SummaryWriter(f"{args.logdir}/{mode}") if args.logdir else None
    tj.manual_seed(1)                      # dropout masks: the same stream in both runs
    print(f"{mode}:")
    epoch_losses = []
    step_times: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        total, n = 0.0, len(loader)
        for i, (x, y) in enumerate(loader, 1):
            t_step = time.perf_counter()
            out = run(x.to(args.device), y.to(args.device))
            loss = float(out[0] if writer else out)
            step_times.append(time.perf_counter() - t_step)
            if writer:
                k = epoch * n + i - 1
                writer.add_scalar("train/loss", loss, k)
                writer.add_scalar("train/lr", opt.param_groups[0]["lr"], k)
                writer.add_scalar("train/grad_norm", out[1], k)
                writer.add_scalar("train/step_ms", step_times[-1] * 1e3, k)
            total += loss
            progress(epoch, i, n, loss)
        epoch_losses.append(total / n)
        print(f"\r  epoch {epoch}: mean loss {total / n:.5f}" + " " * 40)
    later = sorted(step_times[1:]) or step_times        # (the first step compiles)
    print(f"  {time.perf_counter() - t0:.2f} s; first step {step_times[0] * 1e3:.1f} ms, "
          f"median step after it {later[len(later) // 2] * 1e3:.2f} ms")
    if writer:
        writer.close()
    model.eval()
    with tj.no_grad():
        batch = loader.dataset.get_batch(np.arange(min(2000, len(loader.dataset))))
        x, y = (t.to(args.device) for t in batch)
        acc = float(tj.mean(tj.astype(tj.argmax(model(x), axis=1) == y, tj.float32)))
    print(f"  accuracy on {x.shape[0]} training samples: {acc:.3f}")
    return epoch_losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--backend", default="llvm", choices=["llvm", "interpret"])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (batches are moved there per step)")
    ap.add_argument("--logdir", default="",
                    help="write TensorBoard logs (loss, lr, grad norm, step time) here")
    ap.add_argument("--lazy", action="store_true", help="also train the eager step in lazy mode (tj.lazy)")
    args = ap.parse_args()

    x, y = make_data(args.samples)
    ds = tj.data.TensorDataset(x, y)
    losses = {}
    for mode in ("eager", "lazy", "jit") if args.lazy else ("eager", "jit"):
        loader = tj.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, seed=0, drop_last=True)
        losses[mode] = train(mode, args, loader)
    diff = max(abs(a - b) for mode in losses for a, b in zip(losses["eager"], losses[mode]))
    for mode, values in losses.items():
        print(f"{mode:6s}", " ".join(f"{v:.5f}" for v in values))
    print(f"max difference of epoch losses: {diff:.2e} -> {'agree' if diff < 1e-3 else 'DIFFER'}")


if __name__ == "__main__":
    main()
