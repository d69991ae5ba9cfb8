"""from-reference on real PyTorch saves (docs/checkpoints.md §1): a `.pt` state dict and a torch.distributed.checkpoint
directory holding {"model", "optim"} with per-parameter `param_ema`, as the reference's FSDP2 save. Skipped
when torch is not installed (CI installs it, see .ci/run)."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from hrm.convert.__main__ import main as convert_main
from hrm.convert.ckpt_io import model_from_flat, read_checkpoint
from hrm.tools.parity import packed_batch_from_golden

torch = pytest.importorskip("torch")


def _golden_state(fixture_golden_dir):
    z = np.load(fixture_golden_dir / "hrm_mini.npz")
    sd = {k[len("param/"):]: torch.from_numpy(np.array(z[k])) for k in z.files if k.startswith("param/")}
    sd["model.zL_init"] = sd["model.zL_init"].to(torch.bfloat16)
    return z, sd


def _logits(out_dir, z):
    cfg, params, buffers, _ = read_checkpoint(out_dir)
    model = model_from_flat(dataclasses.replace(cfg.model, compute_dtype="float32"), params, buffers)
    b = packed_batch_from_golden(z)
    return np.asarray(model(*(jnp.asarray(b[k]) for k in ("inputs", "positions", "segment_ids", "prefix_mask"))))


def _write_run_config(ckpt_dir, z):
    """The reference writes all_config.yaml next to its checkpoints (docs/checkpoints.md §1)."""
    meta = json.loads(str(z["meta_json"]))
    arch = dict(meta["config"])
    (ckpt_dir.parent / "all_config.yaml").write_text(json.dumps({"arch": arch}))


def test_from_reference_pt_state_dict(fixture_golden_dir, tmp_path):
    z, sd = _golden_state(fixture_golden_dir)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": sd}, run / "model.pt")
    _write_run_config(run / "model.pt", z)
    assert convert_main(["from-reference", str(run / "model.pt"), str(tmp_path / "out")]) == 0
    real = int(z["scalar/total_seqlen"])
    np.testing.assert_allclose(_logits(tmp_path / "out", z)[0, :real], z["logits"][:real], atol=1e-4)


def test_from_reference_dcp_directory_with_ema(fixture_golden_dir, tmp_path):
    import torch.distributed.checkpoint as dcp

    z, sd = _golden_state(fixture_golden_dir)
    ema = {k: (v.float() * 0.5).to(v.dtype) for k, v in sd.items() if k != "model.zL_init"}
    optim = {"state": {k: {"step": torch.tensor(3.0), "exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.zeros_like(v),
                           "param_ema": ema[k]} for k, v in sd.items() if k != "model.zL_init"},
             "param_groups": [{"lr": 1e-3, "params": [k for k in sd if k != "model.zL_init"]}]}
    ckpt = tmp_path / "run" / "fsdp2_epoch_0"
    dcp.save({"model": sd, "optim": optim}, checkpoint_id=str(ckpt))
    _write_run_config(ckpt, z)
    assert convert_main(["from-reference", str(ckpt), str(tmp_path / "ema")]) == 0
    assert convert_main(["from-reference", str(ckpt), str(tmp_path / "raw"), "--no-ema"]) == 0
    head = z["param/lm_head.weight"].T
    np.testing.assert_allclose(np.asarray(read_checkpoint(tmp_path / "ema")[1][("head", "kernel")]), head * 0.5)
    np.testing.assert_array_equal(np.asarray(read_checkpoint(tmp_path / "raw")[1][("head", "kernel")]), head)
    real = int(z["scalar/total_seqlen"])
    np.testing.assert_allclose(_logits(tmp_path / "raw", z)[0, :real], z["logits"][:real], atol=1e-4)
