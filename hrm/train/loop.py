"""The training recipe, top to bottom: runtime -> mesh -> data -> state (resume | init_from | fresh)
-> compiled steps -> loop with lagged metrics, checkpoints and preemption handling.

Batch k is a pure function of (seed, k, data) and the data-iterator state is checkpointed with the
model state, so a resumed run reproduces the uninterrupted run's losses bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import PartitionSpec

from hrm.config import Config, ConfigError, dump_yaml, to_dict
from hrm.mesh import make_mesh
from hrm.sharding import batch_sharding
from hrm.train import distributed
from hrm.train.checkpoint import CHECKPOINT_SUBDIR, Checkpointer, load_params
from hrm.train.flops import flops_per_step, mfu
from hrm.train.metrics import MetricsWriter, ProgressBar
from hrm.train.schedules import bp_steps_at, total_steps_from
from hrm.train.setup import check_batch_layout, global_batch_rows  # noqa: F401 - re-exported (aot.py)
from hrm.train.state import abstract_state, init_state, make_optimizer, model_spec, state_sharding
from hrm.train.step import StepCache

log = logging.getLogger("hrm.train")


class TrainingStopped(RuntimeError):
    """Raised when training stops on a non-finite loss (train.nan_policy=stop)."""


def resolve_data_dir(cfg: Config) -> Path:
    """`data.path`, or the built-in default dataset (generated on first use, file-locked)."""
    if cfg.data.path:
        path = Path(cfg.data.path)
        if not (path / "metadata.json").is_file():
            raise FileNotFoundError(f"data.path={path}: no prepared dataset (metadata.json) there; "
                                    f"run `python -m hrm.data.prepare --out {path} ...` first")
        return path
    from hrm.data.default_dataset import ensure_default_dataset

    return ensure_default_dataset()


def resolve_total_steps(cfg: Config, tokens_per_epoch: int) -> int:
    """train.total_steps, or floor(epochs x tokens per epoch / global batch tokens) (SPEC §3.1)."""
    if cfg.train.total_steps:
        return cfg.train.total_steps
    steps = total_steps_from(cfg.train.epochs, tokens_per_epoch, global_batch_rows(cfg) * cfg.data.seq_len)
    if steps < 1:
        raise ConfigError("derived total_steps < 1: the dataset is smaller than one global batch")
    return steps


def bp_for_step(cfg: Config, step: int, total: int) -> Optional[int]:
    """bp_steps of a (1-based) step for HRM; None (full backprop) for the Transformer baseline."""
    return bp_steps_at(step, total, cfg.model) if cfg.model.arch == "hrm" else None


def visible_keys_sum(batch: dict[str, np.ndarray], causal: bool = False) -> float:
    """Σ over real query tokens of the keys PrefixLM lets them see (SPEC §9 attention FLOPs): an
    instruction token sees its example's whole prefix P, a response token at position p sees p + 1
    (with `causal`, every token sees p + 1)."""
    seg, pre, pos = batch["segment_ids"], batch["prefix_mask"].astype(bool), batch["positions"]
    if causal:
        pre = np.zeros_like(pre)
    total = 0.0
    for r in range(seg.shape[0]):
        p_of_seg = np.bincount(seg[r], weights=pre[r], minlength=int(seg[r].max()) + 1)
        vis = np.where(pre[r], p_of_seg[seg[r]], pos[r] + 1)
        total += float(vis[seg[r] > 0].sum())
    return total


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except Exception:  # noqa: BLE001 - best effort
        return ""


class _Preemption:
    """SIGTERM sets a flag; the loop saves a checkpoint and exits cleanly at the next step boundary.

    Single process only: on multi-host, hosts would see the signal at different steps, so the loop
    uses Orbax's `reached_preemption(step)` (JAX's coordination service agrees on one step) instead.
    """

    def __init__(self):
        self.requested = False
        try:
            signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not in the main thread (e.g. some test runners)
            pass

    def _handler(self, signum, frame):
        self.requested = True


def train(cfg: Config) -> dict[str, Any]:
    """Run (or resume) training as configured; returns a summary dict (also written to summary.json)."""
    distributed.maybe_initialize(cfg.train)
    if cfg.train.compile_cache_dir:
        jax.config.update("jax_compilation_cache_dir", cfg.train.compile_cache_dir)
    proc, nproc = jax.process_index(), jax.process_count()
    run_dir = Path(cfg.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    # ---- mesh and data
    mesh = make_mesh(cfg.mesh)
    rules = cfg.mesh.rules
    data_dir = resolve_data_dir(cfg)
    from hrm.data.pipeline import make_train_iterator, to_global

    rows = global_batch_rows(cfg)
    check_batch_layout(cfg, rows, dict(mesh.shape), nproc)
    try:
        data_iter = make_train_iterator(data_dir, seq_len=cfg.data.seq_len, global_batch_rows=rows,
                                        seed=cfg.data.shuffle_seed, process_index=proc, process_count=nproc,
                                        overlong=cfg.data.overlong, worker_count=cfg.data.worker_count,
                                        prefetch=cfg.data.prefetch, lookahead=cfg.data.lookahead or None)
    except ValueError as e:  # inconsistent data/batch settings, reported by the pipeline
        raise ConfigError(f"data pipeline ({data_dir}): {e}") from e
    data_vocab = int(data_iter.source.meta.get("padded_vocab_size") or data_iter.source.meta.get("vocab_size") or 0)
    if data_vocab > cfg.model.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the vocabulary of the data in "
                          f"{data_dir} ({data_vocab} ids); out-of-range ids would turn into NaNs")
    total = resolve_total_steps(cfg, data_iter.total_tokens)

    # ---- model state
    spec = model_spec(cfg)
    tx = make_optimizer(cfg, total)
    shardings = state_sharding(spec, mesh, rules)
    b_sharding = batch_sharding(mesh, rules)
    ckpt = Checkpointer(run_dir / CHECKPOINT_SUBDIR, cfg.checkpoint)
    latest = ckpt.latest_step()
    if latest is not None:
        _check_resumable(cfg, ckpt.restore_meta(latest), run_dir / CHECKPOINT_SUBDIR / str(latest))
        state, _ = ckpt.restore(latest, abstract_state(cfg, tx, shardings), data_iter=data_iter)
        start = int(jax.device_get(state["step"]))
        _info(proc, f"resumed from {run_dir / CHECKPOINT_SUBDIR / str(latest)} at step {start}")
    else:
        state = init_state(cfg, spec, tx, shardings)
        start = 0
        if cfg.train.init_from:
            state = _warm_start(cfg, state, shardings, proc)
    if proc == 0:
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
        _copy_tokenizer(data_dir, data_iter.source.meta, run_dir)
    meta = {"config": to_dict(cfg), "git_sha": _git_sha(), "data_dir": str(data_dir),
            "tokenizer_hash": data_iter.source.meta.get("tokenizer", {}).get("sha256", "")}

    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
    stats = data_iter.epoch_stats(0)
    _info(proc, f"{cfg.name}: {n_params / 1e6:.2f}M params | mesh {dict(mesh.shape)} | {jax.device_count()} "
                f"devices x {nproc} processes | batch {rows}x{cfg.data.seq_len} | {total} steps | "
                f"packing efficiency {stats.get('packing_efficiency', float('nan')):.3f} | data {data_dir}")

    def on_compile(bp, info):
        mib = lambda k: f"{info[k] / 2**20:.0f} MiB" if k in info else "n/a"  # noqa: E731
        _info(proc, f"compiled train step (bp_steps={bp}) in {info['compile_s']:.1f}s; per device: arguments "
                    f"{mib('argument_bytes')}, temporaries {mib('temp_bytes')}")
        summary.setdefault("compiles", {})[str(bp)] = info

    steps = StepCache(cfg, spec, tx, total, shardings, b_sharding, on_compile=on_compile)
    writer = MetricsWriter(run_dir, cfg.logging, process_index=proc, run_config=to_dict(cfg), run_name=cfg.name)
    bar = ProgressBar(total, initial=start, enabled=cfg.logging.progress_bar and proc == 0)
    preempt = _Preemption() if nproc == 1 else None  # multi-host: Orbax syncs the preemption step
    device_kind = jax.devices()[0].device_kind
    summary: dict[str, Any] = {"start_step": start, "total_steps": total, "losses": {}}
    pending = None
    last_time = time.perf_counter()
    fault = None
    if cfg.train.debug_signal:
        sig, at = cfg.train.debug_signal.split("@")
        fault = (sig, int(at))

    def drain(item) -> None:
        """Read step N's metrics (called after step N+1 was dispatched)."""
        nonlocal last_time
        step, metrics, bp, data_wait, real_tokens, visible = item
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        dt, last_time = now - last_time, now
        if not m.pop("finite"):
            msg = f"non-finite loss at step {step} (loss={m['loss']})"
            if cfg.train.nan_policy == "stop":
                raise TrainingStopped(msg + "; stopping (train.nan_policy=stop, set 'skip' to skip such steps)")
            bar.write(msg + "; update skipped (train.nan_policy=skip)")
        fl = flops_per_step(cfg.model, bp or cfg.model.bp_max_steps, rows * cfg.data.seq_len, visible)["total"]
        m.update(step_time_s=dt, data_wait_s=data_wait, tokens_per_s=real_tokens / max(dt, 1e-9),
                 bp_steps=bp or 0, flops_per_step=fl)
        u = mfu(fl, dt, jax.device_count(), device_kind)
        if u is not None:
            m["mfu"] = u
        summary["losses"][step] = m["loss"]
        summary["last"] = m
        if step % cfg.train.log_every == 0 or step == total or step == start + 1:
            writer.write(step, m)
        bar.update(step, loss=m["loss"], acc=m["accuracy"], tok_s=m["tokens_per_s"], lr=m["lr"], bp=bp or 0)

    try:
        for step in range(start + 1, total + 1):
            bp = bp_for_step(cfg, step, total)
            t0 = time.perf_counter()
            local = next(data_iter)
            data_wait = time.perf_counter() - t0
            real_tokens = float((local["segment_ids"] > 0).sum()) * nproc
            visible = visible_keys_sum(local, cfg.model.attn_type == "causal") * nproc
            batch = to_global(local, mesh, PartitionSpec(*b_sharding.spec))
            state, metrics = steps(bp, state, batch)(state, batch)
            if pending is not None:
                drain(pending)
            pending = (step, metrics, bp, data_wait, real_tokens, visible)
            ckpt.save(step, state, data_iter=data_iter, meta=meta)
            if fault and fault[1] == step:
                os.kill(os.getpid(), getattr(signal, fault[0]))
            if (preempt.requested if preempt else ckpt.reached_preemption(step)):
                drain(pending)
                pending = None
                ckpt.save(step, state, data_iter=data_iter, meta=meta, force=True)
                ckpt.wait()
                _info(proc, f"SIGTERM/preemption: saved checkpoint at step {step}; exiting cleanly")
                summary["preempted_at"] = step
                break
        if pending is not None:
            drain(pending)
        last_step = int(jax.device_get(state["step"]))
        if last_step > start and not summary.get("preempted_at"):
            ckpt.save(last_step, state, data_iter=data_iter, meta=meta, force=True)
        ckpt.wait()
    finally:
        bar.close()
        writer.close()
        ckpt.close()
        data_iter.close()
    summary["compiled_bp_variants"] = [v or 0 for v in steps.compiled_variants]
    summary["final_step"] = int(jax.device_get(state["step"]))
    if proc == 0:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def _copy_tokenizer(data_dir: Path, data_meta: dict, run_dir: Path) -> None:
    """Keep the tokenizer beside the checkpoints so the run directory is self-contained for eval/export."""
    rel = (data_meta.get("tokenizer") or {}).get("path")
    src = data_dir / rel if rel else None
    if src is not None and src.is_file() and not (run_dir / src.name).exists():
        shutil.copy2(src, run_dir / src.name)


