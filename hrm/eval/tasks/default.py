"""Built-in default tasks: `<dir>/heldout.jsonl` of the procedural dataset (arithmetic, sorting, counting, ...).

Each line is {"task", "id", "instruction", "response", "condition"}. The prompt is the instruction under the
line's own condition; scoring is exact match of the stripped generation against the stripped response, reported
per sub-task (the `task` field) and overall. Generation is greedy with max_tokens 64 and max_context 256 unless
configured otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

from hrm.eval.tasks.base import EvalItem, TaskError
from hrm.eval.tasks.files import require

HELDOUT = "heldout.jsonl"
MAX_TOKENS = 64
MAX_CONTEXT = 256


def load(data_dir: Path, variant: str, max_tokens: int = MAX_TOKENS, max_context: int = MAX_CONTEXT) -> list[EvalItem]:
    path = require(data_dir, HELDOUT, "the built-in default tasks (generate them with the data tools first)")
    items = []
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items.append(EvalItem(task="default", id=str(row["id"]), condition=row.get("condition") or "direct",
                                  prompt=row["instruction"], gold=row["response"], max_context=max_context,
                                  max_tokens=max_tokens, subject=str(row["task"])))
        except (json.JSONDecodeError, KeyError) as e:
            raise TaskError(f"{path}:{i + 1}: expected a JSON object with task, id, instruction, response, "
                            f"condition ({e!r})") from None
    return items
