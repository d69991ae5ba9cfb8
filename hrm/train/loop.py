"""The training recipe, top to bottom: runtime -> data -> setup (mesh, model, optimiser, shardings)
-> state (resume | init_from | fresh) -> hooks -> one loop with lagged metrics.

Batch k is a pure function of (seed, k, data) and the data-iterator state is checkpointed with the
model state, so a resumed run reproduces the uninterrupted run's losses bit for bit. Everything
around the loop (metrics, progress, checkpoints, interrupts, fault injection, held-out eval,
profiling) is a hook (hrm/train/hooks.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np

from hrm.config import Config, ConfigError, dump_yaml, to_dict
from hrm.model.registry import bp_steps_at, max_bp_steps
from hrm.sharding import sharding_report
from hrm.train import distributed
from hrm.train.checkpoint import CHECKPOINT_SUBDIR, Checkpointer
from hrm.train.heldout import HeldOutEval, load_heldout_batches
from hrm.train.hooks import (CheckpointHook, FaultInjection, Hook, Interrupts, MetricsLog, NanPolicy, Profiler,
                             Progress, Throughput, TrainingStopped)
from hrm.train.metrics import MetricsWriter, ProgressBar
from hrm.train.resume import resolved_schedule, restore_or_init
from hrm.train.rundir import RunDir, as_path
from hrm.train.flops import flops_per_token
from hrm.train.schedules import bp_phase_boundaries, total_steps_from
from hrm.train.setup import TrainSetup, check_batch_layout, global_batch_rows, setup
from hrm.train.step import StepCache

__all__ = ["train", "TrainingStopped", "Loop", "resolve_data_dir", "resolve_total_steps", "bp_for_step",
           "visible_keys_sum", "check_batch_layout", "global_batch_rows"]


def train(cfg: Config) -> dict[str, Any]:
    """Run (or resume) training as configured; returns the run summary (also written to summary.json).

    Raises ConfigError / FileNotFoundError for setup problems (then a run dir this call created is
    removed again), TrainingStopped when the run diverged (naming the last good checkpoint).
    """
    distributed.maybe_initialize(cfg.train)
    if cfg.train.compile_cache_dir:
        jax.config.update("jax_compilation_cache_dir", cfg.train.compile_cache_dir)
    proc = jax.process_index()
    echo = Console(proc)
    run = RunDir(cfg.train.run_dir, proc)
    run.create()
    with contextlib.ExitStack() as resources:
        try:  # ---- data, setup, state: a failure here leaves no run dir behind
            data_dir, data_iter = open_data(cfg)
            resources.callback(data_iter.close)
            s = setup(cfg, total_steps=resolve_total_steps(cfg, data_iter.total_tokens))
            ckpt = resources.enter_context(Checkpointer(run / CHECKPOINT_SUBDIR, cfg.checkpoint))
            state, start = restore_or_init(cfg, s, ckpt, data_iter, resolved_schedule(cfg, s), echo)
            heldout = load_heldout_batches(cfg, s, data_dir, data_iter.metadata) if cfg.train.eval_every else None
        except BaseException:
            resources.close()
            run.remove_if_created()
            raise
        run.write_text("config.yaml", dump_yaml(cfg))
        _copy_tokenizer(run, data_dir, data_iter.metadata)
        meta = {"config": to_dict(cfg), "schedule": resolved_schedule(cfg, s), "git_sha": _git_sha(),
                "data_dir": str(data_dir), "tokenizer_hash": data_iter.metadata.get("tokenizer", {}).get("sha256", "")}
        echo(describe(cfg, s, state, data_iter, data_dir))

        loop = Loop(cfg, s, state, start, Batches(data_iter, s, cfg.model.attn_type == "causal"), echo)
        hooks, checkpoints = make_hooks(cfg, s, run, ckpt, data_iter, meta, start, heldout, echo)
        try:
            summary = loop.run(hooks)
        except TrainingStopped as e:
            raise TrainingStopped(f"{e}; {checkpoints.last_good()}") from None
        finally:
            echo.bar = None
    run.write_json("summary.json", summary)
    return summary


def make_hooks(cfg: Config, s: TrainSetup, run: RunDir, ckpt: Checkpointer, data_iter: Any, meta: dict, start: int,
               heldout: Optional[list], echo: "Console") -> tuple[list[Hook], CheckpointHook]:
    """The loop's hooks in the order they run (metrics pieces first, interrupts last)."""
    proc = jax.process_index()
    bar = ProgressBar(s.total_steps, initial=start, enabled=cfg.logging.progress_bar and proc == 0)
    echo.bar = bar  # from here on, messages go through tqdm.write
    writer = MetricsWriter(run.path, cfg.logging, process_index=proc, run_config=to_dict(cfg), run_name=cfg.name,
                           keep_through=start)
    hooks: list[Hook] = [NanPolicy(cfg.train.nan_policy), Throughput(), MetricsLog(writer, cfg.train.log_every),
                         Progress(bar)]
    if cfg.train.profile_steps:
        hooks.append(Profiler(cfg.train.profile_steps, str(run / "profile")))
    if heldout is not None:
        hooks.append(HeldOutEval(cfg, s, heldout, cfg.train.eval_every, cfg.eval.use_ema))
    checkpoints = CheckpointHook(ckpt, data_iter, meta)
    hooks.append(checkpoints)
    if cfg.train.debug_signal:
        hooks.append(FaultInjection(cfg.train.debug_signal))
    hooks.append(Interrupts(checkpoints, multihost=jax.process_count() > 1, echo=echo))
    return hooks, checkpoints


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class _Dispatched:
    """A dispatched step whose metrics have not been fetched yet."""

    step: int
    bp: Optional[int]
    metrics: Any  # device arrays
    host: dict[str, float]


