"""The pure, jitted training step: forward, truncated backward, AdamAtan2 + EMA (docs/conventions.md §7).

`train_step(state, batch) -> (state, metrics)` is compiled once per distinct `bp_steps` (a static
schedule value, docs/recurrence.md §2.1), donates its state and has explicit in/out shardings.

Gradient accumulation: the global batch [B, T] is split into `microbatches` interleaved slices
(row j goes to microbatch j % M, so every device keeps a share of every microbatch) scanned with
`lax.scan`; each microbatch contributes the gradient of its CE *sum* and its token count, and the
total is divided once by the global count, so the update equals the unaccumulated step's exactly
(up to float summation order).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from hrm.config import Config
from hrm.data.packing import FIELDS as BATCH_FIELDS  # the fields of a packed batch (docs/prefixlm_packing.md §2–4)
from hrm.model.loss import SUM_KEYS, chunked_lm_loss_sums, finalize_metrics
from hrm.sharding import tracing_context
from hrm.train.optim import active_mask
from hrm.train.schedules import lr_at
from hrm.train.state import ModelSpec, opt_state_from_dict, opt_state_to_dict

def _split_microbatches(batch: dict, m: int) -> dict:
    """[B, T] -> [M, B/M, T] with row j in microbatch j % M."""
    def split(x):
        b = x.shape[0]
        if b % m:
            raise ValueError(f"global batch rows {b} not divisible by train.microbatches={m}")
        return jnp.swapaxes(x.reshape(b // m, m, *x.shape[1:]), 0, 1)
    return {k: split(v) for k, v in batch.items()}


def loss_and_grads(spec: ModelSpec, params: dict, buffers: dict, batch: dict, bp_steps: Optional[int],
                   microbatches: int = 1, loss_chunk: int = 0) -> tuple[dict, Any]:
    """Summed metrics and the gradient of the summed CE over response tokens (not yet normalised).

    The LM head and cross-entropy run in chunks of `loss_chunk` tokens (model.loss_chunk) so the fp32
    [B, T, V] logits are never materialised."""

    def sum_loss(p, mb):
        model = spec.merge(p, buffers)
        z = model.hidden(mb["inputs"], mb["positions"], mb["segment_ids"], mb["prefix_mask"], bp_steps)
        sums = chunked_lm_loss_sums(z, model.head.kernel[...], mb["targets"], mb["loss_mask"], mb["segment_ids"],
                                    loss_chunk)
        return sums["loss_sum"], sums

    grad_fn = jax.value_and_grad(sum_loss, has_aux=True)
    if microbatches == 1:
        (_, sums), grads = grad_fn(params, batch)
        return sums, grads

    def body(acc, mb):
        (_, sums), g = grad_fn(params, mb)
        acc_sums, acc_g = acc
        acc_g = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), acc_g, g)
        return (jax.tree.map(jnp.add, acc_sums, sums), acc_g), None

    zero_g = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    zero_s = {k: jnp.zeros((), jnp.float32) for k in SUM_KEYS}
    (sums, grads), _ = jax.lax.scan(body, (zero_s, zero_g), _split_microbatches(batch, microbatches))
    return sums, grads


def train_step(state: dict, batch: dict, *, cfg: Config, spec: ModelSpec, tx, total_steps: int,
               bp_steps: Optional[int], mesh: Optional[Mesh] = None) -> tuple[dict, dict]:
    """One optimiser step on a global batch. Pure; `bp_steps` must be static.

    With `mesh`, the step is traced under it and the `mesh.rules` table: activations are batch-sharded
    over data x fsdp (heads/MLP over tensor) by the model's logical constraints (docs/conventions.md §6)."""
    with tracing_context(mesh, cfg.mesh.rules):
        return _train_step(state, batch, cfg=cfg, spec=spec, tx=tx, total_steps=total_steps, bp_steps=bp_steps)


