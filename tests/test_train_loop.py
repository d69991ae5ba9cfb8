"""train.py end to end in subprocesses: exact resume after SIGKILL, SIGTERM, multi-host, AOT, default run."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
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


def _steps(run_dir: Path) -> list[int]:
    """The step of every metrics.jsonl row, in file order."""
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _checkpoint_arrays(step_dir: Path) -> list[np.ndarray]:
    """Every array of a saved training state, as numpy."""
    import orbax.checkpoint as ocp

    ckptr = ocp.PyTreeCheckpointer()
    tree = ckptr.metadata(step_dir / "state").item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return jax.tree.leaves(ckptr.restore(step_dir / "state", args=ocp.args.PyTreeRestore(restore_args=args)))


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
    # one compiled step per distinct bp_steps value, and bp follows docs/recurrence.md §2.1 (warmup = 0.2 x 12 = 2.4
    # steps)
    bps = {json.loads(line)["step"]: json.loads(line)["bp_steps"] for line in (run / "metrics.jsonl").open()}
    assert [bps[s] for s in (1, 2, 3, 12)] == [3, 4, 5, 5]
    assert json.loads((run / "summary.json").read_text())["compiled_bp_variants"] == sorted(set(bps.values()))
    return losses


@pytest.mark.parametrize("kill_at", [pytest.param(10, marks=pytest.mark.slow), 8])  # 10: slow (CI budget)
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
    assert _steps(tmp_path) == list(range(1, 13))  # rows of replayed steps were dropped on resume


def test_sigint_saves_exits_130_and_resumes_bit_exact(tmp_path, reference_run):
    """Ctrl-C: checkpoint of the current step, one line, status 130; rerunning resumes from it."""
    p = _train(tmp_path, "train.debug_signal=SIGINT@6", check=False)
    assert p.returncode == 130, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and "KeyboardInterrupt" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last == (f"interrupted: saved checkpoint at step 6 in {tmp_path / 'checkpoints' / '6'}; "
                    f"run the same command to resume")
    assert _steps(tmp_path) == list(range(1, 7))
    p2 = _train(tmp_path)
    assert f"resumed from {tmp_path / 'checkpoints' / '6'} at step 6" in p2.stderr
    assert _losses(tmp_path) == reference_run and _steps(tmp_path) == list(range(1, 13))


@pytest.mark.slow  # CI budget; the SIGINT test runs the same save-and-exit path (and checks the bit-exact resume)
def test_sigterm_saves_and_exits_zero(tmp_path):
    p = _train(tmp_path, "train.debug_signal=SIGTERM@6", check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "SIGTERM/preemption: saved checkpoint at step 6" in p.stderr
    assert (tmp_path / "checkpoints" / "6").is_dir()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preempted_at"] == 6 and summary["final_step"] == 6


@pytest.mark.slow  # CI budget: ~80 s of training runs
def test_init_from_warm_starts_from_ema(tmp_path, reference_run):
    """SFT-style warm start: params (EMA) from a finished run, fresh optimiser, step 0 (docs/optimizer.md §2)."""
    first = tmp_path / "first"
    _train(first, "train.total_steps=8", "optim.ema_decay=0.5")
    p = _train(tmp_path / "second", f"train.init_from={first}", "train.total_steps=2")
    assert "initialised from" in p.stderr and "EMA" in p.stderr
    second = _losses(tmp_path / "second")
    assert sorted(second) == [1, 2]
    assert second[1] < reference_run[1] - 0.05  # starts from trained weights, not from scratch


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """2 steps, one bp variant, with the held-out eval and profiler hooks on."""
    run = tmp_path_factory.mktemp("short")
    p = _train(run, "train.total_steps=2", "model.bp_warmup_ratio=0", "checkpoint.every_steps=1",
               "train.eval_every=2", "train.profile_steps=1:2")
    return run, p


def test_heldout_eval_and_profile_hooks(short_run):
    run, p = short_run
    rows = {json.loads(line)["step"]: json.loads(line) for line in (run / "metrics.jsonl").open()}
    assert "heldout_loss" not in rows[1] and 0 < rows[2]["heldout_loss"] < 20 and 0 <= rows[2]["heldout_accuracy"] <= 1
    assert json.loads((run / "summary.json").read_text())["heldout"] == {"2": rows[2]["heldout_loss"]}
    assert "step 2: held-out loss" in p.stderr and "EMA weights" in p.stderr
    assert list((run / "profile").rglob("*.xplane.pb")), "no profiler trace written"
    assert "profile of steps 1..2 written to" in p.stderr


def test_resume_with_changed_settings(tmp_path, short_run):
    """A different model is refused; changed schedule/data keys are refused unless
    train.allow_config_change=true, which continues with the new values and warns."""
    run = tmp_path / "run"
    shutil.copytree(short_run[0], run)
    same = ["model.bp_warmup_ratio=0", "checkpoint.every_steps=1"]
    p = _train(run, "train.total_steps=4", "model.hidden_size=64", *same, check=False)
    assert p.returncode == 2 and "model.hidden_size: checkpoint 32 vs config 64" in p.stderr
    p = _train(run, "train.total_steps=4", "optim.lr=1e-3", *same, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "train.total_steps: 2 -> 4" in p.stderr and "optim.lr: 0.002 -> 0.001" in p.stderr
    assert "train.allow_config_change=true" in p.stderr
    p = _train(run, "train.total_steps=4", "train.allow_config_change=true", *same)
    assert "warning: resuming" in p.stderr and "train.total_steps: 2 -> 4" in p.stderr
    assert _steps(run) == [1, 2, 3, 4]


def test_model_vocab_smaller_than_data_is_clear_error(tmp_path):
    p = _train(tmp_path / "run", "model.vocab_size=256", check=False)
    assert p.returncode == 2 and "model.vocab_size=256 is smaller than the vocabulary" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists()  # a run that failed before its first step leaves no run dir


def test_init_from_missing_checkpoint_is_clear_error(tmp_path):
    p = _train(tmp_path / "run", f"train.init_from={tmp_path / 'nope'}", check=False)
    assert p.returncode != 0 and "nope" in p.stderr
    assert not (tmp_path / "run").exists()


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
@pytest.mark.slow  # CI budget; test_compiled_plan.py and test_splash.py compile steps for TPU topologies
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


def test_divergence_stops_and_never_checkpoints_nonfinite_state(tmp_path):
    """`train.py optim.lr=1e30 checkpoint.every_steps=1` (README): non-zero exit naming what was
    non-finite and the last good checkpoint; every checkpoint left holds only finite values, so the
    same command can never resume from NaNs."""
    p = _train(tmp_path, "optim.lr=1e30", "checkpoint.every_steps=1", check=False)
    assert p.returncode == 3, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    msg = p.stderr.strip().splitlines()[-1]
    assert msg.startswith("training stopped: non-finite ") and "train.nan_policy" in msg, msg
    assert ("gradient norm at step" in msg or "loss at step" in msg or "state after step" in msg), msg
    steps = sorted(int(d.name) for d in (tmp_path / "checkpoints").iterdir() if d.name.isdigit())
    if steps:
        assert f"last good checkpoint: {tmp_path / 'checkpoints' / str(max(steps))}" in msg
    else:
        assert "no checkpoint was saved" in msg
    for step in steps:
        for x in _checkpoint_arrays(tmp_path / "checkpoints" / str(step)):
            if x.dtype.kind not in "iub":
                assert np.isfinite(x.astype(np.float32)).all(), (step, x.shape)
