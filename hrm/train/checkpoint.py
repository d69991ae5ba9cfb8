"""Checkpointing: the one module that imports Orbax (docs/conventions.md §11).

Layout of one step directory `<directory>/<step>/` (Orbax CheckpointManager, v0 API):

- `state/`     the training state, an arbitrary pytree of jax arrays (StandardSave). The train loop
               decides its contents; `load_params` assumes the layout
               {"params": ..., "opt_state": {"ema": ..., ...}, ...} (key paths are parameters).
- `data_iter/` the grain iterator state, one JSON file per process (grain.checkpoint.CheckpointSave);
               present only when an iterator was passed to `save`.
- `meta/`      a JSON dict (resolved config, git SHA, tokenizer hash, ...).

Atomicity: Orbax writes each step into `<step>.orbax-checkpoint-tmp-<ts>/` and renames it when
complete (plus `commit_success.txt`); unfinalized directories are never listed as steps, so a process
killed mid-write resumes from the previous complete step (tested). Leftover tmp directories are
removed when the next Checkpointer opens the directory.

Retention: the last `keep_last` steps plus every step divisible by `keep_every` (Orbax preservation
policies `LatestN` ∪ `EveryNSteps`). Saving happens when `step % every_steps == 0`, when Orbax
detects a preemption sync point (multi-host TPU), or when `force=True`.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocm

from hrm.config import CheckpointConfig
from hrm.train.rundir import as_path

log = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"  # <run_dir>/checkpoints/<step>/ (what `load_params` looks for)
STATE, DATA_ITER, META = "state", "data_iter", "meta"


def _grain_args():
    import grain  # only needed when an iterator is checkpointed

    return grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore


class Checkpointer:
    """Save/restore training state, data-iterator state and JSON metadata (docs/conventions.md §11).

    Every process must call `save`/`restore` (Orbax coordinates multi-host writes internally).
    `latest_step()` reflects saves issued by this object, including an async save still in flight;
    a fresh Checkpointer sees only finalized steps on disk.
    """

    def __init__(self, directory: Any, cfg: CheckpointConfig):
        self.directory = as_path(directory)  # local (made absolute) or gs://… (etils.epath)
        self.cfg = cfg
        save_policies: list[Any] = [ocm.PreemptionCheckpointingPolicy()]
        if cfg.every_steps > 0:
            save_policies.append(ocm.FixedIntervalPolicy(cfg.every_steps))
        keep: list[Any] = [ocm.LatestN(cfg.keep_last if cfg.keep_last > 0 else None)]
        if cfg.keep_every > 0:
            keep.append(ocm.EveryNSteps(cfg.keep_every))
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocm.AnySavePolicy(save_policies),
            preservation_policy=ocm.AnyPreservationPolicy(keep),
            enable_async_checkpointing=cfg.async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    # ------------------------------------------------------------------ queries

    def all_steps(self) -> list[int]:
        """Steps of all kept checkpoints, ascending."""
        return sorted(self._mngr.all_steps())

    def latest_step(self) -> Optional[int]:
        """The newest checkpoint step, or None if there is none (tmp/unfinalized dirs are ignored)."""
        return self._mngr.latest_step()

    def step_dir(self, step: int) -> epath.Path:
        """`<directory>/<step>` (where `save(step)` writes)."""
        return self.directory / str(int(step))

    def should_save(self, step: int) -> bool:
        """Whether `save(step)` without `force` would write (interval or preemption)."""
        return self._mngr.should_save(step)

    def reached_preemption(self, step: int) -> bool:
        """True when the JAX preemption sync point was reached: save(force=True), wait(), exit 0."""
        return self._mngr.reached_preemption(step)

    # ------------------------------------------------------------------ save / restore

    def save(self, step: int, state: Any, data_iter: Any = None, meta: Optional[dict] = None,
             force: bool = False) -> bool:
        """Save `state` (pytree of jax arrays), the grain iterator and `meta` at `step`.

        Returns True if a save was started (async when `cfg.async_save`: call `wait()` before
        reading it back or exiting). Without `force`, saves only on the `every_steps` interval or
        at a preemption point. An already-saved step is skipped (returns False).
        """
        if step in self._mngr.all_steps():
            return False
        items = {STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(dict(meta or {}))}
        if data_iter is not None:
            items[DATA_ITER] = _grain_args()[0](data_iter)
        saved = self._mngr.save(int(step), args=ocp.args.Composite(**items), force=force)
        if saved:
            log.info("checkpoint step %d -> %s%s", step, self.directory, " (async)" if self.cfg.async_save else "")
        return bool(saved)

    def _step_or_latest(self, step: Optional[int]) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint found in {self.directory}")
        if step not in self._mngr.all_steps():
            raise FileNotFoundError(f"checkpoint step {step} not found in {self.directory} "
                                    f"(available: {self.all_steps()})")
        return int(step)

    def restore(self, step: Optional[int], abstract_state: Any, data_iter: Any = None) -> tuple[Any, dict]:
        """Restore (state, meta) at `step` (None = latest).

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` carrying the target shardings; arrays
        are resharded to them on load (the saved sharding does not matter). If `data_iter` is
        given, its state is restored in place (it must be a fresh iterator of the same pipeline).
        """
        step = self._step_or_latest(step)
        self.wait()
        items = {STATE: ocp.args.StandardRestore(abstract_state), META: ocp.args.JsonRestore()}
        if data_iter is not None:
            if not (self._mngr.directory / str(step) / DATA_ITER).exists():
                raise FileNotFoundError(f"checkpoint {self.directory}/{step} has no data iterator state; "
                                        "restore without data_iter to start the data from its beginning")
            items[DATA_ITER] = _grain_args()[1](data_iter)
        out = self._mngr.restore(step, args=ocp.args.Composite(**items))
        return out[STATE], dict(out[META] or {})

    def restore_meta(self, step: Optional[int] = None) -> dict:
        """Only the JSON metadata of `step` (None = latest)."""
        step = self._step_or_latest(step)
        self.wait()
        out = self._mngr.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
        return dict(out[META] or {})

    def wait(self) -> None:
        """Block until any in-flight async save is finalized on disk."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and release resources."""
        self._mngr.wait_until_finished()
        self._mngr.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------- params only (init_from)


def _latest_finalized(directory: epath.Path) -> Optional[epath.Path]:
    steps = ocp.path.step.checkpoint_steps(directory) if directory.is_dir() else []
    return directory / str(max(steps)) if steps else None


def resolve_step_dir(path: Any) -> epath.Path:
    """A step directory from `path`: a step dir itself, a checkpoint dir, or a run dir.

    Run dir → `<path>/checkpoints/<latest>`; checkpoint dir → `<path>/<latest>`. Raises
    FileNotFoundError naming the path when nothing usable is there.
    """
    p = as_path(path)
    if not p.exists():
        raise FileNotFoundError(f"init_from path does not exist: {p}")
    if (p / STATE).is_dir():
        return p
    for candidate in (p, p / CHECKPOINT_SUBDIR):
        found = _latest_finalized(candidate)
        if found is not None:
            return found
    raise FileNotFoundError(f"no finalized checkpoint under {p} (looked for <step>/{STATE}, "
                            f"<step>/ and {CHECKPOINT_SUBDIR}/<step>/)")


def load_params(path: Any, abstract_params: Any, use_ema: bool,
                params_key: Sequence[str] = ("params",),
                ema_key: Sequence[str] = ("opt_state", "ema")) -> Any:
    """Read only the parameters (or their EMA) from a checkpoint, for `train.init_from` (docs/conventions.md §11).

    Assumes the saved state holds the parameters at `params_key` and the EMA copy at `ema_key`
    (default layout {"params": ..., "opt_state": {"ema": ...}}); nothing else is read.
    `abstract_params` is a pytree of `jax.ShapeDtypeStruct` (with shardings) whose structure
    matches the saved sub-tree; the result is resharded to those shardings.
    """
    step_dir = resolve_step_dir(path)
    keys = tuple(ema_key if use_ema else params_key)
    target: Any = abstract_params
    for k in reversed(keys):
        target = {k: target}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    ckptr = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    try:
        out = ckptr.restore(step_dir / STATE, args=ocp.args.PyTreeRestore(
            item=target, restore_args=restore_args, partial_restore=True))
    except (KeyError, ValueError) as e:
        raise ValueError(f"checkpoint {step_dir} has no usable sub-tree {'/'.join(keys)} "
                         f"matching the model: {e}") from e
    finally:
        ckptr.close()
    for k in keys:
        out = out[k]
    log.info("loaded %s from %s", "/".join(keys), step_dir)
    return out
