"""The `xla` backend's block-sparse CPU path (hrm/model/attention/xla.py) against its dense formulation.

Blocks of 8-20 on rows of 37-50 tokens, so that several query and key blocks, blocks skipped entirely,
padding to whole blocks and padding-only rows all occur.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import checkpoint_name

from hrm.config import ModelConfig
from hrm.model.attention import AttentionMask, attend, key_ranges, prefix_lm_mask, prepare
from hrm.model.attention import xla
from hrm.model.blocks import REMAT_POLICIES

from attention_rows import edge_rows, random_rows

CFG = ModelConfig(vocab_size=64, hidden_size=32, num_heads=2, n_layers=2, compute_dtype="float32")


def _both(seg, pre, causal, bq, bk, dtype=jnp.float32, N=3, H=8):
    """(output, dq, dk, dv) of the blocked and the dense formulation for a sin-weighted loss."""
    seg, pre = jnp.asarray(seg), jnp.asarray(pre)
    B, T = seg.shape
    q, k, v = (jax.random.normal(kk, (B, T, N, H)).astype(dtype) for kk in jax.random.split(jax.random.key(1), 3))
    lo, hi = key_ranges(seg, pre, causal)
    dense = prefix_lm_mask(seg, pre, causal_only=causal)
    blocked = lambda q, k, v: xla.blocked_attention(q, k, v, lo, hi, scale=0.3, block_q=bq, block_k=bk)  # noqa: E731
    ref = lambda q, k, v: xla.attend_dense(q, k, v, dense, scale=0.3)  # noqa: E731
    out = []
    for f in (blocked, ref):
        loss = lambda q, k, v, f=f: jnp.sum(jnp.sin(f(q, k, v).astype(jnp.float32)))  # noqa: E731
        out.append((f(q, k, v), *jax.grad(loss, argnums=(0, 1, 2))(q, k, v)))
    return out


# Three block shapes run in CI (square, ragged T, unequal blocks); the rest are slow (CI budget).
@pytest.mark.parametrize("T,bq,bk", [(40, 8, 8), pytest.param(40, 16, 8, marks=pytest.mark.slow),
                                     pytest.param(48, 8, 16, marks=pytest.mark.slow), (37, 8, 8), (50, 12, 20),
                                     pytest.param(24, 64, 64, marks=pytest.mark.slow)])
@pytest.mark.parametrize("causal", [False, True])
def test_blocked_equals_dense_forward_and_gradients(T, bq, bk, causal):
    seg, pre = random_rows(np.random.default_rng(T + bq), 6, T, max_len_div=3)
    got, ref = _both(seg, pre, causal, bq, bk)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=3e-6, rtol=1e-5, err_msg=name)


def test_blocked_edge_rows_and_padding_queries():
    T = 48
    seg, pre = edge_rows(T)
    got, ref = _both(seg, pre, False, 8, 8)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=3e-6, rtol=1e-5, err_msg=name)
    out, dq = np.asarray(got[0]), np.asarray(got[1])
    assert np.all(out[seg == 0] == 0) and np.all(dq[seg == 0] == 0)  # padding: zeros, zero gradient
    assert np.abs(out[1]).max() == 0  # padding-only row


def test_blocked_bf16_within_bf16_rounding_of_dense():
    seg, pre = edge_rows(48)
    got, ref = _both(seg, pre, False, 8, 16, dtype=jnp.bfloat16)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, atol=3e-2 * max(1.0, np.abs(b).max()), err_msg=name)


def _jaxpr(fn, *args) -> str:
    return str(jax.make_jaxpr(fn)(*args))


def test_backend_uses_blocked_path_for_packed_rows_on_cpu_only(monkeypatch):
    """Packed masks lowered for CPU take the blocked path (key ranges, no [T, T] mask); explicit masks
    (KV cache) and any accelerator lowering (e.g. an AOT TPU compile) keep the dense formulation."""
    T = 40
    seg, pre = edge_rows(T)
    q = jax.random.normal(jax.random.key(0), (4, T, 2, 8))
    packed = AttentionMask.packed(jnp.asarray(seg), jnp.asarray(pre))
    m = prepare(packed, CFG)
    assert m.lo is not None and m.dense is None
    assert "custom_vjp" in _jaxpr(lambda q: attend(q, q, q, m, CFG), q)
    explicit = AttentionMask.explicit(prefix_lm_mask(jnp.asarray(seg), jnp.asarray(pre)))
    assert "custom_vjp" not in _jaxpr(lambda q: attend(q, q, q, explicit, CFG), q)
    np.testing.assert_allclose(np.asarray(attend(q, q, q, m, CFG)), np.asarray(attend(q, q, q, explicit, CFG)),
                               atol=2e-6)
    jax_cfg = dataclasses.replace(CFG, attention_backend="jax")  # shares `prepare`: always the dense mask
    assert prepare(packed, jax_cfg).dense is not None
    monkeypatch.setattr(xla, "lowering_platform", lambda: "tpu")
    m_tpu = prepare(packed, CFG)
    assert m_tpu.dense is not None and m_tpu.lo is None
    assert "custom_vjp" not in _jaxpr(lambda q: attend(q, q, q, m_tpu, CFG), q)


def _key_block_loops(compiled_text: str) -> tuple[int, int]:
    """(forward, backward) key-block loops of the blocked path in a compiled CPU program."""
    count = lambda scope: len(re.findall(rf'while\(.*?op_name="[^"]*{scope}/while"', compiled_text))  # noqa: E731
    return count("blocked_attention_fwd"), count("blocked_attention_bwd")


@pytest.mark.parametrize("remat", ["full", "save_context", "save_dot_except_mlp"])
def test_context_saving_policies_do_not_rerun_the_forward(remat):
    """Scanned remat'd layers (as in blocks.py): policies that save "context" keep the output and logsumexp,
    so the backward pass runs only the backward loops; `full` recomputes the forward. Gradients are equal."""
    T = 40
    seg, pre = edge_rows(T)
    q = jax.random.normal(jax.random.key(0), (4, T, 2, 8))

    def layer(h, wl):
        mask = prepare(AttentionMask.packed(jnp.asarray(seg), jnp.asarray(pre)), CFG)
        return jnp.sin(checkpoint_name(attend(h * wl, h, h, mask, CFG), "context")) * h, None

    def loss(h, w, policy):
        body = layer if policy is None else jax.checkpoint(layer, policy=policy, prevent_cse=False)
        return jnp.sum(jax.lax.scan(body, h, w)[0])

    w = jnp.array([1.0, 0.5])
    step = jax.jit(jax.value_and_grad(lambda h, w: loss(h, w, REMAT_POLICIES[remat]), argnums=(0, 1)))
    fwd, bwd = _key_block_loops(step.lower(q, w).compile().as_text())
    assert bwd >= 1 and fwd == (2 if remat == "full" else 1) * bwd, (fwd, bwd)
    ref = jax.jit(jax.value_and_grad(lambda h, w: loss(h, w, None), argnums=(0, 1)))(q, w)
    for a, b in zip(jax.tree.leaves(step(q, w)), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
