"""Attention: one entry point, backends by name (docs/model.md §4, docs/prefixlm_packing.md §4; docs/conventions.md §9).

    mask = AttentionMask.packed(segment_ids, prefix_mask, causal=False)
    mask = prepare(mask, cfg)                     # once per forward pass, outside layer/cycle loops
    out = attend(q, k, v, mask, cfg)              # q [B, Tq, N, H], k/v [B, S, N, H]

A backend is one module in this package with two functions,
`prepare(mask, cfg) -> AttentionMask` (derive what it needs: dense mask, key ranges, ...) and
`attend(q, k, v, mask, *, scale, cfg) -> [B, Tq, N, H]`, plus one entry in `BACKENDS`. A kernel
backend that names its own residuals "context" sets `NAMES_CONTEXT = True`; `attend` names the output
of the others. Every backend
is tested against `xla` (dense, fp32 softmax) in fp32 and bf16, forward and gradients.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import math
from types import ModuleType
from typing import Iterator, Optional

import jax
from jax.ad_checkpoint import checkpoint_name

from hrm.config import ModelConfig
from hrm.model.attention.mask import AttentionMask, cache_decode_mask, key_ranges, prefix_lm_mask

CONTEXT = "context"  # remat checkpoint name of the attention output (hrm.model.blocks.REMAT_POLICIES)

# name -> module implementing `prepare` and `attend` (imported on first use).
BACKENDS: dict[str, str] = {
    "xla": "hrm.model.attention.xla",
    "jax": "hrm.model.attention.jax_dpa",
    "splash": "hrm.model.attention.splash",
}


def backend_module(name: str) -> ModuleType:
    """The module implementing attention backend `name` (ValueError naming the choices if unknown)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {sorted(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def prepare(mask: AttentionMask, cfg: ModelConfig) -> AttentionMask:
    """Let the configured backend derive its mask data once per forward pass."""
    return backend_module(cfg.attention_backend).prepare(mask, cfg)


_SHAPE_ONLY = contextvars.ContextVar("attention_shape_only", default=False)


@contextlib.contextmanager
def shape_only_attention() -> Iterator[None]:
    """FLOP accounting only: inside this context `attend` returns a value of the right shape computed
    without any matmul (q + k + v elementwise), so XLA's cost analysis of a traced step counts
    everything except attention. The compiled-plan report adds a kernel backend's analytic FLOPs
    (which XLA cannot see inside a custom call) on top."""
    token = _SHAPE_ONLY.set(True)
    try:
        yield
    finally:
        _SHAPE_ONLY.reset(token)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, cfg: ModelConfig,
           scale: Optional[float] = None) -> jax.Array:
    """softmax(q k^T * scale) v under `mask` with the configured backend; scale defaults to 1/sqrt(H)
    (FlashAttention-3's default, used by the reference)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if _SHAPE_ONLY.get() and q.shape == k.shape == v.shape:
        return checkpoint_name(q + k + v, CONTEXT)
    backend = backend_module(cfg.attention_backend)
    out = backend.attend(q, k, v, mask, scale=scale, cfg=cfg)
    # The output is the "context" residual of remat policies; kernel backends name their own residuals
    # (output and logsumexp) so the forward kernel is not rerun, and must not be saved twice.
    return out if getattr(backend, "NAMES_CONTEXT", False) else checkpoint_name(out, CONTEXT)


__all__ = ["AttentionMask", "BACKENDS", "attend", "backend_module", "cache_decode_mask", "key_ranges",
           "prefix_lm_mask", "prepare", "shape_only_attention"]
