"""The run directory: local or remote (`gs://…` and the other `etils.epath` schemes).

Everything a run writes (config.yaml, metrics.jsonl, summary.json, the tokenizer copy, checkpoints)
goes through `etils.epath` (it comes with Orbax), never `pathlib`: `pathlib.Path("gs://b/r")`
would turn into `<cwd>/gs:/b/r`. Local paths are made absolute; URLs are kept as they are.

A run directory is created lazily by `RunDir.create()`; when a run fails before its first step
(bad config, missing data, ...), `RunDir.remove_if_created()` removes a directory that this run
created, so failed attempts leave nothing behind.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from etils import epath

from hrm.data.paths import as_path, is_remote  # one definition of "local or URL" for data and runs

__all__ = ["RunDir", "as_path", "is_remote"]


class RunDir:
    """`<run_dir>` of one training run; only process 0 writes files (docs/conventions.md §6)."""

    def __init__(self, path: Any, process_index: int = 0):
        self.path = as_path(path)
        self.writer = process_index == 0
        self._created = False

    def __truediv__(self, name: str) -> epath.Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def create(self) -> None:
        """Create the directory (remembering whether it existed, for `remove_if_created`)."""
        if not self.path.exists():
            self._created = True
        self.path.mkdir(parents=True, exist_ok=True)

    def remove_if_created(self) -> bool:
        """Remove the directory if this run created it (a failure before the first step); True if removed."""
        if not (self._created and self.writer and self.path.exists()):
            return False
        self.path.rmtree()
        self._created = False
        return True

    def write_text(self, name: str, text: str) -> None:
        """Write `<run_dir>/<name>` (process 0 only)."""
        if self.writer:
            (self.path / name).write_text(text)

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=1, default=float))

    def copy_in(self, src: Optional[epath.Path]) -> Optional[epath.Path]:
        """Copy file `src` into the run directory unless a file of that name is there; returns the copy."""
        if not self.writer or src is None or not src.is_file():
            return None
        dst = self.path / src.name
        if not dst.exists():
            src.copy(dst)
        return dst
