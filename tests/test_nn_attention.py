"""scaled_dot_product_attention, MultiheadAttention and TransformerEncoderLayer against torch."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
nn, F = tj.nn, tj.nn.functional
TF = torch.nn.functional
ATOL, RTOL = 1e-4, 1e-3


def _close(actual, expected, what: str) -> None:
    a = actual.numpy() if isinstance(actual, tj.Tensor) else np.asarray(actual)
    e = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != torch {e.shape}"
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL, err_msg=what)


def _arrays(rng, *shapes):
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _torch_grads(fn, arrays, g):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    (out * torch.tensor(g)).sum().backward()
    return out, [t.grad for t in ts]


def _tj_grads(fn, arrays, g):
    ts = [tj.asarray(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    (out * tj.asarray(g)).sum().backward()
    return out, [t.grad for t in ts]


MASKS = ["none", "causal", "bool", "float", "bool_all_masked_row"]


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("block", [None, 3, 4])
def test_sdpa_forward_backward_matches_torch(rng, mask_kind, block) -> None:
    q, k, v = _arrays(rng, (2, 3, 7, 5), (2, 3, 11, 5), (2, 3, 11, 4))
    g = rng.standard_normal((2, 3, 7, 4)).astype(np.float32)
    kw: dict = {"scale": 0.3} if block == 4 else {}
    t_mask = j_mask = None
    if mask_kind == "causal":
        kw["is_causal"] = True
    elif mask_kind.startswith("bool"):
        m = rng.random((7, 11)) > 0.3
        m[:, 0] = True
        if mask_kind == "bool_all_masked_row":
            m[2] = False                 # a query that may attend to nothing: 0, as torch
        t_mask, j_mask = torch.tensor(m), tj.asarray(m)
    elif mask_kind == "float":
        m = rng.standard_normal((2, 1, 7, 11)).astype(np.float32)
        t_mask, j_mask = torch.tensor(m), tj.asarray(m)
    t_out, t_grads = _torch_grads(lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, t_mask, **kw),
                                  (q, k, v), g)
    j_out, j_grads = _tj_grads(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, j_mask, block_size=block, **kw), (q, k, v), g)
    _close(j_out, t_out, "output")
    for name, a, e in zip("qkv", j_grads, t_grads):
        _close(a, e, f"grad of {name}")


def test_sdpa_broadcasts_batch_dims_and_accepts_3d(rng) -> None:
    q, k, v = _arrays(rng, (4, 6, 8), (1, 9, 8), (1, 9, 3))
    out = F.scaled_dot_product_attention(tj.asarray(q), tj.asarray(k), tj.asarray(v), block_size=4)
    _close(out, TF.scaled_dot_product_attention(torch.tensor(q), torch.tensor(k), torch.tensor(v)), "output")


def test_sdpa_under_jit_equals_eager_with_gradients(rng, jit_backend) -> None:
    q, k, v = (tj.asarray(a) for a in _arrays(rng, (2, 2, 9, 8), (2, 2, 13, 8), (2, 2, 13, 8)))
    g = tj.asarray(rng.standard_normal((2, 2, 9, 8)).astype(np.float32))

    def loss(q, k, v):
        return (F.scaled_dot_product_attention(q, k, v, is_causal=True, block_size=5) * g).sum()
    eager = tj.grad(loss, argnums=(0, 1, 2))(q, k, v)
    jitted = tj.jit(tj.grad(loss, argnums=(0, 1, 2)), backend=jit_backend)(q, k, v)
    for a, e in zip(jitted, eager):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)


def test_blocked_attention_kernels_and_memory_bound(rng) -> None:
    """Eight key blocks: two matmuls and two row kernels per block, each block's scores freed
    for the next block to reuse, so the peak memory is a fraction of the (L, S) scores alone
    (what remains per block is its (L, Ev) output, combined with the others at the end)."""
    n_q, n_k, block = 64, 512, 64
    q, k, v = (tj.asarray(a) for a in _arrays(rng, (2, n_q, 16), (2, n_k, 16), (2, n_k, 16)))
    f = tj.jit(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, block_size=block))
    out = f(q, k, v)
    ref = TF.scaled_dot_product_attention(*(torch.tensor(t.numpy()) for t in (q, k, v)))
    _close(out, ref, "output")
    n_blocks = n_k // block
    kinds = {k: n for k, n in f.explain(q, k, v).kernel_kinds().items() if n}
    # per block: the scores and block @ value (matmuls), the row max and row sum (row kernels),
    # exp(scores - shift) and the next shift (elementwise; with q's scaling and the final
    # division, less what horizontal fusion merges)
    assert kinds == {"matmul": 2 * n_blocks, "row reduction": 2 * n_blocks,
                     "elementwise": 2 * n_blocks}, kinds
    from tracejit.compiler import peak_bytes
    scores_bytes = 2 * n_q * n_k * 4
    blocked = peak_bytes(f.explain(q, k, v).compiled.program)
    assert blocked < 0.6 * scores_bytes, (blocked, scores_bytes)
    # one block holding all the keys is the textbook softmax: its scores live in memory
    full = tj.jit(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, block_size=n_k))
    np.testing.assert_allclose(full(q, k, v).numpy(), out.numpy(), rtol=1e-5, atol=1e-6)
    assert peak_bytes(full.explain(q, k, v).compiled.program) >= scores_bytes


def test_sdpa_dropout_keeps_the_mean_and_draws_fresh_masks(rng) -> None:
    q, k, v = (tj.asarray(a) for a in _arrays(rng, (1, 4, 3), (1, 6, 3), (1, 6, 2)))
    plain = F.scaled_dot_product_attention(q, k, v).numpy()
    many = [tj.asarray(np.broadcast_to(t.numpy(), (300,) + t.shape).copy()) for t in (q, k, v)]
    f = tj.jit(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.4, block_size=4))
    draws = f(*many).numpy()                           # 300 independent masks in one call
    np.testing.assert_allclose(draws.mean(axis=0), plain, atol=0.2)
    assert not np.allclose(draws[0], plain)
    again = f(*many).numpy()
    assert not np.array_equal(again, draws), "each call draws new masks"
    tj.manual_seed(7)
    a = F.scaled_dot_product_attention(q, k, v, dropout_p=0.4).numpy()
    tj.manual_seed(7)
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, k, v, dropout_p=0.4).numpy(), a)


def test_sdpa_errors_name_the_problem() -> None:
    q, k = tj.zeros((2, 4, 8)), tj.zeros((2, 5, 8))
    with pytest.raises(ValueError, match=r"query dim 8 != key dim 3"):
        F.scaled_dot_product_attention(q, tj.zeros((2, 5, 3)), tj.zeros((2, 5, 8)))
    with pytest.raises(ValueError, match=r"key length 5 != value length 6"):
        F.scaled_dot_product_attention(q, k, tj.zeros((2, 6, 8)))
    with pytest.raises(ValueError, match=r"attn_mask shape \(3, 5\) does not broadcast"):
        F.scaled_dot_product_attention(q, k, k, tj.zeros((3, 5), dtype=tj.bool))
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(q, k, k, tj.zeros((4, 5), dtype=tj.bool), is_causal=True)
    with pytest.raises(TypeError, match="attn_mask must be bool"):
        F.scaled_dot_product_attention(q, k, k, tj.zeros((4, 5), dtype=tj.int32))


# ------------------------------------------------------------------ MultiheadAttention

def _converted(tmod, jmod) -> None:
    sd = {k: v.detach().numpy() for k, v in tmod.state_dict().items()}
    assert list(sd) == list(jmod.state_dict()), "parameter names differ from torch's"
    jmod.load_state_dict(sd)


def _param_grads_match(tmod, jmod) -> None:
    tparams = dict(tmod.named_parameters())
    names = [n for n, _ in jmod.named_parameters()]
    assert names == list(tparams)
    for name, p in jmod.named_parameters():
        _close(p.grad, tparams[name].grad, f"grad of {name}")


@pytest.mark.parametrize("cfg", [
    dict(batch_first=True, need_weights=True, masks="padding"),
    dict(batch_first=False, need_weights=False, masks="both"),
    dict(batch_first=True, need_weights=True, masks="float", average=False),
    dict(batch_first=False, need_weights=False, masks="none", kdim=3, vdim=5),
])
def test_multihead_attention_matches_torch(rng, cfg) -> None:
    e, heads, n, lq, lk = 12, 3, 2, 5, 7
    kdim, vdim = cfg.get("kdim", e), cfg.get("vdim", e)
    torch.manual_seed(0)
    tmod = torch.nn.MultiheadAttention(e, heads, batch_first=cfg["batch_first"], kdim=kdim, vdim=vdim)
    jmod = nn.MultiheadAttention(e, heads, batch_first=cfg["batch_first"], kdim=kdim, vdim=vdim)
    _converted(tmod, jmod)
    bf = cfg["batch_first"]
    shapes = [(n, lq, e), (n, lk, kdim), (n, lk, vdim)] if bf else [(lq, n, e), (lk, n, kdim), (lk, n, vdim)]
    arrays = _arrays(rng, *shapes)
    masks: dict = {}
    pad = np.zeros((n, lk), bool)
    pad[0, -2:] = True
    attn = rng.random((lq, lk)) > 0.7
    if cfg["masks"] in ("padding", "both"):
        masks["key_padding_mask"] = pad
    if cfg["masks"] == "both":
        masks["attn_mask"] = attn
    if cfg["masks"] == "float":
        masks["attn_mask"] = rng.standard_normal((n * heads, lq, lk)).astype(np.float32)
    kw = dict(need_weights=cfg["need_weights"], average_attn_weights=cfg.get("average", True))
    t_in = [torch.tensor(a, requires_grad=True) for a in arrays]
    t_out, t_w = tmod(*t_in, **{k: torch.tensor(m) for k, m in masks.items()}, **kw)
    g = rng.standard_normal(t_out.shape).astype(np.float32)
    (t_out * torch.tensor(g)).sum().backward()
    j_in = [tj.asarray(a, requires_grad=True) for a in arrays]
    j_out, j_w = jmod(*j_in, **{k: tj.asarray(m) for k, m in masks.items()}, **kw)
    (j_out * tj.asarray(g)).sum().backward()
    _close(j_out, t_out, "output")
    if cfg["need_weights"]:
        _close(j_w, t_w, "attention weights")
    else:
        assert j_w is None and t_w is None
    for i, (a, b) in enumerate(zip(j_in, t_in)):
        _close(a.grad, b.grad, f"grad of input {i}")
    _param_grads_match(tmod, jmod)


def test_multihead_attention_unbatched_and_causal(rng) -> None:
    torch.manual_seed(1)
    tmod, jmod = torch.nn.MultiheadAttention(8, 2), nn.MultiheadAttention(8, 2)
    _converted(tmod, jmod)
    (x,) = _arrays(rng, (6, 8))
    causal = np.triu(np.ones((6, 6), bool), 1)          # torch's causal mask: True = may not attend
    t_out, _ = tmod(*(torch.tensor(x),) * 3, attn_mask=torch.tensor(causal), need_weights=False)
    j_out, _ = jmod(*(tj.asarray(x),) * 3, need_weights=False, is_causal=True)
    _close(j_out, t_out, "unbatched causal output")
    j_masked, j_w = jmod(*(tj.asarray(x),) * 3, attn_mask=tj.asarray(causal))
    _close(j_masked, t_out, "unbatched output with the causal mask given")
    assert j_w.shape == (6, 6)


def test_multihead_attention_errors() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        nn.MultiheadAttention(10, 3)
    m = nn.MultiheadAttention(8, 2, batch_first=True)
    x = tj.zeros((2, 5, 8))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(2, 5\)"):
        m(x, x, x, key_padding_mask=tj.zeros((2, 4), dtype=tj.bool))
    with pytest.raises(ValueError, match=r"attn_mask must have shape \(5, 5\) or \(4, 5, 5\)"):
        m(x, x, x, attn_mask=tj.zeros((3, 5, 5), dtype=tj.bool))
    with pytest.raises(ValueError, match="feature dims"):
        m(x, x, tj.zeros((2, 5, 7)))


# ------------------------------------------------------------------ TransformerEncoderLayer

@pytest.mark.parametrize("norm_first,activation,batch_first", [(False, "relu", False), (True, "gelu", True)])
def test_transformer_encoder_layer_matches_torch(rng, norm_first, activation, batch_first) -> None:
    torch.manual_seed(2)
    kw = dict(dim_feedforward=24, dropout=0.0, activation=activation, batch_first=batch_first,
              norm_first=norm_first)
    tmod, jmod = torch.nn.TransformerEncoderLayer(12, 3, **kw), nn.TransformerEncoderLayer(12, 3, **kw)
    _converted(tmod, jmod)
    (x,) = _arrays(rng, (2, 5, 12) if batch_first else (5, 2, 12))
    pad = np.zeros((2, 5), bool)
    pad[1, 3:] = True
    t_x = torch.tensor(x, requires_grad=True)
    t_out = tmod(t_x, src_key_padding_mask=torch.tensor(pad))
    g = rng.standard_normal(t_out.shape).astype(np.float32)
    (t_out * torch.tensor(g)).sum().backward()
    j_x = tj.asarray(x, requires_grad=True)
    j_out = jmod(j_x, src_key_padding_mask=tj.asarray(pad))
    (j_out * tj.asarray(g)).sum().backward()
    _close(j_out, t_out, "output")
    _close(j_x.grad, t_x.grad, "grad of input")
    _param_grads_match(tmod, jmod)


def test_transformer_training_step_under_jit_equals_eager(rng) -> None:
    def make():
        tj.manual_seed(3)
        return nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1, batch_first=True)
    x = tj.asarray(rng.standard_normal((2, 6, 8)).astype(np.float32))
    losses, weights = {}, {}
    for mode in ("eager", "jit"):
        layer = make()
        opt = tj.optim.SGD(layer.parameters(), lr=0.1)

        def step(x, layer=layer, opt=opt):
            opt.zero_grad()
            loss = (layer(x, is_causal=True) ** 2).mean()
            loss.backward()
            opt.step()
            return loss
        run = tj.jit(step) if mode == "jit" else step
        tj.manual_seed(4)               # the same dropout masks in both runs
        losses[mode] = [float(run(x)) for _ in range(3)]
        weights[mode] = layer.self_attn.in_proj_weight.numpy().copy()
    np.testing.assert_allclose(losses["jit"], losses["eager"], rtol=1e-5)
    np.testing.assert_allclose(weights["jit"], weights["eager"], rtol=1e-5, atol=1e-6)
    assert losses["eager"][2] < losses["eager"][0]


def test_transformer_encoder_layer_rejects_an_unknown_activation() -> None:
    with pytest.raises(ValueError, match="activation must be"):
        nn.TransformerEncoderLayer(8, 2, activation="swish")
    assert math.isclose(nn.TransformerEncoderLayer(8, 2, layer_norm_eps=1e-6).norm1.eps, 1e-6)


def test_attention_and_lstm_step_lower_to_ptx_that_assembles() -> None:
    from codegen import ptx
    if not ptx.ptxas_available():
        pytest.skip("ptxas is not on PATH (install the CUDA toolkit)")
    S = tj.spec
    cell = nn.LSTMCell(16, 32)

    def attention_grads(q, k, v):
        return tj.grad(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, block_size=16)
                       .sum(), argnums=(0, 1, 2))(q, k, v)
    programs = [(attention_grads, [S((2, 4, 40, 8))] * 3),
                (lambda x, h, c: cell(x, (h, c)), [S((8, 16)), S((8, 32)), S((8, 32))])]
    for fn, specs in programs:
        f = tj.jit(fn)
        cpu, gpu = f.lower(*specs), f.lower(*specs, device="cuda")
        assert len(gpu.kernels) == len(cpu.kernels)
        for pk in gpu.entry.executable.ptx.values():       # matmul steps included
            ptx.ptxas_check(pk.ptx, "sm_90")
