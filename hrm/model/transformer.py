"""The reference's plain Transformer baseline (SPEC §8.3): one pre-norm stack with a final norm.

Same embedding (sqrt(d)-scaled), blocks, MagicNorm exit and untied head as HRM, no recurrence.
It has no truncated backprop: every step is a gradient step, so `bp_steps` is accepted and ignored.
"""

from __future__ import annotations

from typing import Optional

import jax
from flax import nnx

from hrm.config import ModelConfig
from hrm.model.attention import AttentionMask
from hrm.model.blocks import Stack, StackContext, empty_cache, stack_context
from hrm.model.hrm import LMHead, TokenEmbedding, select_positions
from hrm.model.layers import dtype_of

KV = tuple[jax.Array, jax.Array]


class Transformer(nnx.Module):
    """Embedding -> Stack(n_layers) -> final RMS -> untied head."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = TokenEmbedding(cfg, rngs)
        self.stack = Stack(cfg, cfg.n_layers, rngs)
        self.head = LMHead(cfg, rngs)

    def _context(self, positions, mask, write_index=None) -> StackContext:
        return stack_context(self.cfg, positions, mask, write_index)

    def hidden(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
               prefix_mask: jax.Array, bp_steps: Optional[int] = None) -> jax.Array:
        """Final hidden state [B, T, D] (after the stack's final norm), the input of the LM head."""
        mask = AttentionMask.packed(segment_ids, prefix_mask, causal=self.cfg.attn_type == "causal")
        x = self.embed(inputs, dtype_of(self.cfg.compute_dtype))
        return self.stack(x, self._context(positions, mask))

    def __call__(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
                 prefix_mask: jax.Array, bp_steps: Optional[int] = None) -> jax.Array:
        return self.head(self.hidden(inputs, positions, segment_ids, prefix_mask, bp_steps))

    def init_cache(self, batch: int, length: int, dtype=jax.numpy.bfloat16) -> KV:
        return empty_cache(self.cfg.n_layers, batch, length, self.cfg, dtype)

    def forward_cached(self, inputs, positions, mask, cache: KV, write_index,
                       logits_at: Optional[jax.Array] = None) -> tuple[jax.Array, KV]:
        """Same contract as `HRM.forward_cached` (incl. `logits_at`)."""
        x = self.embed(inputs, dtype_of(self.cfg.compute_dtype))
        out, cache = self.stack(x, self._context(positions, mask, write_index), cache=cache)
        return self.head(select_positions(out, logits_at)), cache
