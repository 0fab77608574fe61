"""Attention: ``scaled_dot_product_attention`` and ``MultiheadAttention`` (PyTorch's layout).

``scaled_dot_product_attention`` runs the online softmax over blocks of keys: for each block
it computes the scores of every query against that block, updates a running row maximum,
rescales the running numerator and denominator, and adds the block's ``exp(scores) @ value``.
The largest temporary is ``(..., L, block)`` instead of ``(..., L, S)``, so memory grows
linearly with the key length; with one block (``S <= block_size``) it is the textbook
softmax.  The running maximum is a stability shift without a gradient (it cancels exactly),
so autograd differentiates the blocked form through the primitives' VJPs.
"""
from __future__ import annotations

import math
from typing import Any

from .. import api as A
from .. import dtypes as dt
from .. import prims as P
from .. import random as R
from ..tensors import Tensor
from . import functional as F
from . import init
from .modules import Linear, Module, Parameter, _param

__all__ = ["scaled_dot_product_attention", "multi_head_attention", "MultiheadAttention",
           "DEFAULT_KEY_BLOCK"]

DEFAULT_KEY_BLOCK = 256   # keys per online-softmax block: (L, 256) scores live at a time


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else A.asarray(x)


def _causal_keep(rows: int, cols: int, col0: int, like: Tensor) -> Tensor:
    """``True`` where key ``col0 + j`` is not after query ``i`` (top-left aligned, as torch)."""
    i = P.iota((rows, cols), 0, dt.int64, like=like)
    j = P.iota((rows, cols), 1, dt.int64, like=like)
    return A.less_equal(j + col0, i) if col0 else A.less_equal(j, i)


def _check_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool,
                dropout_p: float) -> None:
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ValueError(f"scaled_dot_product_attention: query, key and value must be at least 2-D "
                         f"(..., seq, dim), got shapes {q.shape}, {k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: query dim {q.shape[-1]} != key dim {k.shape[-1]} "
                         f"(shapes {q.shape} and {k.shape})")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: key length {k.shape[-2]} != value length "
                         f"{v.shape[-2]} (shapes {k.shape} and {v.shape})")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}")
    if mask is not None:
        if is_causal:
            raise ValueError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, "
                             "not both")
        scores = tuple(q.shape[:-1]) + (k.shape[-2],)
        try:
            A.broadcast_shapes(tuple(mask.shape), scores)
        except ValueError:
            raise ValueError(f"scaled_dot_product_attention: attn_mask shape {mask.shape} does not "
                             f"broadcast to the scores' shape {scores}") from None
        if not (mask.dtype == dt.bool_ or dt.is_float(mask.dtype)):
            raise TypeError(f"scaled_dot_product_attention: attn_mask must be bool (True = attend) "
                            f"or float (added to the scores), got {mask.dtype.name}")


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 *, block_size: int | None = None,
                                 generator: R.Generator | None = None) -> Tensor:
    """``softmax(query @ key.mT * scale + mask) @ value`` over (..., L, E), (..., S, E), (..., S, Ev).

    ``attn_mask`` is bool (``True`` takes part) or float (added to the scores) and broadcasts to
    (..., L, S); ``is_causal`` masks keys after each query (top-left aligned); ``scale``
    defaults to ``1 / sqrt(E)``; ``dropout_p`` drops attention probabilities (draws from
    ``generator``, default the global one).  Keys are processed ``block_size`` at a time
    (default :data:`DEFAULT_KEY_BLOCK`) with an online softmax.  A query whose keys are all
    masked gives 0, as torch's does.
    """
    q, k, v = _as_tensor(query), _as_tensor(key), _as_tensor(value)
    mask = None if attn_mask is None else _as_tensor(attn_mask)
    _check_sdpa(q, k, v, mask, is_causal, dropout_p)
    dtype = dt.promote_types(dt.promote_types(q.dtype, k.dtype), v.dtype)
    if not dt.is_float(dtype):
        dtype = dt.default_float
    q, k, v = (A.astype(t, dtype, copy=False) for t in (q, k, v))
    n_q, n_k = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    block = DEFAULT_KEY_BLOCK if block_size is None else int(block_size)
    if block < 1:
        raise ValueError(f"scaled_dot_product_attention: block_size must be >= 1, got {block_size}")
    qs = q * scale
    batch = A.broadcast_shapes(tuple(q.shape[:-2]), tuple(k.shape[:-2]), tuple(v.shape[:-2]))
    # running statistics per query are kept as (..., L) values, not (..., L, 1): read back through
    # a reshape, a block's row max and sum are stored once and the next blocks read those small
    # buffers, instead of recomputing them from the block's scores (which then stay free to reuse)
    row_max = A.full(batch + (n_q,), -math.inf, dtype=dtype, device=q.device)
    denom = numer = None
    gen = generator or R.default_generator
    for c0 in range(0, max(n_k, 1), block):
        c1 = min(c0 + block, n_k)
        kb, vb = k[..., c0:c1, :], v[..., c0:c1, :]
        s = A.matmul(qs, A.matrix_transpose(kb))
        if is_causal:
            s = A.where(_causal_keep(n_q, c1 - c0, c0, s), s, -math.inf)
        elif mask is not None:
            mb = mask[..., c0:c1] if mask.shape[-1] == n_k else mask
            s = A.where(mb, s, -math.inf) if mask.dtype == dt.bool_ else s + A.astype(mb, dtype, copy=False)
        # the shift has no gradient (it cancels); -inf maxima (all masked so far) shift by 0
        new_max = A.maximum(row_max, F._no_grad(A.max(s, axis=-1)))
        shift = A.where(A.isfinite(new_max), new_max, 0.0)
        p = A.exp(s - A.expand_dims(shift, axis=-1))
        block_sum = A.sum(p, axis=-1)
        if dropout_p > 0.0:
            p = F.dropout(p, dropout_p, True, gen)
        block_out = A.matmul(p, vb)
        if numer is None:
            denom, numer = block_sum, block_out
        else:
            old = A.where(A.isfinite(row_max), row_max, 0.0)
            rescale = A.exp(old - shift)
            denom = denom * rescale + block_sum
            numer = numer * A.expand_dims(rescale, axis=-1) + block_out
        row_max = new_max
    if numer is None:     # no keys: softmax over nothing
        return A.full(batch + (n_q, v.shape[-1]), math.nan, dtype=dtype, device=q.device)
    # a row with every key masked has numer == 0 and denom == 0: it gives 0, as torch's SDPA
    return numer / A.expand_dims(A.where(denom > 0.0, denom, 1.0), axis=-1)


