"""`xla` backend: dense scores with an fp32 softmax — the ground truth every other backend is tested against.

Materialises [B, N, Tq, S] fp32 scores, so it is for CPU, tests and short rows; TPU training uses `splash`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hrm.config import ModelConfig
from hrm.model.attention.mask import AttentionMask


def prepare(mask: AttentionMask, cfg: ModelConfig) -> AttentionMask:
    """Build the dense [B, T, T] mask once per forward pass (not inside every layer)."""
    return AttentionMask(dense=mask.dense_mask())


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, scale: float,
           cfg: ModelConfig) -> jax.Array:
    """softmax(q k^T * scale) v; q [B, Tq, N, H], k/v [B, S, N, H]; rows without any visible key give zeros."""
    dense = mask.dense_mask()[:, None]  # [B, 1, Tq, S]
    scores = jnp.einsum("bqnh,bknh->bnqk", q, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(dense, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = jnp.where(jnp.any(dense, axis=-1, keepdims=True), probs, 0.0)
    return jnp.einsum("bnqk,bknh->bqnh", probs.astype(v.dtype), v)
