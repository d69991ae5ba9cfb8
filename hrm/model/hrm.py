"""HRM-Text: two transformer stacks (H, L) applied in a fixed recurrence (SPEC §1.2, §3).

    z_H = sqrt(d) * E[tokens]; z_L = zL_init (broadcast)
    repeat H_cycles: (repeat L_cycles: z_L = L(z_L + z_H)); z_H = H(z_H + z_L)
    logits = z_H @ W_head

Truncated backprop: `bp_steps` (static) picks which applications get gradient; the others run on
stop_gradient'ed inputs and parameters and their outputs are stop_gradient'ed, so XLA neither
stores their activations nor runs their backward (SPEC §3.3). Complete cycles with uniform gradient
status run as one `jax.lax.scan` over cycles (each L run inside is a scan too); mixed cycles are
split into runs of same-status L steps. With a KV cache (inference), every application writes its
own cache slot: slot = cycle*(L_cycles+1) + index, the H step using index L_cycles (SPEC §11).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from hrm.config import ModelConfig
from hrm.model.attention import AttentionMask
from hrm.model.blocks import Stack, StackContext, empty_cache, stack_context
from hrm.model.layers import dtype_of, lecun_truncated_normal
from hrm.model.recurrence import StepSpec, schedule
from hrm.model.scan import scan

KV = tuple[jax.Array, jax.Array]


class Buffer(nnx.Variable):
    """A non-trainable model state (e.g. zL_init): saved in checkpoints, never optimised."""


class TokenEmbedding(nnx.Module):
    """Embedding [V, d] with init std 1/sqrt(d); the lookup is scaled by sqrt(d) (SPEC §1.8)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.scale = cfg.resolved_embedding_scale
        self.embedding = nnx.Param(
            lecun_truncated_normal(rngs.params(), (cfg.vocab_size, d), 1 / math.sqrt(d), dtype_of(cfg.param_dtype)),
            out_sharding=("vocab", "embed"))

    def __call__(self, tokens: jax.Array, dtype) -> jax.Array:
        x = jnp.take(self.embedding[...], tokens, axis=0)
        return (x.astype(jnp.float32) * self.scale).astype(dtype)


