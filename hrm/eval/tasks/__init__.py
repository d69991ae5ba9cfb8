"""Benchmark readers: one module per benchmark over the original release files (SPEC §7.2-§7.9, §7.12).

Public API: `load_tasks`, `load_task`, `parse_tasks`, `EvalItem`, `BENCHMARKS`, and the errors/warnings
`TaskError`, `MissingDataError`, `DataIntegrityWarning`.
"""

from hrm.eval.tasks.base import BENCHMARKS, EvalItem, MissingDataError, TaskError
from hrm.eval.tasks.files import DataIntegrityWarning
from hrm.eval.tasks.registry import TASK_NAMES, load_task, load_tasks, parse_tasks

__all__ = ["BENCHMARKS", "TASK_NAMES", "DataIntegrityWarning", "EvalItem", "MissingDataError", "TaskError",
           "load_task", "load_tasks", "parse_tasks"]
