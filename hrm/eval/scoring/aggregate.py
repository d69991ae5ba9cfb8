"""Per-task metrics from per-example records, for both variants (SPEC §7.1-§7.11).

faithful: MCQ `acc` with 1/k credit for invalid answers; MMLU `acc` is the macro average over subjects (and
`invalid` macro-averaged the same way, per-subject `acc_<subject>` beside); DROP `em`/`f1`; GSM8K/MATH `acc`.
corrected: MCQ strict `acc` (0 for invalid); MMLU micro over questions (`acc_macro` beside); ARC label-index gold;
MATH with boxed wrapping. The built-in default tasks report `acc` overall (micro) and `acc_<sub-task>`.
Every task also reports `n` (questions) and, for MMLU and default, `n_groups`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _task_metrics(task: str, recs: list[dict], variant: str) -> dict[str, Any]:
    rows = [r["variants"][variant] for r in recs]
    if task == "drop":
        return {"em": _mean([x["em"] for x in rows]), "f1": _mean([x["f1"] for x in rows]), "n": len(rows)}
    out: dict[str, Any] = {"acc": _mean([x["score"] for x in rows]),
                           "invalid": _mean([float(x["invalid"]) for x in rows]), "n": len(rows)}
    if task not in ("mmlu", "default"):
        return out
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec, row in zip(recs, rows):
        groups[str(rec.get("subject") or "")].append(row)
    per_group = {g: _mean([x["score"] for x in v]) for g, v in sorted(groups.items())}
    macro = _mean(list(per_group.values()))
    out["n_groups"] = len(groups)
    if task == "mmlu":
        if variant == "faithful":  # SPEC §7.2: unweighted mean of the subject accuracies
            out["acc_micro"] = out["acc"]
            out["acc"] = macro
            out["invalid"] = _mean([_mean([float(x["invalid"]) for x in v]) for v in groups.values()])
        else:  # SPEC §7.11: micro over questions, macro reported beside
            out["acc_macro"] = macro
    out.update({f"acc_{g}": a for g, a in per_group.items()})
    return out


def aggregate(records: Iterable[dict]) -> dict[str, dict[str, Any]]:
    """{task: {"faithful": metrics, "corrected": metrics}} in first-seen task order.

    Records from the runner carry `skipped` (prompt >= max_context, SPEC §7.1); their count is reported as
    `n_skipped` because such items silently score as invalid.
    """
    by_task: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_task[rec["task"]].append(rec)
    out = {}
    for task, recs in by_task.items():
        out[task] = {v: _task_metrics(task, recs, v) for v in ("faithful", "corrected")}
        if any("skipped" in r for r in recs):
            for m in out[task].values():
                m["n_skipped"] = sum(bool(r.get("skipped")) for r in recs)
    return out


def primary_metric(task: str) -> str:
    """The number shown in the summary table: F1 for DROP (SPEC §7.7, likely the paper's), `acc` otherwise."""
    return "f1" if task == "drop" else "acc"
