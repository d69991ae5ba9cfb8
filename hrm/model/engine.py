"""The one executor of every architecture: embedding -> scheduled stack applications -> untied head.

An architecture (a subclass of `RecurrentLM`) declares its stacks, its recurrent states and where each
starts (the scaled token embedding x, or the fixed buffer zL_init), the state the head reads, and its
static schedule of `Application`s `target <- Stack(target + inject)` for a given `bp_steps`
(`hrm.model.recurrence`). Execution follows docs/conventions.md §8 / docs/recurrence.md §2.3:

- consecutive applications of one cycle with the same stack, states and gradient status run as one
  `lax.scan` over their indices; consecutive cycles with identical runs run as one `lax.scan` over
  cycles (so HRM's full-gradient forward is a scan of scans, not 8 inlined stacks);
- a no-grad application runs on stop_gradient'ed inputs and parameters and its output is
  stop_gradient'ed, so XLA neither keeps its activations nor runs its backward;
- with a KV cache, application (cycle, index) reads and writes its own slot cache[cycle, index]
  (docs/checkpoints.md §9): cache arrays are [cycles, slots, layers, B, S, N, hd] for K and V.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from hrm.config import ModelConfig
from hrm.model.attention import AttentionMask
from hrm.model.blocks import Stack, StackContext, empty_cache, stack_context
from hrm.model.embed_head import LMHead, TokenEmbedding, select_positions, zl_init_buffer
from hrm.model.layers import dtype_of
from hrm.model.recurrence import Application, Run, cache_slots, cycle_groups
from hrm.model.scan import scan

KV = tuple[jax.Array, jax.Array]
States = dict[str, jax.Array]


def _sg(tree):
    return jax.tree.map(jax.lax.stop_gradient, tree)


class RecurrentLM(nnx.Module):
    """Base of every architecture. Subclasses set the class attributes below and `applications`.

    STACKS: attribute names of the Stack modules, in parameter-initialisation order (each has
        `cfg.layers_per_stack` layers).
    STATES: ((state, source), ...) with source "x" (the scaled token embedding) or "zL_init" (the
        fixed bf16 buffer, docs/model.md §2), in order.
    OUTPUT: the state fed to the LM head.
    """

    STACKS: tuple[str, ...] = ()
    STATES: tuple[tuple[str, str], ...] = ()
    OUTPUT: str = ""

    @classmethod
    def applications(cls, cfg: ModelConfig, bp_steps: Optional[int]) -> tuple[Application, ...]:
        """The static schedule for `bp_steps` (None: the architecture's own horizon; HRM: full gradient)."""
        raise NotImplementedError

    @classmethod
    def uses_zl_init(cls) -> bool:
        return any(src == "zL_init" for _, src in cls.STATES)

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = TokenEmbedding(cfg, rngs)
        for name in self.STACKS:
            setattr(self, name, Stack(cfg, cfg.layers_per_stack, rngs))
        self.head = LMHead(cfg, rngs)
        if self.uses_zl_init():
            self.zL_init = zl_init_buffer(cfg, rngs)

    # ------------------------------------------------------------------ execution
    def _initial_states(self, inputs: jax.Array) -> States:
        cd = dtype_of(self.cfg.compute_dtype)
        x = self.embed(inputs, cd)
        start = {"x": x}
        if self.uses_zl_init():
            start["zL_init"] = jnp.broadcast_to(self.zL_init[...].astype(cd), x.shape)
        return {name: start[src] for name, src in self.STATES}

    def _apply(self, key: tuple, z: jax.Array, inj: Optional[jax.Array], ctx: StackContext,
               cache: Optional[KV], where: tuple):
        """One application z <- stack(z + inj), truncated (docs/recurrence.md §2.3) when its gradient flag is off."""
        stack_name, _, _, grad = key
        stack: Stack = getattr(self, stack_name)
        w = stack.weights()
        if not grad:
            w, z, inj = _sg(w), _sg(z), _sg(inj)
        out = stack(z if inj is None else z + inj, ctx, weights=w, cache=cache, where=where)
        if cache is not None:
            out, cache = out
        if not grad:
            out = _sg(out)
        return out, cache

    def _run(self, states: States, ctx: StackContext, cycle, run: Run, cache: Optional[KV]):
        """A run of equal applications: one call, or a scan over its indices (injection closed over)."""
        _, target, inject, _ = run.key
        inj = None if inject is None else states[inject]
        if run.n == 1:
            z, cache = self._apply(run.key, states[target], inj, ctx, cache, (cycle, run.lo))
        else:
            def body(carry, index):
                return self._apply(run.key, carry[0], inj, ctx, carry[1], (cycle, index)), None

            (z, cache), _ = scan(body, (states[target], cache), jnp.arange(run.lo, run.lo + run.n))
        return {**states, target: z}, cache

    def _cycle(self, states: States, ctx: StackContext, cycle, runs: tuple[Run, ...], cache: Optional[KV]):
        for run in runs:
            states, cache = self._run(states, ctx, cycle, run, cache)
        return states, cache

    def _recurrence(self, states: States, ctx: StackContext, apps: tuple[Application, ...],
                    cache: Optional[KV]) -> tuple[States, Optional[KV]]:
        for cycles, runs in cycle_groups(apps):
            if len(cycles) == 1:
                states, cache = self._cycle(states, ctx, cycles[0], runs, cache)
                continue

            def body(carry, cycle, runs=runs):
                return self._cycle(carry[0], ctx, cycle, runs, carry[1]), None

            (states, cache), _ = scan(body, (states, cache), jnp.arange(cycles[0], cycles[-1] + 1))
        return states, cache

    # ------------------------------------------------------------------ public API
    def hidden(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
               prefix_mask: jax.Array, bp_steps: Optional[int] = None) -> jax.Array:
        """The head's input [B, T, D] (compute dtype) for packed rows; `bp_steps` as in `applications`."""
        mask = AttentionMask.packed(segment_ids, prefix_mask, causal=self.cfg.attn_type == "causal")
        ctx = stack_context(self.cfg, positions, mask)
        states, _ = self._recurrence(self._initial_states(inputs), ctx, self.applications(self.cfg, bp_steps), None)
        return states[self.OUTPUT]

    def __call__(self, inputs: jax.Array, positions: jax.Array, segment_ids: jax.Array,
                 prefix_mask: jax.Array, bp_steps: Optional[int] = None) -> jax.Array:
        """Logits [B, T, V] (compute dtype) = head(hidden(...))."""
        return self.head(self.hidden(inputs, positions, segment_ids, prefix_mask, bp_steps))

    def _inference_applications(self) -> tuple[Application, ...]:
        # No gradients at inference: mark every application as a gradient one so runs group maximally.
        return tuple(dataclasses.replace(a, grad=True) for a in self.applications(self.cfg, None))

    def init_cache(self, batch: int, length: int, dtype=jnp.bfloat16) -> KV:
        """Zero KV cache [cycles, slots, layers, B, S, N, hd] for K and V: one slot per application
        (docs/checkpoints.md §9)."""
        lead = cache_slots(self._inference_applications())
        k, v = empty_cache(self.cfg.layers_per_stack, batch, length, self.cfg, dtype)
        return jnp.broadcast_to(k, lead + k.shape), jnp.broadcast_to(v, lead + v.shape)

    def forward_cached(self, inputs: jax.Array, positions: jax.Array, mask: jax.Array,
                       cache: KV, write_index: jax.Array,
                       logits_at: Optional[jax.Array] = None) -> tuple[jax.Array, KV]:
        """Prefill or decode: new tokens [B, T] at cache slots write_index[b] .. +T, attending to the
        whole cache under `mask` [B, T, S]. Returns (logits [B, T, V], updated cache).

        `logits_at` [B] (optional) applies the head only at that new-token index per row and returns
        logits [B, 1, V]: a prefill needs only the last prompt position, and [B, T, V] logits of a long
        prompt with a 65k vocabulary would dominate memory (docs/checkpoints.md §9)."""
        ctx = stack_context(self.cfg, positions, mask, write_index)
        states, cache = self._recurrence(self._initial_states(inputs), ctx, self._inference_applications(), cache)
        return self.head(select_positions(states[self.OUTPUT], logits_at)), cache
