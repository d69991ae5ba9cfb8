"""`python -m hrm.study list | run --cell NAME --seed S --out DIR | all --out docs/study | report --out docs/study`.

  list    the grid: cells, the paper rows they stand for, parameters, steps, training FLOPs vs HRM
  run     train + evaluate one cell (one CPU thread, one device); writes DIR/result.json
  all     every cell x seed (missing ones only, unless --force) as `run` subprocesses, --jobs at a time, then
          `report`: DIR/results.json, DIR/results.md and DIR/*.png
  report  rebuild DIR/results.json, results.md and the figures from DIR/runs/*/result.json
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hrm.study", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the grid")
    run = sub.add_parser("run", help="train and evaluate one cell")
    run.add_argument("--cell", required=True)
    run.add_argument("--seed", type=int, required=True)
    run.add_argument("--out", required=True, help="directory for result.json")
    run.add_argument("--run_root", default=None, help="parent of the training run dir (default runs/study)")
    run.add_argument("--compile_cache", default="", help="JAX persistent compilation cache directory")
    every = sub.add_parser("all", help="run the grid, then write the report")
    every.add_argument("--out", default="docs/study")
    every.add_argument("--jobs", type=int, default=2, help="cells trained at the same time (one thread each)")
    every.add_argument("--seeds", default=None, help="comma list (default: the grid's seeds)")
    every.add_argument("--cells", default=None, help="comma list of cells (default: all)")
    every.add_argument("--force", action="store_true", help="rerun cells that already have a result.json")
    every.add_argument("--run_root", default=None)
    rep = sub.add_parser("report", help="rebuild results.json/results.md/figures from the runs' result.json")
    rep.add_argument("--out", default="docs/study")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from hrm.study.runner import configure_cpu_env

        configure_cpu_env()  # before anything initialises JAX
    from hrm.config import ConfigError

    try:
        if args.command == "list":
            from hrm.study.orchestrate import print_grid

            print_grid()
        elif args.command == "run":
            from hrm.study.runner import DEFAULT_RUN_ROOT, run_cell

            r = run_cell(args.cell, args.seed, args.out, args.run_root or DEFAULT_RUN_ROOT, args.compile_cache)
            print(f"{r['cell']} seed {r['seed']}: final loss {r['final_loss']:.4f}, held-out loss "
                  f"{r['heldout_loss']:.4f}, exact match {100 * r['eval']['overall']:.1f}%, "
                  f"{r['cpu_s']['total']:.0f} CPU s -> {args.out}/result.json")
        elif args.command == "all":
            from hrm.study.orchestrate import run_all

            return run_all(args)
        else:
            from hrm.study.report import write_report

            write_report(args.out)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
