"""Held-out instruction/response pairs scored by exact match: the built-in procedural dataset's `heldout.jsonl`
(arithmetic, sorting, counting, ...) or your own file (`eval.py --heldout FILE`).

The location is a JSONL file or a directory holding `heldout.jsonl`. Each line uses the training input schema
(`hrm.data.sources.extract_example`, data/README.md): `instruction` + `response` (or the aliases prompt/completion,
input/output, question/answer, or chat `messages`), optional `condition` (default `direct`), plus optional `task`
(the group reported separately, e.g. the built-in sub-task) and `id` (default "<file name>:<0-based line>").
The prompt is the instruction under the line's condition; the score is exact match of the stripped generation
against the stripped response. Greedy, max_tokens 64 and max_context 256 unless configured otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from hrm.data.sources import BadRecord, extract_example
from hrm.eval.errors import MissingDataError, TaskError
from hrm.eval.item import EvalItem
from hrm.eval.scoring.aggregates import grouped_accuracy
from hrm.eval.scoring.exact import score_exact
from hrm.eval.task import Task, line_item, simple_accuracy, stripped_vote

HELDOUT = "heldout.jsonl"
MAX_TOKENS = 64
MAX_CONTEXT = 256


def heldout_path(location: Path) -> Path:
    """`location` itself if it is a file, else `location/heldout.jsonl`; a `MissingDataError` if absent."""
    path = location if location.is_file() else location / HELDOUT
    if not path.is_file():
        raise MissingDataError(f"missing held-out file {path} (task `default`: a JSONL of instruction/response "
                               "pairs; the built-in one is generated on first use, or pass --heldout FILE)")
    return path


def prompt(row: Any, shots: Sequence = (), variant: str = "faithful") -> str:
    """The instruction (`row` = an `hrm.data.sources.Example`)."""
    return row.instruction


def read(data_dir: Path, variant: str, max_tokens: int = MAX_TOKENS, max_context: int = MAX_CONTEXT
         ) -> list[EvalItem]:
    path = heldout_path(Path(data_dir))
    items = []
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            example = extract_example(row)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}:{i + 1}: not valid JSON ({e.msg})") from None
        except BadRecord as e:
            raise TaskError(f"{path}:{i + 1}: {e} (expected instruction/response, optional condition, task, "
                            "id; see data/README.md)") from None
        group = row.get("task")
        items.append(EvalItem(task="default", id=str(row.get("id", f"{path.name}:{i}")),
                              condition=example.condition, prompt=prompt(example), gold=example.response,
                              max_context=max_context, max_tokens=max_tokens,
                              subject=None if group is None else str(group)))
    if not items:
        raise TaskError(f"{path}: no examples")
    return items


def score(item: EvalItem, prediction: str) -> dict[str, Any]:
    return score_exact(prediction, item.gold)


def aggregate(records: Sequence[dict], variant: str) -> dict[str, Any]:
    """Exact-match accuracy overall (micro) and, when lines carry a `task`, per group."""
    if not any(r.get("subject") is not None for r in records):
        return simple_accuracy(records, variant)
    return grouped_accuracy(records, [r["variants"][variant] for r in records], headline="micro")


def item_from_line(line: dict) -> Optional[EvalItem]:
    """Release form `response`, or `gold`: the response string."""
    for key in ("response", "gold"):
        if key in line:
            return line_item("default", line, str(line[key]))
    return None


TASK = Task(
    name="default", kind="generation", header="exact match", condition="(per line)", read=read, prompt=prompt,
    score={"faithful": score, "corrected": score}, vote_key=stripped_vote, aggregate=aggregate,
    item_from_line=item_from_line, in_all=False, order=1000,
)
