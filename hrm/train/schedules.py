"""Pure step schedules: learning rate (docs/optimizer.md §3), bp_steps (docs/recurrence.md §2.1), total step count.

All functions count steps from 1, as the reference does ("the step counter is incremented before
use", docs/recurrence.md §2.1). `lr_at` works on Python numbers and on traced jnp integers (for use inside a
jitted step); `bp_steps_at` is host-side only because bp_steps is a static argument of the step
(docs/conventions.md §7), but it also accepts numpy integers.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from hrm.config import ModelConfig, OptimConfig


def lr_at(step: Any, opt: OptimConfig, total_steps: int) -> Any:
    """Learning rate at `step` (docs/optimizer.md §3, ref pretrain.py `update_lr`).

    step < W: lr·step/W; otherwise lr·(r + max(0, (1−r)·½·(1+cos(π·(step−W)/(total−W))))).
    With r = 1 this is constant after warmup; W = 0 skips the warmup. Returns a Python float for
    Python inputs and a jnp float32 scalar for jnp inputs.
    """
    lr, w, r = float(opt.lr), int(opt.lr_warmup_steps), float(opt.lr_min_ratio)
    decay_len = max(1, int(total_steps) - w)
    if isinstance(step, (int, float)) or hasattr(step, "item") and not hasattr(step, "aval"):
        s = float(step)
        if s < w:
            return lr * s / w
        cos = 0.5 * (1.0 + math.cos(math.pi * (s - w) / decay_len))
        return lr * (r + max(0.0, (1.0 - r) * cos))
    s = jnp.asarray(step, jnp.float32)
    warm = lr * s / max(w, 1)
    cos = 0.5 * (1.0 + jnp.cos(jnp.pi * (s - w) / decay_len))
    after = lr * (r + jnp.maximum(0.0, (1.0 - r) * cos))
    return jnp.where(s < w, warm, after)


def bp_warmup_steps(total_steps: int, model: ModelConfig) -> float:
    """warmup = bp_warmup_ratio · total_steps (docs/recurrence.md §2.1); a float, not rounded (as the reference)."""
    return model.bp_warmup_ratio * total_steps


def bp_steps_at(step: int, total_steps: int, model: ModelConfig) -> int:
    """Backprop horizon at `step` (docs/recurrence.md §2.1): min + floor(progress·(max − min)).

    progress = min(1, step / warmup), or 1 if warmup = 0. For the HRM defaults this is
    2 + floor(3·progress) ∈ {2, 3, 4, 5}.
    """
    warmup = bp_warmup_steps(total_steps, model)
    progress = 1.0 if warmup == 0 else min(1.0, int(step) / warmup)
    return model.bp_min_steps + math.floor(progress * (model.bp_max_steps - model.bp_min_steps))


def bp_phase_boundaries(total_steps: int, model: ModelConfig) -> list[tuple[int, int]]:
    """[(first_step, bp_steps), ...] for every bp phase within steps 1..total_steps (for logging).

    Found exactly (not by the closed form) so it always agrees with `bp_steps_at`.
    """
    total = max(1, int(total_steps))
    out = [(1, bp_steps_at(1, total, model))]
    warmup = bp_warmup_steps(total, model)
    span = model.bp_max_steps - model.bp_min_steps
    for k in range(1, span + 1):
        if warmup == 0:
            break
        guess = max(1, math.floor(k * warmup / span) - 1)  # bp reaches min+k near step k·warmup/span
        step = guess
        while step > 1 and bp_steps_at(step - 1, total, model) >= model.bp_min_steps + k:
            step -= 1
        while step <= total and bp_steps_at(step, total, model) < model.bp_min_steps + k:
            step += 1
        if step <= total and step > out[-1][0]:
            out.append((step, bp_steps_at(step, total, model)))
    return out


def total_steps_from(epochs: float, tokens_per_epoch: float, global_batch_tokens: int) -> int:
    """total_steps = floor(epochs · tokens_per_epoch / global_batch_tokens) (docs/recurrence.md §2.1).

    `tokens_per_epoch` is the dataset metadata's mean unpadded tokens per epoch (docs/data_format.md §6); the
    estimate ignores packing loss and the dropped last batch, like the reference.
    """
    if global_batch_tokens <= 0:
        raise ValueError(f"global_batch_tokens must be positive, got {global_batch_tokens}")
    return math.floor(epochs * tokens_per_epoch / global_batch_tokens)
