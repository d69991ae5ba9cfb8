"""Re-score a predictions file without a model (`eval.py --rescore`, docs/eval_protocol.md).

A line carries `task` and `prediction`, and either an `id` (gold looked up by (task, id) in `--data_dir`) or the
gold inline in one of the forms the task's spec accepts (`Task.item_from_line`): the release form (GSM8K
`answer`, MATH `solution`, DROP `answer` + `validated_answers`, held-out `response`) or `gold` (MCQ letter with
`num_choices`, optional `meta.gold_faithful`/`meta.gold_corrected` and `subject`). Lines written by
`hrm.eval.runner` use the `gold` form, so runner output rescores without --data_dir; their `rerun` (the other
variant's own generation) is scored for that variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from hrm.eval.errors import TaskError
from hrm.eval.item import EvalItem, check_variant
from hrm.eval.metrics import score_item
from hrm.eval.tasks import get_task, load_tasks

SCORE_FIELDS = ("extracted", "correct", "score", "invalid", "em", "f1", "variants")


def item_from_line(line: dict) -> Optional[EvalItem]:
    """The item (empty prompt) whose gold the line carries, None if it has none; a clear error if unreadable."""
    task = line.get("task")
    if not task or "prediction" not in line:
        raise TaskError(f"rescore line needs 'task' and 'prediction': {str(line)[:200]}")
    spec = get_task(str(task))
    try:
        return spec.item_from_line(line)
    except (KeyError, ValueError, TypeError) as e:
        if isinstance(e, TaskError):
            raise
        raise TaskError(f"{task} line {line.get('id', '?')!r}: cannot read the inline gold ({e!r})") from None


def rescore_records(lines: Sequence[dict], variant: str = "faithful",
                    data_dir: Optional[str | Path] = None) -> list[dict]:
    """Each output line repeats the input line with fresh `extracted` and score fields. Lines without an
    inline gold are looked up by (task, id) in `data_dir`."""
    check_variant(variant)
    inline = [item_from_line(line) for line in lines]
    need = sorted({get_task(str(line["task"])).name for line, it in zip(lines, inline) if it is None})
    lookup: dict[tuple[str, str], EvalItem] = {}
    if need:
        if not data_dir:
            raise TaskError(f"lines of {', '.join(need)} have no inline gold; pass --data_dir to look ids up")
        lookup = {(it.task, it.id): it for it in load_tasks(need, data_dir, variant)}
    out = []
    for line, item in zip(lines, inline):
        if item is None:
            key = (get_task(str(line["task"])).name, str(line.get("id")))
            if key not in lookup:
                raise TaskError(f"no {key[0]} item with id {key[1]!r} in {data_dir}")
            item = lookup[key]
        if item.subject is not None and "subject" not in line:
            line = {**line, "subject": item.subject}
        rerun = line.get("rerun") or {}
        other = {rerun["variant"]: str(rerun["prediction"])} if "variant" in rerun and "prediction" in rerun else None
        base = {k: v for k, v in line.items() if k not in SCORE_FIELDS}
        out.append({**base, **score_item(item, str(line["prediction"]), variant, other)})
    return out
