"""Analytic training FLOPs (docs/optimizer.md §5) and model FLOP utilisation.

Accounting (paper App. A, docs/optimizer.md §5): every stack application costs 2·N_stack FLOPs per token forward;
gradient applications add 4·N_stack for the backward (6·N total); the LM head costs 6·N_head per
token (the embedding lookup is free). Attention score FLOPs (QKᵀ and AV) are counted separately:
per layer and query token ≈ 4·(nh·hd)·(visible keys) forward, ×3 for gradient applications, with
visible keys from the PrefixLM rule (docs/prefixlm_packing.md §4). The published totals exclude attention.

Which applications run and which have gradient is the architecture's schedule (its registry entry,
`hrm.model.registry`): HRM per docs/recurrence.md §2.2 (H_bp = min(H_cycles, bp − 1), L_bp = bp − H_bp; the last
H_bp H-steps and the last L_bp L-steps have gradient); the baselines per docs/recurrence.md §3 (transformer: one
n_layers stack once; UT: `cycles` applications, the last `bp_cycles` with gradient; RINS: L_cycles
L-steps, the last L_bp_cycles with gradient, then H once; TRM: HRM's loop on one shared stack with
fixed H_bp_steps / L_bp_steps).
"""

from __future__ import annotations

from typing import Optional, Sequence

from hrm.config import ModelConfig

# (device_kind substring, lower case; peak dense bf16 FLOP/s; HBM bytes). First match wins, so more
# specific names come first ("tpu v5 lite" before "tpu v5"). Vendor-published figures (docs/optimizer.md §5).
_GiB = 1024**3
DEVICE_PEAKS: tuple[tuple[str, float, int], ...] = (
    ("tpu v5 lite", 197e12, 16 * _GiB),
    ("tpu v5e", 197e12, 16 * _GiB),
    ("tpu v5p", 459e12, 95 * _GiB),
    ("tpu v5", 459e12, 95 * _GiB),
    ("tpu v6 lite", 918e12, 32 * _GiB),
    ("tpu v6e", 918e12, 32 * _GiB),
    ("trillium", 918e12, 32 * _GiB),
    ("tpu v4", 275e12, 32 * _GiB),
    ("h100", 989e12, 80 * 10**9),
    ("a100", 312e12, 80 * 10**9),
)


def device_peak(device_kind: str) -> Optional[tuple[float, int]]:
    """(peak bf16 FLOP/s, HBM bytes) for a `jax.Device.device_kind`, or None if unknown (e.g. CPU)."""
    kind = device_kind.lower()
    for key, flops, hbm in DEVICE_PEAKS:
        if key in kind:
            return flops, hbm
    return None


def mfu(flops_per_step: float, step_time_s: float, n_devices: int, device_kind: str) -> Optional[float]:
    """Model FLOP utilisation = achieved FLOP/s / (n_devices · peak); None on unknown devices (CPU)."""
    peak = device_peak(device_kind)
    if peak is None or step_time_s <= 0 or n_devices <= 0:
        return None
    return flops_per_step / step_time_s / (n_devices * peak[0])


# ----------------------------------------------------------------------------- parameter counts


def params_per_layer(model: ModelConfig) -> int:
    """Fused gate+q+k+v (4·d·nh·hd) + o_proj (nh·hd·d) + SwiGLU (3·d·I); = 5d² + 3dI (docs/model.md §1)."""
    d, inner = model.hidden_size, model.num_heads * model.resolved_head_dim
    return 5 * d * inner + 3 * d * model.resolved_intermediate_size


def stack_params(model: ModelConfig) -> int:
    """Parameters of one stack (layers_per_stack layers: n_layers/2 with half_layers for HRM, RINS and TRM;
    all n_layers for the transformer and UT). Every stack of an architecture has this size."""
    return model.layers_per_stack * params_per_layer(model)


def head_params(model: ModelConfig) -> int:
    """Untied LM head [V, d] (docs/model.md §8). The embedding has as many, but its lookup is free."""
    return model.vocab_size * model.hidden_size


def total_params(model: ModelConfig) -> int:
    """Every trained parameter: the architecture's stacks + embedding + head (zL_init is a fixed buffer)."""
    from hrm.model.registry import get_arch

    return len(get_arch(model.arch).stacks) * stack_params(model) + 2 * head_params(model)


