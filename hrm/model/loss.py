"""Response-token cross-entropy as sums and counts, so callers can reduce exactly (SPEC §1.9, STYLE §7).

Loss = sum of fp32 CE over `loss_mask` tokens / number of such tokens, over the *global* batch:
the step returns the sum and the count separately; accumulation and data parallelism add both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lm_loss_sums(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array,
                 segment_ids: jax.Array) -> dict[str, jax.Array]:
    """Sums over a batch of packed rows.

    Returns fp32 scalars: `loss_sum` (CE), `count` (valid tokens), `correct` (argmax == target),
    `seq_correct` / `seq_count`: examples (segments) with >= 1 valid token, and how many of them have
    every valid token right (the reference's `exact_accuracy` numerator and denominator).
    """
    logits = logits.astype(jnp.float32)
    mask = loss_mask.astype(bool)
    logz = jax.nn.logsumexp(logits, axis=-1)
    tgt = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    ce = jnp.where(mask, logz - tgt, 0.0)
    hit = (jnp.argmax(logits, axis=-1) == targets) & mask
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


def finalize_metrics(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Turn summed counters into loss / accuracy / exact_accuracy (safe when counts are zero)."""
    count = jnp.maximum(sums["count"], 1.0)
    return {
        "loss": sums["loss_sum"] / count,
        "accuracy": sums["correct"] / count,
        "exact_accuracy": sums["seq_correct"] / jnp.maximum(sums["seq_count"], 1.0),
        "tokens": sums["count"],
    }
