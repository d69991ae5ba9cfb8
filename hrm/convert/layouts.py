"""Name and layout mapping between PyTorch checkpoints (reference native / transformers) and our params.

docs/checkpoints.md gives the names and the layout rules (§6). PyTorch linear weights are [out, in]; ours are
[in, out] with the fused projections kept as named axes:

    gqkv_proj [4*nh*hd, d] rows gate|q|k|v head-major  <->  gqkv    [d, 4, nh, hd]
    o_proj    [d, nh*hd]                               <->  o       [nh, hd, d]
    gate_up   [2*I, d] rows gate|up                    <->  gate_up [d, 2, I]
    down      [d, I]                                   <->  down    [I, d]
    lm_head   [V, d]                                   <->  head    [d, V]
    embedding [V, d] (unscaled)                        <->  embed   [V, d]

Layer i of a PyTorch stack becomes index i of our stacked (scanned) layer axis. Everything here is
NumPy so converters need neither torch nor an accelerator. The canonical intermediate form is a
dict {"embed": [V,d], "head": [V,d], "zL_init": [d] or absent,
      "stacks": {stack_name: [ {"gqkv": [4*nh*hd,d], "o":..., "gate_up":..., "down":...} per layer ]}}
in PyTorch layout with fused projections.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

# Names shared by every architecture (docs/checkpoints.md §1, §2). Stack prefixes come from the architecture's
# registry entry (`ArchSpec.reference_stacks`, `ArchSpec.hf_stacks`).
NATIVE_EMBED, NATIVE_HEAD, NATIVE_ZL = "embed_tokens.embedding_weight", "lm_head.weight", "model.zL_init"
HF_EMBED, HF_HEAD, HF_ZL = "model.embed_tokens.weight", "lm_head.weight", "model.z_L_init"
# Reference tensors that carry no model weight: rotary tables (if saved) and the legacy zH buffer (docs/checkpoints.md
# §2).
NATIVE_IGNORED = re.compile(r"(^|\.)(rotary_emb|rotary)\.|^model\.zH_init$|\.inv_freq$|\.(cos|sin)_cached$")
FUSED_SUFFIX = {"gqkv": "attn.gqkv_proj.weight", "o": "attn.o_proj.weight",
                "gate_up": "mlp.gate_up_proj.weight", "down": "mlp.down_proj.weight"}


class ConversionError(ValueError):
    """A checkpoint does not match what the converter can represent; the message names the key."""


def _layers_of(tensors: Mapping[str, np.ndarray], prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in tensors for m in [pat.match(k)] if m})


def _get(tensors: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in tensors:
        raise ConversionError(f"checkpoint is missing tensor '{key}'")
    return np.asarray(tensors[key])


def _layer_fused(tensors: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """One layer's fused weights, accepting fused (`attn.gqkv_proj`) or split (`self_attn.q_proj`) names."""
    if prefix + FUSED_SUFFIX["gqkv"] in tensors:
        return {name: _get(tensors, prefix + suf) for name, suf in FUSED_SUFFIX.items()}
    split = lambda s: _get(tensors, prefix + s)  # noqa: E731
    return {
        "gqkv": np.concatenate([split(f"self_attn.{p}_proj.weight") for p in ("gate", "q", "k", "v")], axis=0),
        "o": split("self_attn.o_proj.weight"),
        "gate_up": np.concatenate([split("mlp.gate_proj.weight"), split("mlp.up_proj.weight")], axis=0),
        "down": split("mlp.down_proj.weight"),
    }


def _stacks_from(tensors: Mapping[str, np.ndarray], prefixes: Mapping[str, str], what: str) -> dict:
    stacks = {}
    for s, prefix in prefixes.items():
        layers = _layers_of(tensors, prefix)
        if not layers:
            raise ConversionError(f"checkpoint has no tensors under '{prefix}*' ({what} stack '{s}')")
        if layers != list(range(len(layers))):
            raise ConversionError(f"layers under '{prefix}*' are {layers}, expected 0..{len(layers) - 1}")
        stacks[s] = [_layer_fused(tensors, f"{prefix}{i}.") for i in layers]
    return stacks


def canonical_from_native(tensors: Mapping[str, np.ndarray], arch: Any, buffers: bool = True) -> dict:
    """Reference native state dict (golden files, FSDP2 save) of architecture `arch` (an ArchSpec) -> canonical.

    `buffers=False` reads a gradient dict (no zL_init)."""
    out = {"embed": _get(tensors, NATIVE_EMBED), "head": _get(tensors, NATIVE_HEAD),
           "stacks": _stacks_from(tensors, arch.reference_stacks, arch.name)}
    if buffers and arch.uses_zl_init:
        out["zL_init"] = _get(tensors, NATIVE_ZL)
    return out


