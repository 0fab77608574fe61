"""Benchmark workloads: one definition per workload, every implementation side by side.

Each workload gives a NumPy function (also the correctness reference, run in float64), and
*factories* for the other frameworks: a factory receives the framework's module and returns the
function to run. Factories keep this module importable with NumPy alone, and they make the
tracejit entry a single plain function that the harness runs both eagerly and under ``tj.jit``.

Inputs are float32, generated once per size from a seeded NumPy RNG, and shared by every
implementation. ``cost`` gives the compulsory memory traffic (bytes read + written once) and the
arithmetic work used for the GB/s and GFLOP/s columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Shape = tuple[int, ...]
Factory = Callable[[Any], Callable[..., Any]]

# Units the harness knows how to report for a workload.
GBPS = "GB/s"
GFLOPS = "GFLOP/s"
US_PER_CALL = "us/call"


@dataclass(frozen=True)
class Cost:
    """Work of one call: bytes that must cross the memory bus and floating-point operations."""

    bytes: int = 0
    flops: int = 0


@dataclass(frozen=True)
class Workload:
    """One benchmark row group; ``sizes`` maps a preset (full/quick/cuda) to the sizes to run."""

    key: str
    title: str
    sizes: Mapping[str, Sequence[Shape]]
    make_inputs: Callable[[Shape, np.random.Generator], tuple[np.ndarray, ...]]
    numpy: Callable[..., np.ndarray]
    tracejit: Factory  # receives the ``tracejit`` module
    torch: Factory | None  # receives the ``torch`` module
    jax: Factory | None  # receives the ``jax`` module
    cost: Callable[[Shape], Cost]
    metric: str
    rtol: float
    atol: float

    def label(self, shape: Shape) -> str:
        return f"{self.key} {self.title} {'x'.join(map(str, shape))}"


def _randn(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)).astype(np.float32)


def _f32(n: int) -> int:
    return 4 * n


# --- W1: elementwise chain --------------------------------------------------------------------

def _chain(xp: Any) -> Callable[..., Any]:
    """The same expression serves every framework: each has tanh/exp/sin in its namespace."""

    def w1_chain(x: Any, b: Any) -> Any:
        return (xp.tanh(x * 1.5 + b) * 0.5 + 0.5) * xp.exp(-x * x) + xp.sin(x)

    return w1_chain


W1 = Workload(
    key="W1",
    title="elementwise chain",
    sizes={"full": [(16 * 2**20,)], "quick": [(4 * 2**20,)], "cuda": [(256 * 2**20,)]},
    make_inputs=lambda s, rng: (_randn(rng, *s), _randn(rng, *s, scale=0.5)),
    numpy=_chain(np),
    tracejit=_chain,
    torch=_chain,
    jax=lambda jax: _chain(jax.numpy),
    # x, b read once, out written once; ~12 arithmetic ops plus 3 transcendentals per element.
    cost=lambda s: Cost(bytes=_f32(3 * math.prod(s)), flops=15 * math.prod(s)),
    metric=GBPS,
    rtol=1e-4,
    atol=1e-5,
)


# --- W2: GELU (tanh approximation) ------------------------------------------------------------

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu_np(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))


def _gelu_tj(tj: Any) -> Callable[..., Any]:
    def w2_gelu(x: Any) -> Any:
        return tj.nn.functional.gelu(x, approximate="tanh")

    return w2_gelu


def _gelu_torch(torch: Any) -> Callable[..., Any]:
    def w2_gelu(x: Any) -> Any:
        return torch.nn.functional.gelu(x, approximate="tanh")

    return w2_gelu


def _gelu_jax(jax: Any) -> Callable[..., Any]:
    def w2_gelu(x: Any) -> Any:
        return jax.nn.gelu(x, approximate=True)

    return w2_gelu


W2 = Workload(
    key="W2",
    title="GELU tanh",
    sizes={"full": [(4096, 4096)], "quick": [(2048, 2048)], "cuda": [(16384, 16384)]},
    make_inputs=lambda s, rng: (_randn(rng, *s),),
    numpy=_gelu_np,
    tracejit=_gelu_tj,
    torch=_gelu_torch,
    jax=_gelu_jax,
    cost=lambda s: Cost(bytes=_f32(2 * math.prod(s)), flops=9 * math.prod(s)),
    metric=GBPS,
    rtol=1e-4,
    atol=1e-5,
)


# --- W3: softmax over the last axis -----------------------------------------------------------

def _softmax_np(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_tj(tj: Any) -> Callable[..., Any]:
    def w3_softmax(x: Any) -> Any:
        return tj.nn.functional.softmax(x, axis=-1)

    return w3_softmax


def _softmax_torch(torch: Any) -> Callable[..., Any]:
    def w3_softmax(x: Any) -> Any:
        return torch.nn.functional.softmax(x, dim=-1)

    return w3_softmax


def _softmax_jax(jax: Any) -> Callable[..., Any]:
    def w3_softmax(x: Any) -> Any:
        return jax.nn.softmax(x, axis=-1)

    return w3_softmax


_ROWS_SIZES = {"full": [(8192, 1024)], "quick": [(8192, 1024)], "cuda": [(65536, 1024), (8192, 8192)]}

W3 = Workload(
    key="W3",
    title="softmax",
    sizes=_ROWS_SIZES,
    make_inputs=lambda s, rng: (_randn(rng, *s, scale=2.0),),
    numpy=_softmax_np,
    tracejit=_softmax_tj,
    torch=_softmax_torch,
    jax=_softmax_jax,
    cost=lambda s: Cost(bytes=_f32(2 * math.prod(s)), flops=5 * math.prod(s)),
    metric=GBPS,
    rtol=1e-4,
    atol=1e-6,
)


# --- W4: layer norm over the last axis --------------------------------------------------------

_LN_EPS = 1e-5


def _layer_norm_np(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LN_EPS) * w + b


def _layer_norm_tj(tj: Any) -> Callable[..., Any]:
    def w4_layer_norm(x: Any, w: Any, b: Any) -> Any:
        return tj.nn.functional.layer_norm(x, (x.shape[-1],), w, b, _LN_EPS)

    return w4_layer_norm


def _layer_norm_torch(torch: Any) -> Callable[..., Any]:
    def w4_layer_norm(x: Any, w: Any, b: Any) -> Any:
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, _LN_EPS)

    return w4_layer_norm


def _layer_norm_jax(jax: Any) -> Callable[..., Any]:
    jnp = jax.numpy

    # jax has no layer_norm primitive (flax/haiku build it the same way).
    def w4_layer_norm(x: Any, w: Any, b: Any) -> Any:
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + _LN_EPS) * w + b

    return w4_layer_norm


W4 = Workload(
    key="W4",
    title="layer norm",
    sizes=_ROWS_SIZES,
    make_inputs=lambda s, rng: (
        _randn(rng, *s, scale=2.0),
        1.0 + _randn(rng, s[-1], scale=0.1),
        _randn(rng, s[-1], scale=0.1),
    ),
    numpy=_layer_norm_np,
    tracejit=_layer_norm_tj,
    torch=_layer_norm_torch,
    jax=_layer_norm_jax,
    cost=lambda s: Cost(bytes=_f32(2 * math.prod(s) + 2 * s[-1]), flops=8 * math.prod(s)),
    metric=GBPS,
    rtol=1e-4,
    atol=1e-4,
)


# --- W5: reductions ---------------------------------------------------------------------------

W5a = Workload(
    key="W5a",
    title="sum",
    sizes={"full": [(16 * 2**20,)], "quick": [(16 * 2**20,)], "cuda": [(256 * 2**20,)]},
    make_inputs=lambda s, rng: (_randn(rng, *s),),
    numpy=lambda x: np.sum(x),
    tracejit=lambda tj: (lambda x: tj.sum(x)),
    torch=lambda torch: (lambda x: torch.sum(x)),
    jax=lambda jax: (lambda x: jax.numpy.sum(x)),
    cost=lambda s: Cost(bytes=_f32(math.prod(s) + 1), flops=math.prod(s)),
    metric=GBPS,
    # A float32 sum of 16M unit normals (|sum| ~ 4e3) legitimately differs by summation order.
    rtol=1e-4,
    atol=0.5,
)

W5b = Workload(
    key="W5b",
    title="mean axis 0",
    sizes={"full": [(4096, 4096)], "quick": [(4096, 4096)], "cuda": [(16384, 16384)]},
    make_inputs=lambda s, rng: (_randn(rng, *s),),
    numpy=lambda x: np.mean(x, axis=0),
    tracejit=lambda tj: (lambda x: tj.mean(x, axis=0)),
    torch=lambda torch: (lambda x: torch.mean(x, dim=0)),
    jax=lambda jax: (lambda x: jax.numpy.mean(x, axis=0)),
    cost=lambda s: Cost(bytes=_f32(math.prod(s) + s[1]), flops=math.prod(s)),
    metric=GBPS,
    rtol=1e-4,
    atol=1e-5,
)


# --- W6: MLP forward --------------------------------------------------------------------------

def _mlp_inputs(s: Shape, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    batch, d_in, hidden, d_out = s
    return (
        _randn(rng, batch, d_in),
        _randn(rng, d_in, hidden, scale=1 / math.sqrt(d_in)),
        _randn(rng, hidden, scale=0.1),
        _randn(rng, hidden, d_out, scale=1 / math.sqrt(hidden)),
        _randn(rng, d_out, scale=0.1),
    )


def _mlp_np(x: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    logits = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _mlp_tj(tj: Any) -> Callable[..., Any]:
    F = tj.nn.functional

    def w6_mlp(x: Any, w1: Any, b1: Any, w2: Any, b2: Any) -> Any:
        return F.log_softmax(F.relu(x @ w1 + b1) @ w2 + b2, axis=-1)

    return w6_mlp


def _mlp_torch(torch: Any) -> Callable[..., Any]:
    F = torch.nn.functional

    def w6_mlp(x: Any, w1: Any, b1: Any, w2: Any, b2: Any) -> Any:
        return F.log_softmax(torch.addmm(b2, F.relu(torch.addmm(b1, x, w1)), w2), dim=-1)

    return w6_mlp


def _mlp_jax(jax: Any) -> Callable[..., Any]:
    def w6_mlp(x: Any, w1: Any, b1: Any, w2: Any, b2: Any) -> Any:
        return jax.nn.log_softmax(jax.nn.relu(x @ w1 + b1) @ w2 + b2, axis=-1)

    return w6_mlp


def _mlp_cost(s: Shape) -> Cost:
    batch, d_in, hidden, d_out = s
    flops = 2 * batch * (d_in * hidden + hidden * d_out) + batch * (2 * hidden + 5 * d_out)
    return Cost(bytes=_f32(batch * d_in + d_in * hidden + hidden * d_out + batch * d_out), flops=flops)


W6 = Workload(
    key="W6",
    title="MLP forward",
    # (batch, in, hidden, out)
    sizes={"full": [(256, 784, 1024, 10)], "quick": [(256, 784, 1024, 10)], "cuda": [(4096, 784, 1024, 10)]},
    make_inputs=_mlp_inputs,
    numpy=_mlp_np,
    tracejit=_mlp_tj,
    torch=_mlp_torch,
    jax=_mlp_jax,
    cost=_mlp_cost,
    metric=GFLOPS,
    rtol=1e-4,
    atol=1e-4,
)


# --- W7: per-call overhead --------------------------------------------------------------------

def _tiny(xp: Any) -> Callable[..., Any]:
    def w7_tiny(x: Any) -> Any:
        return x * 2 + 1

    return w7_tiny


W7 = Workload(
    key="W7",
    title="per-call overhead x*2+1",
    sizes={"full": [(16,)], "quick": [(16,)], "cuda": [(16,)]},
    make_inputs=lambda s, rng: (_randn(rng, *s),),
    numpy=_tiny(np),
    tracejit=_tiny,
    torch=_tiny,
    jax=lambda jax: _tiny(jax.numpy),
    cost=lambda s: Cost(bytes=_f32(2 * math.prod(s)), flops=2 * math.prod(s)),
    metric=US_PER_CALL,
    rtol=1e-6,
    atol=1e-6,
)


# --- W8: 2-D Jacobi stencil -------------------------------------------------------------------

JACOBI_SWEEPS = 10


def _jacobi_np(u: np.ndarray) -> np.ndarray:
    """The best plain NumPy: two preallocated buffers with zero borders, interiors written in
    place through ``out=`` (no temporaries), swapped every sweep."""
    bufs = (np.zeros_like(u), np.zeros_like(u))
    src = u
    for k in range(JACOBI_SWEEPS):
        dst = bufs[k % 2]
        inner = dst[1:-1, 1:-1]
        np.add(src[:-2, 1:-1], src[2:, 1:-1], out=inner)
        inner += src[1:-1, :-2]
        inner += src[1:-1, 2:]
        inner *= 0.25
        src = dst
    return src


def _jacobi_tj(tj: Any) -> Callable[..., Any]:
    """Written functionally: the border is a concatenation of zeros, which jit fuses (one
    kernel per sweep, the concatenations a select by index range)."""

    def w8_jacobi(u: Any) -> Any:
        n = u.shape[0]
        for _ in range(JACOBI_SWEEPS):
            i = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])
            z = tj.zeros((1, n - 2), dtype=u.dtype)
            i = tj.concat([z, i, z], axis=0)
            zc = tj.zeros((n, 1), dtype=u.dtype)
            u = tj.concat([zc, i, zc], axis=1)
        return u

    return w8_jacobi


W8 = Workload(
    key="W8",
    title=f"Jacobi stencil x{JACOBI_SWEEPS} sweeps",
    sizes={"full": [(1024, 1024)], "quick": [(1024, 1024)], "cuda": [(4096, 4096)]},
    make_inputs=lambda s, rng: (_randn(rng, *s),),
    numpy=_jacobi_np,
    tracejit=_jacobi_tj,
    torch=None,
    jax=None,
    # each sweep reads u once and writes the new u once; 4 flops per interior point
    cost=lambda s: Cost(bytes=JACOBI_SWEEPS * _f32(2 * math.prod(s)),
                        flops=JACOBI_SWEEPS * 4 * (s[0] - 2) * (s[1] - 2)),
    metric=GBPS,
    rtol=1e-4,
    atol=1e-5,
)


def _embed_inputs(s: Shape, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    batch, tokens, vocab, width = s
    return (rng.integers(0, vocab, (batch, tokens)), _randn(rng, vocab, width, scale=0.02),
            _randn(rng, tokens, width, scale=0.02))


def _embed(xp: Any) -> Callable[..., Any]:
    """Token plus position embeddings, a transformer's first layer: the framework's gather
    (``take``; torch's ``nn.functional.embedding``) and a broadcast add."""
    lookup = getattr(getattr(getattr(xp, "nn", None), "functional", None), "embedding", None)

    def w9_embed(ids: Any, table: Any, pos: Any) -> Any:
        if lookup is not None and xp.__name__ == "torch":      # (tracejit has nn too)
            return lookup(ids, table) + pos
        flat = xp.reshape(ids, (-1,))
        return xp.reshape(xp.take(table, flat, axis=0), tuple(ids.shape) + (table.shape[1],)) + pos

    return w9_embed


W9 = Workload(
    key="W9",
    title="token + position embedding",
    sizes={"full": [(8, 128, 32000, 64)], "quick": [(8, 128, 32000, 64)], "cuda": [(32, 512, 32000, 256)]},
    make_inputs=_embed_inputs,
    numpy=lambda ids, table, pos: table[ids] + pos,
    tracejit=_embed,
    torch=_embed,
    jax=lambda jax: _embed(jax.numpy),
    # the gathered rows read and the result written, the ids and the position table read once
    cost=lambda s: Cost(bytes=_f32(2 * s[0] * s[1] * s[3] + s[1] * s[3]) + 8 * s[0] * s[1],
                        flops=s[0] * s[1] * s[3]),
    metric=GBPS,
    rtol=1e-6,
    atol=1e-7,
)


WORKLOADS: tuple[Workload, ...] = (W1, W2, W3, W4, W5a, W5b, W6, W7, W8, W9)
