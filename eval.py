#!/usr/bin/env python
"""Evaluate HRM-Text on the paper benchmarks or held-out instruction/response pairs (docs/eval_protocol.md). Thin CLI
over `hrm.eval`.

  python eval.py --checkpoint runs/tiny                                              # built-in held-out tasks
  python eval.py --checkpoint runs/mine --heldout heldout.jsonl                      # your own held-out file
  python eval.py --checkpoint runs/xl --tasks all --data_dir BENCHDATA --out runs/eval/xl
  python eval.py --tasks gsm8k,mmlu --data_dir DIR --dump_prompts prompts.jsonl       # no model
  python eval.py --rescore runs/eval/xl/predictions.jsonl --out scored.jsonl          # no model
  python eval.py --tasks all --data_dir DIR --dry_run [--tokenizer tokenizer.json]    # no model

Held-out file (`--heldout`): JSONL in the training input schema (data/README.md): `instruction` + `response`
(or prompt/completion, input/output, question/answer, chat `messages`), optional `condition` (default direct),
optional `task` (a group reported separately) and `id`. Scored by exact match of the stripped generation.

Both protocols of docs/eval_protocol.md §11 are reported: a run generates the `--variant` prompts, and also the other
variant's prompts where they differ (ARC shots with numeric labels; MCQ context 3072 corrected vs 4096 faithful), so the
corrected table is the corrected protocol and the faithful table the faithful one, whatever --variant says.

Only the model path imports JAX (`hrm.eval.model_loading`). Items asking for more context than the model's
`max_seq_len` are capped to it with a warning (`cap_context`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Optional

from hrm.config import Config, ConfigError, EvalConfig, TrainConfig, load_config
from hrm.data.default_dataset import DEFAULT_ROOT, ensure_default_dataset
from hrm.data.tokenizer import load_tokenizer
from hrm.eval.item import EvalItem, other_variant
from hrm.eval.metrics import aggregate
from hrm.eval.rescore import rescore_records
from hrm.eval.results import code_version, render_markdown, write_jsonl
from hrm.eval.runner import plan_item, run_tasks
from hrm.eval.tasks import TaskError, get_task, load_tasks, parse_tasks
from hrm.train.distributed import maybe_initialize

HELDOUT_TASK = "default"  # the task that reads --heldout


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="run dir, checkpoints dir or step dir to evaluate, or random:<config.yaml>")
    p.add_argument("--config", help="YAML run config; its `eval:` section supplies defaults for unset flags")
    p.add_argument("--tasks", help="comma list of tasks; `all` = the eight benchmarks; `default` = held-out pairs "
                   "(default: default)")
    p.add_argument("--data_dir", help="directory laid out like shared/benchdata (original release files)")
    p.add_argument("--heldout", "--default_dir", dest="heldout", metavar="FILE",
                   help="held-out JSONL (or a directory holding heldout.jsonl) scored by task `default`; "
                   "default: --data_dir if it holds heldout.jsonl, else the built-in data/default/heldout.jsonl")
    p.add_argument("--limit", type=int, help="evaluate only the first N items of each task")
    p.add_argument("--variant", choices=("faithful", "corrected"),
                   help="protocol of docs/eval_protocol.md §11 whose prompts the run generates and whose scores are "
                   "the top-level "
                   "fields of predictions.jsonl (default faithful); the other protocol's table comes from its own "
                   "prompts and context, generated where they differ")
    p.add_argument("--out", help="results directory (model path; default runs/eval/<checkpoint>_<variant>) or "
                   "scored JSONL (--rescore)")
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
    p.add_argument("--no_ema", action="store_true",
                   help="evaluate the raw weights instead of the EMA (docs/optimizer.md §2)")
    return p


def check_checkpoint_arg(checkpoint: Optional[str]) -> None:
    """Fail fast (before any data is read or generated) when --checkpoint names nothing."""
    if not checkpoint:
        return
    if checkpoint.startswith("random:"):
        config = checkpoint[len("random:"):]
        if not Path(config).is_file():
            raise FileNotFoundError(f"--checkpoint {checkpoint}: config file {config} does not exist")
    elif not Path(checkpoint).exists():
        raise FileNotFoundError(f"--checkpoint {checkpoint} does not exist (expected a run dir, its checkpoints/ "
                                "dir or a step dir, or random:<config.yaml>)")


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags from the config's eval section (or the EvalConfig defaults); pick the held-out file."""
    ev = load_config(args.config).eval if args.config else EvalConfig()
    if args.tasks is None and args.heldout:
        args.tasks = HELDOUT_TASK
    for name in ("tasks", "data_dir", "limit", "variant", "batch_size", "seed", "max_context", "temperature"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(ev, name))
    if args.heldout:
        args.heldout_source = "--heldout"
        if not args.rescore and HELDOUT_TASK not in parse_tasks(args.tasks):
            raise TaskError(f"--heldout is scored by task `{HELDOUT_TASK}`; add it to --tasks ({args.tasks})")
    elif args.data_dir and (Path(args.data_dir) / "heldout.jsonl").exists():
        args.heldout, args.heldout_source = args.data_dir, "--data_dir"
    else:
        args.heldout, args.heldout_source = str(DEFAULT_ROOT), "built-in"
    return args