def _attention_weights(q: Tensor, k: Tensor, mask: Tensor | None, is_causal: bool) -> Tensor:
    """The full (..., L, S) softmax, for callers that ask to see it (``need_weights``)."""
    s = A.matmul(q * (1.0 / math.sqrt(q.shape[-1])), A.matrix_transpose(k))
    if is_causal:
        s = A.where(_causal_keep(q.shape[-2], k.shape[-2], 0, s), s, -math.inf)
    elif mask is not None:
        s = A.where(mask, s, -math.inf) if mask.dtype == dt.bool_ else s + mask
    return F.softmax(s, axis=-1)


def _merge_masks(key_padding_mask: Tensor | None, attn_mask: Tensor | None, n: int, heads: int,
                 n_q: int, n_k: int, dtype: Any) -> Tensor | None:
    """torch's MHA masks (``True`` = may not attend, or a float added) as one SDPA mask that
    broadcasts to (N, heads, L, S): bool ``True`` = attend, float added."""
    parts = []
    for m, shape in ((attn_mask, None), (key_padding_mask, (n, 1, 1, n_k))):
        if m is None:
            continue
        m = _as_tensor(m)
        if shape is None:
            if m.shape == (n_q, n_k):
                shape = (1, 1, n_q, n_k)
            elif m.shape == (n * heads, n_q, n_k):
                shape = (n, heads, n_q, n_k)
            else:
                raise ValueError(f"MultiheadAttention: attn_mask must have shape {(n_q, n_k)} or "
                                 f"{(n * heads, n_q, n_k)}, got {m.shape}")
        elif m.shape != (n, n_k):
            raise ValueError(f"MultiheadAttention: key_padding_mask must have shape {(n, n_k)}, "
                             f"got {m.shape}")
        m = A.reshape(m, shape)
        if m.dtype == dt.bool_:
            parts.append(A.where(m, -math.inf, A.zeros((), dtype=dtype, device=m.device)))
        elif dt.is_float(m.dtype):
            parts.append(A.astype(m, dtype, copy=False))
        else:
            raise TypeError(f"MultiheadAttention: masks must be bool or float, got {m.dtype.name}")
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts[0] + parts[1]


