"""Where the training state comes from: the run's latest checkpoint, `train.init_from`, or fresh.

Resume rules (README "Configs and training"):
- a checkpoint written by a different model (any `model.*` key that shapes the parameters) is refused;
- keys that shape the schedules or the data (`SCHEDULE_KEYS`: total steps, LR and its warmup/decay,
  the bp schedule, the global batch, seq_len, the data path/seed/over-long policy/packing lookahead)
  that differ from the checkpoint's are refused with an old -> new list, unless
  `train.allow_config_change=true`; then they are printed as a warning and the new values apply from
  the restored step on (if a data key changed, the new data pipeline starts at the restored step);
- other optimiser settings (betas, weight decay, EMA decay) that changed are printed as a warning.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Optional

import jax

from hrm.config import Config, ConfigError, to_dict
from hrm.sharding import with_shardings
from hrm.train.checkpoint import Checkpointer, load_params
from hrm.train.setup import TrainSetup

# Keys whose change alters the LR / bp schedules or which batch a step sees.
SCHEDULE_KEYS = ("train.total_steps", "train.global_batch_rows", "optim.lr", "optim.lr_warmup_steps",
                 "optim.lr_min_ratio", "model.bp_min_steps", "model.bp_max_steps", "model.bp_warmup_ratio",
                 "data.seq_len", "data.path", "data.shuffle_seed", "data.overlong", "data.lookahead")
DATA_KEYS = ("train.global_batch_rows", "data.seq_len", "data.path", "data.shuffle_seed", "data.overlong",
             "data.lookahead")
# model.* keys that do not change the parameters (implementation choices or schedule keys above).
MODEL_KEYS_FREE = ("remat", "attention_backend", "attention_block_q", "attention_block_kv", "compute_dtype",
                   "loss_chunk", "bp_min_steps", "bp_max_steps", "bp_warmup_ratio")


def resolved_schedule(cfg: Config, setup: TrainSetup) -> dict[str, Any]:
    """Values of the schedule-shaping keys actually used (total steps and batch rows as resolved)."""
    flat = _flat(to_dict(cfg))
    out = {k: flat.get(k) for k in SCHEDULE_KEYS}
    out["train.total_steps"], out["train.global_batch_rows"] = setup.total_steps, setup.global_rows
    return out


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k != "rules":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


@dataclasses.dataclass(frozen=True)
class ConfigChanges:
    """Differences between a checkpoint's config and the current one, grouped by consequence."""

    model: dict[str, tuple]     # refused: a different model
    schedule: dict[str, tuple]  # refused unless train.allow_config_change
    optim: dict[str, tuple]     # warned

    @staticmethod
    def describe(diff: dict[str, tuple]) -> str:
        return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))


def config_changes(cfg: Config, meta: dict, schedule_now: dict[str, Any]) -> ConfigChanges:
    """Compare the current config with a checkpoint's `meta` ({"config", "schedule"}); keys a checkpoint
    does not record (written by an older version) are not compared."""
    saved_cfg = meta.get("config") or {}
    saved, now = _flat(saved_cfg), _flat(to_dict(cfg))
    model = {k: (saved[k], v) for k, v in now.items()
             if k.startswith("model.") and k.split(".", 1)[1] not in MODEL_KEYS_FREE and k in saved and saved[k] != v}
    saved_sched = {**{k: saved[k] for k in SCHEDULE_KEYS if k in saved}, **(meta.get("schedule") or {})}
    if "schedule" not in meta:  # older checkpoints: compare the raw settings
        schedule_now = {**schedule_now, "train.total_steps": now["train.total_steps"],
                        "train.global_batch_rows": now["train.global_batch_rows"]}
    schedule = {k: (saved_sched[k], schedule_now[k]) for k in SCHEDULE_KEYS
                if k in saved_sched and saved_sched[k] != schedule_now[k]}
    optim = {k: (saved[k], v) for k, v in now.items()
             if k.startswith("optim.") and k not in SCHEDULE_KEYS and k in saved and saved[k] != v}
    return ConfigChanges(model, schedule, optim)


def check_resumable(cfg: Config, changes: ConfigChanges, where: Any) -> None:
    """Raise ConfigError for a different model or (unless allowed) changed schedule/data keys; warn otherwise."""
    if changes.model:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in sorted(changes.model.items()))
        raise ConfigError(f"cannot resume {where}: it was written with a different model ({detail}). Use a new "
                          f"train.run_dir, or train.init_from for a warm start.")
    if changes.schedule and not cfg.train.allow_config_change:
        raise ConfigError(f"cannot resume {where} with changed settings that shape the schedules or the data "
                          f"(checkpoint -> now: {ConfigChanges.describe(changes.schedule)}). Restore them, set "
                          f"train.allow_config_change=true to continue with the new values from the restored step, "
                          f"or start a new train.run_dir (train.init_from=<this run> for a warm start).")
    if changes.schedule:
        _warn(f"resuming {where} with changed schedule/data settings (train.allow_config_change=true): "
              f"{ConfigChanges.describe(changes.schedule)}")
    if changes.optim:
        _warn(f"resuming {where} with changed optimiser settings: {ConfigChanges.describe(changes.optim)}")


def restore_or_init(cfg: Config, s: TrainSetup, ckpt: Checkpointer, data_iter: Any, schedule_now: dict[str, Any],
                    echo=print) -> tuple[dict, int]:
    """(state, start step): the latest checkpoint in the run (state + data position), else
    `train.init_from` (params only, fresh optimiser, step 0), else a fresh initialisation."""
    latest = ckpt.latest_step()
    if latest is None:
        state = s.fresh_state()
        if cfg.train.init_from:
            state = warm_start(cfg, s, state)
            echo(f"initialised from {cfg.train.init_from} ({'EMA' if cfg.train.init_from_ema else 'raw'} weights)")
        return state, 0
    where = ckpt.step_dir(latest)
    changes = config_changes(cfg, ckpt.restore_meta(latest), schedule_now)
    check_resumable(cfg, changes, where)
    data_changed = any(k in DATA_KEYS for k in changes.schedule)
    state, _ = ckpt.restore(latest, s.abstract_state, data_iter=None if data_changed else data_iter)
    start = int(jax.device_get(state["step"]))
    if data_changed:  # the new pipeline's own order, from the restored step on
        data_iter.set_state({**data_iter.get_state(), "step": start})
    echo(f"resumed from {where} at step {start}")
    return state, start


def warm_start(cfg: Config, s: TrainSetup, state: dict) -> dict:
    """`train.init_from`: params (EMA by default) and buffers from another checkpoint; fresh optimiser."""
    path = cfg.train.init_from
    params = load_params(path, with_shardings(state["params"], s.state_shardings["params"]),
                         use_ema=cfg.train.init_from_ema)
    buffers = load_params(path, with_shardings(state["buffers"], s.state_shardings["buffers"]), use_ema=False,
                          params_key=("buffers",))
    opt = dict(state["opt_state"])
    opt["ema"] = jax.tree.map(lambda x: x.copy(), params)
    return {**state, "params": params, "buffers": buffers, "opt_state": opt}


def _warn(msg: str, proc: Optional[int] = None) -> None:
    if (jax.process_index() if proc is None else proc) == 0:
        print(f"warning: {msg}", file=sys.stderr, flush=True)