def _check_resumable(cfg: Config, meta: dict, where: Path) -> None:
    """Refuse, with the differing keys named, to resume a checkpoint written by a different model."""
    saved = (meta.get("config") or {}).get("model")
    if saved is None:
        return
    current = to_dict(cfg)["model"]
    diff = {k: (saved.get(k), v) for k, v in current.items()
            if k not in ("remat", "attention_backend", "compute_dtype") and saved.get(k) != v}
    saved_optim = (meta.get("config") or {}).get("optim") or {}
    changed = {k: (saved_optim.get(k), v) for k, v in to_dict(cfg)["optim"].items() if saved_optim.get(k, v) != v}
    if changed:
        print(f"warning: resuming {where} with changed optimiser settings "
              f"{ {f'optim.{k}': v for k, v in changed.items()} } (checkpoint, config)", file=sys.stderr)
    if diff:
        detail = ", ".join(f"model.{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ConfigError(f"cannot resume {where}: it was written with a different model ({detail}). Use a new "
                         f"train.run_dir, or train.init_from for a warm start.")


def _warm_start(cfg: Config, state: dict, shardings: dict, proc: int) -> dict:
    """`train.init_from`: params (EMA by default) and buffers from another checkpoint; fresh optimiser."""
    path = cfg.train.init_from
    abstract = lambda tree, sh: jax.tree.map(  # noqa: E731
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, sh)
    params = load_params(path, abstract(state["params"], shardings["params"]), use_ema=cfg.train.init_from_ema)
    buffers = load_params(path, abstract(state["buffers"], shardings["buffers"]), use_ema=False,
                          params_key=("buffers",))
    opt = dict(state["opt_state"])
    opt["ema"] = jax.tree.map(lambda x: x.copy(), params)
    _info(proc, f"initialised from {path} ({'EMA' if cfg.train.init_from_ema else 'raw'} weights)")
    return {**state, "params": params, "buffers": buffers, "opt_state": opt}


def _info(proc: int, msg: str) -> None:
    if proc == 0:
        print(msg, file=sys.stderr, flush=True)
