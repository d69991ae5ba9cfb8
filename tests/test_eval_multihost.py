"""eval.py on 2 processes x 2 CPU devices (jax.distributed on 127.0.0.1) gives the same predictions as one
process x 4 devices, and only process 0 writes results (issue: sharded, multi-host evaluation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env(devices: int, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k == "JAX_PLATFORMS"}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    env.update(extra or {})
    return env


def _cmd(out: Path) -> list[str]:
    return [sys.executable, str(REPO / "eval.py"), "--checkpoint", "random:configs/tiny.yaml", "--tasks", "default",
            "--limit", "8", "--batch_size", "4", "--default_max_tokens", "12", "--no_progress", "--out", str(out)]


def _predictions(out: Path) -> list[tuple]:
    return [(r["id"], r["prediction"]) for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())]


def test_two_process_eval_matches_single_process(tmp_path):
    import portpicker

    single = subprocess.run(_cmd(tmp_path / "one"), cwd=REPO, env=_env(4), capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    port = portpicker.pick_unused_port()
    procs = []
    for pid in range(2):
        env = _env(2, {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                       "JAX_PROCESS_ID": str(pid)})
        procs.append(subprocess.Popen(_cmd(tmp_path / f"p{pid}"), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert _predictions(tmp_path / "p0") == _predictions(tmp_path / "one")
    assert len(_predictions(tmp_path / "one")) == 8
    assert not (tmp_path / "p1").exists()  # only process 0 writes
