"""transformers-format HRM-Text (`model_type: hrm_text`) import and export (docs/checkpoints.md §2, §3, §7).

Import (`from-hf`): config.json -> ModelConfig (every value read from the file, never derived:
`num_layers_per_stack`, `head_dim` default 128, `intermediate_size`, `embedding_scale`,
`rope_parameters.rope_theta`), tensors from `model.safetensors` or a sharded
`model-0000x-of-0000y.safetensors` set (fused hub names or split transformers names; bf16 stays exact
via ml_dtypes), mapped with `hrm.convert.layouts`, written as our checkpoint (`ckpt_io`), tokenizer
files copied. `load_hf_dir` is the one code path shared with `hrm.tools.parity_hf`.

Export (`to-hf`): our checkpoint (EMA by default) -> `model.safetensors` in the hub's fused layout +
`config.json` in the transformers 5.9+ schema (num_hidden_layers = KV slots, L_bp_cycles,
rope_parameters) + tokenizer files. Token ids come from the tokenizer when present, else from the
imported config (kept as `hf_config.json`), else the released model's 5/6/11 (docs/prefixlm_packing.md §1,
docs/checkpoints.md §3).
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional

import ml_dtypes
import numpy as np

from hrm.config import Config, DataConfig, ModelConfig
from hrm.convert.ckpt_io import read_checkpoint, write_checkpoint
from hrm.convert.layouts import (
    ConversionError,
    canonical_from_hf,
    canonical_to_hf,
    canonical_to_ours,
    ours_to_canonical,
)
from hrm.model.recurrence import schedule
from hrm.model.registry import ARCHS, get_arch

HF_ARCH = "hrm"  # the only architecture with a transformers (`hrm_text`) format

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "generation_config.json", "chat_template.jinja")
SAVED_HF_CONFIG = "hf_config.json"  # the imported config.json, kept for provenance and token ids
DEFAULT_TOKEN_IDS = {"pad_token_id": 5, "bos_token_id": 6, "eos_token_id": 11}  # hub config (docs/checkpoints.md §3)


def _need(hf: dict, key: str) -> Any:
    if key not in hf:
        raise ConversionError(f"config.json: missing required key '{key}'")
    return hf[key]


def _require(hf: dict, key: str, ok, expected: str) -> None:
    if key in hf and not ok(hf[key]):
        raise ConversionError(f"config.json: '{key}' = {hf[key]!r} cannot be represented (need {expected})")


def model_config_from_hf(hf: dict, compute_dtype: str = "bfloat16") -> ModelConfig:
    """ModelConfig from an hrm_text config.json (hub schema or the reference exporter's, docs/checkpoints.md §3)."""
    _require(hf, "model_type", lambda v: v == "hrm_text", "'hrm_text'")
    nh = int(_need(hf, "num_attention_heads"))
    _require(hf, "num_key_value_heads", lambda v: int(v) == nh, f"== num_attention_heads ({nh}); plain MHA")
    _require(hf, "prefix_lm", lambda v: v is True, "true")
    _require(hf, "tie_word_embeddings", lambda v: v is False, "false; the head is untied")
    _require(hf, "hidden_act", lambda v: v == "silu", "'silu'")
    _require(hf, "attention_bias", lambda v: not v, "false")
    _require(hf, "mlp_bias", lambda v: not v, "false")
    rope = hf.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ConversionError(f"config.json: 'rope_parameters.rope_type' = {rope['rope_type']!r} "
                              "cannot be represented (need 'default')")
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    H, L = int(hf.get("H_cycles", 2)), int(hf.get("L_cycles", 3))
    if "num_layers_per_stack" in hf:
        per_stack = int(hf["num_layers_per_stack"])
    else:  # the reference exporter writes the total n_layers (docs/checkpoints.md §2)
        total = int(_need(hf, "num_hidden_layers"))
        if total % 2:
            raise ConversionError(f"config.json: 'num_hidden_layers' = {total} (total layers) is odd")
        per_stack = total // 2
    d = int(_need(hf, "hidden_size"))
    scale = hf.get("embedding_scale")
    if scale is None:
        scale = 1.0 / float(hf["initializer_range"]) if hf.get("initializer_range") else math.sqrt(d)
    return ModelConfig(
        arch=HF_ARCH, vocab_size=int(_need(hf, "vocab_size")), hidden_size=d, num_heads=nh,
        head_dim=int(hf.get("head_dim", 128)), intermediate_size=int(_need(hf, "intermediate_size")),
        n_layers=2 * per_stack, half_layers=True, H_cycles=H, L_cycles=L,
        bp_max_steps=_bp_max_from_hf(hf, H, L), rope_theta=float(theta),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), max_seq_len=int(hf.get("max_position_embeddings", 4096)),
        embedding_scale=float(scale), compute_dtype=compute_dtype, param_dtype="float32")


