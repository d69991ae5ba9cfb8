"""`splash` attention (block-sparse PrefixLM Pallas kernels) against the dense `xla` reference.

On CPU the kernels run in Pallas interpret mode: the same kernel code as on TPU, executed by XLA. Shapes
are tiny (blocks of 8-16, T of 37-48) so that several q/k blocks, padding and skipped blocks occur.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from hrm.config import MeshConfig, ModelConfig
from hrm.mesh import make_mesh
from hrm.model import build_model
from hrm.model.attention import AttentionMask, attend, key_ranges, prefix_lm_mask, prepare
from hrm.model.attention import splash
from hrm.model.blocks import REMAT_POLICIES
from hrm.sharding import activation_rules

from attention_rows import edge_rows, packed_rows

CFG = ModelConfig(vocab_size=64, hidden_size=32, num_heads=2, n_layers=2, compute_dtype="float32",
                  max_seq_len=64, attention_block_q=16, attention_block_kv=16)


def _cfg(backend: str, **kw) -> ModelConfig:
    return dataclasses.replace(CFG, attention_backend=backend, **kw)


def _run(backend: str, seg, pre, q, k, v, w, causal=False, **kw):
    """(output, (dq, dk, dv)) of sum(out * w) under one jit, with `backend`'s prepare + attend."""
    cfg = _cfg(backend, **kw)

    @jax.jit
    def f(q, k, v):
        mask = prepare(AttentionMask.packed(jnp.asarray(seg), jnp.asarray(pre), causal=causal), cfg)

        def loss(q, k, v):
            out = attend(q, k, v, mask, cfg)
            return jnp.sum(out.astype(jnp.float32) * w), out
        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        return out, grads

    out, grads = f(q, k, v)
    return np.asarray(out, np.float32), [np.asarray(g, np.float32) for g in grads]


def _inputs(shape, dtype=jnp.float32, seed=3):
    ks = jax.random.split(jax.random.key(seed), 4)
    q, k, v = (jax.random.normal(kk, shape, jnp.float32).astype(dtype) for kk in ks[:3])
    return q, k, v, jax.random.normal(ks[3], shape, jnp.float32)


@pytest.mark.parametrize("causal,T,bq,bk", [(False, 40, 16, 16), (True, 37, 8, 16)])
def test_matches_xla_fp32_forward_and_grads(causal, T, bq, bk):
    """fp32: same math, different summation order (online softmax over blocks, fp32 MXU-style dots), so
    agreement to ~1e-6 is expected; 1e-5 leaves margin for accumulation over <= 6 blocks of O(1) values."""
    seg, pre = edge_rows(T)
    q, k, v, w = _inputs((4, T, 2, 16))
    ref_out, ref_g = _run("xla", seg, pre, q, k, v, w, causal)
    out, g = _run("splash", seg, pre, q, k, v, w, causal, attention_block_q=bq, attention_block_kv=bk)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-5)
    for name, a, b in zip("qkv", g, ref_g):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=f"d{name}")
    pad = seg == 0
    assert np.all(out[pad] == 0) and np.all(np.isfinite(out))  # padding queries: zeros, not NaN
    for a in g:  # padding tokens neither see nor are seen: exactly zero gradients
        assert np.all(a[pad] == 0) and np.all(np.isfinite(a))


def test_bf16_as_accurate_as_dense_bf16():
    """bf16 inputs: both backends round probabilities to bf16 before P @ V and return bf16, so each is
    off the fp32 result by O(2^-8) relative. Tolerance: splash's error against the fp32 reference (on the
    same bf16-rounded inputs) is at most 2x the dense bf16 backend's error plus 2^-9 absolute, i.e. the
    kernel adds no error beyond bf16 rounding of the same order; plus an absolute sanity bound."""
    T = 40
    seg, pre = edge_rows(T)
    q, k, v, w = _inputs((4, T, 2, 16), jnp.bfloat16)
    ref_out, ref_g = _run("xla", seg, pre, *(x.astype(jnp.float32) for x in (q, k, v)), w)
    x_out, x_g = _run("xla", seg, pre, q, k, v, w)
    s_out, s_g = _run("splash", seg, pre, q, k, v, w)
    for name, s, x, r in [("out", s_out, x_out, ref_out)] + list(zip(("dq", "dk", "dv"), s_g, x_g, ref_g)):
        err_s, err_x = np.abs(s - r).max(), np.abs(x - r).max()
        scale = np.abs(r).max()
        assert err_s <= 2 * err_x + 2 ** -9 * scale, (name, err_s, err_x)
        assert err_s <= 2 ** -5 * scale, (name, err_s, scale)
    assert np.all(s_out[seg == 0] == 0) and all(np.all(a[seg == 0] == 0) for a in s_g)


