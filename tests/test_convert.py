"""Checkpoint interop (docs/checkpoints.md): transformers folder round trip, parity tool on golden/hf_tiny, reference
(.npz) import with EMA, the written training-state layout, config validation and sharded safetensors."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from hrm.convert.__main__ import main as convert_main
from hrm.convert.ckpt_io import config_from_meta, model_from_flat, read_checkpoint, read_meta
from hrm.convert.hf import model_config_from_hf, read_safetensors_dir
from hrm.convert.layouts import ConversionError, canonical_from_hf
from hrm.model import build_model, get_arch
from hrm.tools.parity import packed_batch_from_golden
from hrm.train.checkpoint import load_params, resolve_step_dir


@pytest.fixture(scope="module")
def hf_tiny(fixture_golden_dir):
    """tests/golden/hf_tiny: byte copy of the golden release's transformers-format fixture (sha256 in test_parity)."""
    return fixture_golden_dir / "hf_tiny"


@pytest.fixture(scope="module")
def converted(hf_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "ours"
    assert convert_main(["from-hf", str(hf_tiny), str(out)]) == 0
    return out


def test_round_trip_is_bit_exact(hf_tiny, converted, tmp_path):
    # No --dtype: the checkpoint's parameter dtype (float32) is kept, so the fp32 fixture round-trips exactly.
    assert convert_main(["to-hf", str(converted), str(tmp_path / "hf")]) == 0
    ref, new = read_safetensors_dir(hf_tiny), read_safetensors_dir(tmp_path / "hf")
    assert set(ref) == set(new)
    for k in ref:
        assert new[k].dtype == ref[k].dtype and np.array_equal(new[k], ref[k]), k
    want = json.loads((hf_tiny / "config.json").read_text())
    got = json.loads((tmp_path / "hf/config.json").read_text())
    want.pop("transformers_version")
    assert got == want
    assert convert_main(["to-hf", str(converted), str(tmp_path / "hf16"), "--dtype", "bfloat16"]) == 0
    bf = read_safetensors_dir(tmp_path / "hf16")
    assert all(v.dtype == ml_dtypes.bfloat16 for v in bf.values())
    assert np.array_equal(bf["lm_head.weight"], ref["lm_head.weight"].astype(ml_dtypes.bfloat16))
    assert json.loads((tmp_path / "hf16/config.json").read_text())["dtype"] == "bfloat16"


def test_exported_folder_loads_in_transformers(converted, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    convert_main(["to-hf", str(converted), str(tmp_path / "hf"), "--dtype", "float32"])
    m = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    assert m.config.model_type == "hrm_text"


def test_written_layout_serves_trainer_and_eval(converted, hf_tiny):
    step = resolve_step_dir(converted)
    assert step.name == "0" and (converted / "hf_config.json").is_file()
    meta = read_meta(step)
    cfg = config_from_meta(meta)
    assert meta["source"]["format"] == "hf" and cfg.model.layers_per_stack == 2 and cfg.model.head_dim == 64
    # What train.py `init_from` does: partial restores of params / opt_state.ema / buffers (bf16 zL_init).
    graphdef, p_abs, b_abs = nnx.split(nnx.eval_shape(lambda: build_model(cfg.model)), nnx.Param, ...)
    sh = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = lambda t: jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),  # noqa: E731
                                    nnx.to_pure_dict(t))
    ema = load_params(converted, target(p_abs), use_ema=True)
    raw = load_params(converted, target(p_abs), use_ema=False)
    buf = load_params(converted, target(b_abs), use_ema=False, params_key=("buffers",))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), ema, raw))
    assert buf["zL_init"].dtype == jnp.bfloat16
    z = read_safetensors_dir(hf_tiny)["model.z_L_init"]
    np.testing.assert_allclose(np.asarray(buf["zL_init"], np.float32), z, atol=1e-2)
    _, params, buffers, _ = read_checkpoint(converted)
    assert np.array_equal(np.asarray(buffers[("zL_init",)]), z)  # stored exactly (fp32 source)


def test_parity_tool_on_hf_tiny(hf_tiny, capsys):
    from hrm.tools.parity import main

    assert main([str(hf_tiny)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("PARITY OK")
    assert any(line.startswith("gen/tokens_cached") for line in lines)


def test_split_names_and_sharded_files(hf_tiny, tmp_path):
    from safetensors.numpy import save_file

    stacks = get_arch("hrm").hf_stacks
    fused = canonical_from_hf(read_safetensors_dir(hf_tiny), stacks)
    split = canonical_from_hf(read_safetensors_dir(hf_tiny / "split"), stacks)
    for s in ("H", "L"):
        for a, b in zip(fused["stacks"][s], split["stacks"][s]):
            assert all(np.array_equal(a[k], b[k]) for k in a)
    tensors = read_safetensors_dir(hf_tiny)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for f, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / f))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}))
    shutil.copy(hf_tiny / "config.json", tmp_path / "config.json")
    back = read_safetensors_dir(tmp_path)
    assert set(back) == set(tensors) and all(np.array_equal(back[k], tensors[k]) for k in back)


@pytest.mark.parametrize("key,value", [("num_key_value_heads", 1), ("tie_word_embeddings", True),
                                       ("prefix_lm", False), ("hidden_act", "gelu")])
def test_unrepresentable_config_is_rejected(hf_tiny, key, value):
    hf = json.loads((hf_tiny / "config.json").read_text())
    hf[key] = value
    with pytest.raises(ConversionError, match=key):
        model_config_from_hf(hf)


