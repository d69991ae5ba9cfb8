"""The training state as a plain pytree, its shardings, and jitted initialisation.

State layout (what checkpoints hold; `hrm.train.checkpoint.load_params` and the converters rely on it):

    {"params":    pure dict of every nnx.Param        (fp32 master weights)
     "buffers":   pure dict of non-trainable state     (zL_init, bf16; saved, never optimised)
     "opt_state": {"count", "step", "mu", "nu", "ema"} (AdamAtan2 + EMA, docs/optimizer.md §1–2)
     "step":      int32 scalar, optimiser steps taken
     "rng":       uint32[2] key data (reserved for stochastic features; saved for exact resume)}

Everything is built abstractly first (`nnx.eval_shape`), so shardings come from the parameters'
logical axis names before any memory is allocated; `init_state` is then a jit with out_shardings
(each device materialises only its shard).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hrm.config import Config
from hrm.model import build_model
from hrm.sharding import state_shardings, with_shardings
from hrm.train.optim import AdamAtan2State, adam_atan2
from hrm.train.schedules import lr_at


@dataclasses.dataclass
class ModelSpec:
    """Static pieces needed to rebuild the model inside jitted functions."""

    graphdef: Any
    params_template: Any  # abstract nnx.State of Params
    buffers_template: Any  # abstract nnx.State of everything else

    def merge(self, params: dict, buffers: dict) -> nnx.Module:
        return nnx.merge(self.graphdef, fill_state(self.params_template, params),
                         fill_state(self.buffers_template, buffers))


def fill_state(template: nnx.State, pure: dict) -> nnx.State:
    """A new State shaped like `template` holding the arrays of the pure dict `pure` (no mutation)."""
    def lookup(path):
        node = pure
        for k in path:
            node = node[k] if k in node else node[str(k)]
        return node

    return nnx.from_flat_state([(path, var.replace(lookup(path))) for path, var in nnx.to_flat_state(template)])


def model_spec(cfg: Config) -> ModelSpec:
    abstract = nnx.eval_shape(lambda: build_model(cfg.model))
    graphdef, params, buffers = nnx.split(abstract, nnx.Param, ...)
    return ModelSpec(graphdef, params, buffers)


def make_optimizer(cfg: Config, total_steps: int):
    o = cfg.optim
    schedule: Callable = lambda step: lr_at(step, o, total_steps)  # noqa: E731
    return adam_atan2(schedule, o.beta1, o.beta2, o.weight_decay, o.ema_decay)


def opt_state_to_dict(s: AdamAtan2State) -> dict:
    return {"count": s.count, "step": s.step, "mu": s.mu, "nu": s.nu, "ema": s.ema}


def opt_state_from_dict(d: dict) -> AdamAtan2State:
    return AdamAtan2State(d["count"], d["step"], d["mu"], d["nu"], d["ema"])


def state_sharding(spec: ModelSpec, mesh: Mesh, rules: dict) -> dict:
    """NamedSharding tree matching the state layout (optimiser moments/EMA follow their params)."""
    p_sh = nnx.to_pure_dict(state_shardings(spec.params_template, mesh, rules))
    b_sh = nnx.to_pure_dict(state_shardings(spec.buffers_template, mesh, rules))
    rep = NamedSharding(mesh, PartitionSpec())
    return {
        "params": p_sh,
        "buffers": b_sh,
        "opt_state": {"count": rep, "step": jax.tree.map(lambda _: rep, p_sh), "mu": p_sh, "nu": p_sh, "ema": p_sh},
        "step": rep,
        "rng": rep,
    }


def _fresh_state(cfg: Config, tx) -> dict:
    """A freshly initialised state (traced inside jit / eval_shape)."""
    model = build_model(cfg.model)
    _, params, buffers = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    return {
        "params": params,
        "buffers": nnx.to_pure_dict(buffers),
        "opt_state": opt_state_to_dict(tx.init(params)),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(jax.random.key(cfg.train.seed)),
    }


def init_state(cfg: Config, spec: ModelSpec, tx, shardings: dict) -> dict:
    """Materialise a fresh state directly into its shardings (each device allocates only its shard)."""
    return jax.jit(lambda: _fresh_state(cfg, tx), out_shardings=shardings)()


def abstract_state(cfg: Config, tx, shardings: dict) -> dict:
    """ShapeDtypeStructs (with shardings) of the state, for restore targets and AOT compilation."""
    return with_shardings(jax.eval_shape(lambda: _fresh_state(cfg, tx)), shardings)
