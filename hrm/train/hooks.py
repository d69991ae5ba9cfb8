"""Hooks around the one training loop (hrm/train/loop.py): each does one job.

The loop calls, for every step N (1-based):
    before_step(loop, N)          before N's batch is read and N is dispatched
    after_step(loop, N)           after N was dispatched; `loop.state` is the (not yet fetched) state
                                  after N. Step N's metrics are not known yet (lagged metrics, docs/conventions.md §7)
    on_metrics(loop, N, m)        N's metrics as host floats, called after N+1 was dispatched (or on
                                  `loop.flush()`), in hook order; a hook may add keys to `m` for later hooks
then on_end(loop) after the last step (not after an exception) and close() always.

A hook reaches the loop through `loop`: `cfg`, `setup`, `state`, `step`, `start`, `total`, `summary`,
`extras[step]` (values merged into that step's metrics), `flush()` (fetch the pending metrics now),
`stop(reason)` (end after this step) and `echo(msg)` (a line above the progress bar, process 0).
"""

from __future__ import annotations

import math
import os
import signal
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from hrm.train.flops import flops_per_step, mfu
from hrm.train.metrics import MetricsWriter, ProgressBar


class TrainingStopped(RuntimeError):
    """Training stopped on a non-finite loss, gradient norm or state (train.nan_policy)."""


class Hook:
    """Base class: every method is optional."""

    def before_step(self, loop: Any, step: int) -> None:
        pass

    def after_step(self, loop: Any, step: int) -> None:
        pass

    def on_metrics(self, loop: Any, step: int, m: dict[str, float]) -> None:
        pass

    def on_end(self, loop: Any) -> None:
        pass

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- metrics pieces


def nonfinite_what(m: dict[str, float]) -> str:
    """Name what was non-finite in a step's metrics: 'loss', 'gradient norm' or both."""
    pairs = (("loss", "loss"), ("grad_norm", "gradient norm"))
    bad = [name for key, name in pairs if not math.isfinite(m.get(key, 0.0))]
    return " and ".join(bad) or "update"


class NanPolicy(Hook):
    """train.nan_policy on each step's `finite` flag: 'stop' raises TrainingStopped, 'skip' reports
    the skipped update (the step itself already dropped it)."""

    def __init__(self, policy: str):
        self.policy = policy

    def on_metrics(self, loop, step, m):
        if m.pop("finite", 1.0):
            return
        msg = (f"non-finite {nonfinite_what(m)} at step {step} "
               f"(loss={m.get('loss', float('nan')):.6g}, grad_norm={m.get('grad_norm', float('nan')):.6g})")
        if self.policy == "stop":
            raise TrainingStopped(msg + "; stopping (train.nan_policy=stop; 'skip' drops such updates)")
        loop.summary["skipped_steps"] = loop.summary.get("skipped_steps", 0) + 1
        loop.echo(msg + "; update skipped (train.nan_policy=skip)")


class Throughput(Hook):
    """Step time, tokens/s, FLOPs per step and MFU (docs/optimizer.md §5) from the loop's host-side batch stats."""

    def __init__(self):
        self._last = time.perf_counter()

    def on_metrics(self, loop, step, m):
        now = time.perf_counter()
        dt, self._last = now - self._last, now
        cfg = loop.cfg
        bp = int(m.get("bp_steps") or 0) or cfg.model.bp_max_steps
        fl = flops_per_step(cfg.model, bp, loop.setup.tokens_per_step, m.pop("visible_keys"))["total"]
        m.update(step_time_s=dt, tokens_per_s=m.pop("real_tokens") / max(dt, 1e-9), flops_per_step=fl)
        u = mfu(fl, dt, jax.device_count(), loop.device_kind)
        if u is not None:
            m["mfu"] = u


class MetricsLog(Hook):
    """metrics.jsonl / TensorBoard / W&B every `log_every` steps (and the first, last and eval steps);
    keeps the per-step loss and last metrics in the run summary."""

    def __init__(self, writer: MetricsWriter, log_every: int):
        self.writer, self.every = writer, log_every

    def on_metrics(self, loop, step, m):
        loop.summary["losses"][step] = m["loss"]
        loop.summary["last"] = m
        if step % self.every == 0 or step in (loop.total, loop.start + 1) or any(k.startswith("heldout") for k in m):
            self.writer.write(step, m)

    def close(self):
        self.writer.close()


class Progress(Hook):
    """The tqdm bar: step, loss, accuracy, tokens/s, LR, bp. `write` prints above it (tqdm.write)."""

    def __init__(self, bar: ProgressBar):
        self.bar = bar

    def on_metrics(self, loop, step, m):
        self.bar.update(step, loss=m["loss"], acc=m["accuracy"], tok_s=m["tokens_per_s"], lr=m["lr"],
                        bp=int(m.get("bp_steps") or 0))

    def write(self, msg: str) -> None:
        self.bar.write(msg)

    def close(self):
        self.bar.close()