def test_skipped_blocks_are_never_read():
    """Three examples of exactly one block each: q-block i may only touch k-block i. NaN keys/values/queries
    in block 2 would poison every other block's output and gradients (0 * NaN = NaN in the block matmuls)
    if any kernel computed a pair (i, 2) or (2, i) with i < 2."""
    T, blk = 48, 16
    seg, pre = packed_rows([[(4, 16), (16, 16), (3, 16)]], T)
    q, k, v, w = _inputs((1, T, 1, 16))
    q, k, v = (x.at[:, 32:].set(jnp.nan) for x in (q, k, v))
    out, grads = _run("splash", seg, pre, q, k, v, w, attention_block_q=blk, attention_block_kv=blk)
    for x in [out] + grads:
        assert np.isfinite(x[:, :32]).all()
    assert np.isnan(out[:, 32:]).all()  # the poison is real where it is legitimately read


def test_block_counts_occupancy_and_flops():
    """The forward computes, per (row, q-block), the k-blocks spanned by its queries' ranges: never fewer
    than the blocks holding a visible pair (exactness) and, for short packed examples, far fewer than all."""
    T, bq, bk = 256, 32, 32
    rng = np.random.default_rng(0)
    layouts = []
    for _ in range(6):
        exs, s = [], 0
        while s < T - 8:
            n = int(min(rng.integers(4, 60), T - s))
            exs.append((int(rng.integers(0, n + 1)), n))
            s += n
        layouts.append(exs)
    seg, pre = packed_rows(layouts, T)
    lo, hi, dense = (np.asarray(x) for x in jax.jit(lambda s, p: key_ranges(s, p) + (prefix_lm_mask(s, p),))(seg, pre))
    pairs = dense.reshape(6, T // bq, bq, T // bk, bk).any(axis=(2, 4))  # blocks holding a visible pair
    counts = splash.block_counts(lo, hi, bq, bk)
    assert counts["block_q"] == bq and counts["block_kv"] == bk and counts["dense"] == 6 * (T // bq) * (T // bk)
    assert pairs.sum() <= counts["fwd"] <= counts["dense"] and pairs.sum() <= counts["dkv"] <= counts["dense"]
    # the run per q-block spans exactly its first to last needed k-block (examples are contiguous)
    first, last = pairs.argmax(-1), pairs.shape[-1] - pairs[..., ::-1].argmax(-1)
    assert counts["fwd"] == int(np.where(pairs.any(-1), last - first, 0).sum())
    occ = splash.block_occupancy(lo, hi, bq, bk)
    assert occ == counts["fwd"] / counts["dense"] and occ < 0.5
    flops = splash.kernel_flops(counts, num_heads=3, head_dim=64)
    assert flops["fwd"] == 4 * bq * bk * 64 * 3 * counts["fwd"]
    assert flops["bwd"] == flops["dq"] + flops["dkv"] == (6 * counts["fwd"] + 8 * counts["dkv"]) * bq * bk * 64 * 3


def test_sharded_under_mesh_matches_dense_reference():
    """Inside jit under a (data 2, fsdp 2, tensor 2) mesh with activation rules the kernel runs per shard in
    shard_map (batch over data x fsdp, heads over tensor); 3 heads do not divide tensor=2 and stay
    replicated, which must not change the gradients either (no double counting across tensor)."""
    mc = MeshConfig(data=2, fsdp=2, tensor=2)
    T = 40
    seg, pre = edge_rows(T)
    inputs = [_inputs(s, seed=i) for i, s in enumerate([(4, T, 2, 16), (4, T, 3, 16)])]

    def f(qkvs, backend):
        cfg = _cfg(backend)
        with activation_rules(mc.rules):
            mask = prepare(AttentionMask.packed(jnp.asarray(seg), jnp.asarray(pre)), cfg)

            def loss(qkvs):
                outs = [attend(q, k, v, mask, cfg) for q, k, v in qkvs]
                return sum(jnp.sum(o * w) for o, (_, _, _, w) in zip(outs, inputs)), outs
            return jax.value_and_grad(loss, has_aux=True)(qkvs)

    qkvs = [x[:3] for x in inputs]
    (_, ref_outs), ref_g = jax.jit(f, static_argnums=1)(qkvs, "xla")
    with jax.set_mesh(make_mesh(mc)):
        assert str(jax.make_jaxpr(f, static_argnums=1)(qkvs, "splash")).count("shard_map[") >= 2, "not sharded"
        (_, outs), g = jax.jit(f, static_argnums=1)(qkvs, "splash")
    for a, b in zip(jax.tree.leaves((outs, g)), jax.tree.leaves((ref_outs, ref_g))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def _kernel_loops(compiled_text: str) -> dict[str, int]:
    """Kernel calls in a compiled CPU program: each interpreted pallas_call is one while loop named after it."""
    names = re.findall(r'while\(.*?op_name="[^"]*(splash_prefix_lm_\w+)\)*/while"', compiled_text)
    return {n: names.count(n) for n in set(names)}


@pytest.mark.parametrize("remat,fwd_calls", [("full", 2), ("save_dot_except_mlp", 1)])
def test_policies_saving_context_do_not_rerun_forward_kernel(remat, fwd_calls):
    """Scanned remat'd layers (as in blocks.py): policies that save "context" keep the kernel's output and
    logsumexp, so the backward loop runs only the dq and dk/dv kernels; `full` recomputes the forward."""
    T = 40
    seg, pre = edge_rows(T)
    cfg = _cfg("splash")
    q, _, _, _ = _inputs((4, T, 2, 16))

    def layer(h, wl):
        mask = prepare(AttentionMask.packed(jnp.asarray(seg), jnp.asarray(pre)), cfg)
        return jnp.sin(checkpoint_name(attend(h * wl, h, h, mask, cfg), "context")) * h, None

    body = jax.checkpoint(layer, policy=REMAT_POLICIES[remat], prevent_cse=False)
    step = jax.jit(jax.value_and_grad(lambda h, w: jnp.sum(jax.lax.scan(body, h, w)[0]), argnums=(0, 1)))
    text = step.lower(q, jnp.array([1.0, 0.5])).compile().as_text()
    names, loops = splash.KERNEL_NAMES, _kernel_loops(text)
    assert loops[names["dq"]] == loops[names["dkv"]] >= 1, loops
    assert loops[names["fwd"]] == fwd_calls * loops[names["dq"]], loops


def test_whole_model_same_logits_and_gradients_as_xla():
    """A tiny HRM (fp32, one H and one L step, T=24 not a multiple of the 16-blocks) with splash equals the
    model with xla: logits and every parameter gradient."""
    T = 24
    seg, pre = packed_rows([[(4, 9), (3, 8)], [(5, 12), (2, 3)]], T)
    rng = np.random.default_rng(0)
    pos = np.zeros_like(seg)
    for b in range(2):
        for s in np.unique(seg[b][seg[b] > 0]):
            pos[b, seg[b] == s] = np.arange((seg[b] == s).sum())
    inputs = jnp.asarray(np.where(seg > 0, rng.integers(1, 64, seg.shape), 0).astype(np.int32))
    out = {}
    for backend in ("xla", "splash"):
        model = build_model(_cfg(backend, H_cycles=1, L_cycles=1, bp_max_steps=2))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def loss(p):
            logits = nnx.merge(graphdef, p, rest)(inputs, jnp.asarray(pos), jnp.asarray(seg), jnp.asarray(pre), 2)
            return jnp.sum(jnp.sin(logits)), logits
        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        out[backend] = (logits, grads)
    np.testing.assert_allclose(np.asarray(out["splash"][0]), np.asarray(out["xla"][0]), atol=2e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out["splash"][1]), jax.tree.leaves(out["xla"][1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=1e-4)


def test_explicit_masks_use_dense_path_and_tpu_shape_errors_are_clear(monkeypatch):
    """KV-cache masks go to xla; on TPU, block sizes and head dims the kernel cannot tile name the config key."""
    T = 12
    q, k, v, _ = _inputs((2, T, 2, 16))
    m = AttentionMask.explicit(jnp.tril(jnp.ones((2, T, T), bool)))
    assert splash.prepare(m, _cfg("splash")) is m
    np.testing.assert_array_equal(np.asarray(attend(q, k, v, m, _cfg("splash"))),
                                  np.asarray(attend(q, k, v, m, _cfg("xla"))))
    packed = splash.prepare(AttentionMask.packed(jnp.ones((2, T), jnp.int32), jnp.zeros((2, T), jnp.int32)), CFG)
    assert packed.lo is not None and packed.hi is not None
    assert splash.lowering_platform() == "cpu"
    monkeypatch.setattr(splash, "lowering_platform", lambda: "tpu")
    with pytest.raises(ValueError, match="model.attention_block_q"):
        splash._params(256, 128, 2, _cfg("splash", attention_block_q=64))
    with pytest.raises(ValueError, match="model.head_dim"):
        splash._params(256, 64, 2, _cfg("splash", attention_block_q=128, attention_block_kv=128))
    assert splash._params(1000, 128, 2, _cfg("splash", attention_block_q=512, attention_block_kv=256)) == (
        splash.KernelParams(512, 256, interpret=False), 1024)


@pytest.mark.tpu_backend
def test_compiles_for_tpu_topology_with_pallas_custom_calls():
    """AOT compile (libtpu, no TPU needed) of a remat'd, scanned fwd+bwd at head_dim 128, bf16, T=1024 on a
    v5p:2x2x1 mesh (data 2, fsdp 2): Mosaic kernels (tpu_custom_call) for forward, dq and dk/dv, and no
    forward rerun in the backward pass under a policy that saves "context"."""
    if importlib.util.find_spec("libtpu") is None:
        pytest.skip("libtpu not installed (pip install 'jax[tpu]==0.10.2' enables AOT TPU compilation)")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies
    try:
        devices = topologies.get_topology_desc(platform="tpu", topology_name="v5p:2x2x1").devices
    except Exception as e:
        pytest.skip(f"TPU topology unavailable: {type(e).__name__}: {e}")
    mc = MeshConfig(data=2, fsdp=2, tensor=1)
    mesh = make_mesh(mc, devices)
    B, T, N, H = 4, 1024, 2, 128
    cfg = dataclasses.replace(_cfg("splash"), attention_block_q=512, attention_block_kv=512)
    seg, pre = packed_rows([[(100, 300), (50, 400), (10, 200)], [(500, 1024)], [], [(1, 2)] * 300], T)

    def layer(h, wl):
        mask = prepare(AttentionMask.packed(jnp.asarray(seg), jnp.asarray(pre)), cfg)
        return checkpoint_name(attend(h * wl, h, h, mask, cfg), "context") * h, None

    def loss(h, w):
        with activation_rules(mc.rules):
            body = jax.checkpoint(layer, policy=REMAT_POLICIES["save_dot_except_mlp"], prevent_cse=False)
            return jnp.sum(jax.lax.scan(body, h, w)[0].astype(jnp.float32))

    P, NS = jax.sharding.PartitionSpec, jax.sharding.NamedSharding
    h = jax.ShapeDtypeStruct((B, T, N, H), jnp.bfloat16, sharding=NS(mesh, P(("data", "fsdp"))))
    w = jax.ShapeDtypeStruct((2,), jnp.bfloat16, sharding=NS(mesh, P()))
    with jax.set_mesh(mesh):
        text = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(h, w).compile().as_text()
    calls = _custom_calls(text)
    names = splash.KERNEL_NAMES
    # one forward per dq and per dk/dv call: the backward loop does not rerun the forward kernel (XLA may
    # unroll the 2-layer loops, so compare counts rather than expect exactly one of each)
    assert calls[names["fwd"]] == calls[names["dq"]] == calls[names["dkv"]] >= 1, calls


def _custom_calls(hlo_text: str) -> dict[str, int]:
    """Mosaic kernels in compiled TPU HLO: `tpu_custom_call` instructions, named after the pallas_call."""
    found = {name: 0 for name in splash.KERNEL_NAMES.values()}
    for line in hlo_text.splitlines():
        if 'custom_call_target="tpu_custom_call"' in line:
            inst = line.split("=", 1)[0].strip().lstrip("%")
            kernel = [n for n in found if inst.startswith(n)]
            assert len(kernel) == 1, f"unexpected TPU custom call {inst}"
            found[kernel[0]] += 1
    return found
