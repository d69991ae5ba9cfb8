"""Errors and warnings of the evaluation package (a leaf module: everything else may import it).

* `TaskError` — a task name, variant, option or data line is invalid; the message says which and why.
* `MissingDataError` — a release file a task needs is absent; the message names the file and its purpose.
* `DataIntegrityWarning` — a release file's checksum or item count differs from the known release (docs/eval_protocol.md
§12).
"""

from __future__ import annotations


class TaskError(ValueError):
    """A task name, variant, option or data file is invalid; the message says which and why."""


class MissingDataError(FileNotFoundError):
    """A release file a task needs (evaluation split or few-shot source) is absent; the message names it."""


class DataIntegrityWarning(UserWarning):
    """A release file's checksum or item count differs from the known value (docs/eval_protocol.md §12)."""
