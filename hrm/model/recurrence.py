"""Static schedules of stack applications, which of them get gradient, and how they are grouped into scans.

Every architecture is a fixed sequence of `Application`s, each `target <- Stack(target + inject)`
(docs/model.md §2, docs/recurrence.md §3), run with or without gradient (docs/recurrence.md §2.3). This module holds
that vocabulary and the pure-Python analyses over it; `hrm.model.engine` executes it.

HRM's schedule (docs/recurrence.md §2.2), execution order for H_cycles=2, L_cycles=3: L0 L1 L2 H0 L3 L4 L5 H1. With
`bp_steps`, H gets priority: H_bp = min(H_cycles, bp-1), L_bp = bp - H_bp; only the last H_bp H-steps
and the last L_bp L-steps (global order) run with gradient. They need not be contiguous (bp=3: H0, L5, H1).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class Application:
    """One stack application `target <- stack(target + inject)` (no injection when `inject` is None).

    `stack` names the model's Stack attribute, `target`/`inject` its recurrent states. (`cycle`, `index`)
    is the application's KV-cache slot (docs/checkpoints.md §9): cache[cycle, index, layer]."""

    stack: str
    target: str
    inject: Optional[str]
    grad: bool
    cycle: int
    index: int

    @property
    def key(self) -> tuple:
        """Applications with equal keys and consecutive indices run as one `lax.scan`."""
        return (self.stack, self.target, self.inject, self.grad)


@dataclasses.dataclass(frozen=True)
class Run:
    """`n` consecutive applications of one cycle with the same key, at indices lo .. lo+n-1."""

    key: tuple
    lo: int
    n: int


def cycle_runs(apps: Sequence[Application]) -> tuple[Run, ...]:
    """Split one cycle's applications (in execution order) into runs of equal key and consecutive index."""
    runs: list[Run] = []
    for a in apps:
        last = runs[-1] if runs else None
        if last is not None and last.key == a.key and last.lo + last.n == a.index:
            runs[-1] = Run(last.key, last.lo, last.n + 1)
        else:
            runs.append(Run(a.key, a.index, 1))
    return tuple(runs)


def cycle_groups(apps: Sequence[Application]) -> list[tuple[list[int], tuple[Run, ...]]]:
    """[(consecutive cycles, their common runs)]: consecutive cycles with identical runs scan as one."""
    cycles = sorted({a.cycle for a in apps})
    if [a.cycle for a in apps] != sorted(a.cycle for a in apps):
        raise ValueError("applications must be listed in cycle order")
    runs = {c: cycle_runs([a for a in apps if a.cycle == c]) for c in cycles}
    groups: list[tuple[list[int], tuple[Run, ...]]] = []
    for c in cycles:
        if groups and groups[-1][1] == runs[c] and groups[-1][0][-1] == c - 1:
            groups[-1][0].append(c)
        else:
            groups.append(([c], runs[c]))
    return groups


def cache_slots(apps: Iterable[Application]) -> tuple[int, int]:
    """(cycles, slots per cycle) of the KV cache that gives every application its own slot."""
    apps = list(apps)
    return max(a.cycle for a in apps) + 1, max(a.index for a in apps) + 1


def gradient_reach(apps: Sequence[Application], output: str, from_embedding: Iterable[str]) -> tuple[frozenset, bool]:
    """(stacks that receive gradient, whether the token embedding does) for a schedule.

    Walks the schedule backwards from the output state, keeping the set of states whose value at that
    point reaches the loss through gradient applications only. A no-grad application detaches its
    target's earlier value; a gradient application also needs its injection. The embedding gets
    gradient iff a state initialised from it (`from_embedding`) is still needed at the start. This is
    the structural rule the reference optimiser follows by skipping parameters whose `.grad` is None
    (docs/recurrence.md §2.4)."""
    needed, stacks = {output}, set()
    for a in reversed(apps):
        if a.target not in needed:
            continue
        if a.grad:
            stacks.add(a.stack)
            if a.inject is not None:
                needed.add(a.inject)
        else:
            needed.discard(a.target)
    return frozenset(stacks), bool(needed & set(from_embedding))


# ----------------------------------------------------------------------------- HRM's schedule (docs/recurrence.md §2.2)


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """One HRM stack application: which stack, its cycle, its index within the cycle, gradient or not."""

    kind: str  # "L" or "H"
    cycle: int
    index: int  # 0..L_cycles-1 for L steps, L_cycles for the H step (= its KV-cache slot in the cycle)
    grad: bool


def bp_split(H_cycles: int, bp_steps: int) -> tuple[int, int]:
    """(H_bp, L_bp) for a gradient horizon of `bp_steps` stack applications (docs/recurrence.md §2.2)."""
    if bp_steps < 2:
        raise ValueError(f"bp_steps must be >= 2 (one H and one L step), got {bp_steps}")
    H_bp = min(H_cycles, bp_steps - 1)
    return H_bp, bp_steps - H_bp


def hl_schedule(H_cycles: int, L_cycles: int, H_bp: int, L_bp: int) -> tuple[StepSpec, ...]:
    """HRM's loop with the last H_bp H-steps and the last L_bp L-steps (global order) with gradient."""
    n_L = H_cycles * L_cycles
    steps = []
    for i in range(H_cycles):
        for j in range(L_cycles):
            steps.append(StepSpec("L", i, j, i * L_cycles + j >= n_L - L_bp))
        steps.append(StepSpec("H", i, L_cycles, i >= H_cycles - H_bp))
    return tuple(steps)


def schedule(H_cycles: int, L_cycles: int, bp_steps: Optional[int]) -> tuple[StepSpec, ...]:
    """All H_cycles*(L_cycles+1) steps in execution order; bp_steps=None means every step has grad."""
    if bp_steps is None:
        return hl_schedule(H_cycles, L_cycles, H_cycles, H_cycles * L_cycles)
    return hl_schedule(H_cycles, L_cycles, *bp_split(H_cycles, bp_steps))


def embedding_gets_grad(H_cycles: int, L_cycles: int, bp_steps: Optional[int]) -> bool:
    """The embedding reaches the loss only through first-cycle steps, whose input is z_H^0 = x.

    If none of them has gradient (bp=2 with the default cycles) the embedding's gradient is
    structurally absent and the reference optimiser skips it entirely (docs/recurrence.md §2.4).
    """
    return any(s.grad for s in schedule(H_cycles, L_cycles, bp_steps) if s.cycle == 0)


def hl_applications(steps: Iterable[StepSpec], L_stack: str, H_stack: str) -> tuple[Application, ...]:
    """HRM-style steps as applications: z_L <- L(z_L + z_H), z_H <- H(z_H + z_L) (docs/model.md §2)."""
    out = []
    for s in steps:
        if s.kind == "L":
            out.append(Application(L_stack, "z_L", "z_H", s.grad, s.cycle, s.index))
        else:
            out.append(Application(H_stack, "z_H", "z_L", s.grad, s.cycle, s.index))
    return tuple(out)


__all__ = ["Application", "Run", "StepSpec", "bp_split", "cache_slots", "cycle_groups", "cycle_runs",
           "embedding_gets_grad", "gradient_reach", "hl_applications", "hl_schedule",
           "schedule"]
