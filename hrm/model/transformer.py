"""The reference's plain Transformer baseline (docs/recurrence.md §3): one pre-norm stack with a final norm.

Same embedding (sqrt(d)-scaled), blocks, MagicNorm exit and untied head as HRM, no recurrence: one
application of an n_layers stack to x, always with gradient (`bp_steps` is accepted and ignored;
`half_layers` does not apply). KV cache: one slot, cache[0, 0].
"""

from __future__ import annotations

from typing import Optional

from hrm.config import ModelConfig
from hrm.model.engine import RecurrentLM
from hrm.model.recurrence import Application
from hrm.model.spec import ArchSpec, require


class Transformer(RecurrentLM):
    """Embedding -> Stack(n_layers) -> final RMS -> untied head."""

    STACKS = ("stack",)
    STATES = (("z", "x"),)
    OUTPUT = "z"

    @classmethod
    def applications(cls, cfg: ModelConfig, bp_steps: Optional[int]) -> tuple[Application, ...]:
        return (Application("stack", "z", None, True, 0, 0),)


def validate(cfg: ModelConfig) -> None:
    require(cfg.n_layers >= 1, "n_layers", f"must be >= 1, got {cfg.n_layers}")


ARCH = ArchSpec(
    name="transformer", model=Transformer,
    summary="plain Transformer: one n_layers stack applied once (docs/recurrence.md §3)",
    reference_module="transformer_wrapper",
    reference_stacks={"stack": "model.layers."},
    reference_defaults={"half_layers": False},
    validate=validate,
    shape_inferable=True,  # no recurrence: layer count and sizes are in the tensors
)
