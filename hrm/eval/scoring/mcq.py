"""Single-letter multiple-choice scoring (docs/eval_protocol.md §1 "MCQ scoring", §11).

The one generated token is stripped and upper-cased. Equal to the gold letter -> 1. Not one of the question's
valid letters (A.. by position; includes the empty string of an over-long prompt) -> invalid, credited
1/num_choices in the faithful variant and 0 in the corrected (strict) one. Any other letter -> 0. Invalidity is
checked before equality, so a faithful ARC gold that is a digit (docs/eval_protocol.md §3) can never be matched.
"""

from __future__ import annotations

from typing import Any

from hrm.eval.prompts import letters


def mcq_extract(prediction: str) -> str:
    """The answer as the reference reads it: `prediction.strip().upper()`."""
    return prediction.strip().upper()


def score_mcq(prediction: str, gold: str, num_choices: int, variant: str) -> dict[str, Any]:
    """{'extracted', 'correct', 'score', 'invalid'} for one MCQ answer under `variant` (faithful | corrected)."""
    pred = mcq_extract(prediction)
    invalid = pred not in letters(num_choices)
    correct = (not invalid) and pred == gold
    if invalid:
        score = 1.0 / num_choices if variant == "faithful" else 0.0
    else:
        score = float(correct)
    return {"extracted": pred, "correct": correct, "score": score, "invalid": invalid}
