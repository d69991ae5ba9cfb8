"""Benchmark tasks, one module per benchmark, and the registry that finds them (docs/eval_protocol.md §2–9, §12).

Every module in this package exports one `TASK` (an `hrm.eval.task.Task`); `get_task(name)` finds it by name or
alias, in the manner of big_vision's evaluator lookup, except that the modules are discovered (`pkgutil`) so that
adding a benchmark means adding a module here and nothing else. `load_tasks(["gsm8k", "mmlu"], data_dir,
variant="faithful", limit=10)` returns the items of each task in order, the first `limit` per task.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from hrm.eval.errors import DataIntegrityWarning, MissingDataError, TaskError
from hrm.eval.item import EvalItem, check_variant
from hrm.eval.task import Task

__all__ = ["DataIntegrityWarning", "EvalItem", "MissingDataError", "TaskError", "all_tasks", "benchmarks",
           "get_task", "load_task", "load_tasks", "parse_tasks"]

_REGISTRY: dict[str, Task] = {}
_ALIASES: dict[str, str] = {}


def _discover() -> dict[str, Task]:
    """{name: Task} over every module of this package, sorted by `order` (imported once, on first use)."""
    if _REGISTRY:
        return _REGISTRY
    found: dict[str, Task] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        task = getattr(module, "TASK", None)
        if not isinstance(task, Task):
            raise TaskError(f"{module.__file__}: a task module must export TASK = Task(...)")
        if task.name in found:
            raise TaskError(f"{module.__file__}: task name {task.name!r} is already defined")
        found[task.name] = task
    aliases = {}
    for task in found.values():
        for alias in task.aliases:
            if alias in found or alias in aliases:
                raise TaskError(f"task {task.name!r}: alias {alias!r} is already a task name or alias")
            aliases[alias] = task.name
    _REGISTRY.update(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))
    _ALIASES.update(aliases)
    return _REGISTRY


def all_tasks() -> list[Task]:
    """Every registered task, in table order."""
    return list(_discover().values())


def benchmarks() -> list[str]:
    """The names `--tasks all` expands to (tasks with `in_all`), in table order: the paper's eight."""
    return [t.name for t in all_tasks() if t.in_all]


def get_task(name: str) -> Task:
    """The task called `name` (or one of its aliases); `TaskError` listing the known names otherwise."""
    tasks = _discover()
    key = _ALIASES.get(name, name)
    if key not in tasks:
        raise TaskError(f"unknown task {name!r}; known: all, {', '.join(tasks)}")
    return tasks[key]


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    """Comma list (or sequence) of task names or aliases; `all` = `benchmarks()`. Canonical names, no repeats."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[str] = []
    for name in names:
        for n in benchmarks() if name == "all" else [get_task(name).name]:
            if n not in out:
                out.append(n)
    if not out:
        raise TaskError("no tasks given")
    return out


def load_task(task: str, data_dir: str | Path, variant: str = "faithful", limit: int = 0, max_context: int = 0,
              options: Optional[Mapping[str, Any]] = None) -> list[EvalItem]:
    """Items of one task. `limit` > 0 keeps the first N; `max_context` > 0 overrides every item's context;
    `options` are passed to the task's reader (e.g. `default`'s max_tokens, max_context)."""
    check_variant(variant)
    spec = get_task(task)
    if not str(data_dir):
        raise TaskError(f"task {spec.name!r} needs a data directory (--data_dir)")
    items = spec.read(Path(data_dir), variant, **dict(options or {}))
    if limit and limit > 0:
        items = items[:limit]
    if max_context and max_context > 0:
        for item in items:
            item.max_context = max_context
    return items


def load_tasks(tasks: str | Sequence[str], data_dir: str | Path, variant: str = "faithful", limit: int = 0,
               max_context: int = 0, *, data_dirs: Optional[Mapping[str, str | Path]] = None,
               options: Optional[Mapping[str, Mapping[str, Any]]] = None) -> list[EvalItem]:
    """Items of every task in `tasks`, concatenated in task order.

    `data_dirs` maps a task name to its own data location (e.g. `default` -> a held-out file) instead of
    `data_dir`; `options` maps a task name to its reader options.
    """
    data_dirs, options = dict(data_dirs or {}), dict(options or {})
    items: list[EvalItem] = []
    for task in parse_tasks(tasks):
        where = data_dirs.get(task) or data_dir
        items += load_task(task, where, variant, limit, max_context, options.get(task))
    return items