class Loop:
    """One loop over steps start+1..total; hooks see it as described in hrm/train/hooks.py."""

    def __init__(self, cfg: Config, s: TrainSetup, state: dict, start: int, batches: "Batches",
                 echo: Callable[[str], None]):
        self.cfg, self.setup, self.state, self.start, self.step = cfg, s, state, start, start
        self.total = s.total_steps
        self.batches, self.echo = batches, echo
        self.summary: dict[str, Any] = {"start_step": start, "total_steps": self.total, "losses": {}}
        self.extras: dict[int, dict[str, float]] = {}
        self.device_kind = jax.devices()[0].device_kind
        self.hooks: list[Hook] = []
        self._pending: Optional[_Dispatched] = None
        self._stop: Optional[str] = None

    def stop(self, reason: str) -> None:
        """End the loop after the current step (hooks' on_end still run)."""
        self._stop = reason

    def flush(self) -> None:
        """Fetch the pending step's metrics and hand them to the hooks' `on_metrics`."""
        if self._pending is None:
            return
        d, self._pending = self._pending, None
        m = {k: float(v) for k, v in jax.device_get(d.metrics).items()}
        m.update(d.host, bp_steps=d.bp or 0, **self.extras.pop(d.step, {}))
        for h in self.hooks:
            h.on_metrics(self, d.step, m)

    def _on_compile(self, bp: Optional[int], info: dict) -> None:
        mib = lambda k: f"{info[k] / 2**20:.0f} MiB" if k in info else "n/a"  # noqa: E731
        self.echo(f"compiled train step (bp_steps={bp}) in {info['compile_s']:.1f}s; per device: arguments "
                  f"{mib('argument_bytes')}, temporaries {mib('temp_bytes')}")
        self.summary.setdefault("compiles", {})[str(bp)] = info

    def run(self, hooks: list[Hook]) -> dict[str, Any]:
        """Steps start+1..total (or until a hook stops the loop); returns the summary."""
        self.hooks = hooks
        s = self.setup
        steps = StepCache(self.cfg, s.spec, s.tx, self.total, s.state_shardings, s.batch_sharding,
                          on_compile=self._on_compile)
        try:
            for step in range(self.start + 1, self.total + 1):
                for h in hooks:
                    h.before_step(self, step)
                bp = bp_for_step(self.cfg, step, self.total)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    batch, host = self.batches.next()
                    self.state, metrics = steps(bp, self.state, batch)(self.state, batch)
                self.flush()  # the previous step's metrics, now that this step is queued
                self._pending, self.step = _Dispatched(step, bp, metrics, host), step
                for h in hooks:
                    h.after_step(self, step)
                if self._stop:
                    break
            self.flush()
            for h in hooks:
                h.on_end(self)
        finally:
            for h in reversed(hooks):
                h.close()
        self.summary["compiled_bp_variants"] = [v or 0 for v in steps.compiled_variants]
        self.summary["final_step"] = self.step
        return self.summary


class Batches:
    """Global batches from the host-local data iterator, with the host-side stats the metrics need."""

    def __init__(self, data_iter: Any, s: TrainSetup, causal: bool):
        from hrm.data.pipeline import to_global

        self._to_global = to_global
        self.data_iter, self.setup, self.causal = data_iter, s, causal
        self.nproc = jax.process_count()

    def next(self) -> tuple[dict, dict[str, float]]:
        t0 = time.perf_counter()
        local = next(self.data_iter)
        host = {"data_wait_s": time.perf_counter() - t0,
                "real_tokens": float((local["segment_ids"] > 0).sum()) * self.nproc,
                "visible_keys": visible_keys_sum(local, self.causal) * self.nproc}
        return self._to_global(local, self.setup.mesh, self.setup.batch_spec), host


