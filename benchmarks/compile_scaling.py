"""C2: how compile time grows with the program: training steps of growing depth, in fresh processes.

Models (the same in every framework, float32, AdamW, the backward pass inside the compiled step):

* ``mlp-D``: ``D`` blocks of Linear(64, 64) + LayerNorm + GELU on a batch of 32, a linear head
  to 10 classes and cross-entropy, at depths ``DEPTHS``;
* ``gpt``: a character-level transformer block (token and position embeddings, one causal
  self-attention layer written with matmul and softmax, 4 heads, a GELU MLP, LayerNorms, a
  linear head; vocabulary 65, context 32, width 64, batch 8).

For each model and JIT, children (``python -m benchmarks.compile_scaling --child ...``, one JSON
line each) measure: the first call with an empty compile cache, the first call of a new
process on the disk cache the first one filled, and (tracejit) the first call at a new batch
size in the process that already compiled the step, which re-traces but compiles no kernel.
tracejit also reports the graph's node count and the compile phases.

Run it with ``python -m benchmarks --only C2`` (not part of the default run: it takes minutes)
or ``python -m benchmarks.compile_scaling [--models mlp-2,gpt] [--impls "tracejit jit"]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .harness import JAX, TJ_JIT, TORCH_COMPILE, Unavailable, fmt_time, framework, short_error

KEY = "C2"
DEPTHS = (2, 4, 8, 16, 32)
MODELS = tuple(f"mlp-{d}" for d in DEPTHS) + ("gpt",)
IMPLS = (TJ_JIT, TORCH_COMPILE, JAX)
_FRAMEWORK = {TJ_JIT: "tracejit", TORCH_COMPILE: "torch", JAX: "jax"}
_MARK = "C2-RESULT "
_CHILD_TIMEOUT_S = 900

WIDTH, BATCH, CLASSES = 64, 32, 10
VOCAB, CONTEXT, HEADS, GPT_BATCH = 65, 32, 4, 8
LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.999), 1e-8, 0.01


# --- problems (NumPy data; every framework starts from the same parameters) ---------------------

def mlp_params(depth: int, width: int = WIDTH, classes: int = CLASSES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    p: dict[str, np.ndarray] = {}
    for i in range(depth):
        p[f"w{i}"] = (rng.standard_normal((width, width)) / math.sqrt(width)).astype(np.float32)
        p[f"b{i}"] = np.zeros(width, np.float32)
        p[f"g{i}"] = np.ones(width, np.float32)
        p[f"s{i}"] = np.zeros(width, np.float32)
    p["wh"] = (rng.standard_normal((width, classes)) / math.sqrt(width)).astype(np.float32)
    p["bh"] = np.zeros(classes, np.float32)
    return p


def mlp_batch(batch: int, width: int = WIDTH, classes: int = CLASSES) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (rng.standard_normal((batch, width)).astype(np.float32),
            rng.integers(0, classes, batch).astype(np.int64))


def gpt_params(width: int = WIDTH, vocab: int = VOCAB, context: int = CONTEXT) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / math.sqrt(shape[0])).astype(np.float32)
    return {"tok": (rng.standard_normal((vocab, width)) * 0.1).astype(np.float32),
            "pos": (rng.standard_normal((context, width)) * 0.1).astype(np.float32),
            "ln1_g": np.ones(width, np.float32), "ln1_b": np.zeros(width, np.float32),
            "wqkv": w(width, 3 * width), "wo": w(width, width),
            "ln2_g": np.ones(width, np.float32), "ln2_b": np.zeros(width, np.float32),
            "w1": w(width, 4 * width), "b1": np.zeros(4 * width, np.float32),
            "w2": w(4 * width, width), "b2": np.zeros(width, np.float32),
            "lnf_g": np.ones(width, np.float32), "lnf_b": np.zeros(width, np.float32),
            "head": w(width, vocab)}


def gpt_batch(batch: int, vocab: int = VOCAB, context: int = CONTEXT) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (rng.integers(0, vocab, (batch, context)).astype(np.int64),
            rng.integers(0, vocab, (batch, context)).astype(np.int64))


def problem(model: str, batch: int | None = None
            ) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if model == "gpt":
        return gpt_params(), gpt_batch(batch or GPT_BATCH)
    depth = int(model.split("-")[1])
    return mlp_params(depth), mlp_batch(batch or BATCH)


# --- tracejit --------------------------------------------------------------------------------

def tracejit_step(model: str, params: Mapping[str, np.ndarray]) -> tuple[Callable[..., Any], Any]:
    """(step(x, y) -> loss, tj): modules built from ``params``, AdamW, backward inside; not jitted."""
    tj = framework("tracejit")
    nn, F = tj.nn, tj.nn.functional

    def load(t: Any, a: np.ndarray) -> None:
        with tj.no_grad():
            t[...] = tj.asarray(a)

    if model == "gpt":
        class Block(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.tok = nn.Embedding(VOCAB, WIDTH)
                self.pos = nn.Parameter(np.zeros((CONTEXT, WIDTH), np.float32))
                self.ln1, self.ln2, self.lnf = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
                self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
                self.proj = nn.Linear(WIDTH, WIDTH, bias=False)
                self.fc1, self.fc2 = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)
                self.head = nn.Linear(WIDTH, VOCAB, bias=False)
                self.gelu = nn.GELU()

            def forward(self, idx: Any) -> Any:
                b, t = idx.shape
                h = self.tok(idx) + self.pos
                qkv = self.qkv(self.ln1(h))
                q, k, v = (qkv[..., i * WIDTH:(i + 1) * WIDTH] for i in range(3))
                d = WIDTH // HEADS

                def heads(z: Any) -> Any:
                    return tj.permute_dims(tj.reshape(z, (b, t, HEADS, d)), (0, 2, 1, 3))
                att = tj.matmul(heads(q), tj.matrix_transpose(heads(k))) * (1.0 / math.sqrt(d))
                causal = tj.tril(tj.ones((t, t), dtype=tj.bool))
                att = F.softmax(tj.where(causal, att, -1e9), axis=-1)
                y = tj.reshape(tj.permute_dims(tj.matmul(att, heads(v)), (0, 2, 1, 3)), (b, t, WIDTH))
                h = h + self.proj(y)
                h = h + self.fc2(self.gelu(self.fc1(self.ln2(h))))
                return self.head(self.lnf(h))

        net: Any = Block()
        for name, t in (("tok", net.tok.weight), ("pos", net.pos), ("ln1_g", net.ln1.weight),
                        ("ln1_b", net.ln1.bias), ("ln2_g", net.ln2.weight), ("ln2_b", net.ln2.bias),
                        ("lnf_g", net.lnf.weight), ("lnf_b", net.lnf.bias), ("b1", net.fc1.bias),
                        ("b2", net.fc2.bias)):
            load(t, params[name])
        for name, lin in (("wqkv", net.qkv), ("wo", net.proj), ("w1", net.fc1), ("w2", net.fc2),
                          ("head", net.head)):
            load(lin.weight, np.ascontiguousarray(params[name].T))

        def loss_of(x: Any, y: Any) -> Any:
            logits = net(x)
            return F.cross_entropy(tj.reshape(logits, (-1, VOCAB)), tj.reshape(y, (-1,)))
    else:
        depth = int(model.split("-")[1])
        layers: list[Any] = []
        for i in range(depth):
            lin, ln = nn.Linear(WIDTH, WIDTH), nn.LayerNorm(WIDTH)
            load(lin.weight, np.ascontiguousarray(params[f"w{i}"].T))
            load(lin.bias, params[f"b{i}"])
            load(ln.weight, params[f"g{i}"])
            load(ln.bias, params[f"s{i}"])
            layers += [lin, ln, nn.GELU()]
        head = nn.Linear(WIDTH, CLASSES)
        load(head.weight, np.ascontiguousarray(params["wh"].T))
        load(head.bias, params["bh"])
        net = nn.Sequential(*layers, head)

        def loss_of(x: Any, y: Any) -> Any:
            return F.cross_entropy(net(x), y)

    opt = tj.optim.AdamW(net.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)

    def train_step(x: Any, y: Any) -> Any:
        opt.zero_grad()
        loss = loss_of(x, y)
        loss.backward()
        opt.step()
        return loss

    return train_step, tj


def _tracejit_child(model: str, measure_new_batch: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    tj = framework("tracejit")
    out["import_s"] = time.perf_counter() - t0
    params, (x, y) = problem(model)
    step = tj.jit(tracejit_step(model, params)[0])
    t0 = time.perf_counter()
    loss = float(np.asarray(step(tj.asarray(x), tj.asarray(y))))
    out["first_call_s"] = time.perf_counter() - t0
    out["loss"] = loss
    (entry,) = step.entries()
    out["nodes"] = len(entry.traced.graph)
    out["kernels"] = getattr(entry.executable, "n_kernels", None)
    out["phases"] = dict(getattr(entry, "phase_times", {}) or {})
    out["kernel_sources"] = dict(getattr(entry.executable, "kernel_sources", {}) or {})
    if measure_new_batch:
        _, (x2, y2) = problem(model, batch=_half_batch(model))
        before = step.cache_info().get("kernels_compiled")
        t0 = time.perf_counter()
        np.asarray(step(tj.asarray(x2), tj.asarray(y2)))
        out["new_batch_s"] = time.perf_counter() - t0
        after = step.cache_info().get("kernels_compiled")
        out["new_batch_compiled"] = None if before is None else after - before
    return out


def _half_batch(model: str) -> int:
    """The "new batch size" of a compiled step: half the first one."""
    return (GPT_BATCH if model == "gpt" else BATCH) // 2


# --- torch.compile ---------------------------------------------------------------------------

def torch_step(model: str, params: Mapping[str, np.ndarray]) -> tuple[Callable[..., Any], Any]:
    """(step(x, y) -> loss, torch): parameters copied from ``params`` (in their dtype), AdamW,
    backward inside; not compiled."""
    torch = framework("torch")
    nn, F = torch.nn, torch.nn.functional
    P = {k: nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
    if model == "gpt":
        def loss_of(idx: Any, tgt: Any) -> Any:
            b, t = idx.shape
            h = P["tok"][idx] + P["pos"]
            q, k, v = (F.layer_norm(h, (WIDTH,), P["ln1_g"], P["ln1_b"]) @ P["wqkv"]).split(WIDTH, -1)
            d = WIDTH // HEADS

            def heads(z: Any) -> Any:
                return z.reshape(b, t, HEADS, d).permute(0, 2, 1, 3)
            att = heads(q) @ heads(k).transpose(-1, -2) * (1.0 / math.sqrt(d))
            causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
            att = torch.softmax(torch.where(causal, att, -1e9), -1)
            h = h + ((att @ heads(v)).permute(0, 2, 1, 3).reshape(b, t, WIDTH)) @ P["wo"]
            m = F.gelu(F.layer_norm(h, (WIDTH,), P["ln2_g"], P["ln2_b"]) @ P["w1"] + P["b1"])
            h = h + m @ P["w2"] + P["b2"]
            logits = F.layer_norm(h, (WIDTH,), P["lnf_g"], P["lnf_b"]) @ P["head"]
            return F.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1))
    else:
        depth = int(model.split("-")[1])

        def loss_of(h: Any, tgt: Any) -> Any:
            for i in range(depth):
                h = F.gelu(F.layer_norm(h @ P[f"w{i}"] + P[f"b{i}"], (WIDTH,), P[f"g{i}"], P[f"s{i}"]))
            return F.cross_entropy(h @ P["wh"] + P["bh"], tgt)
    opt = torch.optim.AdamW(P.values(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)

    def train_step(a: Any, b: Any) -> Any:
        opt.zero_grad()
        loss = loss_of(a, b)
        loss.backward()
        opt.step()
        return loss

    return train_step, torch


def _torch_child(model: str, new_batch: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    torch = framework("torch")
    out: dict[str, Any] = {"import_s": time.perf_counter() - t0}
    params, (x, y) = problem(model)
    train_step = torch.compile(torch_step(model, params)[0])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    t0 = time.perf_counter()
    out["loss"] = float(train_step(xt, yt).detach())
    out["first_call_s"] = time.perf_counter() - t0
    if new_batch:
        _, (x2, y2) = problem(model, batch=_half_batch(model))
        t0 = time.perf_counter()
        float(train_step(torch.from_numpy(x2), torch.from_numpy(y2)).detach())
        out["new_batch_s"] = time.perf_counter() - t0
    return out


# --- jax.jit ---------------------------------------------------------------------------------

def jax_step(model: str) -> Callable[..., Any]:
    """step(P, m, v, t, x, y) -> (loss, P, m, v, t): a functional AdamW step with the same
    update as torch's, backward inside; not jitted. ``jax_state`` gives the first (P, m, v, t)."""
    jax = framework("jax")
    import jax.numpy as jnp

    def layer_norm(h: Any, g: Any, b: Any) -> Any:
        mu = h.mean(-1, keepdims=True)
        var = ((h - mu) ** 2).mean(-1, keepdims=True)
        return (h - mu) / jnp.sqrt(var + 1e-5) * g + b

    def xent(logits: Any, tgt: Any) -> Any:
        logp = jax.nn.log_softmax(logits, -1)
        return -jnp.take_along_axis(logp, tgt[:, None], -1).mean()

    if model == "gpt":
        def loss_of(P: Any, idx: Any, tgt: Any) -> Any:
            b, t = idx.shape
            h = P["tok"][idx] + P["pos"]
            q, k, v = jnp.split(layer_norm(h, P["ln1_g"], P["ln1_b"]) @ P["wqkv"], 3, -1)
            d = WIDTH // HEADS

            def heads(z: Any) -> Any:
                return z.reshape(b, t, HEADS, d).transpose(0, 2, 1, 3)
            att = heads(q) @ jnp.swapaxes(heads(k), -1, -2) * (1.0 / math.sqrt(d))
            att = jax.nn.softmax(jnp.where(jnp.tril(jnp.ones((t, t), bool)), att, -1e9), -1)
            h = h + (att @ heads(v)).transpose(0, 2, 1, 3).reshape(b, t, WIDTH) @ P["wo"]
            m = jax.nn.gelu(layer_norm(h, P["ln2_g"], P["ln2_b"]) @ P["w1"] + P["b1"], approximate=False)
            h = h + m @ P["w2"] + P["b2"]
            logits = layer_norm(h, P["lnf_g"], P["lnf_b"]) @ P["head"]
            return xent(logits.reshape(-1, VOCAB), tgt.reshape(-1))
    else:
        depth = int(model.split("-")[1])

        def loss_of(P: Any, h: Any, tgt: Any) -> Any:
            for i in range(depth):
                h = jax.nn.gelu(layer_norm(h @ P[f"w{i}"] + P[f"b{i}"], P[f"g{i}"], P[f"s{i}"]),
                                approximate=False)
            return xent(h @ P["wh"] + P["bh"], tgt)

    def train_step(P: Any, m: Any, v: Any, t: Any, a: Any, b: Any) -> Any:
        loss, g = jax.value_and_grad(loss_of)(P, a, b)
        t = t + 1
        b1, b2 = BETAS
        m = jax.tree_util.tree_map(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
        v = jax.tree_util.tree_map(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)

        def upd(p: Any, m_: Any, v_: Any) -> Any:
            p = p * (1 - LR * WEIGHT_DECAY)
            return p - LR * (m_ / (1 - b1 ** t)) / (jnp.sqrt(v_ / (1 - b2 ** t)) + EPS)
        return loss, jax.tree_util.tree_map(upd, P, m, v), m, v, t

    return train_step


def jax_state(params: Mapping[str, np.ndarray]) -> tuple[Any, Any, Any, Any]:
    """(P, m, v, t) before the first step: ``params`` on the device, zero moments, step 0."""
    framework("jax")
    import jax.numpy as jnp
    P = {k: jnp.asarray(a) for k, a in params.items()}
    zeros = {k: jnp.zeros_like(a) for k, a in P.items()}
    return P, zeros, zeros, jnp.float32(0)


def _jax_child(model: str, new_batch: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    jax = framework("jax")
    import jax.numpy as jnp
    out: dict[str, Any] = {"import_s": time.perf_counter() - t0}
    params, (x, y) = problem(model)
    train_step = jax.jit(jax_step(model))
    t0 = time.perf_counter()
    loss, P1, m1, v1, t1 = train_step(*jax_state(params), jnp.asarray(x), jnp.asarray(y))
    out["loss"] = float(loss)
    out["first_call_s"] = time.perf_counter() - t0
    if new_batch:
        _, (x2, y2) = problem(model, batch=_half_batch(model))
        t0 = time.perf_counter()
        float(train_step(P1, m1, v1, t1, jnp.asarray(x2), jnp.asarray(y2))[0])
        out["new_batch_s"] = time.perf_counter() - t0
    return out


# --- parent ----------------------------------------------------------------------------------

def cache_env(impl: str, cache_dir: str) -> dict[str, str]:
    from .compile_latency import cache_env as c1_env
    return c1_env(impl, cache_dir)


def _spawn(impl: str, model: str, env: dict[str, str], new_batch: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.compile_scaling", "--child", impl, "--model", model] + \
        (["--new-batch"] if new_batch else [])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        proc = subprocess.run(cmd, env={**os.environ, **env}, cwd=root, capture_output=True, text=True,
                              timeout=_CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"status": f"error: timed out after {_CHILD_TIMEOUT_S} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": f"error: child exited {proc.returncode}: {tail[:160]}"}


def run(models: tuple[str, ...] = MODELS, impls: tuple[str, ...] = IMPLS,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """For each model and JIT: a cold child, then a warm one on the same fresh cache directory."""
    rows = []
    for model in models:
        for impl in impls:
            row: dict[str, Any] = {"model": model, "impl": impl}
            with tempfile.TemporaryDirectory(prefix="bench-c2-") as cache_dir:
                env = cache_env(impl, cache_dir)
                env.pop("TRACEJIT_DISABLE_CACHE", None)
                cold = _spawn(impl, model, env, new_batch=True)
                row["cold"] = cold
                if "status" not in cold:
                    row["warm"] = _spawn(impl, model, env, new_batch=False)
            row["status"] = row["cold"].get("status") or row.get("warm", {}).get("status") or "ok"
            if log:
                log(f"  {KEY} {model} {impl}: {row['status']}")
            rows.append(row)
    return {"rows": rows}


def render(c2: Mapping[str, Any]) -> str:
    lines = [f"{KEY} compile time of a training step (forward + backward + AdamW) by model size, "
             "first call in a fresh process"]
    cols = ("model", "implementation", "nodes", "kernels", "cold", "warm disk", "new batch", "per node",
            "trace+opt / fuse / codegen")
    table = [cols]
    skipped: dict[str, str] = {}
    for r in c2["rows"]:
        if r["status"] != "ok":
            if r["status"].startswith("skipped"):
                skipped[r["impl"]] = r["status"]
            else:
                table.append((r["model"], r["impl"], r["status"]))
            continue
        cold, warm = r["cold"], r.get("warm", {})
        nodes = cold.get("nodes")
        ph = cold.get("phases") or {}
        split = "-" if not ph else "{} / {} / {}".format(
            fmt_time(ph.get("trace", 0) + ph.get("optimize", 0)),
            fmt_time(ph.get("fusion", 0) + ph.get("schedule", 0)), fmt_time(ph.get("codegen", 0)))
        table.append((r["model"], r["impl"], str(nodes) if nodes else "-",
                      str(cold.get("kernels") or "-"), fmt_time(cold["first_call_s"]),
                      fmt_time(warm["first_call_s"]) if "first_call_s" in warm else "-",
                      fmt_time(cold["new_batch_s"]) if "new_batch_s" in cold else "-",
                      fmt_time(cold["first_call_s"] / nodes) if nodes else "-", split))
    widths = [max(len(t[i]) for t in table if len(t) == len(cols)) for i in range(len(cols))]
    for t in table:
        if len(t) != len(cols):
            lines.append(f"  {t[0]:<{widths[0]}}  {t[1]:<{widths[1]}}  {t[2]}")
        else:
            lines.append("  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                          for i, (c, w) in enumerate(zip(t, widths, strict=True))))
    for impl, why in skipped.items():
        lines.append(f"  {impl}: {why}")
    return "\n".join(lines)


def _child(impl: str, model: str, new_batch: bool) -> dict[str, Any]:
    if impl == TJ_JIT:
        return _tracejit_child(model, new_batch)
    if impl == TORCH_COMPILE:
        return _torch_child(model, new_batch)
    return _jax_child(model, new_batch)


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=IMPLS)
    ap.add_argument("--model", default=None)
    ap.add_argument("--new-batch", action="store_true")
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of {', '.join(IMPLS)}")
    a = ap.parse_args(argv)
    if a.child is None:
        models = tuple(m.strip() for m in a.models.split(",") if m.strip())
        impls = tuple(i.strip() for i in a.impls.split(",") if i.strip())
        c2 = run(models, impls, lambda m: print(m, file=sys.stderr, flush=True))
        print(render(c2))
        return
    try:
        out = _child(a.child, a.model, a.new_batch)
    except Unavailable as e:
        out = {"status": f"skipped: {e}"}
    except Exception as e:
        out = {"status": f"error: {short_error(e)}"}
    print(_MARK + json.dumps(out), flush=True)


if __name__ == "__main__":
    _main()