def unused_native(tensors: Mapping[str, np.ndarray], arch: Any, buffers: bool = True) -> list[str]:
    """Names of `tensors` that `canonical_from_native` does not read (a different architecture or a typo)."""
    used = set(canonical_to_native(canonical_from_native(tensors, arch, buffers), arch))
    return sorted(k for k in tensors if k not in used and not NATIVE_IGNORED.search(k))


def canonical_from_hf(tensors: Mapping[str, np.ndarray], hf_stacks: Mapping[str, str]) -> dict:
    """transformers-format tensors (fused hub layout or split names) -> canonical form; `hf_stacks` maps
    our stack names to HF prefixes (`ArchSpec.hf_stacks`)."""
    return {"embed": _get(tensors, HF_EMBED), "head": _get(tensors, HF_HEAD), "zL_init": _get(tensors, HF_ZL),
            "stacks": _stacks_from(tensors, hf_stacks, "transformers")}


def canonical_to_native(canon: dict, arch: Any) -> dict[str, np.ndarray]:
    """Canonical -> the reference's state-dict names for architecture `arch` (an ArchSpec)."""
    out = {NATIVE_EMBED: canon["embed"], NATIVE_HEAD: canon["head"]}
    if "zL_init" in canon:
        out[NATIVE_ZL] = canon["zL_init"]
    for s, layers in canon["stacks"].items():
        for i, lw in enumerate(layers):
            for name, suf in FUSED_SUFFIX.items():
                out[f"{arch.reference_stacks[s]}{i}.{suf}"] = lw[name]
    return out


def canonical_to_hf(canon: dict, hf_stacks: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Canonical -> transformers hub fused layout (what `save_pretrained` writes, docs/checkpoints.md §7)."""
    out = {HF_EMBED: canon["embed"], HF_HEAD: canon["head"], HF_ZL: canon["zL_init"]}
    for s, layers in canon["stacks"].items():
        for i, lw in enumerate(layers):
            for name, suf in FUSED_SUFFIX.items():
                out[f"{hf_stacks[s]}{i}.{suf}"] = lw[name]
    return out


def _check_shape(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(arr.shape) != tuple(shape):
        raise ConversionError(f"tensor '{name}' has shape {tuple(arr.shape)}, the config implies {tuple(shape)}")


def canonical_to_ours(canon: dict, d: int, nh: int, hd: int, inter: int) -> dict:
    """Canonical (PyTorch layout) -> our stacked parameter arrays {path: array} (all float32 except zL)."""
    V = canon["embed"].shape[0]
    _check_shape("embed", canon["embed"], (V, d))
    _check_shape("lm_head", canon["head"], (V, d))
    ours: dict = {("embed", "embedding"): canon["embed"].astype(np.float32),
                  ("head", "kernel"): canon["head"].T.astype(np.float32)}
    if "zL_init" in canon:
        _check_shape("zL_init", canon["zL_init"], (d,))
        ours[("zL_init",)] = canon["zL_init"]
    for s, layers in canon["stacks"].items():
        per = {k: [] for k in FUSED_SUFFIX}
        for i, lw in enumerate(layers):
            _check_shape(f"{s}.{i}.gqkv", lw["gqkv"], (4 * nh * hd, d))
            _check_shape(f"{s}.{i}.o", lw["o"], (d, nh * hd))
            _check_shape(f"{s}.{i}.gate_up", lw["gate_up"], (2 * inter, d))
            _check_shape(f"{s}.{i}.down", lw["down"], (d, inter))
            per["gqkv"].append(lw["gqkv"].T.reshape(d, 4, nh, hd))
            per["o"].append(lw["o"].T.reshape(nh, hd, d))
            per["gate_up"].append(lw["gate_up"].T.reshape(d, 2, inter))
            per["down"].append(lw["down"].T)
        for k, arrs in per.items():
            ours[(s, k)] = np.stack(arrs).astype(np.float32)
    return ours


def ours_to_canonical(ours: Mapping[tuple, np.ndarray]) -> dict:
    """Inverse of `canonical_to_ours` (exact: transposes and reshapes only)."""
    canon = {"embed": np.asarray(ours[("embed", "embedding")]), "head": np.asarray(ours[("head", "kernel")]).T,
             "stacks": {}}
    if ("zL_init",) in ours:
        canon["zL_init"] = np.asarray(ours[("zL_init",)])
    for s in sorted({p[0] for p in ours if len(p) == 2 and p[1] == "gqkv"}):
        g, o, gu, dn = (np.asarray(ours[(s, k)]) for k in ("gqkv", "o", "gate_up", "down"))
        n, d = g.shape[0], g.shape[1]
        canon["stacks"][s] = [{
            "gqkv": g[i].reshape(d, -1).T, "o": o[i].reshape(-1, d).T,
            "gate_up": gu[i].reshape(d, -1).T, "down": dn[i].T,
        } for i in range(n)]
    return canon
