"""Chunked LM loss: the same sums and gradients as the plain logits path, without [B, T, V] logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrm.model.loss import chunked_lm_loss_sums, lm_loss_sums


def _problem(B=3, T=32, D=16, V=40, seed=0):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(D, V)) / 4, jnp.float32)
    seg = np.zeros((B, T), np.int32)
    seg[0, :10], seg[0, 10:25], seg[1, :T] = 1, 2, 1
    seg[2, :5] = 1
    mask = (seg > 0) & (rng.random((B, T)) > 0.3)
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    # make some examples fully right so exact accuracy is not trivially 0
    logits = np.asarray(z @ w)
    targets[0, :10] = logits[0, :10].argmax(-1)
    targets[2] = logits[2].argmax(-1)
    return z, w, jnp.asarray(targets), jnp.asarray(mask.astype(np.int32)), jnp.asarray(seg)


@pytest.mark.parametrize("chunk", [0, 8, 16, 32])
def test_chunked_sums_equal_plain_sums(chunk):
    z, w, t, m, seg = _problem()
    ref = lm_loss_sums(jnp.einsum("btd,dv->btv", z, w), t, m, seg)
    got = chunked_lm_loss_sums(z, w, t, m, seg, chunk)
    assert float(ref["seq_correct"]) >= 2 and float(ref["seq_correct"]) < float(ref["seq_count"])
    for k in ref:
        np.testing.assert_allclose(float(got[k]), float(ref[k]), rtol=1e-6, err_msg=k)


def test_chunked_gradients_equal_plain_gradients():
    z, w, t, m, seg = _problem()

    def plain(z, w):
        return lm_loss_sums(jnp.einsum("btd,dv->btv", z, w), t, m, seg)["loss_sum"]

    def chunked(z, w):
        return chunked_lm_loss_sums(z, w, t, m, seg, 8)["loss_sum"]

    for a, b in zip(jax.grad(plain, argnums=(0, 1))(z, w), jax.grad(chunked, argnums=(0, 1))(z, w)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_chunked_loss_never_materialises_full_logits():
    """The compiled chunked loss+grad has no [B, T, V] array; the plain one does."""
    B, T, D, V = 2, 256, 16, 4099  # V and T chosen so that B*T*V appears only as the full logits
    z = jnp.zeros((B, T, D))
    w = jnp.zeros((D, V))
    t = jnp.zeros((B, T), jnp.int32)
    m = jnp.ones((B, T), jnp.int32)
    seg = jnp.ones((B, T), jnp.int32)

    def hlo(chunk):
        f = jax.grad(lambda z, w: chunked_lm_loss_sums(z, w, t, m, seg, chunk)["loss_sum"], argnums=(0, 1))
        return jax.jit(f).lower(z, w).compile().as_text()

    assert f"[{B},{T},{V}]" in hlo(0)
    assert f"[{B},{T},{V}]" not in hlo(64) and f"[{B},64,{V}]" in hlo(64)


def test_chunk_must_divide_the_sequence():
    z, w, t, m, seg = _problem()
    with pytest.raises(ValueError, match="does not divide the sequence length 32"):
        chunked_lm_loss_sums(z, w, t, m, seg, 12)
