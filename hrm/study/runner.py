"""Run one study cell: train it with `hrm.train.loop.train`, score the held-out split with `hrm.eval`, and write
`<out>/result.json`.

A cell runs on ONE CPU thread and one device (`CPU_ENV`, set by `python -m hrm.study` before JAX starts), so its
numbers do not depend on the machine's core count or load, and two cells run side by side on a 2-core machine. The
training run directory (checkpoint, metrics.jsonl) is recreated from scratch on every run: a rerun never resumes.

result.json: cell, arch, seed, label, paper row, params, steps, tokens (slots), train_flops (docs/optimizer.md §5,
attention excluded; `train_flops_with_attention` adds the score FLOPs of the real PrefixLM/causal visible keys),
final_loss (mean training loss over the last `FINAL_WINDOW` steps, on the cell's own objective), heldout_loss (response
tokens only, EMA weights, last step), eval (held-out exact match per task and overall), the loss curve (per step:
step, cumulative FLOPs, loss, bp_steps), the held-out loss curve, CPU and wall time of training and evaluation, the
load average around the run, versions and the config.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hrm.study.grid import REPO, cell_config, get_cell

# One device, one intra-op thread (deterministic and load-independent CPU numerics). Replaces any inherited
# XLA_FLAGS (the test suite's 8 fake devices would change the mesh and the numbers).
CPU_ENV = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 "
                        "--xla_force_host_platform_device_count=1",
           "JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
FINAL_WINDOW = 10
EVAL_BATCH = 100
DEFAULT_RUN_ROOT = REPO / "runs" / "study"


def configure_cpu_env() -> None:
    """Set CPU_ENV in this process; must run before JAX initialises its backend (refuses afterwards)."""
    if "jax" in sys.modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            raise RuntimeError("hrm.study: JAX is already initialised in this process; run cells through "
                               "`python -m hrm.study run` (it needs one CPU thread and one device)")
    os.environ.update(CPU_ENV)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hrm"], cwd=REPO, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def code_digest() -> str:
    """sha256 (12 hex digits) of every hrm/**/*.py and configs/tiny.yaml: the code version a result belongs to
    (the working tree may hold uncommitted edits, so the git commit alone does not identify it)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted((REPO / "hrm").rglob("*.py")) + [REPO / "configs" / "tiny.yaml"]:
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def _read_metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return sorted({int(r["step"]): r for r in rows}.values(), key=lambda r: int(r["step"]))


def heldout_exact_match(run_dir: Path, heldout: Path, out_dir: Path) -> dict[str, Any]:
    """Greedy exact match of the trained model (EMA weights, fp32) on `heldout`, per task and overall, through the
    `default` task of hrm.eval (what `eval.py --checkpoint RUN --heldout FILE` runs)."""
    import argparse

    from hrm.eval.model_loading import load_generator
    from hrm.eval.runner import run_tasks
    from hrm.eval.tasks import load_tasks

    args = argparse.Namespace(dtype="float32", batch_size=EVAL_BATCH, max_context=0, tokenizer=None, seed=0)
    generator, tokenizer, _ = load_generator(str(run_dir), args)
    items = load_tasks("default", "", data_dirs={"default": str(heldout)})
    res = run_tasks(generator, tokenizer, items, batch_size=EVAL_BATCH, out_dir=str(out_dir), progress=False,
                    run_info={"checkpoint": str(run_dir), "heldout": str(heldout)})
    m = res["metrics"]["default"]["faithful"]
    per_task = {k[len("acc_"):]: v for k, v in m.items() if k.startswith("acc_") and k != "acc_macro"}
    return {"overall": m["acc"], "per_task": per_task, "n": m["n"]}


