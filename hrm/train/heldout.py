"""Periodic held-out loss during training (`train.eval_every`), a hook of the training loop.

The held-out split is `<data dir>/heldout.jsonl` (the built-in dataset ships one, disjoint from its
training set; for your own prepared data put a file with the same schema — one JSON object per line
with "instruction", "response" and optionally "condition" — beside `metadata.json`). At start-up it is
tokenized with the training data's tokenizer and packed exactly like training batches (same seq_len,
rows and over-long policy); every `eval_every` steps (and at the last step) one pass over all of its
batches gives `heldout_loss` / `heldout_accuracy` (token-weighted, docs/prefixlm_packing.md §4), logged with that step's
metrics. The weights are the EMA (`eval.use_ema=true`, as eval.py) or the raw parameters.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from typing import Any, Optional

import jax
import jax.numpy as jnp

from hrm.config import Config, ConfigError
from hrm.data.paths import as_path
from hrm.model.loss import chunked_lm_loss_sums
from hrm.model.registry import max_bp_steps
from hrm.sharding import tracing_context
from hrm.train.hooks import Hook
from hrm.train.setup import TrainSetup

HELDOUT_FILE = "heldout.jsonl"


def _heldout_sums(params: dict, buffers: dict, batch: dict, *, spec: Any, bp_steps: Optional[int], loss_chunk: int,
                  mesh: Any, rules: dict) -> dict:
    """Forward only: summed CE / correct / count over the batch's response tokens, computed like the
    train step's loss (traced under the mesh and rules table; chunked LM head, no [B, T, V] logits)."""
    with tracing_context(mesh, rules):
        model = spec.merge(params, buffers)
        z = model.hidden(batch["inputs"], batch["positions"], batch["segment_ids"], batch["prefix_mask"], bp_steps)
        return chunked_lm_loss_sums(z, model.head.kernel[...], batch["targets"], batch["loss_mask"],
                                    batch["segment_ids"], loss_chunk)


def load_heldout_batches(cfg: Config, s: TrainSetup, data_dir: Any, data_meta: dict) -> list[dict]:
    """This host's rows of every packed held-out batch (numpy), prepared in a temporary directory."""
    from hrm.data.pipeline import make_train_iterator
    from hrm.data.prepare import prepare

    src = as_path(data_dir) / HELDOUT_FILE
    if not src.exists():
        raise ConfigError(f"train.eval_every={cfg.train.eval_every} needs a held-out split: {src} does not exist "
                          f"(a JSONL file of instruction/response records; or set train.eval_every=0)")
    tok = (data_meta.get("tokenizer") or {}).get("path")
    if not tok:
        raise ConfigError(f"{data_dir}/metadata.json names no tokenizer file for the held-out split")
    tmp = tempfile.mkdtemp(prefix="hrm-heldout-")
    try:
        prepare(out=tmp, inputs=[str(src)], tokenizer=str(as_path(data_dir) / tok), progress=False)
        it = make_train_iterator(tmp, seq_len=s.seq_len, global_batch_rows=s.global_rows, seed=0,
                                 process_index=jax.process_index(), process_count=jax.process_count(),
                                 overlong=cfg.data.overlong, prefetch=0, lookahead=cfg.data.lookahead or None)
        try:
            n = it.steps_per_epoch
            batches = [next(it) for _ in range(n)]
        finally:
            it.close()
    except ValueError as e:
        raise ConfigError(f"held-out split {src}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not batches:
        raise ConfigError(f"held-out split {src} is too small for one batch of {s.global_rows} x {s.seq_len} tokens")
    return batches


class HeldOutEval(Hook):
    """Every `every` steps (and at the last step): held-out loss and accuracy of the current weights."""

    def __init__(self, cfg: Config, s: TrainSetup, batches: list[dict], every: int, use_ema: bool):
        from hrm.data.pipeline import to_global

        self.every, self.use_ema = every, use_ema
        self.batches = [to_global(b, s.mesh, s.batch_spec) for b in batches]
        bp = max_bp_steps(cfg.model)  # forward values do not depend on it
        fn = functools.partial(_heldout_sums, spec=s.spec, bp_steps=bp, loss_chunk=cfg.model.loss_chunk, mesh=s.mesh,
                               rules=cfg.mesh.rules)
        self._sums = jax.jit(fn)

    def evaluate(self, state: dict) -> dict[str, float]:
        """Token-weighted held-out loss and accuracy of `state` (EMA or raw weights)."""
        params = state["params"]
        if self.use_ema:
            params = jax.tree.map(lambda e, p: e.astype(p.dtype), state["opt_state"]["ema"], params)
        total = None
        for b in self.batches:
            sums = self._sums(params, state["buffers"], b)
            total = sums if total is None else jax.tree.map(jnp.add, total, sums)
        t = {k: float(v) for k, v in jax.device_get(total).items()}
        count = max(t["count"], 1.0)
        return {"heldout_loss": t["loss_sum"] / count, "heldout_accuracy": t["correct"] / count}

    def after_step(self, loop, step):
        if step % self.every and step != loop.total:
            return
        m = self.evaluate(loop.state)
        loop.extras.setdefault(step, {}).update(m)
        loop.summary.setdefault("heldout", {})[step] = m["heldout_loss"]
        loop.echo(f"step {step}: held-out loss {m['heldout_loss']:.4f}, accuracy {m['heldout_accuracy']:.3f} "
                  f"({len(self.batches)} batches, {'EMA' if self.use_ema else 'raw'} weights)")
