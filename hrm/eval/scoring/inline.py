"""Build a scoreable item from one line of a predictions file (for `eval.py --rescore`).

A line carries `task` and `prediction`, and either an `id` (gold looked up in --data_dir by the caller) or the
gold inline. Accepted inline forms, first match wins:

* release form — GSM8K `answer` (text ending "#### N"); MATH `solution`; DROP `answer` object (+ optional
  `validated_answers` list, release layout); default `response`;
* `gold` — MCQ gold letter with `num_choices` (optional `meta.gold_faithful`/`meta.gold_corrected` for ARC,
  optional `subject` for MMLU, else the subject is taken from an id "<subject>/<row>"); GSM8K int or number
  string; MATH answer string; DROP list of gold span lists (or one string); default response string.

Lines written by `hrm.eval.runner` use the `gold` form, so runner output rescores without --data_dir.
"""

from __future__ import annotations

from typing import Any, Optional

from hrm.eval.scoring import task_kind
from hrm.eval.scoring.drop import drop_golds
from hrm.eval.scoring.gsm8k import gsm8k_gold
from hrm.eval.scoring.hendrycks_math import math_gold
from hrm.eval.tasks.base import EvalItem, TaskError

RELEASE_FIELDS = {"gsm8k": "answer", "math": "solution", "drop": "answer", "exact": "response"}


def has_inline_gold(line: dict) -> bool:
    """True if the line carries a gold answer in one of the accepted inline forms."""
    kind = task_kind(line["task"])
    return "gold" in line or (kind in RELEASE_FIELDS and RELEASE_FIELDS[kind] in line)


def _gold(kind: str, line: dict) -> Any:
    release = RELEASE_FIELDS.get(kind)
    if release and release in line:
        value = line[release]
        if kind == "gsm8k":
            return gsm8k_gold(str(value))
        if kind == "math":
            return math_gold(str(value))
        if kind == "drop":
            return drop_golds(value, line.get("validated_answers"))
        return str(value)
    gold = line["gold"]
    if kind == "gsm8k":
        return int(float(str(gold).replace(",", "")))
    if kind == "drop":
        if isinstance(gold, str):
            return [(gold,)]
        return [tuple(g) if isinstance(g, (list, tuple)) else (str(g),) for g in gold]
    return gold if kind == "mcq" else str(gold)


def item_from_line(line: dict) -> EvalItem:
    """An `EvalItem` (empty prompt) whose gold comes from the line itself; a clear error if it cannot."""
    task = line.get("task")
    if not task or "prediction" not in line:
        raise TaskError(f"rescore line needs 'task' and 'prediction': {str(line)[:200]}")
    kind = task_kind(task)
    try:
        gold = _gold(kind, line)
    except (KeyError, ValueError, TypeError) as e:
        raise TaskError(f"{task} line {line.get('id', '?')!r}: cannot read the inline gold ({e!r})") from None
    num_choices: Optional[int] = None
    subject = line.get("subject")
    if kind == "mcq":
        if "num_choices" not in line:
            raise TaskError(f"{task} line {line.get('id', '?')!r}: an inline MCQ gold needs 'num_choices'")
        num_choices = int(line["num_choices"])
        gold = str(gold).strip().upper()
        if task == "mmlu" and subject is None and "/" in str(line.get("id", "")):
            subject = str(line["id"]).split("/", 1)[0]
    meta = {k: v for k, v in (line.get("meta") or {}).items() if k in ("gold_faithful", "gold_corrected")}
    return EvalItem(task=task, id=str(line.get("id", "")), condition=line.get("condition") or "direct",
                    prompt="", gold=gold, max_context=0, max_tokens=None, num_choices=num_choices,
                    subject=subject, meta=meta)
