"""`ArchSpec`: everything the rest of the codebase needs to know about one architecture.

An architecture is one module under `hrm/model/` exporting a `RecurrentLM` subclass and an `ARCH =
ArchSpec(...)` entry, listed once in `hrm.model.registry.ARCHS`. Trainer, optimiser, FLOPs, evaluation
and converters ask the entry, never the architecture's name:

- the model class and its static application schedule (what runs, with or without gradient);
- which parameters receive gradient at a given bp_steps (derived from the schedule: the reference
  optimiser skips parameters whose gradient is structurally absent, docs/recurrence.md §2.4);
- its bp schedule over training (HRM warms up, docs/recurrence.md §2.1; the baselines have a fixed horizon);
- its config validation, KV-cache layout, and reference / transformers checkpoint names (docs/checkpoints.md).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional

from hrm.config import ConfigError, ModelConfig
from hrm.model.recurrence import Application, cache_slots, gradient_reach

# Reference config keys every architecture maps the same way (docs/model.md §1): reference key -> ModelConfig field.
COMMON_REFERENCE_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_heads": "num_heads", "expansion": "expansion",
    "n_layers": "n_layers", "rope_theta": "rope_theta", "norm_eps": "norm_eps", "max_seq_len": "max_seq_len",
    "attn_type": "attn_type",
}
# Reference keys with one representable value (anything else is a different model), and keys that do
# not change the forward pass (model class name, head wrapper, initialisation scheme).
FIXED_REFERENCE_VALUES = {"norm_type": "pre", "pos_emb_type": "rope", "H_override": {}}
IGNORED_REFERENCE_KEYS = ("name", "head", "init_type", "loss")


def no_checks(cfg: ModelConfig) -> None:
    """Validation of an architecture without keys of its own."""


def fixed_horizon(cfg: ModelConfig, step: int, total_steps: int) -> Optional[int]:
    """bp schedule of an architecture whose gradient horizon is part of its config: always None."""
    return None


def require(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError naming `model.<key>` unless `ok`."""
    if not ok:
        raise ConfigError(f"config key 'model.{key}': {message}")


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """One registry entry (see module docstring).

    name: value of `model.arch`.
    model: the `hrm.model.engine.RecurrentLM` subclass, built as model(cfg, rngs).
    summary: one line for listings and error messages.
    reference_module: the reference's model module (`models/baselines/<module>.py`), matched against the
        `name` of a reference config (`baselines.<module>@Class`) to recognise its checkpoints.
    reference_stacks: our Stack attribute -> reference state-dict prefix of that stack's layers.
    reference_keys: reference config key -> ModelConfig field, for this architecture's own keys.
    reference_defaults: ModelConfig values to use when a reference config omits a key (the reference
        class defaults, e.g. half_layers False for the baselines).
    honours_half_layers: whether `model.half_layers` halves n_layers per stack (ignored otherwise).
    validate: architecture-specific config checks (raise ConfigError via `require`).
    bp_steps_at: (cfg, 1-based step, total steps) -> static bp_steps of that training step (None = the
        architecture's fixed horizon).
    bp_variants: cfg -> every bp_steps value training can use, most expensive last (compiled variants).
    hf_stacks: our Stack attribute -> transformers (`hrm_text`) prefix, or None without an HF format.
    shape_inferable: a reference checkpoint's tensors alone define the model (layer counts from the names,
        recurrence from the released defaults), so `from-reference` may import it without its config.
    """

    name: str
    model: type
    summary: str
    reference_module: str
    reference_stacks: Mapping[str, str]
    reference_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    reference_defaults: Mapping[str, object] = dataclasses.field(default_factory=dict)
    honours_half_layers: bool = False
    validate: Callable[[ModelConfig], None] = no_checks
    bp_steps_at: Callable[[ModelConfig, int, int], Optional[int]] = fixed_horizon
    bp_variants: Callable[[ModelConfig], tuple] = lambda cfg: (None,)
    hf_stacks: Optional[Mapping[str, str]] = None
    shape_inferable: bool = False

    # ------------------------------------------------------------------ derived from the model class
    def layers_per_stack(self, cfg: ModelConfig) -> int:
        """Layers in each Stack: n_layers, halved when the architecture honours half_layers (docs/model.md §1)."""
        return cfg.n_layers // 2 if (self.honours_half_layers and cfg.half_layers) else cfg.n_layers

    def applications(self, cfg: ModelConfig, bp_steps: Optional[int]) -> tuple[Application, ...]:
        """The static schedule of stack applications at `bp_steps` (docs/model.md §2, docs/recurrence.md §2.2, §3)."""
        return self.model.applications(cfg, bp_steps)

    @property
    def stacks(self) -> tuple[str, ...]:
        return self.model.STACKS

    @property
    def uses_zl_init(self) -> bool:
        return self.model.uses_zl_init()

    def grad_params(self, cfg: ModelConfig, bp_steps: Optional[int]) -> frozenset[str]:
        """Top-level parameter modules that receive gradient at `bp_steps` (the head always does)."""
        from_x = [s for s, src in self.model.STATES if src == "x"]
        stacks, embed = gradient_reach(self.applications(cfg, bp_steps), self.model.OUTPUT, from_x)
        return frozenset(stacks | {"head"} | ({"embed"} if embed else set()))

    def cache_layout(self, cfg: ModelConfig) -> tuple[int, int, int]:
        """(cycles, slots per cycle, layers) of the KV cache's leading axes (docs/checkpoints.md §9)."""
        return cache_slots(self.applications(cfg, None)) + (self.layers_per_stack(cfg),)
