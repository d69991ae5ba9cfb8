"""train.nan_policy=skip semantics (README "Configs and training"): a skipped step consumes its batch
and counts for the LR and bp schedules (state step and optimiser count advance), but the parameters,
moments, per-parameter step counts and EMA keep their pre-step values. And the finiteness check that
guards every checkpoint save."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hrm.config import load_config
from hrm.train.hooks import state_is_finite
from hrm.train.schedules import lr_at
from hrm.train.setup import setup
from hrm.train.state import init_state
from hrm.train.step import compile_train_step

CFG = ["model.hidden_size=32", "model.num_heads=2", "model.vocab_size=128", "data.seq_len=32",
       "train.global_batch_rows=8", "train.total_steps=10", "optim.lr_warmup_steps=4", "mesh.fsdp=8",
       "train.nan_policy=skip", "model.compute_dtype=float32"]


def _batch(s, seed=0):
    rng = np.random.default_rng(seed)
    rows, T = s.global_rows, s.seq_len
    ids = rng.integers(4, 128, (rows, T + 1)).astype(np.int32)
    pos = np.tile(np.arange(T, dtype=np.int32), (rows, 1))
    b = {"inputs": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": (pos >= T // 2).astype(np.int32),
         "segment_ids": np.ones((rows, T), np.int32), "positions": pos, "prefix_mask": (pos < T // 2).astype(np.int32)}
    return {k: jax.device_put(v, s.batch_sharding) for k, v in b.items()}


def test_skipped_step_counts_for_schedules_but_keeps_weights():
    s = setup(load_config(None, CFG))
    step = compile_train_step(s.cfg, s.spec, s.tx, s.total_steps, 3, s.state_shardings, s.batch_sharding)
    state, m1 = step(init_state(s.cfg, s.spec, s.tx, s.state_shardings), _batch(s, 0))
    assert bool(m1["finite"]) and state_is_finite(state)
    before = jax.device_get(state)
    poisoned = {**state, "buffers": jax.tree.map(lambda x: jnp.full_like(x, jnp.inf), state["buffers"])}
    assert not state_is_finite(poisoned)
    after, m2 = step(poisoned, _batch(s, 1))
    assert not bool(m2["finite"])
    after = jax.device_get(after)
    assert int(after["step"]) == 2 and int(after["opt_state"]["count"]) == 2  # counts for the schedules
    assert float(m2["lr"]) == np.float32(lr_at(2, s.cfg.optim, s.total_steps))
    for key in ("params",):
        jax.tree.map(np.testing.assert_array_equal, after[key], before[key])
    for key in ("mu", "nu", "ema", "step"):  # moments, EMA and per-parameter bias-correction counts kept
        jax.tree.map(np.testing.assert_array_equal, after["opt_state"][key], before["opt_state"][key])
    # the next good step runs at the third LR value
    good = {**jax.device_put(after, s.state_shardings), "buffers": jax.device_put(before["buffers"],
                                                                                   s.state_shardings["buffers"])}
    _, m3 = step(good, _batch(s, 2))
    assert bool(m3["finite"]) and float(m3["lr"]) == np.float32(lr_at(3, s.cfg.optim, s.total_steps))
