"""Looped / Universal Transformer baseline (ref models/baselines/ut_nocarry.py, docs/recurrence.md §3).

    z = zL_init (broadcast); x = sqrt(d) * E[tokens]
    repeat `cycles` times: z = Stack(z + x)          # the last `bp_cycles` with gradient
    logits = z @ W_head

One stack of n_layers layers (`half_layers` does not apply), the token embedding re-injected at every
cycle. The gradient horizon is fixed by the config (`bp_steps` is ignored). KV cache: cycle i uses
cache[0, i]. Reference names: the stack is `model.L_level.core`, the buffer `model.zL_init`.
"""

from __future__ import annotations

from typing import Optional

from hrm.config import ModelConfig
from hrm.model.engine import RecurrentLM
from hrm.model.recurrence import Application
from hrm.model.spec import ArchSpec, require


class UniversalTransformer(RecurrentLM):
    """One shared stack applied `cycles` times to z + x."""

    STACKS = ("stack",)
    STATES = (("z", "zL_init"), ("x", "x"))
    OUTPUT = "z"

    @classmethod
    def applications(cls, cfg: ModelConfig, bp_steps: Optional[int]) -> tuple[Application, ...]:
        return tuple(Application("stack", "z", "x", i >= cfg.cycles - cfg.bp_cycles, 0, i) for i in range(cfg.cycles))


def validate(cfg: ModelConfig) -> None:
    require(cfg.cycles >= 1, "cycles", f"must be >= 1, got {cfg.cycles}")
    require(1 <= cfg.bp_cycles <= cfg.cycles, "bp_cycles", f"must be in 1..cycles={cfg.cycles}, got {cfg.bp_cycles}")


ARCH = ArchSpec(
    name="ut", model=UniversalTransformer,
    summary="Looped/Universal Transformer: z <- Stack(z + x) `cycles` times, last `bp_cycles` with gradient",
    reference_module="ut_nocarry",
    reference_stacks={"stack": "model.L_level.core.layers."},
    reference_keys={"cycles": "cycles", "bp_cycles": "bp_cycles"},
    reference_defaults={"half_layers": False},
    validate=validate,
)