def stack_schedule(model: ModelConfig, bp_steps: Optional[int]) -> list[tuple[str, bool]]:
    """Stack applications in execution order as (stack, has_gradient), from the architecture's registry
    entry (docs/model.md §2, docs/recurrence.md §2.2, §3). HRM: per H cycle, L_cycles L-steps then one H-step; the
    transformer: [("stack", True)]. `bp_steps` only matters for HRM (the baselines' horizon is in their config)."""
    from hrm.model.registry import get_arch

    return [(a.stack, a.grad) for a in get_arch(model.arch).applications(model, bp_steps)]


# ----------------------------------------------------------------------------- attention keys


def visible_keys(prefix_len: int, response_len: int, attn_type: str = "prefixlm") -> int:
    """Σ over the example's query tokens of the keys each may attend to (docs/prefixlm_packing.md §4).

    PrefixLM: prefix queries see the whole prefix (P each); response query r (0-based) sees
    P + r + 1 keys. Causal: query q sees q + 1 keys.
    """
    p, r = int(prefix_len), int(response_len)
    if attn_type == "causal":
        n = p + r
        return n * (n + 1) // 2
    return p * p + r * p + r * (r + 1) // 2


def visible_keys_total(examples: Sequence[tuple[int, int]], attn_type: str = "prefixlm") -> int:
    """Exact Σ visible keys for a batch given per-example (prefix_len, response_len)."""
    return sum(visible_keys(p, r, attn_type) for p, r in examples)


def visible_keys_approx(tokens: float, mean_prefix: float, mean_response: float,
                        attn_type: str = "prefixlm") -> float:
    """Approximate Σ visible keys for `tokens` tokens of examples with the given mean lengths.

    Treats every example as having the mean lengths (underestimates for skewed length
    distributions because the count is quadratic in length).
    """
    length = mean_prefix + mean_response
    if length <= 0:
        return 0.0
    p, r = mean_prefix, mean_response
    per_ex = (length * (length + 1) / 2 if attn_type == "causal" else p * p + r * p + r * (r + 1) / 2)
    return tokens / length * per_ex


# ----------------------------------------------------------------------------- totals


def flops_per_step(model: ModelConfig, bp_steps: Optional[int], tokens: float,
                   visible_keys_sum: Optional[float] = None) -> dict[str, float]:
    """Training FLOPs of one step over `tokens` tokens, with a breakdown (docs/optimizer.md §5).

    Args:
      model: architecture.
      bp_steps: backprop horizon of this step (HRM only; the baselines' horizon is in their config).
      tokens: tokens processed in the step (all positions that run through the model).
      visible_keys_sum: Σ over query tokens of visible keys (see `visible_keys_total` /
        `visible_keys_approx`); None counts no attention-score FLOPs (as the paper).

    Returns a dict with stack_forward, stack_backward, head, attention, total_excl_attention,
    total, per_token_excl_attention, n_applications, n_grad_applications.
    """
    sched = stack_schedule(model, bp_steps)
    n_apps, n_grad = len(sched), sum(g for _, g in sched)
    n_stack, n_head = stack_params(model), head_params(model)
    fwd = 2.0 * n_apps * n_stack * tokens
    bwd = 4.0 * n_grad * n_stack * tokens
    head = 6.0 * n_head * tokens
    attn = 0.0
    if visible_keys_sum is not None:
        per_layer = 4.0 * model.num_heads * model.resolved_head_dim * visible_keys_sum
        attn = per_layer * model.layers_per_stack * (n_apps + 2 * n_grad)
    excl = fwd + bwd + head
    return {
        "stack_forward": fwd,
        "stack_backward": bwd,
        "head": head,
        "attention": attn,
        "total_excl_attention": excl,
        "total": excl + attn,
        "per_token_excl_attention": excl / tokens if tokens else 0.0,
        "n_applications": float(n_apps),
        "n_grad_applications": float(n_grad),
    }


def flops_per_token(model: ModelConfig, bp_steps: Optional[int]) -> float:
    """Training FLOPs per token excluding attention (docs/optimizer.md §5: XL at bp 5 ≈ 18.3 GFLOP)."""
    return flops_per_step(model, bp_steps, 1.0)["total_excl_attention"]
