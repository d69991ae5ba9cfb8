"""`xla` backend: attention in plain XLA ops — the ground truth every other backend is tested against.

Two formulations of the same function:

* dense (`attend_dense`): [B, N, Tq, S] fp32 scores under the boolean mask, fp32 softmax. Used for explicit
  masks (KV-cache paths) and whenever the program is lowered for an accelerator (TPU training uses `splash`;
  the TPU program of this backend is unchanged).
* block-sparse (`blocked_attention`), for packed rows lowered for CPU: queries in blocks of `CPU_BLOCK_Q`, each
  visiting only the key blocks that hold its keys (a packed PrefixLM query sees one contiguous key range
  [lo, hi), `AttentionMask.key_ranges`), with an online softmax (flash attention) and a hand-written backward
  that recomputes the probabilities from the saved logsumexp. On a packed row of short examples most of the
  dense [T, T] score matrix is masked out: at T = 2048 with examples of ~150 tokens, the dense scores, their
  softmax and their saved probabilities were ~2/3 of a CPU training step (bench/train_step.py), and the
  blocked form touches ~1/6 of the blocks. The result equals the dense one up to fp32 summation order.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from hrm.config import ModelConfig
from hrm.model.attention.mask import AttentionMask

NAMES_CONTEXT = True  # both formulations name their "context" residuals (output; + logsumexp when blocked)
CONTEXT = "context"  # = hrm.model.attention.CONTEXT (not imported: that package imports this module)
CPU_BLOCK_Q = 64  # query / key block sizes of the block-sparse CPU path (64 was fastest at T = 2048, H = 64)
CPU_BLOCK_K = 64


def lowering_platform() -> str:
    """Platform the current trace lowers for: the active mesh's devices if a mesh is set (e.g. TPU topology
    devices in an AOT compile on a CPU machine), else the default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else getattr(mesh, "abstract_device", None)
    return device.platform if device is not None else jax.default_backend()


def use_blocked(mask: AttentionMask, cfg: ModelConfig) -> bool:
    """The block-sparse path runs for packed masks of the `xla` backend lowered for CPU."""
    return mask.is_packed and cfg.attention_backend == "xla" and lowering_platform() == "cpu"


def prepare(mask: AttentionMask, cfg: ModelConfig) -> AttentionMask:
    """Once per forward pass (not inside every layer): key ranges for the block-sparse path, else the dense
    [B, T, T] mask. (The `jax` backend shares this function and always gets the dense mask.)"""
    if use_blocked(mask, cfg):
        if mask.lo is not None:
            return mask
        lo, hi = mask.key_ranges()
        return AttentionMask(segment_ids=mask.segment_ids, prefix_mask=mask.prefix_mask, lo=lo, hi=hi,
                             causal=mask.causal)
    return AttentionMask(dense=mask.dense_mask())


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, scale: float,
           cfg: ModelConfig) -> jax.Array:
    """softmax(q k^T * scale) v; q [B, Tq, N, H], k/v [B, S, N, H]; rows without any visible key give zeros."""
    if use_blocked(mask, cfg) and q.shape == k.shape == v.shape:
        lo, hi = mask.key_ranges()
        return blocked_attention(q, k, v, lo, hi, scale=scale)
    return checkpoint_name(attend_dense(q, k, v, mask.dense_mask(), scale=scale), CONTEXT)


