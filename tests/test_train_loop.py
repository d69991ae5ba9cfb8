"""train.py end to end in subprocesses: exact resume after SIGKILL, SIGTERM, multi-host, AOT, default run."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SMALL = ["model.hidden_size=32", "model.num_heads=2", "data.seq_len=64", "train.global_batch_rows=8",
         "train.total_steps=12", "train.log_every=1", "checkpoint.every_steps=4", "checkpoint.keep_last=5",
         "logging.tensorboard=false", "logging.progress_bar=false", "optim.lr_warmup_steps=3"]


def _env(devices: int = 8) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _train(run_dir: Path, *extra: str, env=None, check=True) -> subprocess.CompletedProcess:
    keys = {e.split("=", 1)[0] for e in extra}
    base = [o for o in SMALL if o.split("=", 1)[0] not in keys]
    cmd = [PY, str(REPO / "train.py"), *base, f"train.run_dir={run_dir}", *extra]
    p = subprocess.run(cmd, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"train.py failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return p


def _losses(run_dir: Path) -> dict[int, float]:
    """Per-step loss from metrics.jsonl; a step logged twice (before a crash and after resume) keeps the last."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> dict[int, float]:
    run = tmp_path_factory.mktemp("ref")
    _train(run)
    losses = _losses(run)
    assert sorted(losses) == list(range(1, 13))
    # one compiled step per distinct bp_steps value, and bp follows SPEC §3.1 (warmup = 0.2 x 12 = 2.4 steps)
    bps = {json.loads(line)["step"]: json.loads(line)["bp_steps"] for line in (run / "metrics.jsonl").open()}
    assert [bps[s] for s in (1, 2, 3, 12)] == [3, 4, 5, 5]
    assert json.loads((run / "summary.json").read_text())["compiled_bp_variants"] == sorted(set(bps.values()))
    return losses


@pytest.mark.parametrize("kill_at", [10, 8])
def test_sigkill_resume_is_bit_exact(tmp_path, reference_run, kill_at):
    """Killed after step 10 (checkpoint 8 complete) or right after issuing the step-8 save (possibly
    mid-write: restore must then pick the previous complete checkpoint); either way the resumed run
    reproduces the uninterrupted losses bit for bit."""
    p = _train(tmp_path, f"train.debug_signal=SIGKILL@{kill_at}", check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    ckpts = sorted(int(d.name) for d in (tmp_path / "checkpoints").iterdir() if d.name.isdigit())
    assert ckpts and max(ckpts) <= kill_at
    p2 = _train(tmp_path)
    assert "resumed from" in p2.stderr
    resumed_at = int(p2.stderr.split("resumed from")[1].split("at step")[1].split()[0])
    assert resumed_at in (4, 8) and resumed_at <= kill_at
    assert _losses(tmp_path) == reference_run


def test_sigterm_saves_and_exits_zero(tmp_path):
    p = _train(tmp_path, "train.debug_signal=SIGTERM@6", check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "SIGTERM/preemption: saved checkpoint at step 6" in p.stderr
    assert (tmp_path / "checkpoints" / "6").is_dir()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preempted_at"] == 6 and summary["final_step"] == 6


def test_init_from_warm_starts_from_ema(tmp_path, reference_run):
    """SFT-style warm start: params (EMA) from a finished run, fresh optimiser, step 0 (SPEC §5.2)."""
    first = tmp_path / "first"
    _train(first, "train.total_steps=8", "optim.ema_decay=0.5")
    p = _train(tmp_path / "second", f"train.init_from={first}", "train.total_steps=2")
    assert "initialised from" in p.stderr and "EMA" in p.stderr
    second = _losses(tmp_path / "second")
    assert sorted(second) == [1, 2]
    assert second[1] < reference_run[1] - 0.05  # starts from trained weights, not from scratch


def test_resume_with_a_different_model_is_refused(tmp_path):
    _train(tmp_path, "train.total_steps=2")
    p = _train(tmp_path, "train.total_steps=4", "model.hidden_size=64", check=False)
    assert p.returncode != 0 and "model.hidden_size: checkpoint 32 vs config 64" in p.stderr


def test_model_vocab_smaller_than_data_is_clear_error(tmp_path):
    p = _train(tmp_path, "model.vocab_size=256", check=False)
    assert p.returncode == 2 and "model.vocab_size=256 is smaller than the vocabulary" in p.stderr
    assert "Traceback" not in p.stderr


def test_init_from_missing_checkpoint_is_clear_error(tmp_path):
    p = _train(tmp_path, f"train.init_from={tmp_path / 'nope'}", check=False)
    assert p.returncode != 0 and "nope" in p.stderr


def test_two_process_multihost_matches_single_process(tmp_path, reference_run):
    import portpicker

    port = portpicker.pick_unused_port()
    run = tmp_path / "mh"
    common = [PY, str(REPO / "train.py"), *SMALL, f"train.run_dir={run}", "train.distributed=on",
              f"train.coordinator_address=127.0.0.1:{port}", "train.num_processes=2",
              "train.distributed_timeout_s=120"]
    procs = [subprocess.Popen(common + [f"train.process_id={i}"], cwd=REPO, env=_env(4),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    assert "2 processes" in outs[0][1]
    got = _losses(run)
    assert sorted(got) == sorted(reference_run)
    for step, loss in reference_run.items():
        assert abs(got[step] - loss) <= 1e-5 * max(1.0, abs(loss)), (step, got[step], loss)


@pytest.mark.tpu_backend
def test_aot_compile_for_tpu_topology():
    if importlib.util.find_spec("libtpu") is None:
        pytest.skip("libtpu not installed (pip install 'jax[tpu]==0.10.2' enables AOT TPU compilation)")
    p = subprocess.run([PY, str(REPO / "train.py"), "--compile_only", "--topology", "v5p:2x2x1"], cwd=REPO,
                       env=_env(1), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout.strip().splitlines()[-1].removeprefix("RESULT "))
    assert result["device_kind"].startswith("TPU v5") and result["n_devices"] == 4
    assert 0 < result["hbm_fraction"] < 1 and result["bytes_per_device"] > 0 and result["flops_ratio"] > 0


@pytest.mark.slow
def test_default_run_without_arguments(tmp_path):
    """`python train.py` with no arguments: tiny config, built-in data, finishes and learns."""
    p = subprocess.run([PY, str(REPO / "train.py")], cwd=tmp_path, env=_env(1), capture_output=True, text=True,
                       timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    losses = _losses(tmp_path / "runs" / "tiny")
    first, last = losses[min(losses)], losses[max(losses)]
    assert last <= 0.5 * first, (first, last)


def test_nonfinite_loss_stops_with_clear_message(tmp_path):
    p = _train(tmp_path, "optim.lr=1e38", check=False)
    assert p.returncode == 3, p.stderr[-2000:]
    assert "non-finite loss at step" in p.stderr and "train.nan_policy" in p.stderr
