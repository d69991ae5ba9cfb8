"""Parameter-free building blocks: RMSNorm, RoPE, initialisers, dtype helpers (docs/model.md §6, §7, §10).

Everything here is a pure function of arrays. Norms and rotary embeddings compute in float32 and
cast back to the activation dtype, as the reference does (PyTorch's weightless `rms_norm` upcasts).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Standard deviation of a standard normal truncated to (-3, 3); dividing by it restores unit variance.
_TRUNC3_STD = math.sqrt(1.0 - 2 * 3 * math.exp(-4.5) / math.sqrt(2 * math.pi) / math.erf(3 / math.sqrt(2)))


def dtype_of(name: str) -> jnp.dtype:
    """Map a config dtype name ('float32'|'bfloat16') to a jnp dtype."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def lecun_truncated_normal(key: jax.Array, shape: tuple[int, ...], std: float,
                           dtype=jnp.float32) -> jax.Array:
    """Truncated normal on (-3, 3) rescaled to standard deviation `std` (docs/model.md §10).

    The reference folds values beyond +-3 back with fmod instead of resampling; both give a
    zero-mean distribution with standard deviation ~= std, which is all that matters for training.
    """
    x = jax.random.truncated_normal(key, -3.0, 3.0, shape, jnp.float32)
    return (x * (std / _TRUNC3_STD)).astype(dtype)


def rms_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Parameter-free RMSNorm over the last axis, computed in fp32, cast back (docs/model.md §7)."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype)


def rope_inv_freq(head_dim: int, theta: float) -> jax.Array:
    """inv_freq_j = theta^(-2j/hd), j = 0..hd/2-1, in fp32 (docs/model.md §6)."""
    exponent = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    return 1.0 / (jnp.float32(theta) ** exponent)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin of shape [..., T, hd] from explicit integer positions (restart per packed example).

    Angles are p * inv_freq in fp32, duplicated over both halves (concat(freqs, freqs)); this is
    value-identical to the reference's precomputed fp32 table indexed by position ids.
    """
    freqs = positions.astype(jnp.float32)[..., None] * rope_inv_freq(head_dim, theta)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def rotate_half(x: jax.Array) -> jax.Array:
    """concat(-x2, x1) for the two halves of the last axis (GPT-NeoX convention, not interleaved)."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate x [B, T, N, H] by cos/sin [B, T, H]; product in fp32, cast back (docs/model.md §6)."""
    xf = x.astype(jnp.float32)
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return (xf * c + rotate_half(xf) * s).astype(x.dtype)