def multi_head_attention(query: Tensor, key: Tensor, value: Tensor, num_heads: int,
                                 q_weight: Tensor, k_weight: Tensor, v_weight: Tensor,
                                 in_bias: Tensor | None, out_weight: Tensor, out_bias: Tensor | None,
                                 dropout_p: float = 0.0, key_padding_mask: Tensor | None = None,
                                 need_weights: bool = True, attn_mask: Tensor | None = None,
                                 average_attn_weights: bool = True,
                                 is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
    """Multi-head attention on batch-first (N, L, E) inputs (see :class:`MultiheadAttention`)."""
    n, n_q, embed = query.shape
    n_k = key.shape[1]
    head_dim = embed // num_heads
    if in_bias is not None:
        bq, bk, bv = in_bias[:embed], in_bias[embed:2 * embed], in_bias[2 * embed:]
    else:
        bq = bk = bv = None

    def heads(x: Tensor, w: Tensor, b: Tensor | None, length: int) -> Tensor:
        y = F.linear(x, w, b)                                     # (N, T, E)
        return A.permute_dims(A.reshape(y, (n, length, num_heads, head_dim)), (0, 2, 1, 3))

    q, k, v = heads(query, q_weight, bq, n_q), heads(key, k_weight, bk, n_k), heads(value, v_weight, bv, n_k)
    causal_only = is_causal and attn_mask is None and key_padding_mask is None
    mask = None if causal_only else _merge_masks(key_padding_mask, attn_mask, n, num_heads, n_q, n_k, q.dtype)
    if need_weights:
        w = _attention_weights(q, k, mask, causal_only)           # (N, H, L, S)
        wd = F.dropout(w, dropout_p, True) if dropout_p > 0.0 else w
        o = A.matmul(wd, v)
    else:
        wd = None
        o = scaled_dot_product_attention(q, k, v, mask, dropout_p, causal_only)
    o = A.reshape(A.permute_dims(o, (0, 2, 1, 3)), (n, n_q, embed))
    out = F.linear(o, out_weight, out_bias)
    if wd is None:
        return out, None
    return out, (A.mean(wd, axis=1) if average_attn_weights else wd)


class MultiheadAttention(Module):
    """PyTorch's ``nn.MultiheadAttention``: parameters ``in_proj_weight`` (3E, E) and
    ``in_proj_bias`` (3E) (``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when ``kdim`` or
    ``vdim`` differ from ``embed_dim``) and ``out_proj`` (a Linear).

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` returns ``(output, weights or None)``.  Inputs
    are (L, N, E), or (N, L, E) with ``batch_first``, or unbatched (L, E).  Masks follow torch:
    bool ``True`` means *may not attend*, float masks are added.  With ``need_weights=False``
    the attention runs blocked (:func:`scaled_dot_product_attention`).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, dtype: Any = None) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} is not divisible by "
                             f"num_heads {num_heads}")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv and add_zero_attn are not supported")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.batch_first = batch_first
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = _param((3 * embed_dim, embed_dim), dtype)
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = _param((embed_dim, embed_dim), dtype)
            self.k_proj_weight = _param((embed_dim, self.kdim), dtype)
            self.v_proj_weight = _param((embed_dim, self.vdim), dtype)
        if bias:
            self.in_proj_bias = _param((3 * embed_dim,), dtype)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if p is not None:
                init.xavier_uniform_(p)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _projections(self) -> tuple[Parameter | Tensor, ...]:
        if self.in_proj_weight is not None:
            e = self.embed_dim
            w = self.in_proj_weight
            return w[:e], w[e:2 * e], w[2 * e:]
        return self.q_proj_weight, self.k_proj_weight, self.v_proj_weight

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None,
                average_attn_weights: bool = True, is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        query, key, value = _as_tensor(query), _as_tensor(key), _as_tensor(value)
        unbatched = query.ndim == 2
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"MultiheadAttention: query, key and value must all be 2-D (unbatched) or "
                             f"3-D, got shapes {query.shape}, {key.shape}, {value.shape}")
        if query.shape[-1] != self.embed_dim or key.shape[-1] != self.kdim or value.shape[-1] != self.vdim:
            raise ValueError(f"MultiheadAttention: feature dims of query {query.shape}, key {key.shape}, "
                             f"value {value.shape} must be {self.embed_dim}, {self.kdim}, {self.vdim}")
        if unbatched:
            query, key, value = (A.expand_dims(t, axis=0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = A.expand_dims(_as_tensor(key_padding_mask), axis=0)
        elif not self.batch_first:
            query, key, value = (A.permute_dims(t, (1, 0, 2)) for t in (query, key, value))
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ValueError(f"MultiheadAttention: batch and key lengths disagree: query {query.shape}, "
                             f"key {key.shape}, value {value.shape} (batch-first)")
        wq, wk, wv = self._projections()
        out, weights = multi_head_attention(
            query, key, value, self.num_heads, wq, wk, wv, self.in_proj_bias, self.out_proj.weight,
            self.out_proj.bias, self.dropout if self.training else 0.0, key_padding_mask, need_weights,
            attn_mask, average_attn_weights, is_causal)
        if unbatched:
            out = A.squeeze(out, axis=0)
            weights = None if weights is None else A.squeeze(weights, axis=0)
        elif not self.batch_first:
            out = A.permute_dims(out, (1, 0, 2))
        return out, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"
