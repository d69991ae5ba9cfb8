"""The static schedule of HRM stack applications and which of them receive gradient (SPEC §1.2, §3.2).

Execution order for H_cycles=2, L_cycles=3: L0 L1 L2 H0 L3 L4 L5 H1. With `bp_steps`, H gets
priority: H_bp = min(H_cycles, bp-1), L_bp = bp - H_bp; only the last H_bp H-steps and the last
L_bp L-steps (global order) run with gradient. They need not be contiguous (bp=3: H0, L5, H1).
"""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """One stack application: which stack, its cycle, its index within the cycle, gradient or not."""

    kind: str  # "L" or "H"
    cycle: int
    index: int  # 0..L_cycles-1 for L steps, L_cycles for the H step (= its KV-cache slot in the cycle)
    grad: bool


def bp_split(H_cycles: int, bp_steps: int) -> tuple[int, int]:
    """(H_bp, L_bp) for a gradient horizon of `bp_steps` stack applications (SPEC §3.2)."""
    if bp_steps < 2:
        raise ValueError(f"bp_steps must be >= 2 (one H and one L step), got {bp_steps}")
    H_bp = min(H_cycles, bp_steps - 1)
    return H_bp, bp_steps - H_bp


def schedule(H_cycles: int, L_cycles: int, bp_steps: Optional[int]) -> tuple[StepSpec, ...]:
    """All H_cycles*(L_cycles+1) steps in execution order; bp_steps=None means every step has grad."""
    if bp_steps is None:
        H_bp, L_bp = H_cycles, H_cycles * L_cycles
    else:
        H_bp, L_bp = bp_split(H_cycles, bp_steps)
    n_L = H_cycles * L_cycles
    steps = []
    for i in range(H_cycles):
        for l in range(L_cycles):
            k = i * L_cycles + l
            steps.append(StepSpec("L", i, l, k >= n_L - L_bp))
        steps.append(StepSpec("H", i, L_cycles, i >= H_cycles - H_bp))
    return tuple(steps)


def embedding_gets_grad(H_cycles: int, L_cycles: int, bp_steps: Optional[int]) -> bool:
    """The embedding reaches the loss only through first-cycle steps, whose input is z_H^0 = x.

    If none of them has gradient (bp=2 with the default cycles) the embedding's gradient is
    structurally absent and the reference optimiser skips it entirely (SPEC §3.4).
    """
    return any(s.grad for s in schedule(H_cycles, L_cycles, bp_steps) if s.cycle == 0)


def grad_step_counts(H_cycles: int, L_cycles: int, bp_steps: Optional[int]) -> tuple[int, int]:
    """(number of H steps with gradient, number of L steps with gradient)."""
    steps = schedule(H_cycles, L_cycles, bp_steps)
    return (sum(s.grad for s in steps if s.kind == "H"), sum(s.grad for s in steps if s.kind == "L"))
