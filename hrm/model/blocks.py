"""A transformer stack: N pre-norm blocks with stacked parameters, scanned, then a final RMSNorm.

The final parameter-free norm at the stack's exit is MagicNorm (docs/model.md §3.2). Block (docs/model.md §3.1–§5):

    h = h + o_proj(attn(RoPE(q), RoPE(k), v) * sigmoid(gate))     # gate|q|k|v from one fused proj
    h = h + down(silu(gate) * up)                                  # gate|up from one fused proj

All N blocks' parameters carry a leading `layers` axis and the block body is applied with
`jax.lax.scan`, so XLA compiles one block, not N copies. Parameter layouts (Flax [in, out] order):

    gqkv    [n, d, 4, nh, hd]   (layers, embed, qkv_group, heads, head_dim)   order gate, q, k, v
    o       [n, nh, hd, d]      (layers, heads, head_dim, embed)
    gate_up [n, d, 2, I]        (layers, embed, gate_up, mlp)                 order gate, up
    down    [n, I, d]           (layers, mlp, embed)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from hrm.config import ModelConfig
from hrm.model.attention import AttentionMask, attend, prepare
from hrm.model.layers import apply_rope, dtype_of, lecun_truncated_normal, rms_norm, rope_cos_sin
from hrm.model.matmul import project
from hrm.model.scan import scan
from hrm.sharding import constrain

PARAM_NAMES = ("gqkv", "o", "gate_up", "down")

LOGICAL_AXES = {
    "gqkv": ("layers", "embed", "qkv_group", "heads", "head_dim"),
    "o": ("layers", "heads", "head_dim", "embed"),
    "gate_up": ("layers", "embed", "gate_up", "mlp"),
    "down": ("layers", "mlp", "embed"),
}

# Logical names of activations (mapped to mesh axes by `mesh.rules`): batch over data x fsdp, heads and the
# MLP's inner axis over tensor; length and model width unsharded.
ACT_HIDDEN = ("act_batch", "act_len", "act_embed")
ACT_GQKV = ("act_batch", "act_len", None, "act_heads", None)
ACT_HEADS = ("act_batch", "act_len", "act_heads", None)
ACT_MLP = ("act_batch", "act_len", None, "act_mlp")

# Residual checkpoint names inside a block, and remat policies over them (MaxText's names). Each policy
# saves the named tensors and recomputes the rest of the block in the backward pass:
#   qkv_proj  fused gate|q|k|v projection output      context  attention output (before the gate)
#   out_proj  o_proj output                            mlpwi    gate|up projection output
#   mlpwo     down projection output
_CHECKPOINTABLE = ("qkv_proj", "context", "out_proj", "mlpwi", "mlpwo")
_save = jax.checkpoint_policies.save_only_these_names
REMAT_POLICIES = {
    "none": None,  # no rematerialisation: every intermediate is kept
    "full": jax.checkpoint_policies.nothing_saveable,  # only the block input is kept
    "save_context": _save("context"),  # attention output (+ its logsumexp): no attention recompute
    "save_qkv_proj": _save("qkv_proj"),
    "save_qkv_context": _save("qkv_proj", "context"),
    "save_out_proj": _save("out_proj"),
    "save_dot_except_mlp": _save("qkv_proj", "context", "out_proj"),
    "save_dot_except_mlpwi": _save("qkv_proj", "context", "out_proj", "mlpwo"),
    "minimal": _save(*_CHECKPOINTABLE),  # every named dot output; recompute only elementwise work
}


@dataclasses.dataclass(frozen=True)
class StackContext:
    """Per-call inputs shared by every block: rotary tables, attention mask, optional KV write slot.

    cos/sin [B, T, hd]; mask: the structured mask, already `prepare`d for the configured backend;
    write_index [B] is where the T new keys/values go in the cache (decode/prefill only).
    """

    cos: jax.Array
    sin: jax.Array
    mask: AttentionMask
    write_index: Optional[jax.Array] = None


def stack_context(cfg: ModelConfig, positions: jax.Array, mask: AttentionMask | jax.Array,
                  write_index: Optional[jax.Array] = None) -> StackContext:
    """RoPE tables from explicit positions plus the mask (and KV write slot) shared by every block.

    `mask` is an `AttentionMask` (packed rows) or an explicit boolean [B, T, S] array (KV-cache paths);
    the backend derives its mask data here, once, outside the layer and cycle loops."""
    if not isinstance(mask, AttentionMask):
        mask = AttentionMask.explicit(mask)
    cos, sin = rope_cos_sin(positions, cfg.resolved_head_dim, cfg.rope_theta)
    return StackContext(cos, sin, prepare(mask, cfg), write_index)


def _write_cache(cache: jax.Array, new: jax.Array, where: tuple, index: jax.Array) -> jax.Array:
    """Scatter new [B, T, N, H] into the full cache at cache[*where, b, index[b] + t] (in place under jit)."""
    b, t = new.shape[:2]
    rows = jnp.arange(b)[:, None]
    cols = index[:, None] + jnp.arange(t)[None, :]
    return cache.at[where + (rows, cols)].set(new.astype(cache.dtype))


def block_apply(w: dict[str, jax.Array], h: jax.Array, ctx: StackContext, cfg: ModelConfig,
                cache: Optional[tuple[jax.Array, jax.Array]] = None, where: tuple = ()):
    """One pre-norm block on h [B, T, D]; returns (h, cache).

    With a cache (K, V full buffers), this block's new keys/values are written at
    cache[*where, b, write_index[b] + t] and attention reads cache[*where] ([B, S, N, H]).
    """
    cd = h.dtype
    h = constrain(h, ACT_HIDDEN)
    x = rms_norm(h, cfg.norm_eps)
    gqkv = constrain(project("btd,dgnh->btgnh", x, w["gqkv"], cd, LOGICAL_AXES["gqkv"][1:]), ACT_GQKV)
    gqkv = checkpoint_name(gqkv, "qkv_proj")
    gate, q, k, v = (gqkv[:, :, i] for i in range(4))
    q = apply_rope(q, ctx.cos, ctx.sin)
    k = apply_rope(k, ctx.cos, ctx.sin)
    if cache is not None:
        cache = (_write_cache(cache[0], k, where, ctx.write_index), _write_cache(cache[1], v, where, ctx.write_index))
        k, v = cache[0][where].astype(cd), cache[1][where].astype(cd)
    attn = constrain(attend(q, k, v, ctx.mask, cfg), ACT_HEADS)  # named "context" by `attend`
    out = project("btnh,nhd->btd", attn * jax.nn.sigmoid(gate), w["o"], cd, LOGICAL_AXES["o"][1:])
    h = constrain(h + checkpoint_name(out, "out_proj"), ACT_HIDDEN)
    x = rms_norm(h, cfg.norm_eps)
    gu = constrain(project("btd,dci->btci", x, w["gate_up"], cd, LOGICAL_AXES["gate_up"][1:]), ACT_MLP)
    gu = checkpoint_name(gu, "mlpwi")
    mlp = jax.nn.silu(gu[:, :, 0]) * gu[:, :, 1]
    out = checkpoint_name(project("bti,id->btd", mlp, w["down"], cd, LOGICAL_AXES["down"][1:]), "mlpwo")
    return constrain(h + out, ACT_HIDDEN), cache


class Stack(nnx.Module):
    """N scanned pre-norm blocks + final parameter-free RMSNorm (MagicNorm, docs/model.md §3.2)."""

    def __init__(self, cfg: ModelConfig, n_layers: int, rngs: nnx.Rngs):
        self.cfg = cfg
        self.n_layers = n_layers
        d, nh, hd, inter = cfg.hidden_size, cfg.num_heads, cfg.resolved_head_dim, cfg.resolved_intermediate_size
        pd = dtype_of(cfg.param_dtype)
        shapes = {
            "gqkv": ((n_layers, d, 4, nh, hd), 1 / math.sqrt(d)),
            "o": ((n_layers, nh, hd, d), 1 / math.sqrt(nh * hd)),
            "gate_up": ((n_layers, d, 2, inter), 1 / math.sqrt(d)),
            "down": ((n_layers, inter, d), 1 / math.sqrt(inter)),
        }
        for name, (shape, std) in shapes.items():
            value = lecun_truncated_normal(rngs.params(), shape, std, pd)
            setattr(self, name, nnx.Param(value, out_sharding=LOGICAL_AXES[name]))

    def weights(self) -> dict[str, jax.Array]:
        """The stacked parameter arrays as a plain dict (leading axis = layer)."""
        return {name: getattr(self, name)[...] for name in PARAM_NAMES}

    def __call__(self, h: jax.Array, ctx: StackContext, *, weights: Optional[dict[str, jax.Array]] = None,
                 cache: Optional[tuple[jax.Array, jax.Array]] = None, where: tuple = ()):
        """Apply all layers to h [B, T, D], then RMS.

        With `cache` = (K, V) full buffers whose layer axis sits right after the index prefix `where`
        (cache[*where, layer] is [B, S, N, H]), new keys/values are written in place at ctx.write_index
        and (out, cache) is returned; without a cache, out only. The cache travels as a scan carry, so
        XLA updates it in place instead of copying it per layer. `weights` overrides the module's
        parameters (callers pass stop_gradient'ed copies for truncated-backprop steps, docs/recurrence.md §2.3).
        """
        cfg = self.cfg
        w = self.weights() if weights is None else weights
        if cache is None:
            def body(carry, lw):
                return block_apply(lw, carry, ctx, cfg)[0], None

            if cfg.remat != "none":
                body = jax.checkpoint(body, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
            h, _ = scan(body, constrain(h, ACT_HIDDEN), w)
            return constrain(rms_norm(h, cfg.norm_eps), ACT_HIDDEN)

        def cached_body(carry, x):
            hh, c = carry
            lw, layer = x
            hh, c = block_apply(lw, hh, ctx, cfg, c, where + (layer,))
            return (hh, c), None

        (h, cache), _ = scan(cached_body, (h, cache), (w, jnp.arange(self.n_layers)))
        return rms_norm(h, cfg.norm_eps), cache


def empty_cache(n_layers: int, batch: int, length: int, cfg: ModelConfig, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """Zero K and V buffers [n_layers, B, S, N, H] for one stack application."""
    shape = (n_layers, batch, length, cfg.num_heads, cfg.resolved_head_dim)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)