def _L_bp_cycles(H: int, L: int, bp_steps: int) -> list[int]:
    """L steps with gradient per H cycle at `bp_steps` (the hub's `L_bp_cycles`, e.g. [0, 3])."""
    steps = schedule(H, L, bp_steps)
    return [sum(s.grad for s in steps if s.kind == "L" and s.cycle == c) for c in range(H)]


def _bp_max_from_hf(hf: dict, H: int, L: int) -> int:
    """bp_max_steps = H_cycles + sum(L_bp_cycles) when the pattern is the reference's (docs/recurrence.md §2.2)."""
    default = ModelConfig().bp_max_steps
    cyc = hf.get("L_bp_cycles")
    if not cyc:
        return default
    bp = H + int(sum(cyc))
    if _L_bp_cycles(H, L, bp) != [int(c) for c in cyc]:
        warnings.warn(f"config.json: L_bp_cycles={cyc} is not a reference bp schedule; "
                      f"keeping bp_max_steps={default} (training-only setting)")
        return default
    return bp


def hf_config_from_model(cfg: ModelConfig, token_ids: dict, dtype: str) -> dict:
    """config.json in the transformers 5.9+ hrm_text schema (keys as in golden/hf_tiny, docs/checkpoints.md §3, §7)."""
    _check_exportable(cfg)
    per, d = cfg.layers_per_stack, cfg.hidden_size
    return {
        "H_cycles": cfg.H_cycles, "L_bp_cycles": _L_bp_cycles(cfg.H_cycles, cfg.L_cycles, cfg.bp_max_steps),
        "L_cycles": cfg.L_cycles, "architectures": ["HrmTextForCausalLM"], "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": token_ids["bos_token_id"], "dtype": dtype,
        "embedding_scale": cfg.resolved_embedding_scale, "eos_token_id": token_ids["eos_token_id"],
        "head_dim": cfg.resolved_head_dim, "hidden_act": "silu", "hidden_size": d,
        "initializer_range": 1.0 / math.sqrt(d), "intermediate_size": cfg.resolved_intermediate_size,
        "max_position_embeddings": cfg.max_seq_len, "mlp_bias": False, "model_type": "hrm_text",
        "num_attention_heads": cfg.num_heads, "num_hidden_layers": per * cfg.H_cycles * (cfg.L_cycles + 1),
        "num_layers_per_stack": per, "pad_token_id": token_ids["pad_token_id"], "prefix_lm": True,
        "rms_norm_eps": cfg.norm_eps, "rope_parameters": {"rope_theta": cfg.rope_theta, "rope_type": "default"},
        "tie_word_embeddings": False, "use_cache": True, "vocab_size": cfg.vocab_size,
    }


