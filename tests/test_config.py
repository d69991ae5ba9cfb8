"""Config system: YAML inheritance, typed overrides, clear errors naming the key; shipped sizes (docs/model.md §1)."""

from __future__ import annotations

import pytest

from hrm.config import ConfigError, load_config, parse_cli_overrides


def test_inheritance_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("model: {hidden_size: 64, num_heads: 2}\noptim: {lr: 0.1}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nmodel: {num_heads: 4}\n")
    cfg = load_config(tmp_path / "b.yaml", ["optim.lr=3e-4", "model.remat=full", "logging.wandb=true",
                                            "train.total_steps=1_000", "mesh.rules={embed: null}"])
    assert cfg.model.hidden_size == 64 and cfg.model.num_heads == 4
    assert cfg.optim.lr == 3e-4 and cfg.model.remat == "full" and cfg.logging.wandb is True
    assert cfg.train.total_steps == 1000
    assert cfg.mesh.rules["embed"] is None and cfg.mesh.rules["mlp"] == "tensor"


@pytest.mark.parametrize("overrides,needle", [
    (["optim.lrr=1"], "optim.lrr"),
    (["model.hidden_size=abc"], "model.hidden_size"),
    (["model.hidden_size=1.5"], "model.hidden_size"),
    (["logging.wandb=maybe"], "logging.wandb"),
    (["model=3"], "model"),
    (["optim.lr=1", "optim.lr=2"], "overridden twice"),
    (["model.remat=sometimes"], "model.remat"),
    (["mesh.fsdp=-1", "mesh.data=-1"], "mesh"),
    (["lr"], "key=value"),
    (["model.bp_min_steps=1"], "model.bp_min_steps"),
    (["model.bp_max_steps=9"], "model.bp_max_steps"),
    (["model.attention_backend=flash"], "model.attention_backend"),
])
def test_errors_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config("configs/tiny.yaml", overrides)


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: {hidden: 3}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.hidden"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "typ.yaml").write_text("train: {total_steps: [1]}\n")
    with pytest.raises(ConfigError, match=r"train\.total_steps"):
        load_config(tmp_path / "typ.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name,layers,d,heads,inter,lr,batch", [
    ("b", 6, 1024, 8, 2816, 2.2e-4, 196608),
    ("l", 12, 1280, 10, 3584, 2.5e-4, 172032),
    ("xl", 16, 1536, 12, 4096, 2.2e-4, 196608),
    ("xxl", 36, 1792, 14, 4864, 2.2e-4, 196608),
])
def test_reference_sizes(name, layers, d, heads, inter, lr, batch):
    cfg = load_config(f"configs/{name}.yaml")
    m = cfg.model
    assert (m.layers_per_stack, m.hidden_size, m.num_heads, m.resolved_intermediate_size) == (layers, d, heads, inter)
    assert m.resolved_head_dim == 128 and (m.H_cycles, m.L_cycles) == (2, 3)
    assert (m.bp_min_steps, m.bp_max_steps, m.bp_warmup_ratio) == (2, 5, 0.2)
    assert cfg.optim.lr == lr and cfg.train.global_batch_tokens == batch and cfg.data.seq_len == 4096
    assert (cfg.optim.beta1, cfg.optim.beta2, cfg.optim.weight_decay, cfg.optim.ema_decay) == (0.9, 0.95, 0.1, 0.9999)


def test_sft_and_tiny():
    sft = load_config("configs/sft.yaml")
    assert sft.model.bp_warmup_ratio == 0 and sft.optim.lr == 3e-5 and sft.optim.lr_min_ratio == 0.1
    assert sft.optim.lr_warmup_steps == 0 and sft.optim.ema_decay == 0.999 and sft.train.init_from_ema
    tiny = load_config("configs/tiny.yaml")
    from hrm.model import build_model
    from hrm.model.hrm import param_count
    from flax import nnx
    assert param_count(nnx.state(build_model(tiny.model), nnx.Param)) < 3_000_000


def test_cli_split():
    path, ov, rest = parse_cli_overrides(["--config", "x.yaml", "a.b=1", "--compile_only"])
    assert (path, ov, rest) == ("x.yaml", ["a.b=1"], ["--compile_only"])