class LMHead(nnx.Module):
    """Untied output projection, kernel [d, V], init std 1/sqrt(d), no bias (SPEC §1.8)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.kernel = nnx.Param(
            lecun_truncated_normal(rngs.params(), (d, cfg.vocab_size), 1 / math.sqrt(d), dtype_of(cfg.param_dtype)),
            out_sharding=("embed", "vocab"))

    def __call__(self, z: jax.Array) -> jax.Array:
        return jnp.einsum("btd,dv->btv", z, self.kernel[...].astype(z.dtype))


def _sg(tree):
    return jax.tree.map(jax.lax.stop_gradient, tree)


class HRM(nnx.Module):
    """The hierarchical recurrent model. Call with packed rows; see `__call__` and `forward_cached`."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        n = cfg.layers_per_stack
        self.embed = TokenEmbedding(cfg, rngs)
        self.H = Stack(cfg, n, rngs)
        self.L = Stack(cfg, n, rngs)
        self.head = LMHead(cfg, rngs)
        # SPEC §1.2: a fixed bf16 vector drawn once with std 1; imported from checkpoints.
        self.zL_init = Buffer(lecun_truncated_normal(rngs.params(), (cfg.hidden_size,), 1.0, jnp.bfloat16),
                              out_sharding=("act_embed",))

    # ------------------------------------------------------------------ helpers
    def _context(self, positions, mask, write_index=None) -> StackContext:
        return stack_context(self.cfg, positions, mask, write_index)

    def _initial_states(self, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        cd = dtype_of(self.cfg.compute_dtype)
        z_H = self.embed(inputs, cd)
        z_L = jnp.broadcast_to(self.zL_init[...].astype(cd), z_H.shape)
        return z_L, z_H

    def _apply(self, stack: Stack, z_self, z_other, ctx, grad: bool, cache: Optional[KV], where: tuple):
        """One stack application z <- stack(z_self + z_other), truncated when `grad` is False.

        `where` = (cycle, index) selects this application's slot in the KV cache (if any)."""
        w = stack.weights()
        if not grad:
            w, z_self, z_other = _sg(w), _sg(z_self), _sg(z_other)
        out = stack(z_self + z_other, ctx, weights=w, cache=cache, where=where)
        if cache is not None:
            out, cache = out
        if not grad:
            out = _sg(out)
        return out, cache

    def _run_L(self, z_L, z_H, ctx, cycle, lo: int, n: int, grad: bool, cache: Optional[KV]):
        """n consecutive L steps (indices lo..lo+n-1 of `cycle`) with one gradient status."""
        if n == 1:
            return self._apply(self.L, z_L, z_H, ctx, grad, cache, (cycle, lo))

        def body(carry, index):
            zl, c = carry
            return self._apply(self.L, zl, z_H, ctx, grad, c, (cycle, index)), None

        (z_L, cache), _ = scan(body, (z_L, cache), jnp.arange(lo, lo + n))
        return z_L, cache

    def _cycle(self, z_L, z_H, ctx, cycle, steps: tuple[StepSpec, ...], cache: Optional[KV]):
        """One H cycle: its L steps in runs of equal gradient status, then the H step."""
        L_steps = [s for s in steps if s.kind == "L"]
        for grad, group in itertools.groupby(L_steps, key=lambda s: s.grad):
            group = list(group)
            lo, hi = group[0].index, group[-1].index + 1
            z_L, cache = self._run_L(z_L, z_H, ctx, cycle, lo, hi - lo, grad, cache)
        h_step = steps[-1]
        z_H, cache = self._apply(self.H, z_H, z_L, ctx, h_step.grad, cache, (cycle, h_step.index))
        return z_L, z_H, cache

    def _recurrence(self, z_L, z_H, ctx, bp_steps: Optional[int], cache: Optional[KV]):
        cfg = self.cfg
        steps = schedule(cfg.H_cycles, cfg.L_cycles, bp_steps)
        per_cycle = [tuple(s for s in steps if s.cycle == i) for i in range(cfg.H_cycles)]
        status = [("mixed" if len({s.grad for s in c}) > 1 else c[0].grad) for c in per_cycle]
        for st, grp in itertools.groupby(range(cfg.H_cycles), key=lambda c: status[c]):
            cycles = list(grp)
            if st == "mixed" or len(cycles) == 1:
                for c in cycles:
                    z_L, z_H, cache = self._cycle(z_L, z_H, ctx, c, per_cycle[c], cache)
                continue

            def body(carry, cycle, template=per_cycle[cycles[0]]):
                return self._cycle(*carry[:2], ctx, cycle, template, carry[2]), None

            (z_L, z_H, cache), _ = scan(body, (z_L, z_H, cache), jnp.arange(cycles[0], cycles[-1] + 1))
        return z_H, cache

    # ------------------------------------------------------------------ public API
    def hidden(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
               prefix_mask: jax.Array, bp_steps: Optional[int] = None) -> jax.Array:
        """Final z_H [B, T, D] (compute dtype), the input of the LM head; bp_steps=None = full gradient."""
        mask = AttentionMask.packed(segment_ids, prefix_mask, causal=self.cfg.attn_type == "causal")
        ctx = self._context(positions, mask)
        z_L, z_H = self._initial_states(inputs)
        z_H, _ = self._recurrence(z_L, z_H, ctx, bp_steps, None)
        return z_H

    def __call__(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
                 prefix_mask: jax.Array, bp_steps: Optional[int] = None) -> jax.Array:
        """Logits [B, T, V] (compute dtype) for packed rows; bp_steps=None = full gradient/inference."""
        return self.head(self.hidden(inputs, positions, segment_ids, prefix_mask, bp_steps))

    def init_cache(self, batch: int, length: int, dtype=jnp.bfloat16) -> KV:
        """Zero KV cache [H_cycles, L_cycles+1, layers, B, S, N, hd] for K and V (SPEC §11)."""
        cfg = self.cfg
        k, v = empty_cache(cfg.layers_per_stack, batch, length, cfg, dtype)
        lead = (cfg.H_cycles, cfg.L_cycles + 1)
        return (jnp.broadcast_to(k, lead + k.shape), jnp.broadcast_to(v, lead + v.shape))

    def forward_cached(self, inputs: jax.Array, positions: jax.Array, mask: jax.Array,
                       cache: KV, write_index: jax.Array,
                       logits_at: Optional[jax.Array] = None) -> tuple[jax.Array, KV]:
        """Prefill or decode: new tokens [B, T] at cache slots write_index[b] .. +T, attending to the
        whole cache under `mask` [B, T, S]. Returns (logits [B, T, V], updated cache).

        `logits_at` [B] (optional) applies the head only at that new-token index per row and returns
        logits [B, 1, V]: a prefill needs only the last prompt position, and [B, T, V] logits of a long
        prompt with a 65k vocabulary would dominate memory (SPEC §11)."""
        ctx = self._context(positions, mask, write_index)
        z_L, z_H = self._initial_states(inputs)
        z_H, cache = self._recurrence(z_L, z_H, ctx, None, cache)
        return self.head(select_positions(z_H, logits_at)), cache


def select_positions(z: jax.Array, index: Optional[jax.Array]) -> jax.Array:
    """z [B, T, D] -> z[b, index[b]] as [B, 1, D]; identity when index is None."""
    if index is None:
        return z
    return jnp.take_along_axis(z, index.astype(jnp.int32)[:, None, None], axis=1)


def param_count(tree: Any) -> int:
    """Total number of elements in a pytree of arrays."""
    return sum(int(x.size) for x in jax.tree.leaves(tree))
