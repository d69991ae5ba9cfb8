"""Typed, frozen run configuration loaded from YAML with `base:` inheritance and dotted overrides.

One dataclass per concern (model, mesh, data, optim, train, checkpoint, eval, logging), all frozen.
`load_config("configs/xl.yaml", ["optim.lr=1e-4"])` reads the file, follows its `base:` chain (paths
relative to the including file), merges dictionaries depth-first, applies `key=value` overrides
coerced to the field's declared type, and validates. Unknown keys, bad types and an override given
twice are errors that name the offending key (and file), never a stack trace from deep inside.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Optional

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and source."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture (docs/model.md). `n_layers` is the total; HRM splits it in half between H and L."""

    arch: str = "hrm"  # a key of hrm.model.registry.ARCHS: hrm, transformer, ut, rins, trm (docs/recurrence.md §3)
    vocab_size: int = 512
    hidden_size: int = 128
    num_heads: int = 2
    head_dim: int = 0  # 0 = hidden_size // num_heads
    expansion: float = 4.0
    intermediate_size: int = 0  # 0 = docs/model.md §1 formula round(expansion*d*2/3) rounded up to 256
    n_layers: int = 4
    half_layers: bool = True
    H_cycles: int = 2
    L_cycles: int = 3
    bp_min_steps: int = 2
    bp_max_steps: int = 5
    bp_warmup_ratio: float = 0.2
    cycles: int = 4  # ut: applications of its one stack; the last bp_cycles have gradient
    bp_cycles: int = 2
    L_bp_cycles: int = 4  # rins: the last L_bp_cycles of its L_cycles L-steps have gradient
    H_bp_steps: int = 2  # trm: fixed gradient horizon (last H_bp_steps H-, last L_bp_steps L-updates)
    L_bp_steps: int = 3
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    max_seq_len: int = 4096
    embedding_scale: float = 0.0  # 0 = sqrt(hidden_size)
    attn_type: str = "prefixlm"  # or "causal" (the ablation)
    attention_backend: str = "xla"  # a key of hrm.model.attention.BACKENDS: xla (dense reference), jax, splash (TPU)
    attention_block_q: int = 512  # query / key block sizes of block-sparse kernels (splash)
    attention_block_kv: int = 512
    compute_dtype: str = "bfloat16"
    param_dtype: str = "float32"
    remat: str = "none"  # a key of hrm.model.blocks.REMAT_POLICIES (none, full, save_qkv_proj, minimal, ...)
    loss_chunk: int = 0  # tokens per chunk of the LM head + cross-entropy (0 = whole rows at once)
    init_seed: int = 0

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def resolved_intermediate_size(self) -> int:
        if self.intermediate_size:
            return self.intermediate_size
        return find_multiple(round(self.expansion * self.hidden_size * 2 / 3), 256)

    @property
    def layers_per_stack(self) -> int:
        from hrm.model.registry import get_arch  # lazy: the registry imports this module

        return get_arch(self.arch).layers_per_stack(self)

    @property
    def resolved_embedding_scale(self) -> float:
        return self.embedding_scale or math.sqrt(self.hidden_size)


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of k that is >= n (ref models/layers.py `find_multiple`)."""
    return n if n % k == 0 else n + k - (n % k)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh shape over the physical axes (data, fsdp, tensor); one entry may be -1."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    topology: str = ""  # TPU topology this config is sized for (default for --compile_only), e.g. v5p:2x2x2
    # Logical axis -> mesh axis (or list of mesh axes, or null). The one table naming mesh axes.
    rules: dict = dataclasses.field(default_factory=lambda: {
        "embed": "fsdp", "mlp": "tensor", "heads": "tensor", "kv_heads": "tensor", "vocab": "tensor",
        "head_dim": None, "qkv_group": None, "layers": None, "gate_up": None,
        "act_batch": ["data", "fsdp"], "act_len": None, "act_embed": None,
        "act_heads": "tensor", "act_mlp": "tensor", "act_vocab": "tensor",
    })


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training data (docs/prefixlm_packing.md, docs/data_format.md). `path` empty = the built-in default dataset."""

    path: str = ""
    tokenizer: str = ""  # empty = the tokenizer recorded in the prepared data's metadata
    seq_len: int = 256
    # Over-long examples: "truncate" (instruction from the left, keeping BOQ/conditions/EOQ and the whole
    # response), "drop", or "reference" (docs/data_format.md §5: cap the response at seq_len+1-Li, drop if < 1).
    overlong: str = "truncate"
    # True: loss on response tokens only, P(xa|xq) (docs/prefixlm_packing.md §2). False: also on the instruction (labels
    # i[1:]), the P(x) ablation of paper Tab. 3; needs model.attn_type=causal (PrefixLM would let a token see its own
    # label).
    target_only: bool = True
    shuffle_seed: int = 0
    worker_count: int = 0
    prefetch: int = 2
    lookahead: int = 0  # packing queue size (0 = max(64, 4 x global rows))


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamAtan2 + EMA + LR schedule (docs/optimizer.md)."""

    lr: float = 2.2e-4
    lr_warmup_steps: int = 2000
    lr_min_ratio: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    ema_decay: float = 0.9999
    freeze_absent_grads: bool = True  # docs/recurrence.md §2.4: skip params with structurally absent gradient


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings. Global batch is `global_batch_tokens` (as the paper) or `global_batch_rows`."""

    run_dir: str = "runs/default"
    seed: int = 0
    global_batch_tokens: int = 0
    global_batch_rows: int = 0
    microbatches: int = 1
    epochs: float = 1.0
    total_steps: int = 0  # 0 = derived from epochs x tokens / global batch tokens
    log_every: int = 10
    eval_every: int = 0  # > 0: held-out loss every N steps on <data dir>/heldout.jsonl (eval.use_ema picks weights)
    # "stop": a non-finite loss/gradient norm ends the run; "skip": that step's update is dropped, but the step
    # still consumes its batch and counts for the LR and bp schedules.
    nan_policy: str = "stop"
    allow_config_change: bool = False  # resume although schedule/data keys changed (they are listed as a warning)
    profile_steps: str = ""  # "A:B": jax.profiler trace of steps A..B into <run_dir>/profile
    init_from: str = ""
    init_from_ema: bool = True
    distributed: str = "auto"  # auto | on | off
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1
    distributed_timeout_s: int = 300
    compile_cache_dir: str = ""
    # Fault injection for crash-recovery tests: "SIGKILL@10" / "SIGTERM@5" sends that signal to this
    # process right after step N was dispatched and its checkpoint save was issued. Empty = off.
    debug_signal: str = ""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpointing: keep the last `keep_last` plus every `keep_every`-th step."""

    every_steps: int = 500
    keep_last: int = 3
    keep_every: int = 0
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation defaults (docs/eval_protocol.md)."""

    tasks: str = "default"
    data_dir: str = ""
    limit: int = 0
    use_ema: bool = True
    dtype: str = "bfloat16"
    batch_size: int = 8
    max_context: int = 0  # 0 = per-task default
    variant: str = "faithful"
    temperature: float = 0.0
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """Where metrics go: JSONL always, TensorBoard optional, W&B off by default."""

    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "hrm-text"
    progress_bar: bool = True


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole run configuration."""

    name: str = "unnamed"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)


# ----------------------------------------------------------------------------- loading


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """Read one YAML file and its `base:` ancestors, merged (child wins)."""
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: circular 'base:' chain {[str(p) for p in chain]}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = raw.pop("base", None)
    if base is None:
        return raw
    merged = _read_yaml((path.parent / base), chain + (path,))
    return _deep_merge(merged, raw)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "rules":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, key: str, from_string: bool) -> Any:
    """Coerce `value` to `typ`, raising ConfigError naming `key` on failure."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (from_string and str(value).lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], key, from_string)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if from_string and str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if from_string and str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"config key '{key}': expected a boolean, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from None
    if typ is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return "" if value is None else str(value)
    if typ is dict or origin is dict:
        if from_string and isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return value
    return value


