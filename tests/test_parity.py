"""Reference parity (golden tensors of the PyTorch reference, docs/checkpoints.md §1): every architecture on the
fixtures kept in tests/golden/ (byte copies of ../shared/golden/mini, so a fresh clone checks parity), the larger
../shared/golden files when present, and the parity tool's own failure modes (a golden key without
counterpart fails, overrides that change the model are refused)."""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pytest

from hrm.tools import parity

FIXTURES = pathlib.Path(__file__).resolve().parent / "golden"
# sha256 of the published golden files (mini/*.npz and the transformers fixture hf_tiny/): the fixtures must stay
# byte-identical copies.
PUBLISHED_SHA256 = {
    "hf_tiny/golden.npz": "573b1522ffc7bdcecc0ed17e751f608290422d0470fbf5b02d9e2f51f0a87fbc",
    "hf_tiny/model.safetensors": "9ccf99344e6cf0f621b66d8d53ce4e1e6e64d92eaf932b942b452c463d6c4f01",
    "hf_tiny/config.json": "3a75e9eacaf37ff74275ce5213cc8005d53613a607d8d8855ad61eeef35458c9",
    "hf_tiny/meta.json": "ef74dcfab12d0308139c5bbdcacd110125dc2f68c6e401fa77a3190eddab52c3",
    "hf_tiny/split/model.safetensors": "c00780930b12549527a56c37c090d1067573aeae659df86bcba8e5973c8fc94e",
    "hrm_mini.npz": "f4119142d88f8dc01f462b670f6d1c54aebf600c842a8b5a899415233b750895",
    "transformer_mini.npz": "e8ca348161b62e2f331b88e8277b1844b2c6d1aa8fa85bdcd49b5450732d05e3",
    "ut_mini.npz": "9c5b953334c269eb5476416a15821b994ff6102ade4f378fa56f423f5112ab64",
    "rins_mini.npz": "8b99f8b8264b82c18d34901e607406e6824e89e81026102e2079906f30578451",
    "trm_mini.npz": "d905eb41ba8741d19f6af0bbee2688c873e8852fa573d1ed2fd519b428ecb3df",
}
ARCHS = ("hrm", "transformer", "ut", "rins", "trm")


def _run(capsys, *argv) -> tuple[int, list[str]]:
    rc = parity.main([str(a) for a in argv])
    return rc, capsys.readouterr().out.strip().splitlines()


def test_fixtures_are_the_published_files():
    for name, digest in PUBLISHED_SHA256.items():
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("arch", ARCHS)
def test_parity_on_fixture(arch, capsys):
    rc, lines = _run(capsys, FIXTURES / f"{arch}_mini.npz")
    assert lines[-1].startswith("PARITY OK") and rc == 0, "\n".join(lines[-30:])
    assert lines[0].startswith(f"{arch}_mini.npz: arch={arch} ")
    checked = {line.split()[0] for line in lines[2:-1]}
    z = np.load(FIXTURES / f"{arch}_mini.npz")
    # every golden tensor was compared (nothing skipped) ...
    wanted = {k for k in z.files if k.split("/")[0] not in ("meta_json", "batch", "scalar", "param")}
    assert wanted - {"logits"} <= checked and "logits" in checked
    if arch in ("ut", "rins", "trm"):  # ... and the baselines' labels partly equal the argmax: non-trivial accuracies
        assert 0 < float(z["bp0/accuracy"]) < 1 and float(z["bp0/exact_accuracy"]) > 0


@pytest.mark.slow  # CI budget: the same five architectures run on the tests/golden fixtures above
@pytest.mark.parametrize("name", ["hrm_small.npz", "transformer_small.npz", "ut_small.npz", "rins_small.npz",
                                  "trm_small.npz"])
def test_parity_on_shared_golden(golden_dir, name, capsys):
    rc, lines = _run(capsys, golden_dir / name)
    assert lines[-1].startswith("PARITY OK") and rc == 0, "\n".join(lines[-30:])


