#!/usr/bin/env python
"""Evaluate HRM-Text on the paper benchmarks or the built-in default tasks (SPEC §7). Thin CLI over `hrm.eval`.

  python eval.py --checkpoint runs/xl --tasks all --data_dir ../shared/benchdata --out runs/eval/xl
  python eval.py --tasks gsm8k,mmlu --data_dir DIR --dump_prompts prompts.jsonl       # no model
  python eval.py --rescore runs/eval/xl/predictions.jsonl --out scored.jsonl          # no model
  python eval.py --tasks all --data_dir DIR --dry_run [--tokenizer tokenizer.json]    # no model

The model path calls `hrm.eval.model_loading.load_generator(checkpoint, args) -> (generator, tokenizer,
size_label)`, imported only there, so the no-model modes never import JAX. Items asking for more context than the
model's `max_seq_len` are capped to it with a warning (`cap_context`).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="checkpoint to evaluate (model path)")
    p.add_argument("--config", help="YAML run config; its `eval:` section supplies defaults for unset flags")
    p.add_argument("--tasks", help="comma list of tasks; `all` = the eight benchmarks; `default` = built-in tasks")
    p.add_argument("--data_dir", help="directory laid out like shared/benchdata (original release files)")
    p.add_argument("--default_dir", help="directory with heldout.jsonl for task `default` "
                   "(default: --data_dir if it holds one, else data/default)")
    p.add_argument("--limit", type=int, help="evaluate only the first N items of each task")
    p.add_argument("--variant", choices=("faithful", "corrected"), help="protocol of SPEC §7.11")
    p.add_argument("--out", help="results directory (model path) or scored JSONL (--rescore)")
    p.add_argument("--dump_prompts", metavar="OUT.jsonl", help="write every wrapped prompt and gold; no model")
    p.add_argument("--rescore", metavar="PREDICTIONS.jsonl", help="re-score a predictions file; no model")
    p.add_argument("--dry_run", action="store_true", help="load data, build prompts, check counts and lengths")
    p.add_argument("--tokenizer", help="tokenizer file for --dry_run prompt-length checks")
    p.add_argument("--size", help="size label for the published-number rows (XL/1B, L/0.6B) when not from a model")
    p.add_argument("--batch_size", type=int, help="prompts per generate call")
    p.add_argument("--temperature", type=float, help="override every task's temperature (default: 0, greedy)")
    p.add_argument("--num_samples", type=int, default=1, help="samples per item, scored by majority vote")
    p.add_argument("--seed", type=int, help="sampling seed")
    p.add_argument("--max_context", type=int, help="override every task's max_context (0 = per-task default)")
    p.add_argument("--default_max_tokens", type=int, help="max_tokens of task `default` (64)")
    p.add_argument("--default_max_context", type=int, help="max_context of task `default` (256)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    p.add_argument("--dtype", choices=("bfloat16", "float32"),
                   help="weights/compute/KV-cache dtype (default: the checkpoint config's eval.dtype, "
                        "bfloat16 as the reference unless the config says otherwise)")
    p.add_argument("--no_ema", action="store_true", help="evaluate the raw weights instead of the EMA (SPEC §5.2)")
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags from the config's eval section (or the EvalConfig defaults)."""
    from hrm.config import EvalConfig, load_config

    ev = load_config(args.config).eval if args.config else EvalConfig()
    for name in ("tasks", "data_dir", "limit", "variant", "batch_size", "seed", "max_context", "temperature"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(ev, name))
    if not args.default_dir:
        has_heldout = bool(args.data_dir) and (Path(args.data_dir) / "heldout.jsonl").exists()
        from hrm.data.default_dataset import DEFAULT_ROOT

        args.default_dir = args.data_dir if has_heldout else str(DEFAULT_ROOT)
    return args


def load_items(args: argparse.Namespace, tasks: str | list[str] | None = None):
    """EvalItems of the requested tasks; the built-in dataset is generated on first use (file-locked)."""
    from hrm.data.default_dataset import DEFAULT_ROOT
    from hrm.eval.tasks import load_tasks, parse_tasks

    wanted = parse_tasks(tasks or args.tasks)
    if "default" in wanted and Path(args.default_dir).resolve() == DEFAULT_ROOT and \
            not (DEFAULT_ROOT / "heldout.jsonl").is_file():
        from hrm.data.default_dataset import ensure_default_dataset

        ensure_default_dataset()

    return load_tasks(tasks or args.tasks, args.data_dir or "", args.variant, args.limit or 0,
                      args.max_context or 0, default_dir=args.default_dir,
                      default_max_tokens=args.default_max_tokens, default_max_context=args.default_max_context)


def dump_prompts(args: argparse.Namespace, items) -> None:
    from hrm.eval.runner import write_jsonl

    write_jsonl(args.dump_prompts, [{"task": it.task, "id": it.id, "condition": it.condition,
                                     "prompt": it.wrapped, "gold": it.gold_json()} for it in items])
    print(f"wrote {len(items)} prompts to {args.dump_prompts}", file=sys.stderr)


