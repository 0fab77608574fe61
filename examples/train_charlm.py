"""Train a small character-level transformer on Python's standard-library sources.

A causal model: token and position embeddings, pre-norm ``TransformerEncoderLayer`` blocks
with ``is_causal=True``, a final LayerNorm and a linear head.  The same model, batches and
dropout masks run eagerly and with the whole training step jitted; the loss curve of each run
is printed, then a sample of generated text and a table of step times.

    python examples/train_charlm.py                    # short run
    python examples/train_charlm.py --steps 1000 --layers 4 --d-model 128
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from stdlib_text import CharVocab, progress, stdlib_text, step_table, windows

import tracejit as tj

nn, F = tj.nn, tj.nn.functional


class CharTransformer(nn.Module):
    def __init__(self, vocab: int, context: int, d_model: int, heads: int, layers: int,
                 dropout: float) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, activation="gelu",
                                       batch_first=True, norm_first=True) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        for p in (self.tok.weight, self.pos.weight):
            tj.nn.init.normal_(p, std=0.02)

    def forward(self, ids: tj.Tensor) -> tj.Tensor:
        x = self.tok(ids) + self.pos(tj.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x, is_causal=True)
        return self.head(self.norm(x))


def train(mode: str, args: argparse.Namespace, data: np.ndarray, vocab: CharVocab
          ) -> tuple[CharTransformer, list[float], list[float]]:
    tj.manual_seed(0)
    model = CharTransformer(len(vocab), args.context, args.d_model, args.heads, args.layers, args.dropout)
    opt = tj.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
        opt.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(tj.reshape(logits, (-1, len(vocab))), tj.reshape(y, (-1,)))
        loss.backward()
        opt.step()
        return loss

    def lazy_step(x: tj.Tensor, y: tj.Tensor) -> float:
        with tj.lazy():              # the eager step recorded; reading the loss flushes it
            return float(step(x, y))

    run = tj.jit(step) if mode == "jit" else lazy_step if mode == "lazy" else step
    rng = np.random.default_rng(1)           # the same batches in every mode
    tj.manual_seed(2)                        # and the same dropout masks
    losses, times = [], []
    for i in range(1, args.steps + 1):
        x, y = windows(data, args.batch_size, args.context, rng)
        t0 = time.perf_counter()
        loss = float(run(tj.asarray(x), tj.asarray(y)))
        times.append(time.perf_counter() - t0)
        losses.append(loss)
        progress(mode, i, args.steps, loss)
    print()
    return model, losses, times


def sample(model: CharTransformer, vocab: CharVocab, prompt: str, n: int, context: int,
           temperature: float, seed: int = 0) -> str:
    """Generate ``n`` characters after ``prompt`` (the last ``context`` characters condition each)."""
    model.eval()
    rng = np.random.default_rng(seed)
    forward = tj.jit(lambda ids: model(ids)[0, -1])        # one shape: compiled once
    ids = list(vocab.encode(prompt.rjust(context)))
    with tj.no_grad():
        for _ in range(n):
            logits = forward(tj.asarray(np.array([ids[-context:]], dtype=np.int64))).numpy() / temperature
            p = np.exp(logits - logits.max())
            ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return prompt + vocab.decode(np.array(ids[context:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--modes", default="eager,lazy,jit", help="comma-separated: eager, lazy, jit")
    ap.add_argument("--sample", type=int, default=200, help="characters to generate after training")
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
    print("\nsample:\n" + sample(model, vocab, "def ", args.sample, args.context, 0.8))
    print("\n" + step_table(times))


if __name__ == "__main__":
    main()