def attend_dense(q: jax.Array, k: jax.Array, v: jax.Array, dense: jax.Array, *, scale: float) -> jax.Array:
    """The dense formulation under a boolean mask [B, Tq, S]."""
    dense = dense[:, None]  # [B, 1, Tq, S]
    scores = jnp.einsum("bqnh,bknh->bnqk", q, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(dense, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = jnp.where(jnp.any(dense, axis=-1, keepdims=True), probs, 0.0)
    return jnp.einsum("bnqk,bknh->bqnh", probs.astype(v.dtype), v)


# ----------------------------------------------------------------------------- block-sparse (CPU)


def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array, lo: jax.Array, hi: jax.Array, *, scale: float,
                      block_q: int = CPU_BLOCK_Q, block_k: int = CPU_BLOCK_K) -> jax.Array:
    """softmax(q k^T * scale) v where query t sees keys [lo[b, t], hi[b, t]); q/k/v [B, T, N, H] -> [B, T, N, H].

    Queries with lo == hi (padding) output zeros and get zero gradients. T is padded to whole blocks
    (padding queries see nothing; no query sees a padding key). Blocks shrink to T for short rows.
    """
    b, t, n, h = q.shape
    bq, bk = min(block_q, t), min(block_k, t)
    step = math.lcm(bq, bk)
    t_pad = -(-t // step) * step
    heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731  [B, T, N, H] <-> [B, N, T, H]
    q, k, v = (heads_first(x) for x in (q, k, v))
    lo, hi = lo.astype(jnp.int32), hi.astype(jnp.int32)
    if t_pad != t:
        pad = ((0, 0), (0, 0), (0, t_pad - t), (0, 0))
        q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
        lo, hi = (jnp.pad(x, ((0, 0), (0, t_pad - t))) for x in (lo, hi))  # lo == hi == 0: sees nothing
    out = _flash(q, k, v, lo, hi, float(scale), bq, bk)
    return heads_first(out[:, :, :t])


def _key_block_ranges(lo: jax.Array, hi: jax.Array, bq: int, bk: int) -> tuple[jax.Array, jax.Array]:
    """Per query block: [first, end) key blocks holding any key one of its queries (in any row) may see."""
    b, t = lo.shape
    lo, hi = lo.reshape(b, t // bq, bq), hi.reshape(b, t // bq, bq)
    seen = hi > lo
    start = jnp.min(jnp.where(seen, lo, t), axis=(0, 2))
    end = jnp.max(jnp.where(seen, hi, 0), axis=(0, 2))
    first = jnp.minimum(start, end) // bk
    return first, jnp.maximum((end + bk - 1) // bk, first)


def _visible(lo_i: jax.Array, hi_i: jax.Array, j: jax.Array, bk: int) -> jax.Array:
    """[B, 1, bq, bk]: key j*bk + c lies in the query's range (lo_i/hi_i are [B, 1, bq, 1])."""
    key = j * bk + jnp.arange(bk, dtype=jnp.int32)
    return (key >= lo_i) & (key < hi_i)


def _query_block(x: jax.Array, i: jax.Array, bq: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(x, i * bq, bq, axis=2)


def _ranges_of(lo: jax.Array, hi: jax.Array, i: jax.Array, bq: int) -> tuple[jax.Array, jax.Array]:
    sl = lambda x: jax.lax.dynamic_slice_in_dim(x, i * bq, bq, axis=1)[:, None, :, None]  # noqa: E731
    return sl(lo), sl(hi)


def _forward(q, k, v, lo, hi, scale: float, bq: int, bk: int) -> tuple[jax.Array, jax.Array]:
    """(output [B, N, T, H] in q's dtype, logsumexp [B, N, T] fp32; 0 where a query sees nothing)."""
    b, n, t, h = q.shape
    f32 = jnp.float32
    first, end = _key_block_ranges(lo, hi, bq, bk)

    def q_block(i, carry):
        out, lse = carry
        qi = _query_block(q, i, bq)
        lo_i, hi_i = _ranges_of(lo, hi, i, bq)

        def k_block(j, c):
            m, lsum, acc = c
            kj, vj = (jax.lax.dynamic_slice_in_dim(x, j * bk, bk, axis=2) for x in (k, v))
            s = jnp.einsum("bnqh,bnkh->bnqk", qi, kj, preferred_element_type=f32) * scale
            s = jnp.where(_visible(lo_i, hi_i, j, bk), s, -jnp.inf)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # nothing visible yet: keep p = alpha = 0
            p = jnp.exp(s - m_safe[..., None])
            alpha = jnp.exp(m - m_safe)
            lsum = alpha * lsum + jnp.sum(p, axis=-1)
            pv = jnp.einsum("bnqk,bnkh->bnqh", p.astype(v.dtype), vj, preferred_element_type=f32)
            return m_new, lsum, alpha[..., None] * acc + pv

        init = (jnp.full((b, n, bq), -jnp.inf, f32), jnp.zeros((b, n, bq), f32), jnp.zeros((b, n, bq, h), f32))
        with jax.named_scope("blocked_attention_fwd"):  # names the key-block loop (tests count these loops)
            m, lsum, acc = jax.lax.fori_loop(first[i], end[i], k_block, init)
        seen = lsum > 0
        o = jnp.where(seen[..., None], acc / jnp.where(seen, lsum, 1.0)[..., None], 0.0)
        ls = jnp.where(seen, m + jnp.log(jnp.where(seen, lsum, 1.0)), 0.0)
        out = jax.lax.dynamic_update_slice_in_dim(out, o.astype(out.dtype), i * bq, axis=2)
        return out, jax.lax.dynamic_update_slice_in_dim(lse, ls, i * bq, axis=2)

    init = (jnp.zeros(q.shape, q.dtype), jnp.zeros((b, n, t), f32))
    return jax.lax.fori_loop(0, t // bq, q_block, init)


def _backward(q, k, v, lo, hi, o, lse, do, scale: float, bq: int, bk: int):
    """dq, dk, dv (input dtypes, fp32 accumulation): probabilities recomputed per block from lse."""
    b, n, t, h = q.shape
    f32 = jnp.float32
    first, end = _key_block_ranges(lo, hi, bq, bk)
    delta = jnp.sum(do.astype(f32) * o.astype(f32), axis=-1)  # [B, N, T]: rowsum(dO * O) = rowsum(P * dP)

    def q_block(i, carry):
        dq, dk, dv = carry
        qi, doi = _query_block(q, i, bq), _query_block(do, i, bq)
        lse_i, delta_i = (jax.lax.dynamic_slice_in_dim(x, i * bq, bq, axis=2)[..., None] for x in (lse, delta))
        lo_i, hi_i = _ranges_of(lo, hi, i, bq)

        def k_block(j, c):
            dq_i, dk, dv = c
            kj, vj = (jax.lax.dynamic_slice_in_dim(x, j * bk, bk, axis=2) for x in (k, v))
            s = jnp.einsum("bnqh,bnkh->bnqk", qi, kj, preferred_element_type=f32) * scale
            p = jnp.where(_visible(lo_i, hi_i, j, bk), jnp.exp(s - lse_i), 0.0)
            dp = jnp.einsum("bnqh,bnkh->bnqk", doi, vj, preferred_element_type=f32)
            ds = p * (dp - delta_i) * scale
            dv_j = jnp.einsum("bnqk,bnqh->bnkh", p.astype(do.dtype), doi, preferred_element_type=f32)
            dk_j = jnp.einsum("bnqk,bnqh->bnkh", ds.astype(q.dtype), qi, preferred_element_type=f32)
            dq_i = dq_i + jnp.einsum("bnqk,bnkh->bnqh", ds.astype(k.dtype), kj, preferred_element_type=f32)
            add = lambda acc, x: jax.lax.dynamic_update_slice_in_dim(  # noqa: E731
                acc, jax.lax.dynamic_slice_in_dim(acc, j * bk, bk, axis=2) + x, j * bk, axis=2)
            return dq_i, add(dk, dk_j), add(dv, dv_j)

        with jax.named_scope("blocked_attention_bwd"):
            dq_i, dk, dv = jax.lax.fori_loop(first[i], end[i], k_block, (jnp.zeros((b, n, bq, h), f32), dk, dv))
        return jax.lax.dynamic_update_slice_in_dim(dq, dq_i, i * bq, axis=2), dk, dv

    zeros = jnp.zeros(q.shape, f32)
    dq, dk, dv = jax.lax.fori_loop(0, t // bq, q_block, (zeros, zeros, zeros))
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _flash(q, k, v, lo, hi, scale: float, bq: int, bk: int) -> jax.Array:
    """Block-sparse attention on [B, N, T, H] (T a multiple of bq and bk)."""
    return _forward(q, k, v, lo, hi, scale, bq, bk)[0]


def _flash_fwd(q, k, v, lo, hi, scale, bq, bk):
    o, lse = _forward(q, k, v, lo, hi, scale, bq, bk)
    # Named like the splash kernel's residuals, so context-saving remat policies keep them instead of
    # rerunning this forward in the backward pass.
    o, lse = checkpoint_name(o, CONTEXT), checkpoint_name(lse, CONTEXT)
    return o, (q, k, v, lo, hi, o, lse)


def _flash_bwd(scale, bq, bk, res, do):
    q, k, v, lo, hi, o, lse = res
    dq, dk, dv = _backward(q, k, v, lo, hi, o, lse, do, scale, bq, bk)
    return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)
