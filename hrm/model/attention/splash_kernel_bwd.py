"""Backward Pallas kernels of `splash_kernel.flash_prefix_lm` (FlashAttention-2 style, saved logsumexp).

    D  = rowsum(dO * O)                                   (XLA, fp32)
    P  = exp(S - lse) on visible keys, 0 elsewhere        (recomputed per block from q, k and lse)
    dS = P * (dO V^T - D)
    dq kernel   grid (b, h, q-block, k-step):  dQ = sum_k dS K           same k-block runs as the forward
    dkv kernel  grid (b, h, k-block, q-step):  dV = sum_q P^T dO, dK = sum_q dS^T Q

The dk/dv kernel works on transposed blocks (keys along sublanes, queries along lanes), so the
per-query rows lse, D, lo and hi ([1, bq] tiles) broadcast without relayout. Its q-block run per
k-block is `q_block_bounds` (a contiguous superset; exact masking is inside the block). Gradients are
accumulated in fp32 VMEM scratch and cast once. q is pre-scaled, so dQ here is w.r.t. the scaled q.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from hrm.model.attention.splash_kernel import (KERNEL_NAMES, NT_DIMS, block_dot, KernelParams, block_index, heads_view,
                                               kv_block_bounds, out_struct, q_block_bounds)

_SEMANTICS = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))


def _dq_kernel(kv_start_ref, kv_count_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, lo_ref, hi_ref,
               dq_ref, dq_sc, *, block_kv: int):
    b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
    flat = b * pl.num_programs(2) + i

    @pl.when(j == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)

    @pl.when(j < kv_count_ref[flat])
    def _compute():
        q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
        s = block_dot(q, k, NT_DIMS)  # [bq, bk]
        keys = (kv_start_ref[flat] + j) * block_kv + jax.lax.broadcasted_iota(jnp.int32, s.shape, 1)
        visible = (keys >= jnp.expand_dims(lo_ref[0], -1)) & (keys < jnp.expand_dims(hi_ref[0], -1))
        p = jnp.where(visible, jnp.exp(s - jnp.expand_dims(lse_ref[0], -1)), 0.0)
        dp = block_dot(do, v, NT_DIMS)
        ds = p * (dp - jnp.expand_dims(di_ref[0], -1))
        dq_sc[...] += block_dot(ds.astype(k.dtype), k)

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        dq_ref[...] = dq_sc[...].astype(dq_ref.dtype)


def _dkv_kernel(q_start_ref, q_count_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, lo_ref, hi_ref,
                dk_ref, dv_ref, dk_sc, dv_sc, *, block_kv: int):
    b, j, i = pl.program_id(0), pl.program_id(2), pl.program_id(3)
    flat = b * pl.num_programs(2) + j

    @pl.when(i == 0)
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

    @pl.when(i < q_count_ref[flat])
    def _compute():
        q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
        st = block_dot(k, q, NT_DIMS)  # [bk, bq]
        keys = j * block_kv + jax.lax.broadcasted_iota(jnp.int32, st.shape, 0)
        visible = (keys >= lo_ref[...]) & (keys < hi_ref[...])  # [1, bq] rows broadcast over keys
        pt = jnp.where(visible, jnp.exp(st - lse_ref[...]), 0.0)
        dv_sc[...] += block_dot(pt.astype(do.dtype), do)
        dpt = block_dot(v, do, NT_DIMS)  # [bk, bq]
        dst = pt * (dpt - di_ref[...])
        dk_sc[...] += block_dot(dst.astype(q.dtype), q)

    @pl.when(i == pl.num_programs(3) - 1)
    def _finish():
        dk_ref[...] = dk_sc[...].astype(dk_ref.dtype)
        dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def backward(q: jax.Array, k: jax.Array, v: jax.Array, lo: jax.Array, hi: jax.Array, o: jax.Array,
             lse: jax.Array, do: jax.Array, params: KernelParams) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dq, dk, dv) [B, T, N, H] of `flash_prefix_lm` given its output o, logsumexp [B, N, 1, T] and dO."""
    b, t, n, h = q.shape
    bq, bk = params.block_q, params.block_kv
    n_q, n_kv = t // bq, t // bk
    kv_start, kv_count = kv_block_bounds(lo, hi, bq, bk)
    q_start, q_count = q_block_bounds(kv_start, kv_count, n_kv)
    di = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)  # [B, T, N]
    di = jnp.transpose(di, (0, 2, 1))[:, :, None, :]  # [B, N, 1, T]
    do = do.astype(q.dtype)
    rows = (lo[:, None, :], hi[:, None, :])
    args = (heads_view(q), heads_view(k), heads_view(v), heads_view(do), lse, di) + rows

    # dq: grid (b, h, q-block i, k-step j), k-blocks as in the forward.
    def own_q(bi, hh, i, j, st, ct):
        return bi, i, hh

    def run_kv(bi, hh, i, j, st, ct):
        return bi, block_index(st, ct, bi * n_q + i, j), hh

    def own_row(bi, hh, i, j, st, ct):
        return bi, hh, 0, i

    def own_qrow(bi, hh, i, j, st, ct):
        return bi, 0, i

    q_spec, kv_spec = pl.BlockSpec((None, bq, h), own_q), pl.BlockSpec((None, bk, h), run_kv)
    stat_spec, row_spec = pl.BlockSpec((None, None, 1, bq), own_row), pl.BlockSpec((None, 1, bq), own_qrow)
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, block_kv=bk),
        out_shape=out_struct((b, t, n * h), q.dtype, q),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=2, grid=(b, n, n_q, n_kv),
            in_specs=[q_spec, kv_spec, kv_spec, q_spec, stat_spec, stat_spec, row_spec, row_spec],
            out_specs=q_spec, scratch_shapes=[pltpu.VMEM((bq, h), jnp.float32)]),
        compiler_params=_SEMANTICS, interpret=params.interpret, name=KERNEL_NAMES["dq"],
    )(kv_start.reshape(-1), kv_count.reshape(-1), *args)

    # dk/dv: grid (b, h, k-block j, q-step i), q-blocks from the transposed bounds.
    def own_kv(bi, hh, j, i, st, ct):
        return bi, j, hh

    def run_q(bi, hh, j, i, st, ct):
        return bi, block_index(st, ct, bi * n_kv + j, i), hh

    def run_stat(bi, hh, j, i, st, ct):
        return bi, hh, 0, block_index(st, ct, bi * n_kv + j, i)

    def run_row(bi, hh, j, i, st, ct):
        return bi, 0, block_index(st, ct, bi * n_kv + j, i)

    q_spec, kv_spec = pl.BlockSpec((None, bq, h), run_q), pl.BlockSpec((None, bk, h), own_kv)
    stat_spec, row_spec = pl.BlockSpec((None, None, 1, bq), run_stat), pl.BlockSpec((None, 1, bq), run_row)
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, block_kv=bk),
        out_shape=(out_struct((b, t, n * h), k.dtype, k), out_struct((b, t, n * h), v.dtype, v)),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=2, grid=(b, n, n_kv, n_q),
            in_specs=[q_spec, kv_spec, kv_spec, q_spec, stat_spec, stat_spec, row_spec, row_spec],
            out_specs=[kv_spec, kv_spec],
            scratch_shapes=[pltpu.VMEM((bk, h), jnp.float32), pltpu.VMEM((bk, h), jnp.float32)]),
        compiler_params=_SEMANTICS, interpret=params.interpret, name=KERNEL_NAMES["dkv"],
    )(q_start.reshape(-1), q_count.reshape(-1), *args)
    shape = (b, t, n, h)
    return dq.reshape(shape), dk.reshape(shape), dv.reshape(shape)
