"""The reference's architecture config (all_config.yaml `arch`, golden `meta_json`) -> our ModelConfig.

Which reference keys exist and what they mean per architecture lives in the registry entries
(`ArchSpec.reference_keys`, `reference_defaults`, `reference_module`); this module applies them,
checks the keys that have one representable value (pre-norm, RoPE, no H override) and recognises the
architecture of a reference config or checkpoint (docs/model.md §1, docs/recurrence.md §3, docs/checkpoints.md §1).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Any, Mapping, Optional

from hrm.config import ModelConfig
from hrm.convert.layouts import ConversionError
from hrm.model.registry import ARCHS, get_arch
from hrm.model.spec import COMMON_REFERENCE_KEYS, FIXED_REFERENCE_VALUES, IGNORED_REFERENCE_KEYS

_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(ModelConfig)}


def _coerce(field: str, value: Any) -> Any:
    kind = {"int": int, "float": float, "bool": bool, "str": str}[str(_FIELD_TYPES[field])]
    return kind(value)


def model_config_from_reference(c: Mapping[str, Any], arch: str, strict: bool = False,
                                **overrides: Any) -> ModelConfig:
    """ModelConfig of architecture `arch` from a reference config dict.

    Keys of no known meaning are an error with `strict` (parity: nothing may be silently ignored) and a
    warning otherwise; keys whose value we cannot represent are always an error naming the key.
    `overrides` are ModelConfig fields set afterwards (e.g. compute_dtype)."""
    spec = get_arch(arch)
    mapping = {**COMMON_REFERENCE_KEYS, **spec.reference_keys}
    for key, want in FIXED_REFERENCE_VALUES.items():
        if key in c and c[key] != want:
            raise ConversionError(f"reference config '{key}' = {c[key]!r} cannot be represented (need {want!r})")
    unknown = sorted(k for k in c if k not in mapping and k not in FIXED_REFERENCE_VALUES
                     and k not in IGNORED_REFERENCE_KEYS)
    if unknown:
        msg = f"reference config keys {unknown} have no meaning for model.arch={arch!r}"
        if strict:
            raise ConversionError(msg)
        warnings.warn(msg + "; ignored")
    for key in ("vocab_size", "hidden_size", "num_heads", "n_layers"):
        if c.get(key) is None:
            raise ConversionError(f"reference config lacks '{key}'")
    kwargs = dict(spec.reference_defaults)
    kwargs.update({field: _coerce(field, c[key]) for key, field in mapping.items() if c.get(key) is not None})
    kwargs.update(overrides)
    return ModelConfig(arch=arch, **kwargs)


def arch_from_reference_name(name: str) -> Optional[str]:
    """`baselines.ut_nocarry@UniversalTransformer` / `models.baselines.ut_nocarry.UniversalTransformer` -> 'ut'."""
    parts = set(re.split(r"[.@/]", str(name)))
    hits = [a.name for a in ARCHS.values() if a.reference_module in parts]
    return hits[0] if len(hits) == 1 else None


def arch_from_tensors(tensors: Mapping[str, Any]) -> str:
    """The architecture whose reference stack prefixes are exactly those present in `tensors`.

    UT and TRM share their names (one `model.L_level.core` stack): that case needs the run's config."""
    present = {p for a in ARCHS.values() for p in a.reference_stacks.values() if any(k.startswith(p) for k in tensors)}
    hits = [a.name for a in ARCHS.values() if set(a.reference_stacks.values()) == present]
    if len(hits) != 1:
        raise ConversionError(f"cannot tell the architecture from the tensor names (stack prefixes {sorted(present)} "
                              f"fit {hits or 'none'}); pass --config or keep all_config.yaml next to the checkpoint")
    return hits[0]
