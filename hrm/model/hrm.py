"""HRM-Text: two transformer stacks (H, L) applied in a fixed recurrence (docs/model.md §2, docs/recurrence.md §2).

    z_H = sqrt(d) * E[tokens]; z_L = zL_init (broadcast)
    repeat H_cycles: (repeat L_cycles: z_L = L(z_L + z_H)); z_H = H(z_H + z_L)
    logits = z_H @ W_head

Truncated backprop: `bp_steps` (static) picks which applications get gradient (docs/recurrence.md §2.2): the last
H_bp = min(H_cycles, bp-1) H-steps and the last bp - H_bp L-steps; `bp_steps=None` = full gradient.
Over training bp_steps warms up from bp_min_steps to bp_max_steps (docs/recurrence.md §2.1). KV-cache slot of L step
l of cycle h is cache[h, l], of the H step cache[h, L_cycles] (docs/checkpoints.md §9).
"""

from __future__ import annotations

from typing import Optional

from hrm.config import ModelConfig
from hrm.model.embed_head import Buffer, LMHead, TokenEmbedding, param_count, select_positions  # noqa: F401
from hrm.model.engine import RecurrentLM
from hrm.model.recurrence import Application, hl_applications, schedule
from hrm.model.spec import ArchSpec, require


class HRM(RecurrentLM):
    """The hierarchical recurrent model: independent H and L stacks, z_H starts at x, z_L at zL_init."""

    STACKS = ("H", "L")
    STATES = (("z_H", "x"), ("z_L", "zL_init"))
    OUTPUT = "z_H"

    @classmethod
    def applications(cls, cfg: ModelConfig, bp_steps: Optional[int]) -> tuple[Application, ...]:
        return hl_applications(schedule(cfg.H_cycles, cfg.L_cycles, bp_steps), L_stack="L", H_stack="H")


def validate(cfg: ModelConfig) -> None:
    require(cfg.H_cycles >= 1 and cfg.L_cycles >= 1, "H_cycles", "H_cycles and L_cycles must be >= 1")
    require(not cfg.half_layers or cfg.n_layers % 2 == 0, "n_layers",
            f"must be even with half_layers, got {cfg.n_layers}")
    require(cfg.bp_min_steps >= 2, "bp_min_steps", "HRM needs >= 2 (one H and one L step with gradient)")
    n = cfg.H_cycles * (cfg.L_cycles + 1)
    require(cfg.bp_max_steps <= n, "bp_max_steps",
            f"at most H_cycles*(L_cycles+1) = {n} stack applications exist, got {cfg.bp_max_steps}")


def bp_steps_at(cfg: ModelConfig, step: int, total_steps: int) -> int:
    """bp warmup from bp_min_steps to bp_max_steps over bp_warmup_ratio of training (docs/recurrence.md §2.1)."""
    from hrm.train.schedules import bp_steps_at as warmup  # host-side schedule; imported lazily (train -> model)

    return warmup(step, total_steps, cfg)


ARCH = ArchSpec(
    name="hrm", model=HRM,
    summary="HRM-Text: H and L stacks, H_cycles x (L_cycles L-steps + 1 H-step), bp warmup "
            "(docs/model.md §2, docs/recurrence.md §2)",
    reference_module="hrm_nocarry_bp_warmup",
    reference_stacks={"H": "model.H_level.core.layers.", "L": "model.L_level.core.layers."},
    reference_keys={"half_layers": "half_layers", "H_cycles": "H_cycles", "L_cycles": "L_cycles",
                    "bp_min_steps": "bp_min_steps", "bp_max_steps": "bp_max_steps",
                    "bp_warmup_ratio": "bp_warmup_ratio"},
    reference_defaults={"half_layers": True},
    honours_half_layers=True,
    validate=validate,
    bp_steps_at=bp_steps_at,
    bp_variants=lambda cfg: tuple(range(cfg.bp_min_steps, cfg.bp_max_steps + 1)),
    hf_stacks={"H": "model.H_module.layers.", "L": "model.L_module.layers."},
    shape_inferable=True,  # the released recurrence (H_cycles 2, L_cycles 3) is the default
)
