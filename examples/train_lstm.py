"""Train a character-level LSTM language model on Python's standard-library sources.

Embedding -> ``nn.LSTM`` (two layers) -> linear head, trained with truncated windows.  The
same model, batches and dropout masks run eagerly and with the whole training step jitted
(the recurrent loop unrolled into one compiled program); the loss curve, a sample of
generated text and a table of step times are printed.

    python examples/train_lstm.py
    python examples/train_lstm.py --steps 500 --hidden 256 --seq-len 64
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from stdlib_text import CharVocab, progress, stdlib_text, step_table, windows

import tracejit as tj

nn, F = tj.nn, tj.nn.functional


class CharLSTM(nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: tj.Tensor, state: tuple[tj.Tensor, tj.Tensor] | None = None
                ) -> tuple[tj.Tensor, tuple[tj.Tensor, tj.Tensor]]:
        out, state = self.lstm(self.embed(ids), state)
        return self.head(out), state


def train(mode: str, args: argparse.Namespace, data: np.ndarray, vocab: CharVocab
          ) -> tuple[CharLSTM, list[float], list[float]]:
    tj.manual_seed(0)
    model = CharLSTM(len(vocab), args.embed, args.hidden, args.layers, args.dropout)
    opt = tj.optim.Adam(model.parameters(), lr=args.lr)

    def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
        opt.zero_grad()
        logits, _ = model(x)
        loss = F.cross_entropy(tj.reshape(logits, (-1, len(vocab))), tj.reshape(y, (-1,)))
        loss.backward()
        opt.step()
        return loss

    def lazy_step(x: tj.Tensor, y: tj.Tensor) -> float:
        with tj.lazy():              # the eager step recorded; reading the loss flushes it
            return float(step(x, y))

    run = tj.jit(step) if mode == "jit" else lazy_step if mode == "lazy" else step
    rng = np.random.default_rng(1)
    tj.manual_seed(2)
    losses, times = [], []
    for i in range(1, args.steps + 1):
        x, y = windows(data, args.batch_size, args.seq_len, rng)
        t0 = time.perf_counter()
        loss = float(run(tj.asarray(x), tj.asarray(y)))
        times.append(time.perf_counter() - t0)
        losses.append(loss)
        progress(mode, i, args.steps, loss)
    print()
    return model, losses, times


def sample(model: CharLSTM, vocab: CharVocab, prompt: str, n: int, temperature: float, seed: int = 0) -> str:
    """Feed ``prompt``, then generate ``n`` characters one at a time, carrying the LSTM state."""
    model.eval()
    rng = np.random.default_rng(seed)
    out = list(prompt)
    with tj.no_grad():
        logits, state = model(tj.asarray(vocab.encode(prompt)[None, :]))
        for _ in range(n):
            z = logits.numpy()[0, -1] / temperature
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
            out.append(vocab.chars[nxt])
            logits, state = model(tj.asarray(np.array([[nxt]], dtype=np.int64)), state)
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--embed", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--modes", default="eager,lazy,jit", help="comma-separated: eager, lazy, jit")
    ap.add_argument("--sample", type=int, default=200)
    args = ap.parse_args()

    text = stdlib_text()
    vocab = CharVocab(text)
    data = vocab.encode(text)
    print(f"{len(text)} characters of standard-library source, {len(vocab)} distinct")
    modes = args.modes.split(",")
    curves, times, model = {}, {}, None
    for mode in modes:
        model, curves[mode], times[mode] = train(mode, args, data, vocab)
    print("\nloss curve (mean over each tenth of training):")
    chunk = max(1, args.steps // 10)
    for mode, c in curves.items():
        print(f"  {mode:6s}", " ".join(f"{np.mean(c[i:i + chunk]):.3f}" for i in range(0, len(c), chunk)))
    if len(curves) > 1:
        base = curves[modes[0]]
        diff = max(max(abs(a - b) for a, b in zip(base, c)) for c in curves.values())
        print(f"  largest difference between modes at any step: {diff:.2e}")
    print("\nsample:\n" + sample(model, vocab, "def ", args.sample, 0.8))
    print("\n" + step_table(times))


if __name__ == "__main__":
    main()
