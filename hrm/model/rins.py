"""RINS baseline (ref models/baselines/rins_nocarry.py, docs/recurrence.md §3).

    z_L = zL_init (broadcast); x = sqrt(d) * E[tokens]
    repeat L_cycles times: z_L = L(z_L + x)          # the last `L_bp_cycles` with gradient
    logits = H(z_L) @ W_head                         # H once, no injection, with gradient

Two stacks of n_layers/2 layers each with `half_layers` (n_layers each without). The gradient horizon
is fixed by the config (`bp_steps` is ignored). KV cache: L step i uses cache[0, i], the H step
cache[0, L_cycles]. Reference names: `model.L_level.layers.*` and `model.H_level.layers.*` (its blocks
are Transformers directly, no `.core`), `model.zL_init`.
"""

from __future__ import annotations

from typing import Optional

from hrm.config import ModelConfig
from hrm.model.engine import RecurrentLM
from hrm.model.recurrence import Application
from hrm.model.spec import ArchSpec, require


class RINS(RecurrentLM):
    """L stack iterated on z_L + x, then the H stack applied once to z_L."""

    STACKS = ("L", "H")
    STATES = (("z_L", "zL_init"), ("x", "x"))
    OUTPUT = "z_L"

    @classmethod
    def applications(cls, cfg: ModelConfig, bp_steps: Optional[int]) -> tuple[Application, ...]:
        n = cfg.L_cycles
        L = [Application("L", "z_L", "x", i >= n - cfg.L_bp_cycles, 0, i) for i in range(n)]
        return tuple(L) + (Application("H", "z_L", None, True, 0, n),)


def validate(cfg: ModelConfig) -> None:
    require(not cfg.half_layers or cfg.n_layers % 2 == 0, "n_layers",
            f"must be even with half_layers, got {cfg.n_layers}")
    require(cfg.L_cycles >= 1, "L_cycles", f"must be >= 1, got {cfg.L_cycles}")
    require(0 <= cfg.L_bp_cycles <= cfg.L_cycles, "L_bp_cycles",
            f"must be in 0..L_cycles={cfg.L_cycles}, got {cfg.L_bp_cycles}")


ARCH = ArchSpec(
    name="rins", model=RINS,
    summary="RINS: z_L <- L(z_L + x) L_cycles times (last L_bp_cycles with gradient), then H(z_L) once",
    reference_module="rins_nocarry",
    reference_stacks={"L": "model.L_level.layers.", "H": "model.H_level.layers."},
    reference_keys={"half_layers": "half_layers", "L_cycles": "L_cycles", "L_bp_cycles": "L_bp_cycles"},
    reference_defaults={"half_layers": False},
    honours_half_layers=True,
    validate=validate,
)