def _train_step(state: dict, batch: dict, *, cfg: Config, spec: ModelSpec, tx, total_steps: int,
                bp_steps: Optional[int]) -> tuple[dict, dict]:
    params, buffers = state["params"], state["buffers"]
    sums, grads = loss_and_grads(spec, params, buffers, batch, bp_steps, cfg.train.microbatches, cfg.model.loss_chunk)
    count = jnp.maximum(sums["count"], 1.0)
    grads = jax.tree.map(lambda g: g.astype(jnp.float32) / count, grads)
    active = active_mask(params, cfg.model, bp_steps,
                         cfg.optim.freeze_absent_grads)
    opt = opt_state_from_dict(state["opt_state"])
    updates, new_opt = tx.update(grads, opt, params, active=active)
    new_params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates)
    loss = sums["loss_sum"] / count
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if cfg.train.nan_policy == "skip":
        # A skipped step consumes its batch and counts for the schedules: step, data position and the
        # optimiser count (LR) advance; params, moments, per-parameter counts and EMA keep their values.
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        new_params = keep(new_params, params)
        new_opt = {**keep(opt_state_to_dict(new_opt), state["opt_state"]), "count": new_opt.count}
    else:
        new_opt = opt_state_to_dict(new_opt)
    new_state = {**state, "params": new_params, "opt_state": new_opt, "step": state["step"] + 1}
    metrics = finalize_metrics(sums)
    metrics.update(
        lr=lr_at(opt.count + 1, cfg.optim, total_steps),
        grad_norm=grad_norm,
        finite=finite,
    )
    return new_state, metrics


def compile_train_step(cfg: Config, spec: ModelSpec, tx, total_steps: int, bp_steps: Optional[int],
                       state_shardings: dict, batch_sharding) -> Any:
    """jax.jit of `train_step` for one bp_steps value with explicit shardings and donated state."""
    mesh = batch_sharding.mesh
    fn = functools.partial(train_step, cfg=cfg, spec=spec, tx=tx, total_steps=total_steps, bp_steps=bp_steps,
                           mesh=mesh)
    batch_sh = {k: batch_sharding for k in BATCH_FIELDS}
    return jax.jit(fn, in_shardings=(state_shardings, batch_sh), out_shardings=(state_shardings, None),
                   donate_argnums=0)


class StepCache:
    """At most one compiled step per distinct bp_steps value (4 variants with the default schedule).

    Each variant is compiled ahead of its first use (`.lower(state, batch).compile()`), and its compile
    time and per-device memory are reported through `on_compile(bp_steps, info)` (docs/conventions.md §7).
    """

    def __init__(self, cfg: Config, spec: ModelSpec, tx, total_steps: int, state_shardings: dict, batch_sharding,
                 on_compile=None):
        self._args = (cfg, spec, tx, total_steps)
        self._shardings = (state_shardings, batch_sharding)
        self._fns: dict[Optional[int], Any] = {}
        self._on_compile = on_compile

    def __call__(self, bp_steps: Optional[int], state: dict, batch: dict):
        """The compiled step for `bp_steps`, compiling it for these argument shapes on first use."""
        if bp_steps not in self._fns:
            cfg, spec, tx, total = self._args
            t0 = time.perf_counter()
            with jax.set_mesh(self._shardings[1].mesh):  # lowered and compiled under the mesh (docs/conventions.md §6)
                step = compile_train_step(cfg, spec, tx, total, bp_steps, *self._shardings)
                compiled = step.lower(state, batch).compile()
            mem = compiled.memory_analysis()
            info = {"compile_s": time.perf_counter() - t0}
            if mem is not None:
                info.update(argument_bytes=mem.argument_size_in_bytes, temp_bytes=mem.temp_size_in_bytes,
                            output_bytes=mem.output_size_in_bytes)
            self._fns[bp_steps] = compiled
            if self._on_compile:
                self._on_compile(bp_steps, info)
        return self._fns[bp_steps]

    @property
    def compiled_variants(self) -> list:
        return sorted(self._fns, key=lambda x: -1 if x is None else x)