def run_cell(name: str, seed: int, out: str | Path, run_root: str | Path = DEFAULT_RUN_ROOT,
             compile_cache: str | Path = "") -> dict[str, Any]:
    """Train + evaluate (cell `name`, `seed`); writes and returns `<out>/result.json` (see module docstring)."""
    from hrm.data.default_dataset import ensure_study_dataset
    from hrm.study.grid import cell_plan, step_flops
    from hrm.train.flops import total_params

    cell = get_cell(name)
    out = Path(out)
    run_dir = Path(run_root) / f"{name}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # never resume: a rerun must redo the whole cell
    out.mkdir(parents=True, exist_ok=True)
    data = ensure_study_dataset()
    cfg = cell_config(name, seed, str(run_dir), str(data), str(compile_cache) if compile_cache else "")
    load0 = os.getloadavg()
    digest = code_digest()  # before training: the code this run executes

    import jax

    from hrm.train.loop import train

    c0, w0 = cpu_seconds(), time.time()
    summary = train(cfg)
    c1, w1 = cpu_seconds(), time.time()
    ev = heldout_exact_match(run_dir, data / "heldout.jsonl", run_dir / "eval")
    c2, w2 = cpu_seconds(), time.time()

    steps = int(summary["final_step"])
    rows = _read_metrics(run_dir)
    if len(rows) != steps:
        raise RuntimeError(f"{run_dir}/metrics.jsonl has {len(rows)} rows for {steps} steps (train.log_every=1)")
    curve, cum, cum_attn = [], 0.0, 0.0
    for r in rows:
        step = int(r["step"])
        cum += step_flops(cfg, step, steps)
        cum_attn += float(r["flops_per_step"])
        curve.append({"step": step, "flops": cum, "loss": float(r["loss"]), "bp_steps": int(r.get("bp_steps", 0)),
                      "grad_norm": float(r["grad_norm"]),
                      **({"heldout_loss": float(r["heldout_loss"])} if "heldout_loss" in r else {})})
    losses = [c["loss"] for c in curve]
    norms = sorted(c["grad_norm"] for c in curve)
    heldout = [c for c in curve if "heldout_loss" in c]
    result = {
        "cell": name, "arch": cfg.model.arch, "seed": seed, "label": cell.label, "paper": cell.paper,
        "tables": list(cell.tables), "overrides": list(cell_plan(name)[0]),
        "params": total_params(cfg.model), "n_layers": cfg.model.n_layers, "steps": steps,
        "tokens": steps * cfg.train.global_batch_rows * cfg.data.seq_len,
        "train_flops": cum, "train_flops_with_attention": cum_attn,
        "final_loss": sum(losses[-FINAL_WINDOW:]) / len(losses[-FINAL_WINDOW:]),
        "final_loss_window": FINAL_WINDOW, "last_step_loss": losses[-1],
        "objective": "all tokens" if not cfg.data.target_only else "response",
        "attention": cfg.model.attn_type,
        "heldout_loss": heldout[-1]["heldout_loss"] if heldout else None,
        "eval": ev,
        "grad_norm": {"max": max(norms), "p95": norms[int(0.95 * (len(norms) - 1))], "median": norms[len(norms) // 2]},
        "loss_curve": [[c["step"], c["flops"], c["loss"], c["bp_steps"], c["grad_norm"]] for c in curve],
        "loss_curve_columns": ["step", "train_flops", "loss", "bp_steps", "grad_norm"],
        "heldout_curve": [[c["step"], c["flops"], c["heldout_loss"]] for c in heldout],
        "cpu_s": {"train": c1 - c0, "eval": c2 - c1, "total": c2 - c0},
        "wall_s": {"train": w1 - w0, "eval": w2 - w1, "total": w2 - w0},
        "compile_s": {k: v.get("compile_s") for k, v in summary.get("compiles", {}).items()},
        "loadavg": {"start": load0[0], "end": os.getloadavg()[0]},
        "env": {"python": platform.python_version(), "jax": jax.__version__, "git": _git_sha(),
                "code_digest": digest,
                "threads": 1, "devices": jax.device_count()},
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
