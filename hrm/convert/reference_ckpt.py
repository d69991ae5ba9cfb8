"""Import the reference implementation's checkpoints (docs/checkpoints.md §1) into our checkpoint layout.

Accepted inputs:
- a torch.distributed.checkpoint (FSDP2) directory `fsdp2_epoch_{e}/` holding {"model": state dict,
  "optim": {"state": {name: {"step", "exp_avg", "exp_avg_sq", "param_ema"}}, "param_groups": ...}}
  (needs torch; read single-process via `dcp_to_torch_save`);
- a plain `.pt`/`.pth` file: that same dict or a bare model state dict (needs torch);
- an `.npz` of native names, plain or under `param/` (the golden files' layout), with optional
  EMA weights under `ema/` (no torch needed).

Names map through `canonical_from_native` (docs/checkpoints.md §1, §6). EMA weights (`param_ema`, the
weights the reference evaluates and releases, docs/optimizer.md §2) are imported when present; otherwise the
raw parameters are written as both params and EMA. The architecture comes from, in order: an
explicit `--config` YAML, the reference run's `all_config.yaml` + `train_metadata.yaml` found next
to (or above) the checkpoint (its `name` picks the architecture), the npz's `meta_json`, or tensor
names and shapes (HRM or Transformer only; head_dim 128, 2/3 cycles). Every architecture of the
registry imports (HRM, Transformer, UT, RINS, TRM; their stack names are `ArchSpec.reference_stacks`);
a tensor the chosen architecture has no place for is an error, never silently dropped.
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from hrm.config import Config, ModelConfig, load_config
from hrm.convert.ckpt_io import write_checkpoint
from hrm.convert.layouts import NATIVE_EMBED, ConversionError, canonical_from_native, canonical_to_ours, unused_native
from hrm.convert.reference_config import arch_from_reference_name, arch_from_tensors, model_config_from_reference
from hrm.model.registry import get_arch

WRAPPER_PREFIXES = ("_orig_mod.", "module.", "_fsdp_wrapped_module.")


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("reading a PyTorch (.pt/.pth or torch.distributed.checkpoint) file needs torch; "
                          "install torch or convert it to an .npz of native names first") from e
    return torch


def _clean(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in WRAPPER_PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p):], True
    return name.replace("._orig_mod.", ".")


def _to_numpy(t: Any) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t
    torch = _import_torch()
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()  # bf16 -> fp32 is exact
    return np.asarray(t)


def _split_torch_dict(obj: dict) -> tuple[dict, Optional[dict]]:
    """(model state dict, {name: ema tensor} or None) from a saved dict."""
    model = obj.get("model", obj) if isinstance(obj, dict) else obj
    model = {_clean(k): _to_numpy(v) for k, v in model.items() if hasattr(v, "shape")}
    optim = obj.get("optim") if isinstance(obj, dict) else None
    if not optim or "state" not in optim:
        return model, None
    state = optim["state"]
    names: dict[Any, str] = {}
    for g in optim.get("param_groups", []):  # integer-keyed optimiser states carry param_names (torch >= 2.5)
        for i, n in zip(g.get("params", []), g.get("param_names", [])):
            names[i] = n
    ema = {}
    for key, st in state.items():
        name = key if isinstance(key, str) else names.get(key)
        if name is not None and isinstance(st, dict) and "param_ema" in st:
            ema[_clean(name)] = _to_numpy(st["param_ema"])
    if not ema:
        warnings.warn("optimizer state has no per-parameter 'param_ema'; using the raw parameters")
        return model, None
    return model, ema


def load_reference_tensors(path: str | Path) -> tuple[dict, Optional[dict], Optional[dict]]:
    """(native tensors, native EMA tensors or None, config hint or None) of a reference checkpoint."""
    path = Path(path)
    if path.suffix == ".npz":
        z = np.load(path)
        files = z.files
        hint = json.loads(str(z["meta_json"])) if "meta_json" in files else None
        if any(k.startswith("param/") for k in files):
            model = {k[len("param/"):]: z[k] for k in files if k.startswith("param/")}
        else:
            model = {k: z[k] for k in files if "/" not in k and k != "meta_json"}
        ema = {k[len("ema/"):]: z[k] for k in files if k.startswith("ema/")} or None
        return model, ema, hint
    torch = _import_torch()
    if path.is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory() as tmp:
            dcp_to_torch_save(str(path), f"{tmp}/ckpt.pt")
            obj = torch.load(f"{tmp}/ckpt.pt", map_location="cpu", weights_only=False)
    elif path.suffix in (".pt", ".pth", ".bin"):
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    else:
        raise ConversionError(f"{path}: expected a DCP directory, a .pt/.pth file or an .npz")
    model, ema = _split_torch_dict(obj)
    return model, ema, None


def _find_up(path: Path, name: str) -> Optional[Path]:
    for d in [path if path.is_dir() else path.parent, *path.parents][:4]:
        if (d / name).is_file():
            return d / name
    return None


def _layer_count(tensors: dict, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in tensors for m in [pat.match(k)] if m})


def infer_model_config(path: Path, tensors: dict, hint: Optional[dict]) -> ModelConfig:
    """Architecture of a reference checkpoint (see module docstring for the order of sources)."""
    all_cfg = _find_up(path, "all_config.yaml")
    if all_cfg is not None:
        c = dict(yaml.safe_load(all_cfg.read_text()).get("arch", {}))
        meta = _find_up(path, "train_metadata.yaml")
        if meta is not None:
            m = yaml.safe_load(meta.read_text()) or {}
            c.setdefault("vocab_size", m.get("vocab_size"))
            c.setdefault("max_seq_len", m.get("max_seq_len", 4096))
        c.setdefault("vocab_size", tensors[NATIVE_EMBED].shape[0])
        arch = (arch_from_reference_name(c["name"]) if "name" in c else None) or arch_from_tensors(tensors)
        return model_config_from_reference(c, arch)
    if hint is not None and "config" in hint:
        arch = (hint.get("arch") or arch_from_reference_name(hint.get("reference_class", ""))
                or arch_from_tensors(tensors))
        return model_config_from_reference(hint["config"], arch)
    arch = arch_from_tensors(tensors)
    spec = get_arch(arch)
    if not spec.shape_inferable:
        raise ConversionError(f"a {arch} checkpoint needs its config (cycles and gradient horizon are not in the "
                              "tensors): keep all_config.yaml next to it or pass --config")
    V, d = tensors[NATIVE_EMBED].shape
    if d % 128:
        raise ConversionError(f"cannot infer the head count of hidden size {d} (not a multiple of the reference "
                              "head_dim 128); pass --config with the model section")
    warnings.warn("no all_config.yaml found: architecture inferred from tensor shapes (head_dim 128, "
                  "H_cycles 2, L_cycles 3); pass --config to be explicit")
    prefix = next(iter(spec.reference_stacks.values()))
    per = _layer_count(tensors, prefix)
    return ModelConfig(arch=arch, vocab_size=int(V), hidden_size=int(d), num_heads=int(d) // 128,
                       intermediate_size=int(tensors[f"{prefix}0.mlp.down_proj.weight"].shape[1]),
                       n_layers=2 * per if spec.honours_half_layers else per, half_layers=spec.honours_half_layers)


def import_reference(src: str | Path, out: str | Path, config: Optional[str] = None,
                     use_ema: bool = True) -> Path:
    """`from-reference`: write our checkpoint for a reference checkpoint; returns the step directory.

    The written params are the EMA weights when present and `use_ema` (docs/optimizer.md §2), else the raw ones.
    """
    src = Path(src)
    tensors, ema, hint = load_reference_tensors(src)
    if config:
        cfg = load_config(config)
    else:
        cfg = Config(name=f"reference:{src.name}", model=infer_model_config(src, tensors, hint))
    m = cfg.model
    chosen = tensors
    if use_ema and ema:
        missing = [k for k in tensors if k not in ema and k != "model.zL_init"]
        if missing:
            warnings.warn(f"EMA missing for {len(missing)} tensors (e.g. {missing[0]}); using raw values there")
        chosen = {k: v if k == "model.zL_init" else ema.get(k, v) for k, v in tensors.items()}  # buffer: no EMA
    spec = get_arch(m.arch)
    unused = unused_native(chosen, spec)
    if unused:
        raise ConversionError(f"{len(unused)} tensors have no counterpart in model.arch={m.arch!r} "
                              f"(e.g. {unused[:3]}); wrong architecture or config?")
    canon = canonical_from_native(chosen, spec)
    ours = canonical_to_ours(canon, m.hidden_size, m.num_heads, m.resolved_head_dim, m.resolved_intermediate_size)
    return write_checkpoint(out, cfg, ours, source={"format": "reference", "path": str(src.resolve()),
                                                     "ema": bool(use_ema and ema)})