def _edited_copy(tmp_path, arch: str, edit) -> pathlib.Path:
    z = np.load(FIXTURES / f"{arch}_mini.npz")
    items = {k: z[k] for k in z.files}
    edit(items)
    out = tmp_path / f"edited_{arch}.npz"
    np.savez(out, **items)
    return out


def _meta(items, drop=(), **changes):
    meta = json.loads(str(items["meta_json"]))
    for k, v in changes.items():
        if k == "config":
            meta["config"].update(v)
        else:
            meta[k] = v
    for k in drop:
        del meta["config"][k]
    items["meta_json"] = np.array(json.dumps(meta))


def test_golden_key_without_counterpart_fails(tmp_path, capsys):
    def extra(items):
        items["param/model.norm_f.weight"] = np.ones(4, np.float32)  # parameters our model does not have
        items["bp0/grad/model.layers.1.attn.q_norm.weight"] = np.ones(4, np.float32)
        items["adam/ema/model.layers.1.mlp.extra.weight"] = np.ones(4, np.float32)

    rc, lines = _run(capsys, _edited_copy(tmp_path, "transformer", extra))
    assert rc == 1 and lines[-1].startswith("PARITY FAIL")
    failed = [line for line in lines if line.endswith("FAIL")]
    for key in ("param/model.norm_f.weight", "bp0/grad/model.layers.1.attn.q_norm.weight",
                "adam/ema/model.layers.1.mlp.extra.weight"):
        assert any(line.startswith(key) and "no counterpart" in line for line in failed), key


def test_unknown_golden_group_and_reference_key_fail(tmp_path, capsys):
    def unknown_group(items):
        items["hidden/z_H"] = np.zeros(3, np.float32)

    rc, lines = _run(capsys, _edited_copy(tmp_path, "transformer", unknown_group))
    assert rc == 1 and any(line.startswith("hidden/z_H (golden key not checked)") for line in lines)
    rc, lines = _run(capsys, _edited_copy(tmp_path, "ut", lambda it: _meta(it, config={"carry": True})))
    assert rc == 1 and lines[-1].startswith("PARITY FAIL")


def test_wrong_architecture_fails(tmp_path, capsys):
    # UT and TRM share parameter names (one model.L_level.core stack): only the computation tells them apart.
    rc, lines = _run(capsys, _edited_copy(tmp_path, "ut", lambda it: _meta(
        it, drop=("cycles", "bp_cycles"), arch="trm", config={"H_cycles": 2, "L_cycles": 1, "H_bp_steps": 2,
                                                              "L_bp_steps": 2})))
    assert rc == 1 and any(line.startswith("logits") and line.endswith("FAIL") for line in lines)
    # A layer the model does not have cannot be imported: the file fails as a whole.
    def extra_layer(items):
        items["param/model.L_level.core.layers.2.mlp.down_proj.weight"] = items[
            "param/model.L_level.core.layers.1.mlp.down_proj.weight"]

    rc, lines = _run(capsys, _edited_copy(tmp_path, "ut", extra_layer))
    assert rc == 1 and lines[-1].startswith("PARITY FAIL")


def test_overrides(capsys):
    rc, lines = _run(capsys, FIXTURES / "ut_mini.npz", "model.attention_backend=jax", "model.remat=full",
                     "model.loss_chunk=16")
    assert rc == 0 and lines[-1].startswith("PARITY OK") and "backend=jax" in lines[0]
    for bad in ("model.hidden_size=64", "model.compute_dtype=bfloat16", "optim.lr=1", "model.cycles=3"):
        rc, lines = _run(capsys, FIXTURES / "ut_mini.npz", bad)
        assert rc == 1 and lines[-1].startswith("PARITY FAIL"), bad
    with pytest.raises(Exception, match="attention_backend"):
        parity.apply_overrides(parity.model_config_from_meta(json.loads(str(np.load(
            FIXTURES / "ut_mini.npz")["meta_json"]))), ["model.attention_backend=nope"])
