"""MATH scoring with math-verify (docs/eval_protocol.md §9, §11).

Gold = last boxed content of the solution. Prediction = last boxed content of the generation, else the whole
generation (counted invalid but still checked). Faithful: `verify(parse(gold), parse(pred))` on the bare strings,
which reproduces the published scorer's quirks (docs/eval_protocol.md §9 table: bare LaTeX often parses to nothing, and
an empty gold never verifies; `2\\sqrt{5}` parses to 2). Corrected: both strings wrapped in `\\boxed{}` before parsing.
math_verify is imported lazily so that importing the scorers stays cheap.
"""

from __future__ import annotations

from typing import Any, Optional

from hrm.eval.scoring.boxed import last_boxed


def math_gold(solution: str) -> str:
    """Gold answer from a release `solution`: contents of its last `\\boxed{}`/`\\fbox{}` (docs/eval_protocol.md §9)."""
    gold = last_boxed(solution)
    if gold is None:
        raise ValueError("MATH solution has no \\boxed{...} answer")
    return gold


def math_extract(prediction: str) -> tuple[str, bool]:
    """(answer string, invalid): the last boxed content, else the whole generation flagged invalid."""
    boxed: Optional[str] = last_boxed(prediction)
    if boxed is None:
        return prediction, True
    return boxed, False


def math_equal(gold: str, pred: str, variant: str) -> bool:
    """math_verify equivalence, gold first; faithful on bare strings, corrected inside `\\boxed{}`."""
    from math_verify import parse, verify

    if variant == "corrected":
        gold, pred = f"\\boxed{{{gold}}}", f"\\boxed{{{pred}}}"
    try:
        return bool(verify(parse(gold), parse(pred)))
    except Exception:
        return False


def score_math(prediction: str, gold: str, variant: str) -> dict[str, Any]:
    """{'extracted', 'correct', 'score', 'invalid'} for one MATH generation under `variant`."""
    pred, invalid = math_extract(prediction)
    correct = math_equal(gold, pred, variant)
    return {"extracted": pred, "correct": correct, "score": float(correct), "invalid": invalid}
