"""AdamAtan2 with decoupled weight decay, per-parameter step counts and an EMA (docs/optimizer.md §1, §2,
docs/recurrence.md §2.4).

Per parameter p with gradient g at its own step t (from 1), lr the scheduled rate of this step:

    p <- p * (1 - lr*wd)                                   # decoupled decay first
    m <- b1*m + (1-b1)*g ;  v <- b2*v + (1-b2)*g^2 ;  t <- t + 1
    p <- p - (lr / (1 - b1^t)) * atan2(m, sqrt(v) / sqrt(1 - b2^t))   # no epsilon; bc1 outside atan2
    ema <- ema + (1 - ema_decay) * (p - ema)                # after the update

A parameter whose gradient is structurally absent for the current `bp_steps` (the embedding at
bp=2) is skipped entirely: no decay, no moments, no step increment, no EMA change. Which leaves are
active is a *static* pytree of Python bools (`active=`), known from bp_steps, never tested at run time.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from hrm.config import ModelConfig
from hrm.model.registry import get_arch

ScalarOrSchedule = Union[float, Callable[[jax.Array], jax.Array]]


class AdamAtan2State(NamedTuple):
    """count: global optimiser steps taken (drives the LR schedule); the rest mirror the params."""

    count: jax.Array
    step: Any
    mu: Any
    nu: Any
    ema: Any


def adam_atan2(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.95,
               weight_decay: float = 0.1, ema_decay: float = 0.9999) -> optax.GradientTransformationExtraArgs:
    """AdamAtan2 + EMA as an optax transformation; `update(grads, state, params, active=None)`.

    `learning_rate` may be a schedule called with the 1-based step number (count + 1).
    """

    def init_fn(params):
        f32 = lambda p: jnp.zeros(p.shape, jnp.float32)  # noqa: E731
        return AdamAtan2State(
            count=jnp.zeros((), jnp.int32),
            step=jax.tree.map(lambda p: jnp.zeros((), jnp.int32), params),
            mu=jax.tree.map(f32, params),
            nu=jax.tree.map(f32, params),
            ema=jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params),
        )

    def update_fn(grads, state: AdamAtan2State, params=None, *, active=None, **unused):
        if params is None:
            raise ValueError("adam_atan2 needs params (decoupled weight decay and EMA)")
        lr = learning_rate(state.count + 1) if callable(learning_rate) else jnp.float32(learning_rate)
        lr = jnp.asarray(lr, jnp.float32)
        if active is None:
            active = jax.tree.map(lambda _: True, params)

        def leaf(g, p, t, m, v, e, on):
            if not on:  # structurally absent gradient: leave everything untouched (docs/recurrence.md §2.4)
                return jnp.zeros_like(p), t, m, v, e
            g = g.astype(jnp.float32)
            pf = p.astype(jnp.float32)
            p1 = pf * (1.0 - lr * weight_decay)
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * g * g
            t = t + 1
            tf = t.astype(jnp.float32)
            bc1 = 1.0 - jnp.power(jnp.float32(b1), tf)
            bc2 = 1.0 - jnp.power(jnp.float32(b2), tf)
            p2 = p1 - (lr / bc1) * jnp.arctan2(m, jnp.sqrt(v) / jnp.sqrt(bc2))
            e = e + (1.0 - ema_decay) * (p2 - e)
            return (p2 - pf).astype(p.dtype), t, m, v, e

        out = jax.tree.map(leaf, grads, params, state.step, state.mu, state.nu, state.ema, active)
        pick = lambda i: jax.tree.map(lambda _, o: o[i], grads, out)  # noqa: E731
        new_state = AdamAtan2State(state.count + 1, pick(1), pick(2), pick(3), pick(4))
        return pick(0), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def active_mask(params: Any, cfg: ModelConfig, bp_steps: Optional[int], freeze_absent: bool = True) -> Any:
    """Static pytree of bools: False for leaves whose gradient is structurally absent at `bp_steps`.

    Which top-level modules (embed, the stacks, head) receive gradient comes from the architecture's
    registry entry (`ArchSpec.grad_params`, derived from its application schedule): e.g. the HRM token
    embedding at bp_steps=2 (docs/recurrence.md §2.4). `freeze_absent=False` makes every leaf active (zero gradients
    then still get weight decay and moment updates).
    """
    active = get_arch(cfg.arch).grad_params(cfg, bp_steps)

    def on(path, _):
        top = getattr(path[0], "key", getattr(path[0], "name", None))
        return (not freeze_absent) or str(top) in active

    return jax.tree_util.tree_map_with_path(on, params)
