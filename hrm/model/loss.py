"""Response-token cross-entropy as sums and counts, so callers can reduce exactly (docs/model.md §9, docs/conventions.md
§7).

Loss = sum of fp32 CE over `loss_mask` tokens / number of such tokens, over the *global* batch:
the step returns the sum and the count separately; accumulation and data parallelism add both.

`lm_loss_sums` takes logits. `chunked_lm_loss_sums` takes the LM head's input and applies the head
chunk by chunk along the sequence inside a rematerialised `lax.scan` (as MaxText's vocabulary tiling),
so fp32 [B, T, V] logits never exist: each chunk's [B, C, V] logits are made, reduced to sums and
dropped, and recomputed in the backward pass. The sums are the same as `lm_loss_sums` (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hrm.model.matmul import project
from hrm.sharding import constrain

SUM_KEYS = ("loss_sum", "count", "correct", "seq_count", "seq_correct")
ACT_LOGITS = ("act_batch", "act_len", "act_vocab")
HEAD_AXES = ("embed", "vocab")  # the LM head kernel's logical axes (hrm.model.embed_head.LMHead)


def _token_terms(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-token fp32 CE (0 where masked) and hit (argmax == target, False where masked)."""
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    tgt = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    ce = jnp.where(mask, logz - tgt, 0.0)
    hit = (jnp.argmax(logits, axis=-1) == targets) & mask
    return ce, hit


def _sums(ce: jax.Array, hit: jax.Array, mask: jax.Array, segment_ids: jax.Array) -> dict[str, jax.Array]:
    """Sums over [B, T] per-token terms, incl. the per-example exact-match counts."""
    t = segment_ids.shape[1]

    def per_row(seg, m, h):
        n_valid = jax.ops.segment_sum(m.astype(jnp.int32), seg, num_segments=t + 1)
        n_hit = jax.ops.segment_sum(h.astype(jnp.int32), seg, num_segments=t + 1)
        has = (n_valid > 0).at[0].set(False)
        return jnp.sum(has), jnp.sum(has & (n_hit == n_valid))

    seq_count, seq_correct = jax.vmap(per_row)(segment_ids, mask, hit)
    return {
        "loss_sum": jnp.sum(ce),
        "count": jnp.sum(mask).astype(jnp.float32),
        "correct": jnp.sum(hit).astype(jnp.float32),
        "seq_count": jnp.sum(seq_count).astype(jnp.float32),
        "seq_correct": jnp.sum(seq_correct).astype(jnp.float32),
    }


def lm_loss_sums(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array,
                 segment_ids: jax.Array) -> dict[str, jax.Array]:
    """Sums over a batch of packed rows.

    Returns fp32 scalars: `loss_sum` (CE), `count` (valid tokens), `correct` (argmax == target),
    `seq_correct` / `seq_count`: examples (segments) with >= 1 valid token, and how many of them have
    every valid token right (the reference's `exact_accuracy` numerator and denominator).
    """
    mask = loss_mask.astype(bool)
    ce, hit = _token_terms(logits, targets, mask)
    return _sums(ce, hit, mask, segment_ids)


def chunked_lm_loss_sums(z: jax.Array, head_kernel: jax.Array, targets: jax.Array, loss_mask: jax.Array,
                         segment_ids: jax.Array, chunk: int = 0) -> dict[str, jax.Array]:
    """`lm_loss_sums(z @ head_kernel, ...)` without materialising [B, T, V] logits.

    z [B, T, D] (compute dtype), head_kernel [D, V] (fp32 master weight, cast to z's dtype; its gradient
    is accumulated in fp32). `chunk` tokens per step of a rematerialised scan over the sequence; 0 or a
    chunk >= T applies the head to whole rows at once (no scan).
    """
    b, t, _ = z.shape
    mask = loss_mask.astype(bool)
    if not chunk or chunk >= t:
        logits = constrain(project("btd,dv->btv", z, head_kernel, z.dtype, HEAD_AXES), ACT_LOGITS)
        ce, hit = _token_terms(logits, targets, mask)
        return _sums(ce, hit, mask, segment_ids)
    if t % chunk:
        raise ValueError(f"loss chunk {chunk} does not divide the sequence length {t} (model.loss_chunk)")
    n = t // chunk

    def split(x):  # [B, T, ...] -> [n, B, chunk, ...]
        return jnp.swapaxes(x.reshape(b, n, chunk, *x.shape[2:]), 0, 1)

    # The head's weight gradient is summed over chunks unsharded (fp32) and reduced across chips once,
    # after the scan, instead of once per chunk.
    @jax.checkpoint
    def body(acc, xs):
        zc, tc, mc = xs
        logits = constrain(project("btd,dv->btv", zc, head_kernel, z.dtype), ACT_LOGITS)
        ce, hit = _token_terms(logits, tc, mc)
        return acc + jnp.sum(ce), hit

    ce_sum, hits = jax.lax.scan(body, jnp.zeros((), jnp.float32), (split(z), split(targets), split(mask)))
    hit = jnp.swapaxes(hits, 0, 1).reshape(b, t)
    sums = _sums(jnp.zeros((b, t), jnp.float32), hit, mask, segment_ids)
    return {**sums, "loss_sum": ce_sum}


def finalize_metrics(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Turn summed counters into loss / accuracy / exact_accuracy (safe when counts are zero)."""
    count = jnp.maximum(sums["count"], 1.0)
    return {
        "loss": sums["loss_sum"] / count,
        "accuracy": sums["correct"] / count,
        "exact_accuracy": sums["seq_correct"] / jnp.maximum(sums["seq_count"], 1.0),
        "tokens": sums["count"],
    }
