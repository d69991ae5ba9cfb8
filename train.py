"""Train HRM-Text.

    python train.py                                   # tiny config on the built-in default dataset (CPU)
    python train.py --config configs/xl.yaml data.path=<prepared dir>    # the paper's 1B recipe
    python train.py --config configs/xl.yaml --compile_only --topology v5p:2x2x2   # AOT for a TPU slice

Any config key can be overridden as dotted key=value (e.g. optim.lr=1e-4 train.total_steps=100).
Exit status: 0 done (or SIGTERM: checkpoint saved), 2 config/data error, 3 training diverged,
130 Ctrl-C (a checkpoint of the current step is saved; rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = str(Path(__file__).resolve().parent / "configs" / "tiny.yaml")


def main(argv: list[str] | None = None) -> int:
    from hrm.config import ConfigError, load_config, parse_cli_overrides

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default: configs/tiny.yaml)")
    ap.add_argument("--compile_only", action="store_true", help="compile the train step ahead of time, don't run")
    ap.add_argument("--topology", default="", help="TPU topology for --compile_only, e.g. v5p:2x2x2")
    ap.add_argument("--bp_steps", type=int, default=0, help="bp_steps to compile with --compile_only (default max)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    try:
        path, overrides, rest = parse_cli_overrides(argv)
        args = ap.parse_args(rest + ["--config", path or DEFAULT_CONFIG] + overrides)
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.compile_only:
        if args.topology or cfg.mesh.topology:  # libtpu compiles without TPU hardware; keep the CPU backend
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
            os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
        from hrm.train.aot import compile_only

        result = compile_only(cfg, topology=args.topology, bp_steps=args.bp_steps or None)
        print("RESULT " + json.dumps(result))
        return 0
    from hrm.train.loop import TrainingStopped, train

    try:
        summary = train(cfg)
    except TrainingStopped as e:
        print(f"training stopped: {e}", file=sys.stderr)
        return 3
    except (ConfigError, FileNotFoundError) as e:  # bad config, missing data or checkpoint: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the first step, or a second Ctrl-C
        print("interrupted: no checkpoint saved", file=sys.stderr)
        return 130
    if "interrupted_at" in summary:
        print(f"interrupted: saved checkpoint at step {summary['interrupted_at']} in {summary['saved_checkpoint']}; "
              f"run the same command to resume", file=sys.stderr)
        return 130
    losses = summary["losses"]
    if losses:
        first, last = losses[min(losses)], losses[max(losses)]
        print(f"done: steps {summary['start_step']}->{summary['final_step']} of {summary['total_steps']}, "
              f"loss {first:.4f} -> {last:.4f}; run dir {cfg.train.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
