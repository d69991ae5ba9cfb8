"""Our Orbax checkpoint as seen by converters and evaluation: write a converted model, read weights back.

Layout written by the converters (what `train.py` `train.init_from` and `eval.py` read), one step
directory `<out>/checkpoints/0/` managed by `hrm.train.checkpoint.Checkpointer` (docs/conventions.md §11):

    state/ = {"params":    pure dict of every nnx.Param, float32 (e.g. {"H": {"gqkv": ...}, "embed": ...})
              "buffers":   {"zL_init": [d]} in the source dtype (bf16 from the reference, fp32 possible
                           from transformers; docs/model.md §2: import the stored value, never redraw it)
              "opt_state": {"ema": copy of "params"}   (converted weights are already the EMA/release ones)
              "step":      int32 0}
    meta/  = {"config": dataclasses.asdict(Config), "source": {...provenance...}}

Parameter trees are handled here as flat dicts {attribute path tuple: np.ndarray}, the `ours` form of
`hrm.convert.layouts`. Reading uses `load_params` (partial restore of params or opt_state/ema, and of
buffers), so it also reads checkpoints written by the trainer, whose opt_state holds more keys.
"""

from __future__ import annotations

import dataclasses
import typing
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hrm.config import CheckpointConfig, Config, ModelConfig, to_dict
from hrm.convert.layouts import ConversionError
from hrm.model import build_model
from hrm.sharding import with_shardings
from hrm.train.checkpoint import CHECKPOINT_SUBDIR, Checkpointer, load_params, resolve_step_dir

Flat = dict[tuple[str, ...], np.ndarray]


def flatten(tree: Mapping) -> Flat:
    """Nested dict -> {path tuple: leaf}."""
    out: Flat = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update({(str(k),) + p: x for p, x in flatten(v).items()})
        else:
            out[(str(k),)] = v
    return out


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
    """{path tuple: leaf} -> nested dict."""
    out: dict = {}
    for path, v in flat.items():
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return out


def model_templates(cfg: ModelConfig) -> tuple[Any, Any, Any]:
    """(graphdef, abstract Param state, abstract non-Param state) of the model, without allocating."""
    abstract = nnx.eval_shape(lambda: build_model(cfg))
    return nnx.split(abstract, nnx.Param, ...)


def split_ours(cfg: ModelConfig, ours: Mapping[tuple[str, ...], np.ndarray]) -> tuple[Flat, Flat]:
    """Split converter output into (params, buffers), checking names and shapes against the model."""
    _, p_abs, b_abs = model_templates(cfg)
    params, buffers = {}, {}
    for want, dst in ((flatten(nnx.to_pure_dict(p_abs)), params), (flatten(nnx.to_pure_dict(b_abs)), buffers)):
        for path, sds in want.items():
            if path not in ours:
                raise ConversionError(f"converted checkpoint lacks model variable '{'.'.join(path)}'")
            arr = np.asarray(ours[path])
            if tuple(arr.shape) != tuple(sds.shape):
                raise ConversionError(f"'{'.'.join(path)}': shape {arr.shape} != model shape {tuple(sds.shape)}")
            dst[path] = arr
    extra = set(ours) - set(params) - set(buffers)
    if extra:
        raise ConversionError(f"converted tensors the model does not have: {sorted('.'.join(p) for p in extra)}")
    return params, buffers


def write_checkpoint(out: str | Path, cfg: Config, ours: Mapping[tuple[str, ...], np.ndarray],
                     source: Optional[dict] = None) -> Path:
    """Write `ours` as step 0 of `<out>/checkpoints/` in the training-state layout above; returns the step dir."""
    params, buffers = split_ours(cfg.model, ours)
    params = {p: jnp.asarray(v, jnp.float32) for p, v in params.items()}
    buffers = {p: jnp.asarray(v) for p, v in buffers.items()}
    state = {"params": unflatten(params), "buffers": unflatten(buffers),
             "opt_state": {"ema": unflatten({p: v.copy() for p, v in params.items()})},
             "step": jnp.zeros((), jnp.int32)}
    directory = Path(out) / CHECKPOINT_SUBDIR
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} already holds checkpoints; choose an empty output directory")
    ck = Checkpointer(directory, CheckpointConfig(every_steps=0, keep_last=0, async_save=False))
    try:
        ck.save(0, state, meta={"config": to_dict(cfg), "source": dict(source or {})}, force=True)
    finally:
        ck.close()
    return directory / "0"


def _build_section(cls, data: Mapping, where: str):
    """A config dataclass from a dict, ignoring (with a warning) keys this code version does not know."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            v = data[f.name]
            kwargs[f.name] = _build_section(hints[f.name], v or {}, f"{where}.{f.name}") \
                if dataclasses.is_dataclass(hints[f.name]) else v
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        warnings.warn(f"checkpoint config {where}: ignoring unknown keys {sorted(unknown)}")
    return cls(**kwargs)


def config_from_meta(meta: Mapping) -> Config:
    """The run Config recorded in a checkpoint's meta (`dataclasses.asdict(Config)`)."""
    if "config" not in meta:
        raise ValueError("checkpoint meta has no 'config' (not written by hrm's trainer or converters)")
    return _build_section(Config, meta["config"], "config")


def read_meta(step_dir: Path) -> dict:
    """JSON meta of a step directory."""
    ck = Checkpointer(step_dir.parent, CheckpointConfig(every_steps=0, keep_last=0, async_save=False))
    try:
        return ck.restore_meta(int(step_dir.name))
    finally:
        ck.close()


def read_checkpoint(path: str | Path, use_ema: bool = True, param_dtype: Any = jnp.float32,
                    sharding: Optional[jax.sharding.Sharding] = None) -> tuple[Config, Flat, Flat, dict]:
    """(config, params, buffers, meta) of a run dir / checkpoints dir / step dir (latest step).

    `use_ema` reads opt_state/ema (falls back to raw params with a warning when the checkpoint has
    none). Buffers are read as float32 (exact for the bf16 zL_init). Arrays come back as jax arrays
    placed with `sharding` (default: first device).
    """
    step_dir = resolve_step_dir(path)
    meta = read_meta(step_dir)
    cfg = config_from_meta(meta)
    _, p_abs, b_abs = model_templates(cfg.model)
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    p_target = with_shardings(nnx.to_pure_dict(p_abs), sharding, param_dtype)
    b_target = with_shardings(nnx.to_pure_dict(b_abs), sharding, jnp.float32)
    try:
        params = load_params(step_dir, p_target, use_ema=use_ema)
    except ValueError:
        if not use_ema:
            raise
        warnings.warn(f"{step_dir}: no EMA weights (opt_state/ema); using the raw parameters")
        params = load_params(step_dir, p_target, use_ema=False)
    buffers = load_params(step_dir, b_target, use_ema=False, params_key=("buffers",))
    return cfg, flatten(params), flatten(buffers), meta


def model_from_flat(cfg: ModelConfig, params: Mapping, buffers: Mapping, dtype: Any = None) -> nnx.Module:
    """Build the model of `cfg` holding the given values (params cast to `dtype` if given, buffers as is)."""
    graphdef, p_abs, b_abs = model_templates(cfg)
    cast = (lambda x: jnp.asarray(x, dtype)) if dtype is not None else jnp.asarray
    nnx.replace_by_pure_dict(p_abs, unflatten({k: cast(v) for k, v in params.items()}))  # in place
    nnx.replace_by_pure_dict(b_abs, unflatten({k: jnp.asarray(v) for k, v in buffers.items()}))
    return nnx.merge(graphdef, p_abs, b_abs)
