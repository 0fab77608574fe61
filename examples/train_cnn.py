"""Train a LeNet-style CNN on scikit-learn's bundled 8x8 handwritten digits: eager, lazy and jit.

The data ship with scikit-learn (``pip install 'tracejit[examples]'``), nothing is downloaded:
1797 grey-scale 8x8 digits, split 80/20 into training and test sets.  All runs start from the
same weights and see the same batches and dropout masks, so their losses agree to float32
rounding; each prints its test accuracy, and a final table compares step times.

    python examples/train_cnn.py                  # about a minute on 2 cores
    python examples/train_cnn.py --epochs 30 --batch-size 32
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import tracejit as tj

nn, F = tj.nn, tj.nn.functional


def load_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): images (N, 1, 8, 8) scaled to [0, 1], int64 labels."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        sys.exit("this example needs scikit-learn for its bundled digits: pip install 'tracejit[examples]'")
    data = sk_load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_train = int(0.8 * len(y))
    tr, te = order[:n_train], order[n_train:]
    return x[tr], y[tr], x[te], y[te]


class LeNet(nn.Module):
    """conv(1->16, 3x3) - bn - relu - maxpool, conv(16->32, 3x3) - relu - maxpool, 128-64-10."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.drop = nn.Dropout2d(dropout)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: tj.Tensor) -> tj.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)      # (N, 16, 4, 4)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)                # (N, 32, 2, 2)
        x = self.drop(x).reshape(x.shape[0], -1)
        return self.fc2(F.relu(self.fc1(x)))


def progress(epoch: int, i: int, n: int, loss: float, width: int = 30) -> None:
    done = int(width * i / n)
    sys.stdout.write(f"\r  epoch {epoch:2d} [{'#' * done}{'.' * (width - done)}] {i}/{n} loss {loss:.4f}")
    sys.stdout.flush()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, predict) -> float:
    model.eval()
    with tj.no_grad():
        pred = np.asarray(tj.argmax(predict(tj.asarray(x)), axis=1))
    model.train()
    return float((pred == y).mean())


def train(mode: str, args: argparse.Namespace, data: tuple) -> dict:
    x_train, y_train, x_test, y_test = data
    tj.manual_seed(0)
    model = LeNet(args.dropout)
    opt = tj.optim.Adam(model.parameters(), lr=args.lr)

    def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def predict(x: tj.Tensor) -> tj.Tensor:
        return model(x)

    def lazy_step(x: tj.Tensor, y: tj.Tensor) -> float:
        with tj.lazy():              # the eager step recorded; reading the loss flushes it
            return float(step(x, y))

    def lazy_predict(x: tj.Tensor) -> np.ndarray:
        with tj.lazy():
            return predict(x).numpy()

    run, run_predict = {"jit": (tj.jit(step), tj.jit(predict)), "lazy": (lazy_step, lazy_predict)}.get(
        mode, (step, predict))
    loader = tj.data.DataLoader(tj.data.TensorDataset(x_train, y_train), batch_size=args.batch_size,
                                shuffle=True, seed=0, drop_last=True)
    tj.manual_seed(1)                      # dropout masks: the same stream in every mode
    print(f"{mode}:")
    times, losses = [], []
    for epoch in range(args.epochs):
        total, n = 0.0, len(loader)
        for i, (x, y) in enumerate(loader, 1):
            t0 = time.perf_counter()
            loss = float(run(x, y))        # float() waits for the result
            times.append(time.perf_counter() - t0)
            total += loss
            progress(epoch, i, n, loss)
        losses.append(total / n)
        print(f"\r  epoch {epoch:2d}: mean loss {total / n:.4f}" + " " * 40)
    acc = accuracy(model, x_test, y_test, run_predict)
    print(f"  test accuracy ({len(y_test)} digits): {acc:.3f}")
    return {"times": times, "losses": losses, "accuracy": acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--modes", default="eager,lazy,jit", help="comma-separated: eager, lazy, jit")
    args = ap.parse_args()

    data = load_digits()
    results = {mode: train(mode, args, data) for mode in args.modes.split(",")}
    print(f"\n{'mode':6s} {'first step':>11s} {'median step':>12s} {'mean step':>10s} {'test acc':>9s}")
    for mode, r in results.items():
        rest = r["times"][1:] or r["times"]
        print(f"{mode:6s} {r['times'][0] * 1e3:9.1f}ms {statistics.median(rest) * 1e3:10.2f}ms "
              f"{statistics.fmean(rest) * 1e3:8.2f}ms {r['accuracy']:9.3f}")
    if len(results) > 1:
        first, *others = results.values()
        diff = max(abs(a - b) for r in others for a, b in zip(first["losses"], r["losses"]))
        print(f"max difference of epoch losses between modes: {diff:.2e}")


if __name__ == "__main__":
    main()
