"""PrefixLM masks and the attention entry point with a backend switch (SPEC §4.4, STYLE §9).

The dense rule for a packed row: query q may see key k iff both belong to the same (non-padding)
example and (k is in that example's instruction prefix, or k <= q). Padding queries see nothing
and produce a zero output. Every backend is tested against `xla`, the dense reference here.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

BACKENDS = ("xla", "jax")


def prefix_lm_mask(segment_ids: jax.Array, prefix_mask: jax.Array, causal_only: bool = False) -> jax.Array:
    """Boolean [B, T, T] mask (query, key) for packed PrefixLM rows.

    segment_ids [B, T]: 0 = padding, 1..k = example index in the row. prefix_mask [B, T]: 1 on
    instruction tokens (BOQ .. EOQ). With `causal_only` the prefix is ignored (the causal ablation).
    """
    seg_q = segment_ids[:, :, None]
    seg_k = segment_ids[:, None, :]
    same = (seg_q == seg_k) & (seg_q != 0)
    t = segment_ids.shape[1]
    causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
    if causal_only:
        return same & causal[None]
    key_in_prefix = prefix_mask.astype(bool)[:, None, :]
    return same & (key_in_prefix | causal[None])


def cache_decode_mask(key_valid: jax.Array, query_index: jax.Array) -> jax.Array:
    """Mask [B, Tq, S] for queries written at cache slots `query_index` [B, Tq] (causal over cache).

    key_valid [B, S] marks cache slots holding real tokens. A query at slot i sees valid keys j <= i.
    """
    s = key_valid.shape[1]
    causal = jnp.arange(s)[None, None, :] <= query_index[:, :, None]
    return causal & key_valid[:, None, :].astype(bool)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                          backend: str = "xla", scale: Optional[float] = None) -> jax.Array:
    """softmax(q k^T * scale) v with a boolean mask; rows without any allowed key return zeros.

    q [B, Tq, N, H], k/v [B, S, N, H], mask [B, Tq, S] (or [B, N, Tq, S]). Scale defaults to 1/sqrt(H),
    FlashAttention-3's default used by the reference (SPEC §1.4).

    Backends: `xla` — dense scores with an fp32 softmax, the ground truth every other backend is
    tested against; `jax` — `jax.nn.dot_product_attention` with the dense mask (cuDNN fused
    attention on GPU when it supports the shapes, XLA elsewhere).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; available: {BACKENDS}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if mask.ndim == 3:
        mask = mask[:, None]
    if backend == "jax":
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale)
        return jnp.where(jnp.any(mask, axis=-1)[:, 0, :, None, None], out, 0).astype(v.dtype)
    scores = jnp.einsum("bqnh,bknh->bnqk", q, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = jnp.where(jnp.any(mask, axis=-1, keepdims=True), probs, 0.0)
    return jnp.einsum("bnqk,bknh->bqnh", probs.astype(v.dtype), v)
