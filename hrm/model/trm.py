"""TRM baseline (ref models/baselines/trm_nocarry.py, docs/recurrence.md §3): HRM's loop with ONE shared stack.

    z_H = sqrt(d) * E[tokens]; z_L = zL_init (broadcast)
    repeat H_cycles: (repeat L_cycles: z_L = S(z_L + z_H)); z_H = S(z_H + z_L)
    logits = z_H @ W_head

The last H_bp_steps H-updates and the last L_bp_steps L-updates (global order) have gradient, fixed
by the config: no warmup, `bp_steps` is ignored. The stack has n_layers/2 layers with `half_layers`
(trm_match_recurrence), n_layers without (trm). KV cache as HRM: cache[h, l], the H update of cycle h at
cache[h, L_cycles]. Reference names: the stack is `model.L_level.core`, the buffer `model.zL_init`.
"""

from __future__ import annotations

from typing import Optional

from hrm.config import ModelConfig
from hrm.model.engine import RecurrentLM
from hrm.model.recurrence import Application, hl_applications, hl_schedule
from hrm.model.spec import ArchSpec, require


class TRM(RecurrentLM):
    """One stack used for both the L and the H update."""

    STACKS = ("stack",)
    STATES = (("z_H", "x"), ("z_L", "zL_init"))
    OUTPUT = "z_H"

    @classmethod
    def applications(cls, cfg: ModelConfig, bp_steps: Optional[int]) -> tuple[Application, ...]:
        steps = hl_schedule(cfg.H_cycles, cfg.L_cycles, cfg.H_bp_steps, cfg.L_bp_steps)
        return hl_applications(steps, L_stack="stack", H_stack="stack")


def validate(cfg: ModelConfig) -> None:
    require(not cfg.half_layers or cfg.n_layers % 2 == 0, "n_layers",
            f"must be even with half_layers, got {cfg.n_layers}")
    require(cfg.H_cycles >= 1 and cfg.L_cycles >= 1, "H_cycles", "H_cycles and L_cycles must be >= 1")
    require(0 <= cfg.H_bp_steps <= cfg.H_cycles, "H_bp_steps",
            f"must be in 0..H_cycles={cfg.H_cycles}, got {cfg.H_bp_steps}")
    n_L = cfg.H_cycles * cfg.L_cycles
    require(0 <= cfg.L_bp_steps <= n_L, "L_bp_steps", f"must be in 0..H_cycles*L_cycles={n_L}, got {cfg.L_bp_steps}")
    require(cfg.H_bp_steps >= 1, "H_bp_steps", "the last H update feeds the head: need >= 1 to train the stack")


ARCH = ArchSpec(
    name="trm", model=TRM,
    summary="TRM: HRM's H/L loop with one shared stack, fixed H_bp_steps / L_bp_steps",
    reference_module="trm_nocarry",
    reference_stacks={"stack": "model.L_level.core.layers."},
    reference_keys={"half_layers": "half_layers", "H_cycles": "H_cycles", "L_cycles": "L_cycles",
                    "H_bp_steps": "H_bp_steps", "L_bp_steps": "L_bp_steps"},
    reference_defaults={"half_layers": False},
    honours_half_layers=True,
    validate=validate,
)
