"""The whole grid: `list` prints it; `all` runs every (cell, seed) without a result as a `python -m hrm.study run`
subprocess (one CPU thread each, `--jobs` at a time, all seed-0 cells first so later seeds reuse their compiled
steps from a shared JAX compilation cache), logs each to `<run_root>/<cell>-s<seed>.log`, then writes the report.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

from hrm.study.grid import GRID, REPO, SEEDS, describe_grid, get_cell


def print_grid() -> None:
    """The grid as a plain table (cells, paper rows, parameters, steps, FLOPs vs HRM)."""
    print(f"{'cell':<22} {'tables':<9} {'arch':<12} {'layers':>6} {'params':>9} {'steps':>6} {'FLOPs':>9} "
          f"{'vs hrm':>6}  paper row")
    for r in describe_grid():
        print(f"{r['cell']:<22} {','.join(r['tables']):<9} {r['arch']:<12} {r['n_layers']:>6} {r['params']:>9,} "
              f"{r['steps']:>6} {r['train_flops']:>9.3g} {r['flops_vs_hrm']:>6.2f}  {r['paper'] or '-'}")
    print(f"\nseeds {list(SEEDS)}; `python -m hrm.study run --cell NAME --seed S --out DIR` runs one cell")


def run_dir_name(cell: str, seed: int) -> str:
    return f"{cell}-s{seed}"


def _run_one(cell: str, seed: int, out: Path, run_root: Path, cache: Path) -> tuple[str, int, float]:
    from hrm.study.runner import CPU_ENV

    name = run_dir_name(cell, seed)
    log = run_root / f"{name}.log"
    cmd = [sys.executable, "-m", "hrm.study", "run", "--cell", cell, "--seed", str(seed),
           "--out", str(out / "runs" / name), "--run_root", str(run_root), "--compile_cache", str(cache)]
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **CPU_ENV}, stdout=f, stderr=subprocess.STDOUT).returncode
    return name, rc, time.time() - t0


def run_all(args: argparse.Namespace) -> int:
    """Run the missing (cell, seed) pairs, then write the report; returns 1 if any cell failed."""
    from hrm.data.default_dataset import ensure_study_dataset
    from hrm.study.report import write_report

    out = Path(args.out)
    run_root = Path(args.run_root) if args.run_root else REPO / "runs" / "study"
    run_root.mkdir(parents=True, exist_ok=True)
    cache = run_root / "jax_cache"
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(SEEDS)
    cells = [get_cell(c).name for c in args.cells.split(",")] if args.cells else [c.name for c in GRID]
    todo = [(c, s) for s in seeds for c in cells
            if args.force or not (out / "runs" / run_dir_name(c, s) / "result.json").is_file()]
    ensure_study_dataset()  # once, before the workers (each would wait on its lock otherwise)
    print(f"{len(todo)} runs to do ({len(cells) * len(seeds) - len(todo)} done), {args.jobs} at a time; logs in "
          f"{run_root}/", flush=True)
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(_run_one, c, s, out, run_root, cache) for c, s in todo]
        for fut in concurrent.futures.as_completed(futures):
            name, rc, wall = fut.result()
            print(f"{name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {wall / 60:.1f} min", flush=True)
            if rc:
                failed.append(name)
    write_report(out)
    if failed:
        print(f"failed: {', '.join(failed)} (see their logs in {run_root}/)", file=sys.stderr)
        return 1
    return 0
