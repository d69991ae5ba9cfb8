"""The structured attention mask every backend consumes (docs/prefixlm_packing.md §4, docs/checkpoints.md §9).

A packed training row is described by two per-token fields, not by a [T, T] matrix:

    segment_ids [B, T]   0 = padding, 1..k = example index within the row
    prefix_mask [B, T]   1 on instruction tokens (BOQ .. EOQ), which attend bidirectionally
    causal               static flag of the causal ablation (the prefix is ignored)

Rule: query q may see key k iff both are in the same non-padding example and (k is in that example's
prefix, or k <= q). Padding queries see nothing and produce zeros. Equivalently (FlashAttention-3
varlen PrefixLM), query q of example s sees exactly the contiguous key range
`[start_s, max(prefix_end_s, q + 1))` (`key_ranges`), which is what block-sparse kernels use.

The KV-cache paths (prefill into a cache, one-token decode) use an explicit boolean [B, Tq, S] mask
instead (`AttentionMask.explicit`). A backend's `prepare` adds what it needs once per forward pass
(e.g. the dense mask, or key ranges), outside the layer and cycle loops.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """Packed PrefixLM description (`segment_ids`, `prefix_mask`, `causal`) or an explicit dense mask.

    Derived fields filled by a backend's `prepare`: `dense` [B, Tq, S] bool; `lo`/`hi` [B, T] int32
    key ranges. Exactly one of (segment_ids, dense-only explicit) describes the rule.
    """

    segment_ids: Optional[jax.Array] = None
    prefix_mask: Optional[jax.Array] = None
    dense: Optional[jax.Array] = None
    lo: Optional[jax.Array] = None
    hi: Optional[jax.Array] = None
    causal: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @classmethod
    def packed(cls, segment_ids: jax.Array, prefix_mask: jax.Array, causal: bool = False) -> "AttentionMask":
        """Mask of packed PrefixLM rows (or packed causal rows with `causal=True`)."""
        return cls(segment_ids=segment_ids, prefix_mask=prefix_mask, causal=causal)

    @classmethod
    def explicit(cls, dense: jax.Array) -> "AttentionMask":
        """An explicit boolean mask [B, Tq, S] (KV-cache prefill/decode)."""
        return cls(dense=dense)

    @property
    def is_packed(self) -> bool:
        return self.segment_ids is not None

    def dense_mask(self) -> jax.Array:
        """Boolean [B, Tq, S] (built here unless a backend's `prepare` already did)."""
        if self.dense is not None:
            return self.dense
        return prefix_lm_mask(self.segment_ids, self.prefix_mask, causal_only=self.causal)

    def key_ranges(self) -> tuple[jax.Array, jax.Array]:
        """(lo, hi) int32 [B, T]: query t sees keys [lo, hi); lo == hi (empty) on padding."""
        if self.lo is not None:
            return self.lo, self.hi
        if not self.is_packed:
            raise ValueError("key ranges exist only for packed masks (segment_ids/prefix_mask)")
        return key_ranges(self.segment_ids, self.prefix_mask, self.causal)


def prefix_lm_mask(segment_ids: jax.Array, prefix_mask: jax.Array, causal_only: bool = False) -> jax.Array:
    """Boolean [B, T, T] mask (query, key) for packed PrefixLM rows (the dense form of the rule)."""
    seg_q = segment_ids[:, :, None]
    seg_k = segment_ids[:, None, :]
    same = (seg_q == seg_k) & (seg_q != 0)
    t = segment_ids.shape[1]
    causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
    if causal_only:
        return same & causal[None]
    key_in_prefix = prefix_mask.astype(bool)[:, None, :]
    return same & (key_in_prefix | causal[None])


def key_ranges(segment_ids: jax.Array, prefix_mask: jax.Array, causal: bool = False) -> tuple[jax.Array, jax.Array]:
    """Per-query visible key range [lo, hi) of packed rows, equal to `prefix_lm_mask` row by row.

    Examples occupy contiguous spans (packing never interleaves them); lo = first index of the query's
    segment, hi = max(end of its prefix, q + 1) (q + 1 with `causal`); padding queries get lo = hi.
    Segment starts and prefix ends come from cumulative max/min scans, O(T) per row.
    """
    seg = segment_ids.astype(jnp.int32)
    b, t = seg.shape
    idx = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    new_seg = jnp.concatenate([jnp.ones((b, 1), bool), seg[:, 1:] != seg[:, :-1]], axis=1)
    start = jax.lax.cummax(jnp.where(new_seg, idx, 0), axis=1)
    if causal:
        hi = idx + 1
    else:
        # The prefix of a segment ends after its last prefix token (at its start if it has none). A running
        # max of (index + 1) over prefix tokens, read at the segment's last position, is that end whenever
        # the segment has a prefix token (later indices are larger), else a value <= start.
        in_prefix = prefix_mask.astype(bool) & (seg != 0)
        run_max = jax.lax.cummax(jnp.where(in_prefix, idx + 1, 0), axis=1)
        seg_last = jnp.concatenate([seg[:, 1:] != seg[:, :-1], jnp.ones((b, 1), bool)], axis=1)
        next_last = jax.lax.cummin(jnp.where(seg_last, idx, t - 1), axis=1, reverse=True)
        prefix_end = jnp.maximum(jnp.take_along_axis(run_max, next_last, axis=1), start)
        hi = jnp.maximum(prefix_end, idx + 1)
    pad = seg == 0
    return jnp.where(pad, 0, start), jnp.where(pad, 0, hi)


def cache_decode_mask(key_valid: jax.Array, query_index: jax.Array) -> jax.Array:
    """Mask [B, Tq, S] for queries written at cache slots `query_index` [B, Tq] (causal over cache).

    key_valid [B, S] marks cache slots holding real tokens. A query at slot i sees valid keys j <= i.
    """
    s = key_valid.shape[1]
    causal = jnp.arange(s)[None, None, :] <= query_index[:, :, None]
    return causal & key_valid[:, None, :].astype(bool)