def read_safetensors_dir(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a folder: `model.safetensors`, or the shards named by the index (bf16 via ml_dtypes)."""
    from safetensors.numpy import load_file

    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        files = sorted(p.name for p in path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(load_file(str(path / f)))
    return tensors


def load_hf_dir(path: str | Path, compute_dtype: str = "bfloat16") -> tuple[ModelConfig, dict]:
    """(ModelConfig, our flat params incl. zL_init) of a transformers-format folder; config from config.json only."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: no config.json")
    cfg = model_config_from_hf(json.loads(cfg_file.read_text()), compute_dtype)
    canon = canonical_from_hf(read_safetensors_dir(path), get_arch(HF_ARCH).hf_stacks)
    for s, layers in canon["stacks"].items():
        if len(layers) != cfg.layers_per_stack:
            raise ConversionError(f"{s} stack has {len(layers)} layers, config.json says num_layers_per_stack="
                                  f"{cfg.layers_per_stack}")
    if canon["embed"].shape[0] != cfg.vocab_size:
        raise ConversionError(f"embed_tokens has {canon['embed'].shape[0]} rows, config.json vocab_size="
                              f"{cfg.vocab_size}")
    ours = canonical_to_ours(canon, cfg.hidden_size, cfg.num_heads, cfg.resolved_head_dim,
                             cfg.resolved_intermediate_size)
    ours[("zL_init",)] = np.asarray(canon["zL_init"])  # source dtype kept (bf16 or fp32), docs/model.md §2
    return cfg, ours


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    """Copy the known tokenizer/generation files present in `src` to `dst`; returns their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file() and src.resolve() != dst.resolve():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def import_hf(src: str | Path, out: str | Path) -> Path:
    """`from-hf`: write our checkpoint for a transformers folder; returns the step directory."""
    src, out = Path(src), Path(out)
    mcfg, ours = load_hf_dir(src)
    out.mkdir(parents=True, exist_ok=True)
    copied = copy_tokenizer_files(src, out)
    shutil.copy2(src / "config.json", out / SAVED_HF_CONFIG)
    tok = next((out / n for n in ("tokenizer.json", "tokenizer.model") if n in copied), None)
    cfg = Config(name=f"hf:{src.name}", model=mcfg, data=DataConfig(tokenizer=str(tok.resolve()) if tok else ""))
    return write_checkpoint(out, cfg, ours, source={"format": "hf", "path": str(src.resolve()),
                                                     "tokenizer_files": copied})


def token_ids_for_export(ckpt: Path, tokenizer_dir: Optional[Path]) -> dict:
    """pad/bos/eos ids: tokenizer (bos = BOQ, eos = EOA, docs/checkpoints.md §2) > imported config > defaults."""
    ids = dict(DEFAULT_TOKEN_IDS)
    for d in (ckpt, *ckpt.parents[:3]):
        if (d / SAVED_HF_CONFIG).is_file():
            hf = json.loads((d / SAVED_HF_CONFIG).read_text())
            ids.update({k: hf[k] for k in ids if hf.get(k) is not None})
            break
    if tokenizer_dir is not None:
        try:
            from hrm.data.tokenizer import load_tokenizer

            tok = load_tokenizer(tokenizer_dir)
            hf_tok = getattr(tok, "_tok", None)  # HF tokenizers backend: the hub pad is <|endoftext|>
            pad = hf_tok.token_to_id("<|endoftext|>") if hasattr(hf_tok, "token_to_id") else None
            ids = {"pad_token_id": pad if pad is not None else tok.special.pad,
                   "bos_token_id": tok.special.boq, "eos_token_id": tok.special.eoa}
        except (ImportError, ValueError, FileNotFoundError) as e:
            warnings.warn(f"tokenizer in {tokenizer_dir} unreadable ({e}); token ids {ids}")
    return ids


def find_tokenizer_dir(ckpt: Path, cfg: Config, meta: dict) -> Optional[Path]:
    """Directory holding the checkpoint's tokenizer: next to the checkpoint, config `data.tokenizer`, data dir."""
    cands = [ckpt, *ckpt.parents[:3]]
    if cfg.data.tokenizer:
        cands.append(Path(cfg.data.tokenizer).parent if Path(cfg.data.tokenizer).is_file()
                     else Path(cfg.data.tokenizer))
    for key in ("data_dir",):
        if meta.get(key):
            cands.append(Path(meta[key]))
    if cfg.data.path:
        cands.append(Path(cfg.data.path))
    for d in cands:
        if (d / "tokenizer.json").is_file() or (d / "tokenizer.model").is_file():
            return d
    return None


def _check_exportable(cfg: ModelConfig) -> None:
    spec = get_arch(cfg.arch)
    if spec.hf_stacks is None:
        raise ConversionError(f"model.arch={cfg.arch!r} has no transformers (hrm_text) format; only "
                              f"{sorted(a.name for a in ARCHS.values() if a.hf_stacks)}"
                              " can be exported with to-hf")


def export_hf(ckpt: str | Path, out: str | Path, use_ema: bool = True, dtype: Optional[str] = None) -> Path:
    """`to-hf`: our checkpoint -> transformers folder (fused hub layout, docs/checkpoints.md §7).

    Tensors keep the checkpoint's parameter dtype (`model.param_dtype`, float32 for our training runs)
    unless `dtype` ('bfloat16' | 'float32') says otherwise (the reference exporter always casts to bf16)."""
    if dtype not in (None, "bfloat16", "float32"):
        raise ValueError(f"dtype must be bfloat16 or float32, got {dtype!r}")
    ckpt, out = Path(ckpt).absolute(), Path(out)
    cfg, params, buffers, meta = read_checkpoint(ckpt, use_ema=use_ema)
    _check_exportable(cfg.model)
    dtype = dtype or cfg.model.param_dtype
    ours = {k: np.asarray(v) for k, v in {**params, **buffers}.items()}
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32
    tensors = {k: np.ascontiguousarray(np.asarray(v).astype(np_dtype))
               for k, v in canonical_to_hf(ours_to_canonical(ours), get_arch(cfg.model.arch).hf_stacks).items()}
    tok_dir = find_tokenizer_dir(ckpt, cfg, meta)
    hf_config = hf_config_from_model(cfg.model, token_ids_for_export(ckpt, tok_dir), dtype)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.numpy import save_file

    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    if tok_dir is not None:
        copy_tokenizer_files(tok_dir, out)
    if not (out / "generation_config.json").is_file():
        gen = {k: hf_config[k] for k in DEFAULT_TOKEN_IDS}
        (out / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")
    return out