# ----------------------------------------------------------------------------- checkpoints


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def state_is_finite(state: dict) -> bool:
    """Whether every floating-point value of the state (params, moments, EMA, buffers) is finite."""
    return bool(np.asarray(jax.device_get(_all_finite(state))))


class CheckpointHook(Hook):
    """Saves on the checkpoint.every_steps interval, at a preemption point and at the end; a state is
    saved only after it was checked to be finite (else TrainingStopped names the cause)."""

    def __init__(self, ckpt: Any, data_iter: Any, meta: dict):
        self.ckpt, self.data_iter, self.meta = ckpt, data_iter, meta

    def after_step(self, loop, step):
        if self.ckpt.should_save(step):
            self.save(loop, step)

    def save(self, loop, step: int, force: bool = False) -> None:
        """Save `loop.state` at `step` if it is finite; raise TrainingStopped otherwise."""
        if not state_is_finite(loop.state):
            loop.flush()  # step's metrics name the cause (nan_policy=stop raises there)
            raise TrainingStopped(f"the training state after step {step} is not finite (the update overflowed); "
                                  f"not saving it")
        self.ckpt.save(step, loop.state, data_iter=self.data_iter, meta=self.meta, force=force)

    def on_end(self, loop):
        if loop.step > loop.start:
            self.save(loop, loop.step, force=True)
        self.ckpt.wait()

    def last_good(self) -> str:
        """Where the newest (finite) checkpoint is, for error messages."""
        self.ckpt.wait()
        latest = self.ckpt.latest_step()
        if latest is None:
            return "no checkpoint was saved"
        return f"last good checkpoint: {self.ckpt.step_dir(latest)}"


class Interrupts(Hook):
    """SIGTERM (preemption) and SIGINT (Ctrl-C): save a checkpoint at the current step and stop.

    Single process: signal handlers set a flag checked after each step; a second Ctrl-C aborts at once
    (KeyboardInterrupt, nothing saved). Multi-host: hosts would see a signal at different steps, so
    Orbax's `reached_preemption(step)` (JAX's coordination service agrees on one step) is used instead,
    and Ctrl-C is not intercepted.
    """

    def __init__(self, checkpoint: CheckpointHook, multihost: bool, echo=print):
        self.checkpoint, self.multihost, self.echo = checkpoint, multihost, echo
        self.requested: Optional[str] = None
        self._previous: dict[int, Any] = {}
        if not multihost:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    self._previous[sig] = signal.signal(sig, self._handler)
                except ValueError:  # not in the main thread (e.g. some test runners)
                    pass

    def _handler(self, signum, frame):
        if signum == signal.SIGINT and self.requested == "SIGINT":
            raise KeyboardInterrupt  # second Ctrl-C: abort without saving
        self.requested = signal.Signals(signum).name
        if signum == signal.SIGINT:
            self.echo("Ctrl-C: saving a checkpoint after this step (press Ctrl-C again to abort without saving)")

    def after_step(self, loop, step):
        reason = self.requested
        if reason is None and self.multihost and self.checkpoint.ckpt.reached_preemption(step):
            reason = "preemption"
        if reason is None:
            return
        loop.flush()
        self.checkpoint.save(loop, step, force=True)
        self.checkpoint.ckpt.wait()
        if reason == "SIGINT":
            loop.summary["interrupted_at"] = step
        else:
            loop.echo(f"SIGTERM/preemption: saved checkpoint at step {step}; exiting cleanly")
            loop.summary["preempted_at"] = step
        loop.summary["saved_checkpoint"] = str(self.checkpoint.ckpt.step_dir(step))
        loop.stop(reason)

    def close(self):
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous = {}


class FaultInjection(Hook):
    """train.debug_signal 'SIGKILL@10': send that signal to this process right after step 10 was
    dispatched and its checkpoint save issued (crash-recovery tests)."""

    def __init__(self, spec: str):
        sig, at = spec.split("@")
        self.sig, self.at = getattr(signal, sig), int(at)

    def after_step(self, loop, step):
        if step == self.at:
            os.kill(os.getpid(), self.sig)


class Profiler(Hook):
    """train.profile_steps 'A:B': a jax.profiler trace of steps A..B in `<run_dir>/profile`."""

    def __init__(self, span: str, log_dir: str):
        a, b = span.split(":")
        self.first, self.last, self.log_dir = int(a), int(b), log_dir
        self.active = self.done = False

    def before_step(self, loop, step):
        if not (self.active or self.done) and self.first <= step <= self.last:  # also when resumed inside A..B
            jax.profiler.start_trace(self.log_dir)
            self.active = True

    def after_step(self, loop, step):
        if self.active and step >= self.last:
            self._stop(loop.state)
            loop.echo(f"profile of steps {self.first}..{self.last} written to {self.log_dir}")

    def _stop(self, state: Any) -> None:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        self.active, self.done = False, True

    def on_end(self, loop):
        if self.active:
            self._stop(loop.state)

    def close(self):
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
