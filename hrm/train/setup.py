"""One training setup, shared by the loop, AOT compilation, evaluation loading and tests.

    s = setup(cfg)                          # local devices
    s = setup(cfg, topology_devices)        # AOT for a TPU slice (hrm/train/aot.py)
    state = s.fresh_state()                 # or restore into s.abstract_state
    step = compile_train_step(cfg, s.spec, s.tx, s.total_steps, bp, s.state_shardings, s.batch_sharding)
    step.lower(s.abstract_state, s.abstract_batch()).compile()

`setup` does only what is a pure function of the config and the devices: mesh, batch layout
(global rows, checked against the mesh and the process count), model spec, optimiser, state and
batch shardings and the abstract (sharded) state. Nothing is allocated on devices and no data is
read; the loop adds data, state (fresh, resumed or warm-started) and hooks on top.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hrm.config import Config, ConfigError
from hrm.data.packing import FIELDS as BATCH_FIELDS  # the fields of a packed batch (docs/prefixlm_packing.md §2–4)
from hrm.mesh import make_mesh
from hrm.sharding import batch_sharding
from hrm.train.state import ModelSpec, abstract_state, init_state, make_optimizer, model_spec, state_sharding

# Used for the LR schedule when neither `total_steps` nor train.total_steps is given (e.g. AOT
# compilation before the data is known): shapes and memory do not depend on it.
PLACEHOLDER_TOTAL_STEPS = 100_000


def global_batch_rows(cfg: Config) -> int:
    """Rows of `data.seq_len` tokens per global batch, from train.global_batch_rows or _tokens."""
    t = cfg.train
    if t.global_batch_rows:
        return t.global_batch_rows
    if t.global_batch_tokens:
        if t.global_batch_tokens % cfg.data.seq_len:
            raise ConfigError(f"train.global_batch_tokens={t.global_batch_tokens} is not a multiple of "
                              f"data.seq_len={cfg.data.seq_len}")
        return t.global_batch_tokens // cfg.data.seq_len
    raise ConfigError("set train.global_batch_tokens or train.global_batch_rows")


def check_batch_layout(cfg: Config, rows: int, mesh_shape: dict, process_count: int) -> None:
    """Rows (and each microbatch) must split evenly over the data x fsdp batch shards, and every host
    must own whole batch shards, else JAX fails deep inside with an IndivisibleError."""
    shards = mesh_shape.get("data", 1) * mesh_shape.get("fsdp", 1)
    per_micro = rows // cfg.train.microbatches
    if rows % cfg.train.microbatches or per_micro % shards:
        raise ConfigError(f"global batch of {rows} rows (train.microbatches={cfg.train.microbatches}) does not split "
                          f"over the {shards} data x fsdp batch shards of mesh {mesh_shape}; change "
                          f"train.global_batch_rows/_tokens or mesh.data/fsdp/tensor")
    if shards % process_count:
        raise ConfigError(f"mesh data x fsdp = {shards} is not a multiple of the {process_count} processes: each host "
                          f"must own whole batch shards (put the tensor axis within a host)")


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """Everything about a training run that follows from (config, devices) alone.

    Fields:
      cfg:             the resolved Config.
      mesh:            the ("data", "fsdp", "tensor") device mesh (Auto axes).
      global_rows:     rows of `seq_len` tokens per global batch (checked against mesh and processes).
      seq_len:         tokens per row (`data.seq_len`).
      total_steps:     optimiser steps the LR schedule (and bp schedule) is built for.
      spec:            ModelSpec (graphdef + abstract params/buffers) to rebuild the model in jit.
      tx:              the optimiser (AdamAtan2 + EMA with the LR schedule of `total_steps`).
      state_shardings: NamedSharding tree of the training state (hrm/train/state.py layout).
      batch_sharding:  NamedSharding of every [B, T] batch field.
      abstract_state:  ShapeDtypeStructs of the state carrying `state_shardings` (restore/AOT target).
    """

    cfg: Config
    mesh: Mesh
    global_rows: int
    seq_len: int
    total_steps: int
    spec: ModelSpec
    tx: Any
    state_shardings: dict
    batch_sharding: NamedSharding
    abstract_state: dict

    @property
    def batch_spec(self) -> PartitionSpec:
        """The batch PartitionSpec (for `hrm.data.pipeline.to_global`)."""
        return PartitionSpec(*self.batch_sharding.spec)

    @property
    def tokens_per_step(self) -> int:
        """Token slots (padding included) per global batch."""
        return self.global_rows * self.seq_len

    def fresh_state(self) -> dict:
        """A freshly initialised state, materialised directly into `state_shardings`."""
        return init_state(self.cfg, self.spec, self.tx, self.state_shardings)

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        """ShapeDtypeStructs (with the batch sharding) of one global batch, for AOT `.lower`."""
        return {k: jax.ShapeDtypeStruct((self.global_rows, self.seq_len), jnp.int32, sharding=self.batch_sharding)
                for k in BATCH_FIELDS}


def setup(cfg: Config, devices: Optional[Sequence[Any]] = None, *, total_steps: Optional[int] = None,
          process_count: Optional[int] = None) -> TrainSetup:
    """The shared training setup for `cfg` on `devices` (default: all of `jax.devices()`).

    `total_steps` sets the LR schedule's length (default: train.total_steps, else
    PLACEHOLDER_TOTAL_STEPS: the loop passes the value resolved from the data). `process_count`
    (default `jax.process_count()`) is used to check that every host owns whole batch shards.
    Raises ConfigError naming the keys for an impossible mesh or batch layout.
    """
    try:
        mesh = make_mesh(cfg.mesh, devices)
    except ValueError as e:
        raise ConfigError(f"mesh.data/fsdp/tensor: {e}") from None
    rows = global_batch_rows(cfg)
    check_batch_layout(cfg, rows, dict(mesh.shape), jax.process_count() if process_count is None else process_count)
    total = int(total_steps or cfg.train.total_steps or PLACEHOLDER_TOTAL_STEPS)
    spec = model_spec(cfg)
    tx = make_optimizer(cfg, total)
    shardings = state_sharding(spec, mesh, cfg.mesh.rules)
    return TrainSetup(cfg=cfg, mesh=mesh, global_rows=rows, seq_len=cfg.data.seq_len, total_steps=total, spec=spec,
                      tx=tx, state_shardings=shardings, batch_sharding=batch_sharding(mesh, cfg.mesh.rules),
                      abstract_state=abstract_state(cfg, tx, shardings))
