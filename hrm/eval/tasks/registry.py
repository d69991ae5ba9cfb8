"""Task registry: names -> readers, `all`, limits and context overrides (SPEC §7, §7.12).

`load_tasks(["gsm8k", "mmlu"], data_dir, variant="faithful", limit=10)` returns the items of each task in order,
the first `limit` per task. Readers are imported lazily, one module per benchmark.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Optional, Sequence

from hrm.eval.tasks.base import BENCHMARKS, EvalItem, TaskError, check_variant

_MODULES = {
    "mmlu": "mmlu", "arc_challenge": "arc", "hellaswag": "hellaswag", "winogrande": "winogrande",
    "boolq": "boolq", "drop": "drop", "gsm8k": "gsm8k", "math": "hendrycks_math", "default": "default",
}
ALIASES = {"arc": "arc_challenge", "arc_c": "arc_challenge", "hella": "hellaswag", "wino": "winogrande"}
TASK_NAMES = tuple(_MODULES)


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    """Comma list (or sequence) of task names; `all` = the eight benchmarks in the paper's column order."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[str] = []
    for name in names:
        expanded = list(BENCHMARKS) if name == "all" else [ALIASES.get(name, name)]
        for n in expanded:
            if n not in _MODULES:
                raise TaskError(f"unknown task {name!r}; known: all, {', '.join(TASK_NAMES)}")
            if n not in out:
                out.append(n)
    if not out:
        raise TaskError("no tasks given")
    return out


def reader(task: str) -> Callable[..., list[EvalItem]]:
    """The `load(data_dir, variant, ...)` function of one task."""
    if task not in _MODULES:
        raise TaskError(f"unknown task {task!r}; known: {', '.join(TASK_NAMES)}")
    return importlib.import_module(f"hrm.eval.tasks.{_MODULES[task]}").load


def load_task(task: str, data_dir: str | Path, variant: str = "faithful", limit: int = 0,
              max_context: int = 0, default_max_tokens: Optional[int] = None,
              default_max_context: Optional[int] = None) -> list[EvalItem]:
    """Items of one task. `limit` > 0 keeps the first N; `max_context` > 0 overrides every item's context."""
    check_variant(variant)
    if not str(data_dir):
        raise TaskError(f"task {task!r} needs a data directory (--data_dir)")
    kwargs = {}
    if task == "default":
        if default_max_tokens is not None:
            kwargs["max_tokens"] = default_max_tokens
        if default_max_context is not None:
            kwargs["max_context"] = default_max_context
    items = reader(task)(Path(data_dir), variant, **kwargs)
    if limit and limit > 0:
        items = items[:limit]
    if max_context and max_context > 0:
        for item in items:
            item.max_context = max_context
    return items


def load_tasks(tasks: str | Sequence[str], data_dir: str | Path, variant: str = "faithful", limit: int = 0,
               max_context: int = 0, default_dir: Optional[str | Path] = None,
               default_max_tokens: Optional[int] = None,
               default_max_context: Optional[int] = None) -> list[EvalItem]:
    """Items of every task in `tasks`, concatenated in task order. `default` reads `default_dir` (else data_dir)."""
    items: list[EvalItem] = []
    for task in parse_tasks(tasks):
        where = default_dir if (task == "default" and default_dir) else data_dir
        items += load_task(task, where, variant, limit, max_context, default_max_tokens, default_max_context)
    return items