def _build(cls, data: dict, prefix: str, source: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: config section '{prefix.rstrip('.')}' must be a mapping")
    types_ = _field_types(cls)
    kwargs = {}
    for k, v in data.items():
        key = prefix + k
        if k not in types_:
            known = ", ".join(sorted(types_))
            raise ConfigError(f"{source}: unknown config key '{key}' (known: {known})")
        typ = types_[k]
        if dataclasses.is_dataclass(typ):
            kwargs[k] = _build(typ, v or {}, key + ".", source)
        else:
            kwargs[k] = _coerce(v, typ, key, from_string=False)
    if cls is MeshConfig and "rules" in kwargs:
        kwargs["rules"] = {**MeshConfig().rules, **kwargs["rules"]}
    return cls(**kwargs)


def _apply_override(tree: dict, dotted: str, raw: str) -> None:
    """Set tree[a][b]... = coerced value for an override 'a.b=raw' (validated against Config)."""
    parts = dotted.split(".")
    cls: Any = Config
    node = tree
    for i, part in enumerate(parts):
        types_ = _field_types(cls)
        if part not in types_:
            raise ConfigError(f"override '{dotted}={raw}': unknown config key '{'.'.join(parts[:i + 1])}'")
        typ = types_[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(typ):
                raise ConfigError(f"override '{dotted}': '{dotted}' is a section, set one of its keys")
            if parts[0] == "mesh" and part == "rules":
                node[part] = {**node.get(part, {}), **_coerce(raw, typ, dotted, True)}
            else:
                node[part] = _coerce(raw, typ, dotted, from_string=True)
            return
        if not dataclasses.is_dataclass(typ):
            raise ConfigError(f"override '{dotted}': '{'.'.join(parts[:i + 1])}' is not a section")
        node = node.setdefault(part, {})
        cls = typ


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> Config:
    """Load a Config from YAML (or defaults if `path` is None) and apply `key=value` overrides."""
    tree = _read_yaml(Path(path)) if path else {}
    source = str(path) if path else "<defaults>"
    seen: set[str] = set()
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        if key in seen:
            raise ConfigError(f"config key '{key}' overridden twice on the command line")
        seen.add(key)
        _apply_override(tree, key, raw)
    cfg = _build(Config, tree, "", source)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks with messages naming the key."""
    m = cfg.model
    from hrm.model.registry import validate_model  # the architecture's checks (lazy: it imports this module)

    validate_model(m)
    if m.attn_type not in ("prefixlm", "causal"):
        raise ConfigError(f"config key 'model.attn_type': must be 'prefixlm' or 'causal', got {m.attn_type!r}")
    # The option lists live with their implementations (registries); imported here, not at module top,
    # because those modules import this one.
    from hrm.data.packing import OVERLONG_POLICIES
    from hrm.eval.item import VARIANTS
    from hrm.model.attention import BACKENDS
    from hrm.model.blocks import REMAT_POLICIES

    if m.remat not in REMAT_POLICIES:
        raise ConfigError(f"config key 'model.remat': unknown policy {m.remat!r}; "
                          f"choose one of {sorted(REMAT_POLICIES)}")
    if not m.head_dim and m.hidden_size % m.num_heads:
        raise ConfigError("config key 'model.num_heads': must divide model.hidden_size (or set model.head_dim)")
    if m.resolved_head_dim % 2:
        raise ConfigError("config key 'model.head_dim': RoPE needs an even head dimension")
    if not 1 <= m.bp_min_steps <= m.bp_max_steps:
        raise ConfigError("config key 'model.bp_min_steps': need 1 <= bp_min_steps <= bp_max_steps")
    if m.attention_backend not in BACKENDS:
        raise ConfigError(f"config key 'model.attention_backend': one of {sorted(BACKENDS)}, "
                          f"got {m.attention_backend!r}")
    for k in ("attention_block_q", "attention_block_kv"):
        if getattr(m, k) < 8 or getattr(m, k) % 8:
            raise ConfigError(f"config key 'model.{k}': a positive multiple of 8, got {getattr(m, k)}")
    if m.loss_chunk < 0:
        raise ConfigError(f"config key 'model.loss_chunk': >= 0 (0 = no chunking), got {m.loss_chunk}")
    for k in ("compute_dtype", "param_dtype"):
        if getattr(m, k) not in ("float32", "bfloat16"):
            raise ConfigError(f"config key 'model.{k}': must be float32 or bfloat16")
    sizes = [cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ConfigError("config keys 'mesh.data/fsdp/tensor': positive sizes, at most one -1")
    if not cfg.data.target_only and m.attn_type != "causal":
        raise ConfigError("config key 'data.target_only': false (loss on instruction tokens) needs "
                          "model.attn_type=causal; under prefixlm an instruction token attends to its own label")
    if cfg.data.overlong not in OVERLONG_POLICIES:
        raise ConfigError(f"config key 'data.overlong': one of {OVERLONG_POLICIES}, got {cfg.data.overlong!r}")
    if cfg.train.nan_policy not in ("stop", "skip"):
        raise ConfigError(f"config key 'train.nan_policy': 'stop' or 'skip', got {cfg.train.nan_policy!r}")
    if cfg.train.distributed not in ("auto", "on", "off"):
        raise ConfigError("config key 'train.distributed': auto, on or off")
    if cfg.eval.variant not in VARIANTS:
        raise ConfigError(f"config key 'eval.variant': one of {VARIANTS}, got {cfg.eval.variant!r}")
    if cfg.train.debug_signal and not re.fullmatch(r"SIG[A-Z]+@\d+", cfg.train.debug_signal):
        raise ConfigError("config key 'train.debug_signal': expected e.g. 'SIGKILL@10', got "
                          f"{cfg.train.debug_signal!r}")
    if cfg.train.microbatches < 1:
        raise ConfigError("config key 'train.microbatches': must be >= 1")
    if cfg.train.eval_every < 0:
        raise ConfigError(f"config key 'train.eval_every': must be >= 0, got {cfg.train.eval_every}")
    if cfg.train.profile_steps:
        span = re.fullmatch(r"(\d+):(\d+)", cfg.train.profile_steps)
        if not span or not 1 <= int(span[1]) <= int(span[2]):
            raise ConfigError("config key 'train.profile_steps': expected 'A:B' with 1 <= A <= B (steps to trace), "
                              f"got {cfg.train.profile_steps!r}")


def to_dict(cfg: Config) -> dict:
    """Plain nested dict (for writing the resolved config into a run directory)."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def parse_cli_overrides(argv: list[str]) -> tuple[Optional[str], list[str], list[str]]:
    """Split argv into (--config path, key=value overrides, remaining flags)."""
    path, overrides, rest = None, [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a path")
            path = argv[i + 1]
            i += 2
            continue
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif "=" in a and not a.startswith("-"):
            overrides.append(a)
        else:
            rest.append(a)
        i += 1
    return path, overrides, rest
