"""Task-independent building blocks of per-task metrics (docs/eval_protocol.md §1–11).

A task's `aggregate(records, variant)` (see `hrm.eval.task.Task`) combines these. Each takes the per-example
score dicts of one variant (`record["variants"][variant]`); the grouped form also takes the records themselves
for their `subject` (the group: MMLU subject, default sub-task).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean; 0.0 for an empty list."""
    return sum(xs) / len(xs) if xs else 0.0


def accuracy(rows: Sequence[dict]) -> dict[str, Any]:
    """{'acc': mean score, 'invalid': invalid rate, 'n': count} (micro over examples)."""
    return {"acc": mean([x["score"] for x in rows]), "invalid": mean([float(x["invalid"]) for x in rows]),
            "n": len(rows)}


def em_f1(rows: Sequence[dict]) -> dict[str, Any]:
    """{'em', 'f1', 'n'}: means of the per-example DROP scores (docs/eval_protocol.md §7)."""
    return {"em": mean([x["em"] for x in rows]), "f1": mean([x["f1"] for x in rows]), "n": len(rows)}


def grouped_accuracy(records: Sequence[dict], rows: Sequence[dict], *, headline: str = "micro",
                     macro_beside: bool = False) -> dict[str, Any]:
    """`accuracy` plus per-group accuracy `acc_<group>`, `n_groups` and the per-group counts `n_by_group`.

    headline "macro": `acc` is the unweighted mean of the group accuracies and `invalid` macro-averaged the same
    way, the micro value kept as `acc_micro` (docs/eval_protocol.md §2 MMLU). headline "micro": `acc` over examples,
    with the macro value beside as `acc_macro` when `macro_beside` (docs/eval_protocol.md §11 corrected MMLU).
    """
    out = accuracy(rows)
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec, row in zip(records, rows):
        groups[str(rec.get("subject") or "")].append(row)
    per_group = {g: mean([x["score"] for x in v]) for g, v in sorted(groups.items())}
    macro = mean(list(per_group.values()))
    out["n_groups"] = len(groups)
    if headline == "macro":
        out["acc_micro"] = out["acc"]
        out["acc"] = macro
        out["invalid"] = mean([mean([float(x["invalid"]) for x in v]) for v in groups.values()])
    elif headline != "micro":
        raise ValueError(f"headline must be 'macro' or 'micro', got {headline!r}")
    elif macro_beside:
        out["acc_macro"] = macro
    out.update({f"acc_{g}": a for g, a in per_group.items()})
    out["n_by_group"] = {g: len(groups[g]) for g in per_group}
    return out
