"""DROP exact match and F1, following lm-eval's drop task (docs/eval_protocol.md §7).

Golds (lm-eval `process_docs`): the release `answer` plus every `validated_answers` entry, each turned into a
tuple of strings — a non-empty `number` -> (number,); else non-empty `spans` -> tuple(spans); else the date as
"day month year" stripped — with duplicates removed in first-seen order. A question without `validated_answers`
gets one empty validated answer (as the HF `EleutherAI/drop` builder does), which parses to ("",) and is ignored.

Metric (lm-eval `process_results`, prediction = the stripped generation as a single span): per gold, EM = the
normalised span sets are equal; F1 = mean over an optimal one-to-one alignment (Hungarian, scipy) of bag-of-token
F1 between predicted and gold spans, a pair scoring only if the gold's numbers appear in the prediction; rounded
to 2 decimals. The result is the max over golds whose first span is non-blank.
"""

from __future__ import annotations

import re
import string
from typing import Any, Optional, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def _parse_answer(answer: dict) -> tuple[str, ...]:
    number = answer.get("number", "")
    if number != "":
        return (str(number),)
    spans = answer.get("spans") or []
    if spans:
        return tuple(spans)
    date = answer.get("date") or {}
    return (" ".join([date.get("day", ""), date.get("month", ""), date.get("year", "")]).strip(),)


def drop_golds(answer: dict, validated_answers: Optional[Sequence[dict]] = None) -> list[tuple[str, ...]]:
    """Gold answers of one release question, in lm-eval `process_docs` form (see module docstring)."""
    if validated_answers is None:
        validated_answers = [{"number": "", "date": {"day": "", "month": "", "year": ""}, "spans": []}]
    golds: list[tuple[str, ...]] = []
    for candidate in [answer, *validated_answers]:
        parsed = _parse_answer(candidate)
        if parsed not in golds:
            golds.append(parsed)
    return golds


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _normalize_token(token: str) -> str:
    token = token.lower()
    if not _is_number(token):
        token = "".join(ch for ch in token if ch not in _PUNCT)
    if _is_number(token):
        token = str(float(token))
    token = _ARTICLES.sub(" ", token)
    return " ".join(token.split())


def normalize_answer(text: str) -> str:
    """lm-eval DROP normalisation: split on spaces and hyphens, then per token lower-case, strip punctuation
    (numbers excepted), canonicalise numbers as floats ("3" -> "3.0"), remove articles, fix whitespace."""
    tokens = [_normalize_token(tok) for tok in re.split(" |-", text)]
    return " ".join(tok for tok in tokens if tok.strip()).strip()


def _bags(spans: Sequence[str]) -> tuple[list[str], list[set[str]]]:
    normalized = [normalize_answer(s) for s in spans]
    return normalized, [set(n.split()) for n in normalized]


def _f1(pred: set[str], gold: set[str]) -> float:
    common = len(gold & pred)
    precision = common / len(pred) if pred else 1.0
    recall = common / len(gold) if gold else 1.0
    if precision == 0.0 and recall == 0.0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _numbers_match(gold: set[str], pred: set[str]) -> bool:
    gold_numbers = {w for w in gold if _is_number(w)}
    return not gold_numbers or bool(gold_numbers & {w for w in pred if _is_number(w)})


def _aligned_f1(pred_bags: list[set[str]], gold_bags: list[set[str]]) -> float:
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    scores = np.zeros([len(gold_bags), len(pred_bags)])
    for g, gold in enumerate(gold_bags):
        for p, pred in enumerate(pred_bags):
            if _numbers_match(gold, pred):
                scores[g, p] = _f1(pred, gold)
    rows, cols = linear_sum_assignment(-scores)
    best = np.zeros([max(len(gold_bags), len(pred_bags))])
    for r, c in zip(rows, cols):
        best[r] = max(best[r], scores[r, c])
    return float(round(float(np.mean(best)), 2))


def em_f1(prediction: str | Sequence[str], gold: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) of one prediction (a string = one span, or a list of spans) against one gold tuple of spans."""
    pred_spans = [prediction] if isinstance(prediction, str) else list(prediction)
    pred_norm, pred_bags = _bags(pred_spans)
    gold_norm, gold_bags = _bags(list(gold))
    em = float(set(pred_norm) == set(gold_norm) and len(pred_norm) == len(gold_norm))
    return em, _aligned_f1(pred_bags, gold_bags)


def score_drop(prediction: str, golds: Sequence[Sequence[str]]) -> dict[str, Any]:
    """{'extracted', 'em', 'f1'}: max over golds with a non-blank first span (lm-eval `process_results`)."""
    pred = prediction.strip()
    best_em = best_f1 = 0.0
    for gold in golds:
        if not gold or not str(gold[0]).strip():
            continue
        em, f1 = em_f1(pred, gold)
        best_em, best_f1 = max(best_em, em), max(best_f1, f1)
    return {"extracted": pred, "em": best_em, "f1": best_f1}