def dry_run(args: argparse.Namespace) -> int:
    """Load every task separately (reporting each failure), build prompts, check counts and lengths."""
    from hrm.eval.tasks import TaskError, parse_tasks

    items, failed = [], []
    for task in parse_tasks(args.tasks):
        try:
            items += load_items(args, [task])
        except (TaskError, FileNotFoundError) as e:
            failed.append(task)
            print(f"{task}: ERROR {e}")
    tokenizer = None
    if args.tokenizer:
        from hrm.data.tokenizer import load_tokenizer  # the project tokenizer (SPEC §6.4)

        tokenizer = load_tokenizer(args.tokenizer)
    by_task: dict[str, list] = {}
    for it in items:
        by_task.setdefault(it.task, []).append(it)
    for task, group in by_task.items():
        line = f"{task}: {len(group)} items, condition {group[0].condition}, max_context {group[0].max_context}, " \
               f"max_tokens {group[0].max_tokens}"
        if tokenizer is not None:
            from hrm.eval.runner import plan_item

            lengths = [len(plan_item(tokenizer, it)[0]) for it in group]
            over = sum(n >= it.max_context for n, it in zip(lengths, group))
            line += f"; prompt tokens max {max(lengths)} mean {sum(lengths) / len(lengths):.0f}; " \
                    f"{over} >= max_context (would be skipped and scored invalid)"
        print(line)
    for task, group in by_task.items():
        print(f"\n--- example {task} [{group[0].id}] gold={json.dumps(group[0].gold_json(), ensure_ascii=False)}")
        print(group[0].wrapped)
    return 2 if failed else 0


def rescore(args: argparse.Namespace) -> None:
    from hrm.eval.results import render_markdown
    from hrm.eval.runner import rescore_records, write_jsonl
    from hrm.eval.scoring.aggregate import aggregate

    with open(args.rescore, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    scored = rescore_records(lines, args.variant, args.data_dir or None)
    if args.out:
        write_jsonl(args.out, scored)
        print(f"wrote {len(scored)} scored lines to {args.out}", file=sys.stderr)
    print(render_markdown(aggregate(scored), variant=args.variant, size_label=args.size))


def checkpoint_eval_dtype(checkpoint: str) -> str:
    """`eval.dtype` of the checkpoint's run config: bfloat16 (the reference, SPEC §7.1) unless the config
    says otherwise (configs/tiny.yaml, a CPU config, uses float32: bf16 is emulated and ~3x slower on CPU)."""
    from hrm.config import load_config

    if checkpoint.startswith("random:"):
        return load_config(checkpoint[len("random:"):]).eval.dtype
    from hrm.convert.ckpt_io import config_from_meta, read_meta
    from hrm.train.checkpoint import resolve_step_dir

    try:
        return config_from_meta(read_meta(resolve_step_dir(checkpoint))).eval.dtype
    except (ValueError, KeyError, FileNotFoundError):
        return "bfloat16"


def cap_context(items: list, model_context: int) -> list:
    """Items asking for more context than the model/cache holds get the model's limit (SPEC §7.1: a prompt
    at or over it is not run and scores invalid), with a warning naming the tasks affected."""
    import dataclasses

    over = sorted({it.task for it in items if it.max_context > model_context})
    if over:
        print(f"warning: tasks {', '.join(over)} ask for a context longer than the model's {model_context} tokens; "
              f"capped (longer prompts are skipped and scored invalid)", file=sys.stderr)
    return [dataclasses.replace(it, max_context=min(it.max_context, model_context)) for it in items]


def evaluate(args: argparse.Namespace, items) -> None:
    from hrm.eval.model_loading import load_generator  # written separately; imports JAX
    from hrm.eval.results import code_version
    from hrm.eval.runner import run_tasks

    from hrm.config import TrainConfig, load_config
    from hrm.train.distributed import maybe_initialize

    # Multi-host: jax.distributed.initialize when the launch environment says so (TPU pod, SLURM,
    # JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID) or the config's train section asks for it.
    maybe_initialize(load_config(args.config).train if args.config else TrainConfig())
    if args.dtype is None:
        args.dtype = checkpoint_eval_dtype(args.checkpoint)
    generator, tokenizer, size_label = load_generator(args.checkpoint, args)
    items = cap_context(items, generator.max_context)
    out = args.out or str(Path("runs/eval") / f"{Path(args.checkpoint).name}_{args.variant}")
    info = {"checkpoint": args.checkpoint, "tasks": args.tasks, "limit": args.limit, "data_dir": args.data_dir,
            "code_version": code_version()}
    result = run_tasks(generator, tokenizer, items, variant=args.variant, batch_size=args.batch_size,
                       num_samples=args.num_samples, seed=args.seed, temperature=args.temperature,
                       out_dir=out, size_label=args.size or size_label, progress=not args.no_progress,
                       run_info=info)
    print(result["markdown"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hrm.config import ConfigError
    from hrm.eval.tasks import TaskError

    try:
        resolve(args)
        modes = [m for m in ("rescore", "dump_prompts", "dry_run", "checkpoint") if getattr(args, m)]
        if len(modes) != 1:
            print("error: give exactly one of --checkpoint, --dump_prompts, --dry_run, --rescore", file=sys.stderr)
            return 2
        if args.rescore:
            rescore(args)
            return 0
        if args.dry_run:
            return dry_run(args)
        items = load_items(args)
        if args.dump_prompts:
            dump_prompts(args, items)
        elif args.checkpoint:
            evaluate(args, items)
    except (TaskError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    warnings.formatwarning = lambda msg, cat, *a, **k: f"WARNING ({cat.__name__}): {msg}\n"
    sys.exit(main())
