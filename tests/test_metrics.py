"""Metric sinks (JSONL / TensorBoard / W&B) and the progress bar; distributed launch detection."""

import json
import sys
import types

import numpy as np
import pytest

from hrm.config import LoggingConfig, TrainConfig
from hrm.train.distributed import detect_multiprocess, initialize_args, maybe_initialize, should_initialize
from hrm.train.metrics import MetricsWriter, ProgressBar


def test_jsonl_and_tensorboard(tmp_path):
    w = MetricsWriter(tmp_path, LoggingConfig(tensorboard=True, wandb=False), process_index=0)
    w.write(10, {"loss": np.float32(2.5), "acc": 0.25, "bp": 2, "note": "x", "bad": float("nan")})
    w.write(20, {"loss": 2.0})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()  # flushed before close
    w.close()
    recs = [json.loads(x) for x in lines]
    assert [r["step"] for r in recs] == [10, 20]
    assert recs[0]["loss"] == pytest.approx(2.5) and recs[0]["bp"] == 2 and recs[0]["bad"] == "NaN"
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_no_tensorboard_and_nonzero_process(tmp_path):
    MetricsWriter(tmp_path / "a", LoggingConfig(tensorboard=False), 0).close()
    assert (tmp_path / "a" / "metrics.jsonl").exists() and not (tmp_path / "a" / "tensorboard").exists()
    w = MetricsWriter(tmp_path / "b", LoggingConfig(tensorboard=True), process_index=1)
    w.write(1, {"loss": 1.0})
    w.close()
    assert not (tmp_path / "b").exists()


def test_wandb_enabled_but_missing(tmp_path):
    pytest.importorskip("tensorboardX")
    try:
        import wandb  # noqa: F401
        pytest.skip("wandb installed")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="wandb"):
        MetricsWriter(tmp_path, LoggingConfig(tensorboard=False, wandb=True), 0)


def test_wandb_enabled_with_stub(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, data, step):
            calls.append(("log", data, step))

        def finish(self):
            calls.append(("finish",))

    stub = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw["project"])) or Run())
    monkeypatch.setitem(sys.modules, "wandb", stub)
    w = MetricsWriter(tmp_path, LoggingConfig(tensorboard=False, wandb=True, wandb_project="p"), 0)
    w.write(3, {"loss": 1.5, "note": "text"})
    w.close()
    assert calls == [("init", "p"), ("log", {"loss": 1.5}, 3), ("finish",)]


def test_progress_bar(capsys):
    bar = ProgressBar(total=100, initial=10)
    bar.update(20, loss=1.2345, acc=0.5, tok_s=12345.0, lr=2.2e-4, bp=3)
    bar.update(20)
    bar.write("compiled train step (bp_steps=3) in 1.0s")
    bar.close()
    err = capsys.readouterr().err
    assert "20/100" in err and "loss=1.2345" in err and "acc=0.500" in err and "tok/s=12.3k" in err
    assert "lr=2.20e-04" in err and "bp=3" in err
    # tqdm.write puts a message on a line of its own (the bar is cleared first, then redrawn)
    assert "\ncompiled train step (bp_steps=3) in 1.0s\n" in err.replace("\r", "\n")
    ProgressBar(total=5, enabled=False).update(3, loss=1.0)  # no-op
    ProgressBar(total=5, enabled=False).write("plain line")  # no bar: a plain stderr line
    out = capsys.readouterr()
    assert out.err == "plain line\n" and out.out == ""


def test_resume_drops_rows_past_the_restored_step(tmp_path):
    w = MetricsWriter(tmp_path, LoggingConfig(tensorboard=False), 0)
    for step in range(1, 7):
        w.write(step, {"loss": float(step)})
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # a row cut short by a kill
    w = MetricsWriter(tmp_path, LoggingConfig(tensorboard=False), 0, keep_through=4)
    w.write(5, {"loss": 50.0})
    w.close()
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in recs] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0)]
    assert not list(tmp_path.glob("*.tmp"))


# ----------------------------------------------------------------------------- distributed detection


@pytest.mark.parametrize("env,expected", [
    ({}, False),
    ({"SLURM_NTASKS": "1"}, False),
    ({"SLURM_NTASKS": "4"}, True),
    ({"SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "4"}, False),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, False),
    ({"TPU_WORKER_HOSTNAMES": "h0,h1,h2,h3"}, True),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "h0:8080"}, True),
    ({"MEGASCALE_NUM_SLICES": "1"}, False),
    ({"JAX_COORDINATOR_ADDRESS": "h:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, True),
    ({"JAX_COORDINATOR_ADDRESS": "h:1234", "JAX_NUM_PROCESSES": "1"}, False),
    ({"JAX_COORDINATOR_ADDRESS": "h:1234", "JAX_PROCESS_ID": "1"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
])
def test_detect_multiprocess(env, expected):
    assert detect_multiprocess(env)[0] is expected


def test_should_initialize_modes():
    multi = {"SLURM_NTASKS": "2"}
    assert should_initialize(TrainConfig(distributed="off"), multi)[0] is False
    assert should_initialize(TrainConfig(distributed="on"), {})[0] is True
    assert should_initialize(TrainConfig(distributed="auto"), multi)[0] is True
    assert should_initialize(TrainConfig(distributed="auto"), {})[0] is False
    cfg = TrainConfig(distributed="auto", coordinator_address="h:1", num_processes=2, process_id=0)
    assert should_initialize(cfg, {})[0] is True


def test_initialize_args():
    cfg = TrainConfig(coordinator_address="h:1", num_processes=2, process_id=1, distributed_timeout_s=30)
    assert initialize_args(cfg, {}) == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1,
                                        "initialization_timeout": 30}
    env = {"JAX_COORDINATOR_ADDRESS": "e:2", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert initialize_args(TrainConfig(), env) == {"coordinator_address": "e:2", "num_processes": 4,
                                                   "process_id": 3, "initialization_timeout": 300}
    assert initialize_args(TrainConfig(), {})["coordinator_address"] is None  # JAX auto-detects


def test_maybe_initialize_single_and_too_late():
    assert maybe_initialize(TrainConfig(distributed="off"), {}) is False
    assert maybe_initialize(TrainConfig(distributed="auto"), {}) is False
    import jax

    jax.devices()  # backend now initialised: asking for multi-process must fail clearly
    with pytest.raises(RuntimeError, match="before any JAX computation"):
        maybe_initialize(TrainConfig(distributed="auto"), {"SLURM_NTASKS": "2"})
