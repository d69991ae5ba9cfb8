"""The token embedding, untied LM head and fixed buffers every architecture shares (docs/model.md §8, §2).

Each model holds `embed` (TokenEmbedding) and `head` (LMHead) under these attribute names: the
optimiser's frozen-parameter rule, the converters and the trainer's chunked loss find them there.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from hrm.config import ModelConfig
from hrm.model.layers import dtype_of, lecun_truncated_normal
from hrm.sharding import constrain


class Buffer(nnx.Variable):
    """A non-trainable model state (e.g. zL_init): saved in checkpoints, never optimised."""


class TokenEmbedding(nnx.Module):
    """Embedding [V, d] with init std 1/sqrt(d); the lookup is scaled by sqrt(d) (docs/model.md §8)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.scale = cfg.resolved_embedding_scale
        self.embedding = nnx.Param(
            lecun_truncated_normal(rngs.params(), (cfg.vocab_size, d), 1 / math.sqrt(d), dtype_of(cfg.param_dtype)),
            out_sharding=("vocab", "embed"))

    def __call__(self, tokens: jax.Array, dtype) -> jax.Array:
        # Gathering from an FSDP-sharded table into batch-sharded rows is not something XLA partitions
        # well (it replicates the result); gather from the table all-gathered like any FSDP weight instead.
        table = constrain(self.embedding[...], ("vocab", None))
        x = constrain(jnp.take(table, tokens, axis=0), ("act_batch", "act_len", "act_embed"))
        return (x.astype(jnp.float32) * self.scale).astype(dtype)


class LMHead(nnx.Module):
    """Untied output projection, kernel [d, V], init std 1/sqrt(d), no bias (docs/model.md §8)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.kernel = nnx.Param(
            lecun_truncated_normal(rngs.params(), (d, cfg.vocab_size), 1 / math.sqrt(d), dtype_of(cfg.param_dtype)),
            out_sharding=("embed", "vocab"))

    def __call__(self, z: jax.Array) -> jax.Array:
        return jnp.einsum("btd,dv->btv", z, self.kernel[...].astype(z.dtype))


def zl_init_buffer(cfg: ModelConfig, rngs: nnx.Rngs) -> Buffer:
    """The fixed initial recurrent state zL_init [d]: bf16, std 1, never trained (docs/model.md §2, §10).

    Checkpoint importers copy the reference's value; a fresh init draws a new one."""
    return Buffer(lecun_truncated_normal(rngs.params(), (cfg.hidden_size,), 1.0, jnp.bfloat16),
                  out_sharding=("act_embed",))


def select_positions(z: jax.Array, index: Optional[jax.Array]) -> jax.Array:
    """z [B, T, D] -> z[b, index[b]] as [B, 1, D]; identity when index is None."""
    if index is None:
        return z
    return jnp.take_along_axis(z, index.astype(jnp.int32)[:, None, None], axis=1)


def param_count(tree: Any) -> int:
    """Total number of elements in a pytree of arrays."""
    return sum(int(x.size) for x in jax.tree.leaves(tree))
