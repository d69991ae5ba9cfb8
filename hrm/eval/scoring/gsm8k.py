"""GSM8K scoring (docs/eval_protocol.md §8): integer gold after the last `####`, integer prediction from the last
box."""

from __future__ import annotations

from typing import Any, Optional

from hrm.eval.scoring.boxed import last_boxed


def gsm8k_gold(answer: str) -> int:
    """Gold from the release `answer` text: after the last `####`, stripped, commas removed, as int
    (docs/eval_protocol.md §8)."""
    return int(answer.split("####")[-1].strip().replace(",", ""))


def gsm8k_extract(prediction: str) -> Optional[int]:
    """Last boxed content if non-empty, else the whole text; drop "," and "$"; strip; int(float(x)) or None.

    docs/eval_protocol.md §8: "17.5" truncates to 17; `\\boxed{\\$18}` becomes `\\18` and fails; an unboxed CoT almost
    always fails.
    """
    text = last_boxed(prediction) or prediction
    text = text.replace(",", "").replace("$", "").strip()
    try:
        return int(float(text))
    except (ValueError, OverflowError):
        return None


def score_gsm8k(prediction: str, gold: int) -> dict[str, Any]:
    """{'extracted', 'correct', 'score', 'invalid'}; a parse failure is invalid and wrong (docs/eval_protocol.md §8)."""
    pred = gsm8k_extract(prediction)
    correct = pred is not None and pred == int(gold)
    return {"extracted": pred, "correct": correct, "score": float(correct), "invalid": pred is None}
