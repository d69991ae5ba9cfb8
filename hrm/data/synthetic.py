"""Realistic synthetic example lengths and packed-row layouts, for plans and benchmarks without data.

The mix (used by the packing bench and the compiled-plan report): example lengths
Li + Lo = clip(round(exp(normal(6.3, 0.9))), 8, seq_len) (mean ≈ 800 tokens), with the instruction
taking a uniform 10–60% of it (at least 2 tokens: BOQ + EOQ). Packed by the training packer, these
give the attention structure a real batch has: how many keys PrefixLM lets each query see, and
which blocks of a block-sparse kernel are non-empty.
"""

from __future__ import annotations

import numpy as np

from hrm.data import packing


def realistic_lengths(n: int, seq_len: int = 4096, seed: int = 0) -> np.ndarray:
    """int32 [n, 3] (Li, Lo, head) with Li + Lo = clip(round(exp(normal(6.3, 0.9))), 8, seq_len)."""
    rng = np.random.default_rng(seed)
    total = np.clip(np.round(np.exp(rng.normal(6.3, 0.9, n))), 8, seq_len).astype(np.int64)
    li = np.clip(np.round(total * rng.uniform(0.1, 0.6, n)), 2, total - 1).astype(np.int64)
    return np.stack([li, total - li, np.full(n, 2)], 1).astype(np.int32)


def packed_layout(rows: int, seq_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`segment_ids`, `prefix_mask`, `positions` [rows, seq_len] of one batch packed from the realistic mix."""
    n = max(64, 4 * rows * seq_len // 700)  # enough examples to fill the batch
    lengths = realistic_lengths(n, seq_len, seed)
    plan = packing.plan_epoch(lengths, np.arange(n), seq_len=seq_len, rows=rows, overlong="reference")
    if plan.num_batches == 0:
        raise ValueError(f"could not pack one batch of {rows} x {seq_len} from {n} examples")
    ex, row = plan.batch_rows(0, 0, rows)
    li, lo = lengths[ex, 0].astype(np.int64), np.minimum(lengths[ex, 1], seq_len + 1 - lengths[ex, 0])
    n_tok = li + lo
    tokens = np.zeros(int(n_tok.sum()), np.int32)
    return {k: v for k, v in packing.build_rows(tokens, n_tok, li, row, rows, seq_len).items()
            if k in ("segment_ids", "prefix_mask", "positions")}
