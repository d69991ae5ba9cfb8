"""Parity against a transformers-format HRM-Text folder with golden outputs (golden/hf_tiny, docs/checkpoints.md §7).

    python -m hrm.tools.parity tests/golden/hf_tiny

The folder is imported with the same code as `python -m hrm.convert from-hf` (`load_hf_dir`, config
from config.json alone) and run in float32. For every forward case in golden.npz, HF's mask
allowed(q, k) = attention_mask[k] AND (k <= q OR (token_type[q] AND token_type[k])) is reproduced
with one example per row by segment_ids = attention_mask and prefix_mask = token_type_ids
(zeros for the 'causal' case), positions given explicitly (left padding included); logits are
compared on real positions only. Then our KV-cache engine (`hrm.eval.generate.Generator`, greedy,
EOA disabled as in the fixture) decodes the unpadded `gen/prompt_*` rows and must give
`gen/tokens_cached` exactly and `gen/logits_cached` within tolerance. Prints a table and ends
with `PARITY OK` or `PARITY FAIL`.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hrm.convert.ckpt_io import model_from_flat, split_ours
from hrm.convert.hf import load_hf_dir
from hrm.eval.generate import Generator
from hrm.tools.parity import Report

CASES = ("prefix_left", "prefix_right", "mixed", "causal")


def check_hf_dir(path: str | Path) -> bool:
    """Run every golden case of a transformers-format folder; print the table; True when all pass."""
    path = Path(path)
    golden = path / "golden.npz"
    if not golden.is_file():
        print(f"error: {golden} not found (need the golden outputs next to the checkpoint)")
        return False
    cfg, ours = load_hf_dir(path, compute_dtype="float32")
    params, buffers = split_ours(cfg, ours)
    model = model_from_flat(cfg, params, buffers, dtype=jnp.float32)
    z = np.load(golden)
    print(f"{path.name}: d={cfg.hidden_size} heads={cfg.num_heads}x{cfg.resolved_head_dim} "
          f"layers/stack={cfg.layers_per_stack} H_cycles={cfg.H_cycles} L_cycles={cfg.L_cycles} "
          f"I={cfg.resolved_intermediate_size} vocab={cfg.vocab_size} scale={cfg.resolved_embedding_scale:.6f}")
    forward = jax.jit(lambda ids, pos, seg, pre: model(ids, pos, seg, pre))
    rep = Report()
    for case in CASES:
        if f"{case}/logits" not in z.files:
            continue
        am = z[f"{case}/attention_mask"].astype(np.int32)
        prefix = z[f"{case}/token_type_ids"].astype(np.int32) if case != "causal" else np.zeros_like(am)
        logits = np.asarray(forward(jnp.asarray(z[f"{case}/input_ids"], jnp.int32),
                                    jnp.asarray(z[f"{case}/position_ids"], jnp.int32),
                                    jnp.asarray(am), jnp.asarray(prefix)))
        real = am.astype(bool)
        rep.add(f"{case}/logits (real positions)", logits[real], z[f"{case}/logits"][real], rel_to_max=False)

    if "gen/tokens_cached" in z.files:
        ids, mask = z["gen/prompt_input_ids"], z["gen/prompt_attention_mask"].astype(bool)
        prompts = [row[m].tolist() for row, m in zip(ids, mask)]
        want_tokens, want_logits = z["gen/tokens_cached"], z["gen/logits_cached"]
        new = want_tokens.shape[1]
        gen = Generator(model, eoa_id=None, max_context=cfg.max_seq_len, batch_size=len(prompts),
                        cache_dtype=jnp.float32)
        tokens, step_logits = gen.generate(prompts, new, temperature=0.0, return_logits=True)
        got_tokens = np.array([t + [-1] * (new - len(t)) for t in tokens])
        rep.add("gen/tokens_cached (exact)", got_tokens, want_tokens, rel_to_max=False)
        got_logits = np.stack([np.pad(lg, ((0, new - len(lg)), (0, 0)), constant_values=np.nan)
                               for lg in step_logits])
        rep.add("gen/logits_cached", got_logits, want_logits, rel_to_max=False)
    return rep.print()
