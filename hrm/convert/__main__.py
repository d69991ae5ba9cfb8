"""Checkpoint conversion CLI (docs/checkpoints.md).

    python -m hrm.convert from-hf <hf folder> <out dir>                 # transformers hrm_text -> ours
    python -m hrm.convert to-hf <checkpoint> <out dir> [--no-ema] [--dtype bfloat16]
    python -m hrm.convert from-reference <dcp dir | .pt | .npz> <out dir> [--config cfg.yaml] [--no-ema]

Our checkpoints land in `<out>/checkpoints/0/` (layout in `hrm.convert.ckpt_io`); `<out>` works as
`train.init_from=<out>` and `eval.py --checkpoint <out>`. Exit code 0 on success, 2 on a
conversion error (the message names the offending key or tensor).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hrm.convert", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("from-hf", help="transformers hrm_text folder -> our checkpoint")
    p.add_argument("src")
    p.add_argument("out")
    p = sub.add_parser("to-hf", help="our checkpoint -> transformers hrm_text folder")
    p.add_argument("src", help="run dir, checkpoints dir or step dir (latest step)")
    p.add_argument("out")
    p.add_argument("--no-ema", dest="use_ema", action="store_false", help="export raw params, not EMA")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                   help="tensor dtype of the export (default: the checkpoint's parameter dtype, model.param_dtype)")
    p = sub.add_parser("from-reference", help="reference FSDP2/.pt/.npz checkpoint -> our checkpoint")
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--config", help="our YAML config giving the architecture (else inferred)")
    p.add_argument("--no-ema", dest="use_ema", action="store_false", help="import raw params, not param_ema")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from hrm.config import ConfigError
    from hrm.convert.layouts import ConversionError

    try:
        if args.command == "from-hf":
            from hrm.convert.hf import import_hf

            where = import_hf(args.src, args.out)
        elif args.command == "to-hf":
            from hrm.convert.hf import export_hf

            where = export_hf(args.src, args.out, use_ema=args.use_ema, dtype=args.dtype)
        else:
            from hrm.convert.reference_ckpt import import_reference

            where = import_reference(args.src, args.out, config=args.config, use_ema=args.use_ema)
    except (ConversionError, ConfigError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
