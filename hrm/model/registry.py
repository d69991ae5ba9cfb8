"""The architecture registry: `model.arch` -> its `ArchSpec` (hrm.model.spec), one entry per module.

    from hrm.model.registry import get_arch
    spec = get_arch(cfg.arch)
    spec.applications(cfg, bp)      # what runs, with or without gradient (FLOPs, cache, model)
    spec.grad_params(cfg, bp)       # {"embed", "H", "L", "head"} minus structurally frozen ones
    spec.bp_steps_at(cfg, step, total)

To add an architecture: write `hrm/model/<name>.py` with a `RecurrentLM` subclass and `ARCH =
ArchSpec(...)`, then list the module in `_MODULES` below (see README "Extending").
"""

from __future__ import annotations

from typing import Any, Optional

from flax import nnx

from hrm.config import ConfigError, ModelConfig
from hrm.model import hrm, rins, transformer, trm, ut
from hrm.model.spec import ArchSpec

_MODULES = (hrm, transformer, ut, rins, trm)
ARCHS: dict[str, ArchSpec] = {m.ARCH.name: m.ARCH for m in _MODULES}


def get_arch(name: str) -> ArchSpec:
    """The registry entry of `model.arch`; ConfigError listing the choices for an unknown name."""
    if name not in ARCHS:
        raise ConfigError(f"config key 'model.arch': unknown architecture {name!r}; choose one of "
                          f"{', '.join(sorted(ARCHS))}")
    return ARCHS[name]


def validate_model(cfg: ModelConfig) -> None:
    """Architecture-specific config checks (called by `hrm.config.validate`)."""
    get_arch(cfg.arch).validate(cfg)


def build_model(cfg: ModelConfig, seed: Optional[int] = None) -> nnx.Module:
    """Instantiate the model named by `cfg.arch` with parameters drawn from `seed` (default cfg.init_seed).

    Variables carry logical sharding names; they are created without eager sharding so this works
    with or without a mesh (the trainer places them with explicit shardings afterwards).
    """
    cls = get_arch(cfg.arch).model
    rngs = nnx.Rngs(params=cfg.init_seed if seed is None else seed)
    with nnx.use_eager_sharding(False):
        return cls(cfg, rngs)


def bp_steps_at(cfg: ModelConfig, step: int, total_steps: int) -> Optional[int]:
    """Static bp_steps of 1-based training `step` (HRM's warmup; None for fixed-horizon architectures)."""
    return get_arch(cfg.arch).bp_steps_at(cfg, step, total_steps)


def max_bp_steps(cfg: ModelConfig) -> Optional[int]:
    """The most expensive bp_steps training uses (what a memory/FLOPs report should compile)."""
    return get_arch(cfg.arch).bp_variants(cfg)[-1]


def grad_params(cfg: ModelConfig, bp_steps: Optional[int]) -> frozenset[str]:
    """Top-level parameter modules with a gradient at `bp_steps` (see `ArchSpec.grad_params`)."""
    return get_arch(cfg.arch).grad_params(cfg, bp_steps)


def describe() -> list[dict[str, Any]]:
    """[{name, summary}] of every registered architecture (for listings)."""
    return [{"name": a.name, "summary": a.summary} for a in ARCHS.values()]
