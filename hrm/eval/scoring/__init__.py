"""Per-example scoring dispatch (SPEC §7.1-§7.9) with both variants of SPEC §7.11.

`score_item(item, prediction, variant)` scores one generation under both the faithful and the corrected variant
and returns the run variant's fields at top level plus `variants = {"faithful": {...}, "corrected": {...}}`, so one
run fills both result tables. Only scoring differences live here (MCQ invalid credit, ARC gold mapping, MATH
wrapping); protocol differences that change prompts or context (ARC shots, MCQ context) are chosen when the items
are built. Every scorer returns `extracted` plus `correct`/`score`/`invalid` (accuracy tasks) or `em`/`f1` (DROP).
"""

from __future__ import annotations

from typing import Any, Hashable, Optional

from hrm.eval.prompts import letters
from hrm.eval.scoring.drop import score_drop
from hrm.eval.scoring.exact import score_exact
from hrm.eval.scoring.gsm8k import gsm8k_extract, score_gsm8k
from hrm.eval.scoring.hendrycks_math import math_extract, score_math
from hrm.eval.scoring.mcq import mcq_extract, score_mcq

MCQ = ("mmlu", "arc_challenge", "hellaswag", "winogrande", "boolq")


def task_kind(task: str) -> str:
    """'mcq' | 'drop' | 'gsm8k' | 'math' | 'exact' (the built-in default tasks)."""
    if task in MCQ:
        return "mcq"
    if task in ("drop", "gsm8k", "math"):
        return task
    if task == "default":
        return "exact"
    raise ValueError(f"no scorer for task {task!r}")


def score_variant(item: Any, prediction: str, variant: str) -> dict[str, Any]:
    """Score one generation of `item` under one variant ('faithful' or 'corrected')."""
    kind = task_kind(item.task)
    if kind == "mcq":
        gold = (item.meta or {}).get(f"gold_{variant}", item.gold)
        out = score_mcq(prediction, gold, int(item.num_choices), variant)
        return {**out, "gold": gold}
    if kind == "drop":
        return score_drop(prediction, item.gold)
    if kind == "gsm8k":
        return score_gsm8k(prediction, item.gold)
    if kind == "math":
        return score_math(prediction, item.gold, variant)
    return score_exact(prediction, item.gold)


def score_item(item: Any, prediction: str, variant: str = "faithful") -> dict[str, Any]:
    """Both variants' scores; the run `variant`'s fields are copied to the top level."""
    both = {v: score_variant(item, prediction, v) for v in ("faithful", "corrected")}
    top = {k: v for k, v in both[variant].items() if k != "gold"}
    return {**top, "variants": both}


def vote_key(item: Any, prediction: str) -> Optional[Hashable]:
    """The answer a sample votes for in majority voting, or None if the sample's answer is invalid."""
    kind = task_kind(item.task)
    if kind == "mcq":
        letter = mcq_extract(prediction)
        return letter if letter in letters(int(item.num_choices)) else None
    if kind == "gsm8k":
        return gsm8k_extract(prediction)
    if kind == "math":
        return math_extract(prediction)[0].strip() or None
    return prediction.strip() or None
