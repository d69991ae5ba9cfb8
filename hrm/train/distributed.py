"""Multi-process start-up: decide whether to call `jax.distributed.initialize` and call it.

docs/conventions.md §6: in a multi-host run `jax.distributed.initialize()` must run before any JAX computation
(before the first `jax.devices()` or array creation). `train.distributed` selects the mode:

- `off`: never initialise (single process).
- `on`: always initialise; coordinator address / process count / process id come from the config
  when set, else from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, else JAX's own
  cluster auto-detection (SLURM, Cloud TPU, Open MPI, ...).
- `auto`: initialise only when the environment indicates a multi-process launch
  (`detect_multiprocess`, a pure function of the environment so it can be unit-tested).
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, Optional

from hrm.config import TrainConfig

log = logging.getLogger(__name__)


def _int(env: Mapping[str, str], key: str) -> Optional[int]:
    try:
        return int(env[key])
    except (KeyError, ValueError):
        return None


def detect_multiprocess(env: Mapping[str, str]) -> tuple[bool, str]:
    """(is this a multi-process launch?, reason) from environment variables alone.

    Signals: JAX_NUM_PROCESSES > 1 (or JAX_COORDINATOR_ADDRESS and JAX_PROCESS_ID set);
    SLURM with SLURM_NTASKS (or SLURM_STEP_NUM_TASKS) > 1; Cloud TPU with more than one host in
    TPU_WORKER_HOSTNAMES; multi-slice Megascale (MEGASCALE_COORDINATOR_ADDRESS or
    MEGASCALE_NUM_SLICES > 1); Open MPI with OMPI_COMM_WORLD_SIZE > 1.
    """
    n = _int(env, "JAX_NUM_PROCESSES")
    if n is not None and n > 1:
        return True, f"JAX_NUM_PROCESSES={n}"
    if n is None and env.get("JAX_COORDINATOR_ADDRESS") and "JAX_PROCESS_ID" in env:
        return True, f"JAX_COORDINATOR_ADDRESS={env['JAX_COORDINATOR_ADDRESS']} and JAX_PROCESS_ID set"
    for key in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
        t = _int(env, key)
        if t is not None:
            if t > 1:
                return True, f"SLURM launch with {key}={t}"
            break
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1:
        return True, f"Cloud TPU pod with {len(hosts)} hosts in TPU_WORKER_HOSTNAMES"
    slices = _int(env, "MEGASCALE_NUM_SLICES")
    if env.get("MEGASCALE_COORDINATOR_ADDRESS") or (slices is not None and slices > 1):
        return True, "multi-slice TPU (MEGASCALE_* set)"
    ompi = _int(env, "OMPI_COMM_WORLD_SIZE")
    if ompi is not None and ompi > 1:
        return True, f"Open MPI launch with OMPI_COMM_WORLD_SIZE={ompi}"
    return False, "no multi-process launch detected"


def initialize_args(train_cfg: TrainConfig, env: Mapping[str, str]) -> dict:
    """Keyword arguments for `jax.distributed.initialize` (None = let JAX auto-detect)."""
    num = train_cfg.num_processes or _int(env, "JAX_NUM_PROCESSES")
    pid = train_cfg.process_id if train_cfg.process_id >= 0 else _int(env, "JAX_PROCESS_ID")
    return {
        "coordinator_address": train_cfg.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None,
        "num_processes": num or None,
        "process_id": pid,
        "initialization_timeout": int(train_cfg.distributed_timeout_s),
    }


def should_initialize(train_cfg: TrainConfig, env: Mapping[str, str]) -> tuple[bool, str]:
    """Decision for `train.distributed` ∈ {off, on, auto} (pure; see module docstring)."""
    mode = train_cfg.distributed
    if mode == "off":
        return False, "train.distributed=off"
    if mode == "on":
        return True, "train.distributed=on"
    if mode != "auto":
        raise ValueError(f"config key 'train.distributed': auto, on or off, got {mode!r}")
    if train_cfg.coordinator_address and train_cfg.num_processes > 1:
        return True, "train.coordinator_address and train.num_processes > 1 set"
    return detect_multiprocess(env)


def _backend_initialized() -> bool:
    """Whether JAX already created its backend (private API, jax 0.10.2; False if it moved)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return False


def maybe_initialize(train_cfg: TrainConfig, env: Optional[Mapping[str, str]] = None) -> bool:
    """Call `jax.distributed.initialize` if the config/environment asks for it; True if it did.

    Must be called before any JAX computation. Raises RuntimeError with a hint when the JAX backend
    is already initialised or the coordinator cannot be reached in `train.distributed_timeout_s`.
    """
    import jax

    env = os.environ if env is None else env
    do_init, reason = should_initialize(train_cfg, env)
    if not do_init:
        log.info("single-process run (%s)", reason)
        return False
    if jax.distributed.is_initialized():
        log.info("jax.distributed already initialised")
        return True
    if _backend_initialized():
        raise RuntimeError(
            "hrm.train.distributed.maybe_initialize must run before any JAX computation, but the JAX "
            f"backend is already initialised (multi-process launch detected: {reason})")
    kwargs = initialize_args(train_cfg, env)
    log.info("jax.distributed.initialize(%s) because %s", kwargs, reason)
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:
        msg = str(e)
        hint = ""
        if "DEADLINE_EXCEEDED" in msg or "timed out" in msg.lower() or "timeout" in msg.lower():
            hint = (f" Timed out after train.distributed_timeout_s={train_cfg.distributed_timeout_s}s: check that "
                    "all processes were launched, that the coordinator address/port is reachable from every "
                    "host, and that num_processes matches the launched processes.")
        raise RuntimeError(f"jax.distributed.initialize({kwargs}) failed ({reason}): {msg}.{hint}") from e
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
    return True
