"""`splash` backend: block-sparse PrefixLM flash attention (Pallas TPU kernels in `splash_kernel*.py`).

Packed rows are described by per-query key ranges [lo, hi) (`mask.key_ranges`, built once per forward
in `prepare`); the kernels compute only (q-block, k-block) pairs that intersect some range, so the
cost follows the packed examples (about the sum of squared example lengths) rather than T^2.

- Lowering target: on TPU the kernels are compiled by Mosaic; anywhere else they run in Pallas
  interpret mode (slow, exact), so CPU tests and `hrm.tools.parity` exercise the same kernel code.
  The target is the platform of the active mesh (`jax.set_mesh`, e.g. TPU topology devices in an AOT
  compile on a CPU box), else `jax.default_backend()`.
- Sharding: under an active mesh and `activation_rules`, the kernel runs inside `jax.shard_map` with
  q/k/v/out split by ("act_batch", "act_len", "act_heads", None) (batch over data x fsdp, heads over
  tensor); each device attends over its own rows and heads, no communication. Sequence sharding
  (`act_len` mapped to a mesh axis) is not supported by this kernel.
- Shapes: T is padded to a multiple of the block sizes (`model.attention_block_q/_kv`, clamped to T
  rounded up to 128) inside the wrapper; padded queries see nothing and padded keys are seen by no one.
- KV-cache paths (explicit dense masks) are delegated to the `xla` backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from hrm.config import ModelConfig
from hrm.model.attention import xla
from hrm.model.attention.mask import AttentionMask
from hrm.model.attention.splash_kernel import (KERNEL_NAMES, NUM_LANES, KernelParams, block_counts,
                                               block_occupancy, flash_prefix_lm, kernel_flops, plan_blocks)
from hrm.sharding import activation_spec

ACT_QKV = ("act_batch", "act_len", "act_heads", None)
NAMES_CONTEXT = True  # the kernel names its output and logsumexp residuals "context" (splash_kernel.py)

__all__ = ["KERNEL_NAMES", "attend", "block_counts", "block_occupancy", "kernel_flops", "lowering_platform",
           "plan_blocks", "prepare"]


def prepare(mask: AttentionMask, cfg: ModelConfig) -> AttentionMask:
    """Add the key ranges lo/hi [B, T] to a packed mask (once per forward); explicit masks stay as they are."""
    if not mask.is_packed or mask.lo is not None:
        return mask
    lo, hi = mask.key_ranges()
    return AttentionMask(segment_ids=mask.segment_ids, prefix_mask=mask.prefix_mask, lo=lo, hi=hi,
                         causal=mask.causal)


def lowering_platform() -> str:
    """Platform the current trace lowers for: the active mesh's devices if a mesh is set, else the default."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else getattr(mesh, "abstract_device", None)
    return device.platform if device is not None else jax.default_backend()


def _params(t: int, head_dim: int, num_heads: int, cfg: ModelConfig) -> tuple[KernelParams, int]:
    """Kernel parameters and padded length for rows of length t; clear errors for TPU-incompatible shapes."""
    bq, bk, t_pad = plan_blocks(t, cfg.attention_block_q, cfg.attention_block_kv)
    interpret = lowering_platform() != "tpu"
    if not interpret:
        for key, size in (("attention_block_q", bq), ("attention_block_kv", bk)):
            if size % NUM_LANES:
                raise ValueError(f"config key 'model.{key}': the splash TPU kernel needs a multiple of {NUM_LANES}, "
                                 f"got {getattr(cfg, key)} (clamped to {size} for T={t})")
        if head_dim % NUM_LANES and num_heads > 1:
            raise ValueError(f"config key 'model.head_dim': the splash TPU kernel needs a multiple of {NUM_LANES} "
                             f"(got {head_dim}); use model.attention_backend=xla for this shape")
    return KernelParams(bq, bk, interpret), t_pad


def _local(q: jax.Array, k: jax.Array, v: jax.Array, lo: jax.Array, hi: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Attention on one device's rows/heads: pad T to whole blocks, run the kernels, drop the padding."""
    b, t, n, h = q.shape
    params, t_pad = _params(t, h, n, cfg)
    if t_pad != t:
        pad = ((0, 0), (0, t_pad - t), (0, 0), (0, 0))
        q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
        lo, hi = (jnp.pad(x, ((0, 0), (0, t_pad - t))) for x in (lo, hi))  # lo == hi == 0: sees nothing
    out = flash_prefix_lm(q, k, v, lo.astype(jnp.int32), hi.astype(jnp.int32), params)
    return out[:, :t] if t_pad != t else out


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, scale: float,
           cfg: ModelConfig) -> jax.Array:
    """softmax(q k^T * scale) v with the PrefixLM mask as key ranges; q/k/v [B, T, N, H] -> [B, T, N, H].

    Explicit masks (KV-cache prefill/decode, Tq != S) go to the dense `xla` backend. Queries without any
    visible key (padding) give zeros and zero gradients.
    """
    if not mask.is_packed:
        return xla.attend(q, k, v, mask, scale=scale, cfg=cfg)
    if q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"splash attention needs q/k/v of one shape [B, T, N, H], got {q.shape}, {k.shape}, "
                         f"{v.shape}")
    lo, hi = mask.key_ranges()
    q = (q.astype(jnp.float32) * scale).astype(q.dtype)  # pre-scaled once, rounded once

    def local(q, k, v, lo, hi):
        return _local(q, k, v, lo, hi, cfg)

    spec = activation_spec(ACT_QKV, q.shape)
    if spec is None:
        return local(q, k, v, lo, hi)
    if spec[1] is not None:
        raise ValueError(f"splash attention cannot shard the sequence: mesh.rules maps 'act_len' to {spec[1]!r}; "
                         f"map it to null or use model.attention_backend=xla")
    rows = PartitionSpec(spec[0], None)
    # check_vma=False: Pallas' interpreter (CPU) cannot index with manual-axis-varying scalars yet; the
    # same setting is used on TPU so that the tested program is the deployed one. Gradients stay exact
    # (shard_map then sums cotangents of inputs replicated over an axis, e.g. heads not divisible by tensor).
    return jax.shard_map(local, in_specs=(spec, spec, spec, rows, rows), out_specs=spec,
                         check_vma=False)(q, k, v, lo, hi)