def load_items(args: argparse.Namespace, tasks: str | list[str] | None = None,
               variant: Optional[str] = None) -> list[EvalItem]:
    """EvalItems of the requested tasks; the built-in dataset is generated on first use (file-locked)."""
    wanted = parse_tasks(tasks or args.tasks)
    if HELDOUT_TASK in wanted and Path(args.heldout).resolve() == DEFAULT_ROOT and \
            not (DEFAULT_ROOT / "heldout.jsonl").is_file():
        ensure_default_dataset()
    options = {k: v for k, v in (("max_tokens", args.default_max_tokens),
                                 ("max_context", args.default_max_context)) if v is not None}
    return load_tasks(wanted, args.data_dir or "", variant or args.variant, args.limit or 0, args.max_context or 0,
                      data_dirs={HELDOUT_TASK: args.heldout}, options={HELDOUT_TASK: options})


def dump_prompts(args: argparse.Namespace, items: list[EvalItem]) -> None:
    write_jsonl(args.dump_prompts, [{"task": it.task, "id": it.id, "condition": it.condition,
                                     "prompt": it.wrapped, "gold": it.gold_json()} for it in items])
    print(f"wrote {len(items)} prompts to {args.dump_prompts}", file=sys.stderr)


def describe_cap(group: list[EvalItem]) -> str:
    """The generation cap of a task's items (docs/eval_protocol.md §1: max_tokens, else max_context − prompt length)."""
    caps = sorted({it.max_tokens for it in group}, key=lambda x: -1 if x is None else x)
    if caps == [None]:
        return "max_tokens unset (generates until EOA or max_context − prompt tokens)"
    return "max_tokens " + "/".join("unset" if c is None else str(c) for c in caps)


def dry_run(args: argparse.Namespace) -> int:
    """Load every task separately (reporting each failure), build prompts, check counts, lengths and caps."""
    items, failed = [], []
    for task in parse_tasks(args.tasks):
        try:
            items += load_items(args, [task])
        except (TaskError, FileNotFoundError) as e:
            failed.append(task)
            print(f"{task}: ERROR {e}")
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    by_task: dict[str, list[EvalItem]] = {}
    for it in items:
        by_task.setdefault(it.task, []).append(it)
    for task, group in by_task.items():
        line = f"{task}: {len(group)} items, condition {group[0].condition}, max_context {group[0].max_context}, " \
               f"{describe_cap(group)} [{get_task(task).kind}]"
        if tokenizer is not None:
            plans = [plan_item(tokenizer, it) for it in group]
            lengths, budgets = [len(ids) for ids, _ in plans], [b for _, b in plans]
            over = sum(b == 0 for b in budgets)
            line += f"; prompt tokens max {max(lengths)} mean {sum(lengths) / len(lengths):.0f}; " \
                    f"generation cap max {max(budgets)} tokens; " \
                    f"{over} >= max_context (would be skipped and scored invalid)"
        print(line)
    for task, group in by_task.items():
        print(f"\n--- example {task} [{group[0].id}] gold={json.dumps(group[0].gold_json(), ensure_ascii=False)}")
        print(group[0].wrapped)
    return 2 if failed else 0


