"""Scores and metrics read from the task specs (docs/eval_protocol.md §1–11): per example, per majority vote, per task.

`score_item(item, prediction, variant)` scores one generation under both variants of docs/eval_protocol.md §11 with the
task's `score[variant]` scorers and returns the run variant's fields at top level plus `variants = {"faithful": {...},
"corrected": {...}}`, so one run fills both result tables. When a variant's prompt or context differs from the
run's (ARC shots, MCQ context; `hrm.eval.runner`), that variant's own generation is passed in `other_predictions`.
`aggregate(records)` gives {task: {variant: metrics}} with the task's `aggregate`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Hashable, Iterable, Mapping, Optional, Sequence

from hrm.eval.item import VARIANTS, EvalItem
from hrm.eval.scoring.vote import majority_vote
from hrm.eval.tasks import get_task


def score_item(item: EvalItem, prediction: str, variant: str = "faithful",
               other_predictions: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """Both variants' scores of one item; the run `variant`'s fields (minus `gold`) are copied to the top level.

    `other_predictions` = {variant: prediction} for variants generated separately (see module docstring).
    """
    scorers = get_task(item.task).score
    preds = {v: (other_predictions or {}).get(v, prediction) for v in VARIANTS}
    both = {v: scorers[v](item, preds[v]) for v in VARIANTS}
    top = {k: v for k, v in both[variant].items() if k != "gold"}
    return {**top, "variants": both}


def vote_key(item: EvalItem, prediction: str) -> Optional[Hashable]:
    """The answer a sample votes for in majority voting, or None if the sample's answer is invalid."""
    return get_task(item.task).vote_key(item, prediction)


def pick_majority(item: EvalItem, predictions: Sequence[str]) -> tuple[int, Optional[Hashable], int]:
    """(index of the representative sample, winning answer, votes) for `predictions` of one item.

    The representative is the first sample whose answer is the winner, so every recorded field stays consistent
    with one real generation (`hrm.eval.scoring.vote`).
    """
    keys = [vote_key(item, p) for p in predictions]
    winner, count = majority_vote(keys)
    index = keys.index(winner) if winner is not None else 0
    return index, winner, count


def skipped_for(record: dict, variant: str) -> bool:
    """Whether `variant`'s prompt was over-long and not run (docs/eval_protocol.md §1), for the run or a separate
    rerun."""
    rerun = record.get("rerun")
    if rerun and rerun.get("variant") == variant:
        return bool(rerun.get("skipped"))
    return bool(record.get("skipped"))


def aggregate(records: Iterable[dict]) -> dict[str, dict[str, Any]]:
    """{task: {"faithful": metrics, "corrected": metrics}} in first-seen task order.

    Records from the runner carry `skipped` (prompt >= max_context, docs/eval_protocol.md §1); their count is reported
    as `n_skipped` because such items silently score as invalid.
    """
    by_task: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_task[rec["task"]].append(rec)
    out = {}
    for task, recs in by_task.items():
        spec = get_task(task)
        out[task] = {v: spec.aggregate(recs, v) for v in VARIANTS}
        if any("skipped" in r for r in recs):
            for v, m in out[task].items():
                m["n_skipped"] = sum(skipped_for(r, v) for r in recs)
    return out


def primary_metric(task: str) -> str:
    """The metric shown in the summary table (the task spec's `primary_metric`)."""
    return get_task(task).primary_metric
