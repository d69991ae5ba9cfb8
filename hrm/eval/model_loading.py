"""Load a model for evaluation: checkpoint -> (Generator, tokenizer, size label) (docs/eval_protocol.md §1).

Evaluation defaults follow the reference: EMA weights (`use_ema`, default True; `--no_ema` turns it
off), bf16 weights and compute (`dtype`), bf16 KV cache, data parallel over every local device.
`checkpoint` is a run dir (latest step of `<run>/checkpoints/`), a checkpoints dir, a step dir, or
`random:<config.yaml>` for a freshly initialised model (tests, smoke runs).

The tokenizer is found in order: `args.tokenizer`; `tokenizer.json`/`*.model` in the step dir, its
checkpoints dir or run dir (converters copy it there); the config's `data.tokenizer`; the prepared
data directory recorded in the checkpoint meta (`data_dir`) or `data.path`; for a config without
`data.path`, the built-in default dataset directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp

from hrm.config import Config, MeshConfig, ModelConfig, load_config
from hrm.convert.ckpt_io import config_from_meta, model_from_flat, read_checkpoint, read_meta
from hrm.data.default_dataset import DEFAULT_ROOT
from hrm.data.tokenizer import load_tokenizer, resolve_tokenizer_path
from hrm.eval.generate import Generator
from hrm.mesh import make_mesh
from hrm.model import build_model
from hrm.train.checkpoint import resolve_step_dir

SIZE_FILES = {"B": "b.yaml", "L": "l.yaml", "XL": "xl.yaml", "XXL": "xxl.yaml"}
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def size_label(cfg: ModelConfig, config_dir: Path = CONFIG_DIR) -> Optional[str]:
    """"B" / "L" / "XL" / "XXL" when (hidden_size, layers per stack) match configs/<size>.yaml, else None."""
    for label, name in SIZE_FILES.items():
        path = config_dir / name
        if not path.is_file():
            continue
        m = load_config(path).model
        if (m.hidden_size, m.layers_per_stack, m.arch) == (cfg.hidden_size, cfg.layers_per_stack, cfg.arch):
            return label
    return None


def _tokenizer_candidates(args: Any, cfg: Config, meta: dict, ckpt_dirs: list[Path]) -> list[Path]:
    cands: list[Path] = []
    if getattr(args, "tokenizer", None):
        cands.append(Path(args.tokenizer))
    cands += ckpt_dirs
    if cfg.data.tokenizer:
        cands.append(Path(cfg.data.tokenizer))
    if meta.get("data_dir"):
        cands.append(Path(meta["data_dir"]))
    if cfg.data.path:
        cands.append(Path(cfg.data.path))
    else:
        cands.append(DEFAULT_ROOT)  # the built-in default dataset
    return cands


def find_tokenizer(args: Any, cfg: Config, meta: dict, ckpt_dirs: list[Path]):
    """The first loadable tokenizer among the candidates; FileNotFoundError listing them otherwise."""
    tried = []
    for c in _tokenizer_candidates(args, cfg, meta, ckpt_dirs):
        try:
            return load_tokenizer(resolve_tokenizer_path(c))
        except FileNotFoundError:
            tried.append(str(c))
    raise FileNotFoundError("no tokenizer found (pass --tokenizer); looked in: " + ", ".join(tried))


def _dtype(name: str):
    if name not in ("bfloat16", "float32"):
        raise ValueError(f"dtype must be bfloat16 or float32, got {name!r}")
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def data_parallel_mesh():
    """A ("data", "fsdp", "tensor") mesh with every device on "data", or None on one device."""
    if jax.device_count() == 1:
        return None
    return make_mesh(MeshConfig(data=-1, fsdp=1, tensor=1))


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What eval.py reports and checks before loading weights: the step directory and step (None for a
    `random:` model) and the run config saved with the checkpoint (docs/eval_protocol.md §1 eval dtype, training
    data)."""

    step_dir: Optional[Path]
    step: Optional[int]
    config: Config


def checkpoint_info(checkpoint: str) -> CheckpointInfo:
    """Step dir, step and saved config of `checkpoint` (run / checkpoints / step dir, or `random:<config>`).

    Raises FileNotFoundError when no finalized checkpoint is there, ValueError when its meta holds no config.
    """
    if checkpoint.startswith("random:"):
        return CheckpointInfo(None, None, load_config(checkpoint[len("random:"):]))
    step_dir = resolve_step_dir(checkpoint)
    return CheckpointInfo(step_dir, int(step_dir.name), config_from_meta(read_meta(step_dir)))


def load_model(checkpoint: str, *, use_ema: bool = True, dtype: str = "bfloat16", seed: int = 0):
    """(model, Config, meta, checkpoint dirs) with weights cast to `dtype` and compute in `dtype`."""
    dt = _dtype(dtype)
    if checkpoint.startswith("random:"):
        cfg = load_config(checkpoint[len("random:"):])
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, compute_dtype=dtype, param_dtype=dtype))
        return build_model(cfg.model, seed=seed), cfg, {}, []
    step_dir = resolve_step_dir(checkpoint)
    cfg, params, buffers, meta = read_checkpoint(step_dir, use_ema=use_ema, param_dtype=dt)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, compute_dtype=dtype, param_dtype=dtype))
    model = model_from_flat(cfg.model, params, buffers, dtype=dt)
    return model, cfg, meta, [step_dir, step_dir.parent, step_dir.parent.parent]


def load_generator(checkpoint: str, args: Any) -> tuple[Generator, Any, Optional[str]]:
    """(generator, tokenizer, size label) for eval.py.

    Reads from `args` (all optional): use_ema / no_ema, dtype, batch_size, max_context (0 = the
    model's max_seq_len), tokenizer, seed (random init only).
    """
    use_ema = bool(getattr(args, "use_ema", True)) and not bool(getattr(args, "no_ema", False))
    dtype = getattr(args, "dtype", None) or "bfloat16"
    model, cfg, meta, dirs = load_model(checkpoint, use_ema=use_ema, dtype=dtype,
                                        seed=int(getattr(args, "seed", 0) or 0))
    tokenizer = find_tokenizer(args, cfg, meta, dirs)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but the model only {cfg.model.vocab_size}")
    max_context = int(getattr(args, "max_context", 0) or 0) or cfg.model.max_seq_len
    gen = Generator(model, eoa_id=tokenizer.special.eoa, max_context=max_context,
                    batch_size=int(getattr(args, "batch_size", 0) or 8), cache_dtype=_dtype(dtype),
                    mesh=data_parallel_mesh(), valid_vocab=tokenizer.vocab_size)
    return gen, tokenizer, size_label(cfg.model)