def rescore(args: argparse.Namespace) -> None:
    with open(args.rescore, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    scored = rescore_records(lines, args.variant, args.data_dir or None)
    if args.out:
        write_jsonl(args.out, scored)
        print(f"wrote {len(scored)} scored lines to {args.out}", file=sys.stderr)
    both = bool(scored) and all(line.get("both_protocols") for line in scored)
    print(render_markdown(aggregate(scored), variant=args.variant, size_label=args.size, both_protocols=both))


def training_data_warning(args: argparse.Namespace, cfg: Config) -> Optional[str]:
    """A warning when the checkpoint was trained on other data than the built-in dataset while task `default`
    would score the built-in held-out set (no --heldout given)."""
    if args.heldout_source != "built-in" or HELDOUT_TASK not in parse_tasks(args.tasks):
        return None
    path = cfg.data.path
    if not path or Path(path).resolve() == DEFAULT_ROOT:
        return None
    return (f"warning: the checkpoint was trained on data.path={path}, but task `{HELDOUT_TASK}` scores the built-in "
            f"held-out set ({DEFAULT_ROOT / 'heldout.jsonl'}); pass --heldout FILE to evaluate your own held-out "
            "pairs (see --help for the schema)")


def cap_context(items: list[EvalItem], model_context: int, quiet: bool = False) -> list[EvalItem]:
    """Items asking for more context than the model/cache holds get the model's limit (docs/eval_protocol.md §1: a
    prompt at or over it is not run and scores invalid), with a warning naming the tasks affected."""
    over = sorted({it.task for it in items if it.max_context > model_context})
    if over and not quiet:
        print(f"warning: tasks {', '.join(over)} ask for a context longer than the model's {model_context} tokens; "
              f"capped (longer prompts are skipped and scored invalid)", file=sys.stderr)
    return [dataclasses.replace(it, max_context=min(it.max_context, model_context)) for it in items]


def evaluate(args: argparse.Namespace) -> None:
    # Multi-host: jax.distributed.initialize when the launch environment says so (TPU pod, SLURM,
    # JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID) or the config's train section asks for it.
    # It must come before any JAX computation, including reading the checkpoint.
    maybe_initialize(load_config(args.config).train if args.config else TrainConfig())
    from hrm.eval.model_loading import checkpoint_info, load_generator  # imports JAX; only this path needs it

    try:
        info = checkpoint_info(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: {e}") from None
    out = args.out or str(Path("runs/eval") / f"{Path(args.checkpoint).name}_{args.variant}")
    where = "random init" if info.step is None else f"step {info.step} ({info.step_dir})"
    print(f"checkpoint {args.checkpoint}: {where}; results -> {out}", file=sys.stderr)
    message = training_data_warning(args, info.config)
    if message:
        print(message, file=sys.stderr)
    if args.dtype is None:
        args.dtype = info.config.eval.dtype
    items = load_items(args)
    twins = load_items(args, variant=other_variant(args.variant))
    generator, tokenizer, size_label = load_generator(args.checkpoint, args)
    items = cap_context(items, generator.max_context)
    twins = cap_context(twins, generator.max_context, quiet=True)
    run_info = {"checkpoint": args.checkpoint, "step": info.step, "tasks": args.tasks, "limit": args.limit,
                "data_dir": args.data_dir, "code_version": code_version()}
    if HELDOUT_TASK in parse_tasks(args.tasks):
        run_info["heldout"] = str(args.heldout)
    result = run_tasks(generator, tokenizer, items, variant=args.variant, batch_size=args.batch_size,
                       num_samples=args.num_samples, seed=args.seed, temperature=args.temperature,
                       out_dir=out, size_label=args.size or size_label, progress=not args.no_progress,
                       run_info=run_info, twins=twins)
    print(result["markdown"])
    print(f"checkpoint {args.checkpoint} ({where}); results in {out}/ (results.md, results.json, "
          "predictions.jsonl)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        modes = [m for m in ("rescore", "dump_prompts", "dry_run", "checkpoint") if getattr(args, m)]
        if len(modes) != 1:
            print("error: give exactly one of --checkpoint, --dump_prompts, --dry_run, --rescore", file=sys.stderr)
            return 2
        check_checkpoint_arg(args.checkpoint)
        resolve(args)
        if args.rescore:
            rescore(args)
        elif args.dry_run:
            return dry_run(args)
        elif args.dump_prompts:
            dump_prompts(args, load_items(args))
        else:
            evaluate(args)
    except (TaskError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    warnings.formatwarning = lambda msg, cat, *a, **k: f"WARNING ({cat.__name__}): {msg}\n"
    sys.exit(main())
