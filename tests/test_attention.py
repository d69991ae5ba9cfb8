"""Attention masks and backends: the PrefixLM rule, key ranges, every backend against the dense `xla` reference."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrm.config import ModelConfig
from hrm.model.attention import BACKENDS, AttentionMask, attend, key_ranges, prefix_lm_mask, prepare

from attention_rows import packed_rows, random_rows

CFG = ModelConfig(vocab_size=64, hidden_size=32, num_heads=2, n_layers=2, compute_dtype="float32")


def test_mask_rule_spelled_out():
    seg, pre = packed_rows([[(4, 9), (3, 8)], [(5, 12), (2, 3)]], 24)
    m = np.asarray(prefix_lm_mask(jnp.asarray(seg), jnp.asarray(pre)))
    for r in range(2):
        for q in range(24):
            for k in range(24):
                expect = seg[r, q] != 0 and seg[r, q] == seg[r, k] and (pre[r, k] == 1 or k <= q)
                assert m[r, q, k] == expect, (r, q, k)
    assert not m[0, 0, 4:9].any() and m[0, 0, :4].all()  # prefix queries never see the response
    assert not m[0, 17:].any()  # padding queries see nothing


@pytest.mark.parametrize("causal", [False, True])
def test_key_ranges_equal_dense_mask(causal):
    rng = np.random.default_rng(0)
    seg, pre = random_rows(rng, 64, 40)
    lo, hi = (np.asarray(a) for a in key_ranges(jnp.asarray(seg), jnp.asarray(pre), causal))
    dense = np.asarray(prefix_lm_mask(jnp.asarray(seg), jnp.asarray(pre), causal_only=causal))
    keys = np.arange(40)
    from_ranges = (keys[None, None, :] >= lo[..., None]) & (keys[None, None, :] < hi[..., None])
    np.testing.assert_array_equal(from_ranges, dense)
    assert np.all(lo[seg == 0] == hi[seg == 0])


def _edge_rows(T: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows covering the edge cases: response of length 1, prefix-only example, padding-only row, one example
    filling the row, several examples crossing block boundaries."""
    return packed_rows([
        [(4, 9), (5, 5), (6, 7), (3, 10)],      # 2nd: prefix only; 3rd: response of length 1
        [],                                      # padding only
        [(T // 3, T)],                           # one example filling the row
        [(2, T // 4), (T // 5, T // 2), (1, 3)],  # examples across block boundaries, trailing padding
    ], T)


@pytest.mark.parametrize("backend", sorted(set(BACKENDS) - {"xla", "splash"}))
def test_backends_match_xla_forward_and_grad(backend):
    T = 48
    seg, pre = _edge_rows(T)
    mask = AttentionMask.packed(jnp.asarray(seg), jnp.asarray(pre))
    q, k, v = (jax.random.normal(kk, (4, T, 2, 16)) for kk in jax.random.split(jax.random.key(3), 3))

    def run(name):
        cfg = dataclasses.replace(CFG, attention_backend=name)
        m = prepare(mask, cfg)

        def loss(q, k, v):
            return jnp.sum(jnp.sin(attend(q, k, v, m, cfg)))
        return attend(q, k, v, m, cfg), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

    ref_out, ref_g = run("xla")
    out, g = run(backend)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=1e-5)
    assert np.all(np.asarray(out)[seg == 0] == 0) and np.all(np.asarray(ref_out)[seg == 0] == 0)
    for a, b in zip(g, ref_g):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_xla_padding_queries_output_zero_and_explicit_mask_equals_packed():
    T = 24
    seg, pre = packed_rows([[(4, 9), (3, 8)], [(5, 12), (2, 3)]], T)
    q = jax.random.normal(jax.random.key(0), (2, T, 2, 16))
    packed = prepare(AttentionMask.packed(jnp.asarray(seg), jnp.asarray(pre)), CFG)
    explicit = AttentionMask.explicit(prefix_lm_mask(jnp.asarray(seg), jnp.asarray(pre)))
    a, b = attend(q, q, q, packed, CFG), attend(q, q, q, explicit, CFG)
    # On CPU packed rows take the block-sparse path, explicit masks the dense one: equal up to fp32 rounding.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(a)[0, 17:] == 0)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown attention backend 'nope'"):
        prepare(AttentionMask.packed(jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4), jnp.int32)),
                dataclasses.replace(CFG, attention_backend="nope"))
