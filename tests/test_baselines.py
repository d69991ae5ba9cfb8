"""The reference's baselines (docs/recurrence.md §3) and the architecture registry: straight-line transcriptions of the
reference forward passes vs our scanned schedules (values and gradients), which parameters get gradient,
KV-cache generation vs the full forward for every architecture, FLOPs, validation, configs and import."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hrm.config import ConfigError, ModelConfig, load_config
from hrm.model import ARCHS, build_model, get_arch
from hrm.model.attention import prefix_lm_mask
from hrm.model.blocks import stack_context
from hrm.model.registry import bp_steps_at, max_bp_steps
from hrm.train import flops
from hrm.train.optim import active_mask

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "golden"
BASE = ModelConfig(vocab_size=64, hidden_size=32, num_heads=2, n_layers=4, compute_dtype="float32", max_seq_len=64)


def _batch(seed=0, B=2, T=24):
    """Two packed rows with two examples each (prefix + response) and padding."""
    rng = np.random.default_rng(seed)
    seg, prefix, pos = (np.zeros((B, T), np.int32) for _ in range(3))
    for b, exs in enumerate([[(4, 9), (3, 8)], [(5, 12), (2, 3)]]):
        s = 0
        for e, (li, n) in enumerate(exs):
            seg[b, s:s + n], prefix[b, s:s + li], pos[b, s:s + n] = e + 1, 1, np.arange(n)
            s += n
    inputs = np.where(seg > 0, rng.integers(1, 64, (B, T)), 0).astype(np.int32)
    loss_mask = ((seg > 0) & (prefix == 0)).astype(np.int32)
    targets = rng.integers(1, 64, (B, T)).astype(np.int32)
    return {k: jnp.asarray(v) for k, v in dict(inputs=inputs, positions=pos, segment_ids=seg, prefix_mask=prefix,
                                                 targets=targets, loss_mask=loss_mask).items()}


def _naive_hidden(m, b):
    """The reference forward passes written out (ref models/baselines/*_nocarry.py), one stack call per step,
    a no-grad step = stop_gradient on its output. Independent of the schedules and scans under test."""
    cfg, sg = m.cfg, jax.lax.stop_gradient
    ctx = stack_context(cfg, b["positions"], prefix_lm_mask(b["segment_ids"], b["prefix_mask"]))
    x = m.embed(b["inputs"], jnp.float32)
    if cfg.arch == "transformer":
        return m.stack(x, ctx)
    z0 = jnp.broadcast_to(m.zL_init[...].astype(jnp.float32), x.shape)
    if cfg.arch == "ut":
        z = z0
        for i in range(cfg.cycles):
            out = m.stack(z + x, ctx)
            z = out if i >= cfg.cycles - cfg.bp_cycles else sg(out)
        return z
    if cfg.arch == "rins":
        z_L = z0
        for i in range(cfg.L_cycles):
            out = m.L(z_L + x, ctx)
            z_L = out if i >= cfg.L_cycles - cfg.L_bp_cycles else sg(out)
        return m.H(z_L, ctx)
    assert cfg.arch == "trm"
    z_H, z_L = x, z0
    for i in range(cfg.H_cycles):
        for k in range(i * cfg.L_cycles, (i + 1) * cfg.L_cycles):
            out = m.stack(z_L + z_H, ctx)
            z_L = out if k >= cfg.H_cycles * cfg.L_cycles - cfg.L_bp_steps else sg(out)
        out = m.stack(z_H + z_L, ctx)
        z_H = out if i >= cfg.H_cycles - cfg.H_bp_steps else sg(out)
    return z_H


CASES = {
    "transformer": dict(arch="transformer", n_layers=2),
    "ut": dict(arch="ut", n_layers=2, cycles=3, bp_cycles=1),
    "rins": dict(arch="rins", L_cycles=4, L_bp_cycles=2),
    "rins_L_frozen": dict(arch="rins", L_cycles=3, L_bp_cycles=0),
    "trm": dict(arch="trm", H_cycles=3, L_cycles=2, H_bp_steps=3, L_bp_steps=3),
    "trm_1b_horizon": dict(arch="trm", H_cycles=2, L_cycles=1, H_bp_steps=1, L_bp_steps=1),
}
EXPECTED_GRAD = {"transformer": {"embed", "stack", "head"}, "ut": {"embed", "stack", "head"},
                 "rins": {"embed", "L", "H", "head"}, "rins_L_frozen": {"H", "head"},
                 "trm": {"embed", "stack", "head"}, "trm_1b_horizon": {"stack", "head"}}


def test_registry():
    assert sorted(ARCHS) == ["hrm", "rins", "transformer", "trm", "ut"]
    with pytest.raises(ConfigError, match="model.arch.*choose one of hrm, rins, transformer, trm, ut"):
        get_arch("looped")
    for name, spec in ARCHS.items():
        cfg = dataclasses.replace(BASE, arch=name)
        m = nnx.eval_shape(lambda: build_model(cfg))
        assert type(m) is spec.model and {s for s in spec.stacks} <= set(vars(m))
        assert set(spec.reference_stacks) == set(spec.stacks)


# The biggest cases are slow (CI budget); the golden fixtures check rins and trm end to end.
SLOW_CASES = ("rins", "trm", "trm_1b_horizon")


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c
                                  for c in sorted(CASES)])
def test_schedule_matches_reference_transcription(case):
    cfg = dataclasses.replace(BASE, **CASES[case])
    model = build_model(cfg)
    b = _batch()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p, naive):
        m = nnx.merge(graphdef, p, rest)
        h = _naive_hidden(m, b) if naive else m.hidden(b["inputs"], b["positions"], b["segment_ids"], b["prefix_mask"])
        lp = jax.nn.log_softmax(m.head(h).astype(jnp.float32))
        ce = -jnp.take_along_axis(lp, b["targets"][..., None], -1)[..., 0]
        return jnp.sum(ce * b["loss_mask"]) / jnp.sum(b["loss_mask"])

    (l_ours, g_ours), (l_ref, g_ref) = (jax.value_and_grad(loss)(params, naive) for naive in (False, True))
    np.testing.assert_allclose(float(l_ours), float(l_ref), rtol=1e-6)
    active = get_arch(cfg.arch).grad_params(cfg, None)
    assert active == EXPECTED_GRAD[case]
    for (path, a), (_, r) in zip(nnx.to_flat_state(g_ours), nnx.to_flat_state(g_ref)):
        a, r = np.asarray(a[...]), np.asarray(r[...])
        np.testing.assert_allclose(a, r, rtol=2e-4, atol=1e-6 * max(1.0, np.abs(r).max()), err_msg=str(path))
        assert (np.abs(r).max() > 0) == (str(path[0]) in active), path  # frozen <=> structurally zero gradient
    # The optimiser's mask over the trainer's pure-dict params says the same, leaf by leaf.
    mask = active_mask(nnx.to_pure_dict(params), cfg, None)
    assert {top: set(jax.tree.leaves(sub)) for top, sub in mask.items()} == \
        {top: {top in active} for top in mask}
    assert all(jax.tree.leaves(active_mask(nnx.to_pure_dict(params), cfg, None, freeze_absent=False)))


def _full_logits(model, prompts, outs):
    seqs = [p + o[:-1] for p, o in zip(prompts, outs)]
    T = max(map(len, seqs))
    ids, seg, prefix = (np.zeros((len(seqs), T), np.int32) for _ in range(3))
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        ids[i, :len(s)], seg[i, :len(s)], prefix[i, :len(p)] = s, 1, 1
    pos = np.broadcast_to(np.arange(T, dtype=np.int32), ids.shape)
    out = np.asarray(jax.jit(model.__call__)(*(jnp.asarray(a) for a in (ids, pos, seg, prefix))))
    return [out[i, len(p) - 1:len(s)] for i, (p, s) in enumerate(zip(prompts, seqs))]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_kv_cache_generation_matches_full_forward(arch):
    """Every application has its own cache slot: cached greedy decoding == argmax of the full PrefixLM forward."""
    from hrm.eval.generate import Generator

    case = {"hrm": dict(arch="hrm", H_cycles=2, L_cycles=2), "transformer": CASES["transformer"],
            "ut": CASES["ut"], "rins": dict(arch="rins", L_cycles=3, L_bp_cycles=1),
            "trm": CASES["trm"]}.get(arch, dict(arch=arch))  # a new architecture: its config defaults
    cfg = dataclasses.replace(BASE, vocab_size=128, max_seq_len=128, **case)
    model = build_model(cfg, seed=3)
    spec = get_arch(arch)
    k, _ = model.init_cache(2, 16, jnp.float32)
    cycles, slots, layers = spec.cache_layout(cfg)
    assert k.shape == (cycles, slots, layers, 2, 16, cfg.num_heads, cfg.resolved_head_dim)
    assert cycles * slots == len(spec.applications(cfg, None))  # one slot per application, none shared
    rng = np.random.default_rng(0)
    prompts = [rng.integers(12, 128, size=n).tolist() for n in (5, 11, 3)]
    gen = Generator(model, eoa_id=None, max_context=40, batch_size=4, cache_dtype=jnp.float32, min_bucket=16)
    outs, logits = gen.generate(prompts, 8, return_logits=True)
    for out, lg, ref in zip(outs, logits, _full_logits(model, prompts, outs)):
        assert len(out) == 8
        np.testing.assert_allclose(lg, ref, atol=2e-5, rtol=0)
        assert (ref.argmax(-1) == np.array(out)).all()


def test_flops_count_every_application():
    XL = dict(vocab_size=65536, hidden_size=1536, num_heads=12)
    per_layer = 5 * 1536 ** 2 + 3 * 1536 * 4096
    head = 6 * 65536 * 1536
    cases = [  # (config, applications, gradient applications, layers per application)
        (ModelConfig(arch="ut", n_layers=32, cycles=4, bp_cycles=2, **XL), 4, 2, 32),
        (ModelConfig(arch="rins", n_layers=32, L_cycles=7, L_bp_cycles=4, **XL), 8, 5, 16),
        (ModelConfig(arch="trm", n_layers=32, half_layers=False, H_cycles=2, L_cycles=1, H_bp_steps=1,
                     L_bp_steps=1, **XL), 4, 2, 32),
        (ModelConfig(arch="trm", n_layers=32, H_cycles=2, L_cycles=3, H_bp_steps=2, L_bp_steps=3, **XL), 8, 5, 16),
    ]
    for cfg, n, g, layers in cases:
        d = flops.flops_per_step(cfg, 2, 1.0)  # bp_steps is HRM's: ignored by fixed-horizon architectures
        assert (d["n_applications"], d["n_grad_applications"]) == (n, g), cfg.arch
        assert d["total_excl_attention"] == pytest.approx((2 * n + 4 * g) * layers * per_layer + head)
    # TRM with HRM's final pattern costs what HRM costs at bp 5 (same stack size, same schedule).
    hrm = ModelConfig(arch="hrm", n_layers=32, **XL)
    assert flops.flops_per_token(cases[3][0], None) == pytest.approx(flops.flops_per_token(hrm, 5))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_total_params_counts_the_model(arch):
    cfg = dataclasses.replace(BASE, arch=arch)
    params = nnx.state(nnx.eval_shape(lambda: build_model(cfg)), nnx.Param)
    assert flops.total_params(cfg) == sum(x.size for x in jax.tree.leaves(params))


def test_bp_schedule_per_architecture():
    hrm = ModelConfig(arch="hrm")
    assert [bp_steps_at(hrm, s, 300) for s in (1, 20, 40, 60)] == [2, 3, 4, 5] and max_bp_steps(hrm) == 5
    for arch in ("transformer", "ut", "rins", "trm"):
        cfg = ModelConfig(arch=arch)
        assert bp_steps_at(cfg, 1, 300) is None and max_bp_steps(cfg) is None
    # HRM's frozen embedding at bp 2 (docs/recurrence.md §2.4) through the same rule
    assert get_arch("hrm").grad_params(hrm, 2) == {"H", "L", "head"}
    assert get_arch("hrm").grad_params(hrm, 3) == {"H", "L", "head", "embed"}


@pytest.mark.parametrize("override,key", [
    ("model.bp_cycles=5", "model.bp_cycles"), ("model.cycles=0", "model.cycles"),
    ("model.arch=rins model.L_bp_cycles=8", "model.L_bp_cycles"),
    ("model.arch=rins model.n_layers=5", "model.n_layers"),
    ("model.arch=trm model.H_bp_steps=3", "model.H_bp_steps"),
    ("model.arch=trm model.L_bp_steps=7", "model.L_bp_steps"),
    ("model.arch=nope", "model.arch"),
])
def test_validation_names_the_key(override, key):
    overrides = override.split() if override.startswith("model.arch") else ["model.arch=ut", override]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, overrides)


@pytest.mark.parametrize("name,arch,layers,apps", [("ut.yaml", "ut", 32, 4), ("rins.yaml", "rins", 16, 8),
                                                   ("trm.yaml", "trm", 32, 4),
                                                   ("trm_match_recurrence.yaml", "trm", 16, 8),
                                                   ("transformer.yaml", "transformer", 32, 1)])
def test_paper_configs(name, arch, layers, apps):
    cfg = load_config(REPO / "configs" / name).model
    assert (cfg.arch, cfg.hidden_size, cfg.layers_per_stack) == (arch, 1536, layers)
    assert len(get_arch(arch).applications(cfg, None)) == apps


@pytest.mark.parametrize("arch", ["ut", "rins", "trm"])
def test_from_reference_imports_baselines(arch, tmp_path):
    from hrm.convert.__main__ import main as convert_main
    from hrm.convert.ckpt_io import model_from_flat, read_checkpoint
    from hrm.tools.parity import packed_batch_from_golden

    z = np.load(FIXTURES / f"{arch}_mini.npz")
    assert convert_main(["from-reference", str(FIXTURES / f"{arch}_mini.npz"), str(tmp_path / "npz")]) == 0
    # A reference run directory: state dict + all_config.yaml whose `name` names the model class.
    meta = json.loads(str(z["meta_json"]))
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "model.npz", **{k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")})
    module = get_arch(arch).reference_module
    (run / "all_config.yaml").write_text(json.dumps({"arch": {**meta["config"], "name": f"baselines.{module}@X"}}))
    assert convert_main(["from-reference", str(run / "model.npz"), str(tmp_path / "run_out")]) == 0
    real = int(z["scalar/total_seqlen"])
    b = packed_batch_from_golden(z)
    for out in ("npz", "run_out"):
        cfg, params, buffers, _ = read_checkpoint(tmp_path / out)
        assert cfg.model.arch == arch
        model = model_from_flat(dataclasses.replace(cfg.model, compute_dtype="float32"), params, buffers)
        with jax.default_matmul_precision("highest"):
            logits = model(*(jnp.asarray(b[k]) for k in ("inputs", "positions", "segment_ids", "prefix_mask")))
        np.testing.assert_allclose(np.asarray(logits[0, :real]), z["logits"][:real], atol=1e-4)


def test_from_reference_refuses_ambiguous_or_foreign_tensors(tmp_path, capsys):
    from hrm.convert.__main__ import main as convert_main

    z = np.load(FIXTURES / "ut_mini.npz")
    bare = tmp_path / "bare.npz"  # UT and TRM share names: without a config the architecture is unknown
    np.savez(bare, **{k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")})
    assert convert_main(["from-reference", str(bare), str(tmp_path / "o1")]) == 2
    assert "cannot tell the architecture" in capsys.readouterr().err
    # RINS weights declared as UT: its H stack has no place in UT, so nothing is silently dropped
    r = np.load(FIXTURES / "rins_mini.npz")
    meta = json.loads(str(z["meta_json"]))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, meta_json=json.dumps(meta), **{k: r[k] for k in r.files if k.startswith("param/")})
    assert convert_main(["from-reference", str(wrong), str(tmp_path / "o2")]) == 2
    assert "no tensors under 'model.L_level.core.layers.*'" in capsys.readouterr().err
