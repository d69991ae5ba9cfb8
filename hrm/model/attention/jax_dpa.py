"""`jax` backend: `jax.nn.dot_product_attention` with the dense mask (cuDNN fused attention on GPU when it
supports the shapes, XLA elsewhere)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hrm.config import ModelConfig
from hrm.model.attention.mask import AttentionMask
from hrm.model.attention.xla import prepare  # noqa: F401  (same preparation: the dense mask)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, scale: float,
           cfg: ModelConfig) -> jax.Array:
    """q [B, Tq, N, H], k/v [B, S, N, H]; padding queries (no visible key) give zeros, not NaN."""
    dense = mask.dense_mask()[:, None]
    out = jax.nn.dot_product_attention(q, k, v, mask=dense, scale=scale)
    return jnp.where(jnp.any(dense, axis=-1)[:, 0, :, None, None], out, 0).astype(v.dtype)