class Console:
    """One line of text for the user (process 0, stderr), above the progress bar when there is one."""

    def __init__(self, proc: int):
        self.proc = proc
        self.bar: Optional[ProgressBar] = None

    def __call__(self, msg: str) -> None:
        if self.proc != 0:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data and schedules


def resolve_data_dir(cfg: Config) -> Any:
    """`data.path` (local or gs://…), or the built-in default dataset (generated on first use, file-locked)."""
    if cfg.data.path:
        path = as_path(cfg.data.path)
        if not (path / "metadata.json").exists():
            raise FileNotFoundError(f"data.path={path}: no prepared dataset (metadata.json) there; "
                                    f"run `python -m hrm.data.prepare --out {path} ...` first")
        return path
    from hrm.data.default_dataset import ensure_default_dataset

    return ensure_default_dataset()


def open_data(cfg: Config) -> tuple[Any, Any]:
    """(data dir, this host's training iterator), with data/model/batch mismatches as ConfigError."""
    from hrm.data.pipeline import make_train_iterator

    data_dir = resolve_data_dir(cfg)
    try:
        it = make_train_iterator(data_dir, seq_len=cfg.data.seq_len, global_batch_rows=global_batch_rows(cfg),
                                 seed=cfg.data.shuffle_seed, process_index=jax.process_index(),
                                 process_count=jax.process_count(), overlong=cfg.data.overlong,
                                 worker_count=cfg.data.worker_count, prefetch=cfg.data.prefetch,
                                 lookahead=cfg.data.lookahead or None, target_only=cfg.data.target_only)
    except ValueError as e:  # inconsistent data/batch settings, reported by the pipeline
        raise ConfigError(f"data pipeline ({data_dir}): {e}") from e
    meta = it.metadata
    data_vocab = int(meta.get("padded_vocab_size") or meta.get("vocab_size") or 0)
    if data_vocab > cfg.model.vocab_size:
        it.close()
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the vocabulary of the data in "
                          f"{data_dir} ({data_vocab} ids); out-of-range ids would turn into NaNs")
    return data_dir, it


def resolve_total_steps(cfg: Config, tokens_per_epoch: int) -> int:
    """train.total_steps, or floor(epochs x tokens per epoch / global batch tokens) (docs/recurrence.md §2.1)."""
    if cfg.train.total_steps:
        return cfg.train.total_steps
    steps = total_steps_from(cfg.train.epochs, tokens_per_epoch, global_batch_rows(cfg) * cfg.data.seq_len)
    if steps < 1:
        raise ConfigError("derived total_steps < 1: the dataset is smaller than one global batch")
    return steps


def bp_for_step(cfg: Config, step: int, total: int) -> Optional[int]:
    """bp_steps of a (1-based) step: the architecture's schedule (HRM's warmup; None = the fixed horizon)."""
    return bp_steps_at(cfg.model, step, total)


def visible_keys_sum(batch: dict[str, np.ndarray], causal: bool = False) -> float:
    """Σ over real query tokens of the keys PrefixLM lets them see (docs/optimizer.md §5 attention FLOPs): an
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


def describe(cfg: Config, s: TrainSetup, state: dict, data_iter: Any, data_dir: Any) -> str:
    """The run description printed at start: size, layout, schedule, and what the sharding rules could not shard."""
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
    eff = data_iter.epoch_stats(0).get("packing_efficiency", float("nan"))
    bp = max_bp_steps(cfg.model)
    lines = [f"{cfg.name}: {n_params / 1e6:.2f}M params | mesh {dict(s.mesh.shape)} | {jax.device_count()} devices x "
             f"{jax.process_count()} processes | batch {s.global_rows}x{s.seq_len} | {s.total_steps} steps | "
             f"packing efficiency {eff:.3f} | data {data_dir}",
             f"{flops_per_token(cfg.model, bp) / 1e9:.3g} GFLOP/token at bp_steps {bp} (excluding attention)"]
    if bp is not None:
        lines[-1] += " | bp_steps from step: " + ", ".join(
            f"{step}: {b}" for step, b in bp_phase_boundaries(s.total_steps, cfg.model))
    fallbacks = sharding_report(s.spec.params_template, s.mesh, cfg.mesh.rules)
    if fallbacks:
        lines.append(f"replicated instead of sharded ({len(fallbacks)} parameter dims): " + "; ".join(fallbacks[:3])
                     + (" ..." if len(fallbacks) > 3 else ""))
    return "\n".join(lines)


def _copy_tokenizer(run: RunDir, data_dir: Any, data_meta: dict) -> None:
    """Keep the tokenizer beside the checkpoints so the run directory is self-contained for eval/export."""
    rel = (data_meta.get("tokenizer") or {}).get("path")
    if rel:
        run.copy_in(as_path(data_dir) / rel)


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except Exception:
        return ""
