"""Model zoo: HRM-Text and the plain Transformer baseline, built from one ModelConfig."""

from __future__ import annotations

from flax import nnx

from hrm.config import ModelConfig
from hrm.model.hrm import HRM, Buffer
from hrm.model.transformer import Transformer


def build_model(cfg: ModelConfig, seed: int | None = None):
    """Instantiate the model named by `cfg.arch` with parameters drawn from `seed` (default cfg.init_seed).

    Variables carry logical sharding names; they are created without eager sharding so this works
    with or without a mesh (the trainer places them with explicit shardings afterwards).
    """
    rngs = nnx.Rngs(params=cfg.init_seed if seed is None else seed)
    cls = {"hrm": HRM, "transformer": Transformer}[cfg.arch]
    with nnx.use_eager_sharding(False):
        return cls(cfg, rngs)


__all__ = ["build_model", "HRM", "Transformer", "Buffer"]