def test_exporter_schema_config():
    """The reference exporter writes the total layer count and a top-level rope_theta (docs/checkpoints.md §2)."""
    m = model_config_from_hf({"vocab_size": 512, "hidden_size": 256, "num_attention_heads": 2,
                              "num_key_value_heads": 2, "num_hidden_layers": 8, "intermediate_size": 768,
                              "rope_theta": 5e5, "initializer_range": 0.0625, "prefix_lm": True})
    assert (m.layers_per_stack, m.head_dim, m.rope_theta, m.embedding_scale) == (4, 128, 5e5, 16.0)


def test_from_reference_npz_with_ema(fixture_golden_dir, tmp_path):
    z = np.load(fixture_golden_dir / "hrm_mini.npz")
    out = tmp_path / "ref"
    assert convert_main(["from-reference", str(fixture_golden_dir / "hrm_mini.npz"), str(out)]) == 0
    cfg, params, buffers, _ = read_checkpoint(out)
    model = model_from_flat(dataclasses.replace(cfg.model, compute_dtype="float32"), params, buffers)
    b = packed_batch_from_golden(z)
    logits = model(*(jnp.asarray(b[k]) for k in ("inputs", "positions", "segment_ids", "prefix_mask")))
    real = int(z["scalar/total_seqlen"])
    np.testing.assert_allclose(np.asarray(logits[0, :real]), z["logits"][:real], atol=1e-4)
    # An npz with EMA weights: EMA by default, raw with --no-ema.
    ema_npz = tmp_path / "with_ema.npz"
    items = {k: z[k] for k in z.files if k.startswith("param/") or k == "meta_json"}
    items.update({"ema/" + k[len("param/"):]: z[k] * 2 for k in z.files if k.startswith("param/")})
    np.savez(ema_npz, **items)
    convert_main(["from-reference", str(ema_npz), str(tmp_path / "e")])
    convert_main(["from-reference", str(ema_npz), str(tmp_path / "r"), "--no-ema"])
    head = z["param/lm_head.weight"].T
    np.testing.assert_array_equal(np.asarray(read_checkpoint(tmp_path / "e")[1][("head", "kernel")]), head * 2)
    np.testing.assert_array_equal(np.asarray(read_checkpoint(tmp_path / "r")[1][("head", "kernel")]), head)


def test_errors_are_clear(tmp_path, converted, capsys):
    (tmp_path / "x.pt").write_bytes(b"")
    try:
        import torch  # noqa: F401
    except ImportError:
        assert convert_main(["from-reference", str(tmp_path / "x.pt"), str(tmp_path / "o")]) == 2
        assert "needs torch" in capsys.readouterr().err
    assert convert_main(["from-hf", str(tmp_path), str(tmp_path / "o2")]) == 2
    assert convert_main(["from-hf", str(converted), str(converted)]) == 2  # no config.json there


def test_generator_from_converted_checkpoint(converted, hf_tiny):
    from hrm.eval.generate import Generator
    from hrm.eval.model_loading import load_model

    model, cfg, _, _ = load_model(str(converted), dtype="float32")
    g = np.load(hf_tiny / "golden.npz")
    prompts = [r[m.astype(bool)].tolist() for r, m in zip(g["gen/prompt_input_ids"], g["gen/prompt_attention_mask"])]
    gen = Generator(model, eoa_id=None, max_context=cfg.model.max_seq_len, batch_size=2, cache_dtype=jnp.float32)
    assert gen.generate(prompts, 8) == g["gen/tokens_cached"].tolist()
    bf16, _, _, _ = load_model(str(converted))  # eval default: bf16 weights and compute
    assert bf16.head.kernel[...].dtype == jnp.bfloat16 and bf16.cfg.compute_dtype == "bfloat16"
    out = Generator(bf16, eoa_id=None, max_context=64, batch_size=2).generate(prompts, 8)
    assert sum(a == b for a, b in zip(sum(out, []), g["gen/tokens_cached"].ravel().tolist())) >= 8


@pytest.mark.parametrize("param_dtype,flag,want", [("float32", None, "float32"), ("bfloat16", None, "bfloat16"),
                                                   ("float32", "bfloat16", "bfloat16"),
                                                   ("bfloat16", "float32", "float32")])
def test_to_hf_keeps_checkpoint_dtype_unless_asked(tmp_path, param_dtype, flag, want):
    """`to-hf` writes the checkpoint's parameter dtype (model.param_dtype) unless --dtype says otherwise."""
    from hrm.config import Config, ModelConfig
    from hrm.convert.ckpt_io import write_checkpoint
    from hrm.convert.params import extract_params

    mcfg = ModelConfig(vocab_size=64, hidden_size=32, num_heads=2, n_layers=2, param_dtype=param_dtype)
    write_checkpoint(tmp_path / "ck", Config(model=mcfg), extract_params(build_model(mcfg)))
    argv = ["to-hf", str(tmp_path / "ck"), str(tmp_path / "hf")] + (["--dtype", flag] if flag else [])
    assert convert_main(argv) == 0
    tensors = read_safetensors_dir(tmp_path / "hf")
    np_want = ml_dtypes.bfloat16 if want == "bfloat16" else np.float32
    assert {v.dtype for v in tensors.values()} == {np.dtype(np_want)}
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == want


def test_to_hf_refuses_architectures_without_hf_format(tmp_path, capsys):
    from hrm.config import Config, ModelConfig
    from hrm.convert.ckpt_io import write_checkpoint
    from hrm.convert.params import extract_params

    mcfg = ModelConfig(arch="ut", vocab_size=64, hidden_size=32, num_heads=2, n_layers=2, cycles=2, bp_cycles=1)
    write_checkpoint(tmp_path / "ck", Config(model=mcfg), extract_params(build_model(mcfg)))
    assert convert_main(["to-hf", str(tmp_path / "ck"), str(tmp_path / "hf")]) == 2
    assert "model.arch='ut' has no transformers (hrm_text) format" in capsys.readouterr().err
