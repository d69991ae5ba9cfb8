"""Temporary memory of the compiled loss+gradient vs the number of recurrent steps (docs/recurrence.md §2.3).

With truncated backprop (bp_steps=2) only two stack applications keep activations for the
backward pass, so XLA's temporary buffer should stay flat as H_cycles x L_cycles grows; full
backprop through every step grows linearly. Prints a table and ends with one line
`RESULT {json}` whose `ratio` is the largest configuration's temp memory / the 1x1 one's (bp=2).

    python bench/recurrence_memory.py [--hidden 128 --seq 512 --batch 4 --layers 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import json


import jax
import jax.numpy as jnp
from flax import nnx

from hrm.config import ModelConfig
from hrm.model import build_model
from hrm.model.loss import lm_loss_sums


def temp_bytes(cfg: ModelConfig, batch: int, seq: int, bp) -> int:
    """temp_size_in_bytes of jit(grad(loss)) compiled for one batch shape."""
    model = build_model(cfg)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tok = jnp.ones((batch, seq), jnp.int32)
    pos = jnp.tile(jnp.arange(seq, dtype=jnp.int32), (batch, 1))
    pre = (pos < seq // 2).astype(jnp.int32)

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        s = lm_loss_sums(m(tok, pos, tok, pre, bp), tok, 1 - pre, tok)
        return s["loss_sum"] / s["count"]

    return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4, help="total layers (half per stack)")
    args = ap.parse_args()
    base = ModelConfig(vocab_size=512, hidden_size=args.hidden, num_heads=max(1, args.hidden // 64),
                       n_layers=args.layers, compute_dtype="float32", max_seq_len=args.seq)
    rows = []
    print(f"{'H x L':>6} {'steps':>5} {'bp=2 temp MiB':>14} {'full-BPTT temp MiB':>19} {'full/bp2':>9}")
    for H, L in [(1, 1), (2, 3), (4, 4)]:
        cfg = dataclasses.replace(base, H_cycles=H, L_cycles=L)
        t2 = temp_bytes(cfg, args.batch, args.seq, 2)
        tf = temp_bytes(cfg, args.batch, args.seq, None)
        rows.append({"H_cycles": H, "L_cycles": L, "bp2_temp_bytes": t2, "full_temp_bytes": tf})
        print(f"{H}x{L:<4} {H * (L + 1):>5} {t2 / 2**20:14.1f} {tf / 2**20:19.1f} {tf / t2:9.2f}")
    ratio = rows[-1]["bp2_temp_bytes"] / rows[0]["bp2_temp_bytes"]
    full_ratio = rows[-1]["full_temp_bytes"] / rows[0]["full_temp_bytes"]
    print(f"bp=2: largest/1x1 = {ratio:.2f} (flat);  full BPTT: largest/1x1 = {full_ratio:.2f}")
    print("RESULT " + json.dumps({"ratio": round(ratio, 4), "full_bptt_ratio": round(full_ratio, 4),
                                  "hidden": args.hidden, "seq": args.seq, "batch": args.batch, "rows": rows}))


if __name__ == "__main__":
    main()
