"""Block-sparse PrefixLM flash attention as Pallas TPU kernels: forward, block bounds, custom VJP.

The mask is given per query as a visible key range [lo, hi) (FlashAttention-3 varlen PrefixLM; see
`mask.key_ranges`), never as a [T, T] matrix. The kernels run over the grid
(batch, heads, q-block, k-step); for each (row, q-block) only the k-blocks that intersect some query's
range are computed. Those blocks form one contiguous run [kv_start, kv_start + kv_count) (examples are
contiguous), and k-step j maps to k-block kv_start + min(j, kv_count - 1): computed steps come first,
and the skipped steps at the end repeat the last block index, so the pipeline issues no DMA for them.
The per-block bounds are scalar-prefetched (`pltpu.PrefetchScalarGridSpec`) into SMEM, where the
index maps read them. Inside a computed block the exact mask is rebuilt from lo/hi with iotas.

Layouts (no transposes around the kernels): q/k/v/o are read as [B, T, N*H] (a free reshape of
[B, T, N, H]) in (block, H) tiles at column offset h*H, so on TPU H must be a multiple of 128 (or N = 1).
Per-query vectors lo/hi are [B, 1, T] and the logsumexp / dO.O rows are [B, N, 1, T] (queries along
lanes). Softmax statistics are fp32, products run on the MXU with fp32 accumulation, probabilities are
cast to the value dtype before P @ V (as the dense `xla` backend does).

Numerics: masked logits are replaced by a large finite negative (not -inf) and probabilities are
zeroed by the mask itself, so rows that see no key anywhere (padding) end with l = 0 and output zeros
with zero gradients, never NaN. q must arrive pre-scaled by the softmax scale.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

NUM_LANES = 128
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)
NT_DIMS = (((1,), (1,)), ((), ()))  # a @ b.T
NN_DIMS = (((1,), (0,)), ((), ()))  # a @ b


def block_dot(a: jax.Array, b: jax.Array, dims=NN_DIMS) -> jax.Array:
    """fp32-accumulating matmul of two VMEM tiles with an explicit precision.

    The precision is fixed here rather than inherited from `jax_default_matmul_precision`: Mosaic rejects an
    fp32 contract precision on bf16 tiles ("Bad lhs type"), so a global "highest" (as the parity tool sets
    for fp32 goldens) must not leak into bf16 kernels. fp32 tiles use HIGHEST, bf16 tiles DEFAULT (native).
    """
    exact = a.dtype == jnp.float32 and b.dtype == jnp.float32
    precision = jax.lax.Precision.HIGHEST if exact else jax.lax.Precision.DEFAULT
    return jax.lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.float32)
# Names of the pallas kernels. In compiled TPU HLO each call is a custom-call instruction named after its
# kernel, e.g. `%splash_prefix_lm_fwd.1 = (...) custom-call(...), custom_call_target="tpu_custom_call"`.
KERNEL_NAMES = {"fwd": "splash_prefix_lm_fwd", "dq": "splash_prefix_lm_dq", "dkv": "splash_prefix_lm_dkv"}
# Residual checkpoint name of the saved output and logsumexp: remat policies that save the attention
# output ("context") then keep the forward kernel out of the backward pass.
RESIDUAL_NAME = "context"


@dataclasses.dataclass(frozen=True)
class KernelParams:
    """Static kernel configuration: block sizes (T must be a multiple of both) and interpret mode."""

    block_q: int
    block_kv: int
    interpret: bool = False


def plan_blocks(t: int, block_q: int, block_kv: int) -> tuple[int, int, int]:
    """(block_q, block_kv, padded T) for a row of length t: blocks clamped to t rounded up to 128, and t
    padded to a multiple of both blocks (the wrapper pads, the kernels see only whole blocks)."""
    t128 = -(-t // NUM_LANES) * NUM_LANES
    bq, bk = min(block_q, t128), min(block_kv, t128)
    step = math.lcm(bq, bk)
    return bq, bk, -(-t // step) * step


# ----------------------------------------------------------------------------------------------------------
# Block bounds (plain XLA on [B, T] ranges; also used by the FLOPs/occupancy helpers)


def _xp(x):
    """numpy for host arrays (plan reports), jax.numpy for jax arrays and tracers (inside the step)."""
    return jnp if isinstance(x, jax.Array) else np


def kv_block_bounds(lo, hi, block_q: int, block_kv: int):
    """Per (row, q-block): first k-block and number of k-blocks intersecting any of its queries' ranges.

    lo/hi [B, T] int32 (numpy or jax) with T a multiple of both blocks; returns int32 [B, T // block_q]
    each, (0, 0) for q-blocks without any visible key.
    """
    xp = _xp(lo)
    b, t = lo.shape
    lo_b, hi_b = lo.reshape(b, t // block_q, block_q), hi.reshape(b, t // block_q, block_q)
    valid = lo_b < hi_b
    first = xp.min(xp.where(valid, lo_b, t), axis=-1)
    last = xp.max(xp.where(valid, hi_b, 0), axis=-1)  # exclusive
    any_valid = xp.any(valid, axis=-1)
    start = xp.where(any_valid, first // block_kv, 0)
    stop = xp.where(any_valid, -(-last // block_kv), 0)
    return start.astype(xp.int32), (stop - start).astype(xp.int32)


def q_block_bounds(kv_start, kv_count, n_kv: int):
    """Per (row, k-block): first q-block and number of q-blocks whose k-block run covers it (a contiguous
    superset of the q-blocks that need it: exact masking happens inside the kernel). int32 [B, n_kv]."""
    xp = _xp(kv_start)
    n_q = kv_start.shape[1]
    j = xp.arange(n_kv)[None, None, :]
    needs = (kv_start[..., None] <= j) & (j < (kv_start + kv_count)[..., None])  # [B, n_q, n_kv]
    i = xp.arange(n_q)[None, :, None]
    first = xp.min(xp.where(needs, i, n_q), axis=1)
    last = xp.max(xp.where(needs, i + 1, 0), axis=1)
    any_q = xp.any(needs, axis=1)
    start = xp.where(any_q, first, 0)
    return start.astype(xp.int32), xp.where(any_q, last - first, 0).astype(xp.int32)


def block_index(start_ref, count_ref, flat: jax.Array, step: jax.Array) -> jax.Array:
    """Block visited at grid step `step` of run `flat`: start + min(step, count - 1) (skipped trailing
    steps repeat the last computed block, so their DMA is elided)."""
    return start_ref[flat] + jnp.minimum(step, jnp.maximum(count_ref[flat] - 1, 0))


def out_struct(shape: tuple[int, ...], dtype, like: jax.Array) -> jax.ShapeDtypeStruct:
    """Output shape of a kernel varying over the same manual mesh axes as `like` (inside `shard_map` with
    `check_vma`, Pallas needs this; elsewhere it is ignored)."""
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=jax.typeof(like).manual_axis_type)


def lanes(x: jax.Array, n: int) -> jax.Array:
    """Broadcast a lane-replicated [rows, NUM_LANES] statistic to [rows, n]."""
    if n == x.shape[1]:
        return x
    if n % x.shape[1] == 0:
        return jnp.tile(x, (1, n // x.shape[1]))
    return jnp.broadcast_to(x[:, :1], (x.shape[0], n))


# ----------------------------------------------------------------------------------------------------------
# Forward kernel


def _fwd_kernel(kv_start_ref, kv_count_ref, q_ref, k_ref, v_ref, lo_ref, hi_ref, o_ref, lse_ref,
                m_sc, l_sc, acc_sc, *, block_kv: int):
    b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
    flat = b * pl.num_programs(2) + i
    count = kv_count_ref[flat]

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, MASK_VALUE, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    @pl.when(j < count)
    def _compute():
        q, k, v = q_ref[...], k_ref[...], v_ref[...]
        s = block_dot(q, k, NT_DIMS)  # [bq, bk]
        first_key = (kv_start_ref[flat] + j) * block_kv
        keys = first_key + jax.lax.broadcasted_iota(jnp.int32, s.shape, 1)
        visible = (keys >= jnp.expand_dims(lo_ref[0], -1)) & (keys < jnp.expand_dims(hi_ref[0], -1))
        s = jnp.where(visible, s, MASK_VALUE)
        m_prev = m_sc[...]
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))  # [bq, NUM_LANES]
        p = jnp.where(visible, jnp.exp(s - lanes(m_next, s.shape[1])), 0.0)
        alpha = jnp.exp(m_prev - m_next)
        l_sc[...] = alpha * l_sc[...] + jnp.sum(p, axis=1, keepdims=True)
        pv = block_dot(p.astype(v.dtype), v)
        acc_sc[...] = acc_sc[...] * lanes(alpha, acc_sc.shape[1]) + pv
        m_sc[...] = m_next

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        denom = l_sc[...]
        seen = denom > 0.0  # denom >= 1 for every query with a visible key (its max term is exp(0))
        inv = jnp.where(seen, 1.0 / jnp.where(seen, denom, 1.0), 0.0)
        o_ref[...] = (acc_sc[...] * lanes(inv, acc_sc.shape[1])).astype(o_ref.dtype)
        lse = jnp.where(seen, m_sc[...] + jnp.log(jnp.where(seen, denom, 1.0)), 0.0)  # [bq, NUM_LANES]
        lse_ref[...] = lse.T[:1, :]  # lanes are replicated: row 0 of the transpose = [1, bq]


def heads_view(x: jax.Array) -> jax.Array:
    """[B, T, N, H] -> [B, T, N*H] (free): head h is the column tile [h*H, (h+1)*H)."""
    b, t, n, h = x.shape
    return x.reshape(b, t, n * h)


def forward(q: jax.Array, k: jax.Array, v: jax.Array, lo: jax.Array, hi: jax.Array,
            params: KernelParams) -> tuple[jax.Array, jax.Array]:
    """Output [B, T, N, H] (dtype of q) and logsumexp [B, N, 1, T] fp32 of pre-scaled q against k/v.

    T must be a multiple of both block sizes; lo/hi [B, T] int32 (lo == hi: the query sees nothing).
    """
    b, t, n, h = q.shape
    bq, bk = params.block_q, params.block_kv
    n_q, n_kv = t // bq, t // bk
    kv_start, kv_count = (x.reshape(-1) for x in kv_block_bounds(lo, hi, bq, bk))

    def q_map(bi, hi_, i, j, st, ct):
        return bi, i, hi_

    def kv_map(bi, hi_, i, j, st, ct):
        return bi, block_index(st, ct, bi * n_q + i, j), hi_

    def row_map(bi, hi_, i, j, st, ct):
        return bi, 0, i

    def lse_map(bi, hi_, i, j, st, ct):
        return bi, hi_, 0, i

    q_spec = pl.BlockSpec((None, bq, h), q_map)
    kv_spec = pl.BlockSpec((None, bk, h), kv_map)
    row_spec = pl.BlockSpec((None, 1, bq), row_map)
    o, lse = pl.pallas_call(
        functools.partial(_fwd_kernel, block_kv=bk),
        out_shape=(out_struct((b, t, n * h), q.dtype, q), out_struct((b, n, 1, t), jnp.float32, q)),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=2, grid=(b, n, n_q, n_kv),
            in_specs=[q_spec, kv_spec, kv_spec, row_spec, row_spec],
            out_specs=[q_spec, pl.BlockSpec((None, None, 1, bq), lse_map)],
            scratch_shapes=[pltpu.VMEM((bq, NUM_LANES), jnp.float32), pltpu.VMEM((bq, NUM_LANES), jnp.float32),
                            pltpu.VMEM((bq, h), jnp.float32)]),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        interpret=params.interpret, name=KERNEL_NAMES["fwd"],
    )(kv_start, kv_count, heads_view(q), heads_view(k), heads_view(v), lo[:, None, :], hi[:, None, :])
    return o.reshape(b, t, n, h), lse


# ----------------------------------------------------------------------------------------------------------
# Differentiable entry point


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def flash_prefix_lm(q: jax.Array, k: jax.Array, v: jax.Array, lo: jax.Array, hi: jax.Array,
                    params: KernelParams) -> jax.Array:
    """softmax(q k^T) v over each query's key range [lo, hi) with block skipping; [B, T, N, H] in and out.

    q is pre-scaled; T a multiple of both block sizes; lo/hi [B, T] int32. Queries with lo == hi output
    zeros and get zero gradients.
    """
    return forward(q, k, v, lo, hi, params)[0]


def _vjp_fwd(q, k, v, lo, hi, params):
    o, lse = forward(q, k, v, lo, hi, params)
    o, lse = checkpoint_name(o, RESIDUAL_NAME), checkpoint_name(lse, RESIDUAL_NAME)
    return o, (q, k, v, lo, hi, o, lse)


def _vjp_bwd(params, res, do):
    from hrm.model.attention.splash_kernel_bwd import backward

    q, k, v, lo, hi, o, lse = res
    dq, dk, dv = backward(q, k, v, lo, hi, o, lse, do, params)
    return dq, dk, dv, None, None


flash_prefix_lm.defvjp(_vjp_fwd, _vjp_bwd)


# ----------------------------------------------------------------------------------------------------------
# Accounting for compiled-plan reports (kernel FLOPs are invisible to XLA's cost analysis)


def block_counts(lo, hi, block_q: int, block_kv: int) -> dict[str, int]:
    """Computed (q-block, k-block) pairs per head summed over rows, for the forward/dq grid and the dk/dv
    grid, plus the dense total. lo/hi [B, T] (unpadded; numpy or jax); blocks as configured."""
    lo, hi = np.asarray(lo, np.int32), np.asarray(hi, np.int32)
    b, t = lo.shape
    bq, bk, tp = plan_blocks(t, block_q, block_kv)
    lo, hi = (np.pad(x, ((0, 0), (0, tp - t))) for x in (lo, hi))
    kv_start, kv_count = kv_block_bounds(lo, hi, bq, bk)
    _, q_count = q_block_bounds(kv_start, kv_count, tp // bk)
    return {"fwd": int(np.sum(kv_count)), "dkv": int(np.sum(q_count)), "dense": b * (tp // bq) * (tp // bk),
            "block_q": bq, "block_kv": bk}


def block_occupancy(lo, hi, block_q: int, block_kv: int) -> float:
    """Fraction of (q-block, k-block) pairs the forward kernel computes (1.0 = dense)."""
    c = block_counts(lo, hi, block_q, block_kv)
    return c["fwd"] / c["dense"]


def kernel_flops(counts: dict[str, int], num_heads: int, head_dim: int) -> dict[str, int]:
    """Matmul FLOPs of one call of each kernel, from `block_counts` (per computed block and head:
    forward QK^T + PV = 4 bq bk H; dq kernel QK^T, dO V^T, dS K = 6 bq bk H; dk/dv kernel
    K Q^T, V dO^T, P^T dO, dS^T Q = 8 bq bk H). `bwd` = dq + dkv."""
    per = counts["block_q"] * counts["block_kv"] * head_dim * num_heads
    fwd, dq, dkv = 4 * per * counts["fwd"], 6 * per * counts["fwd"], 8 * per * counts["dkv"]
    return {"fwd": fwd, "dq": dq, "dkv": dkv, "bwd": dq + dkv}
