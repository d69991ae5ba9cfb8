"""Hand-made scorer cases (docs/eval_protocol.md §1 MCQ, §7 DROP, §8 GSM8K, §9 MATH incl. the quirk table, §11)."""

import pytest

from hrm.eval.item import EvalItem
from hrm.eval.metrics import aggregate, pick_majority, score_item, vote_key
from hrm.eval.scoring.boxed import last_boxed
from hrm.eval.scoring.drop import drop_golds, em_f1, normalize_answer, score_drop
from hrm.eval.scoring.gsm8k import gsm8k_extract, gsm8k_gold, score_gsm8k
from hrm.eval.scoring.hendrycks_math import math_gold, score_math
from hrm.eval.scoring.mcq import score_mcq
from hrm.eval.scoring.vote import majority_vote


# ---------------------------------------------------------------- MCQ letters
@pytest.mark.parametrize("pred,gold,n,correct,invalid,faithful,strict", [
    ("B", "B", 4, True, False, 1.0, 1.0),
    (" b\n", "B", 4, True, False, 1.0, 1.0),       # stripped and upper-cased
    ("a", "B", 4, False, False, 0.0, 0.0),
    ("E", "B", 4, False, True, 0.25, 0.0),         # not a valid letter for 4 choices
    ("E", "E", 5, True, False, 1.0, 1.0),          # valid with 5 choices
    ("", "A", 2, False, True, 0.5, 0.0),           # over-long prompt -> empty prediction
    ("AB", "A", 4, False, True, 0.25, 0.0),
    (" Yes", "A", 2, False, True, 0.5, 0.0),
    ("C", "B", 3, False, False, 0.0, 0.0),
])
def test_mcq(pred, gold, n, correct, invalid, faithful, strict):
    f = score_mcq(pred, gold, n, "faithful")
    c = score_mcq(pred, gold, n, "corrected")
    assert (f["correct"], f["invalid"], f["score"]) == (correct, invalid, pytest.approx(faithful))
    assert (c["correct"], c["invalid"], c["score"]) == (correct, invalid, pytest.approx(strict))
    assert f["extracted"] == pred.strip().upper()


def test_arc_faithful_digit_gold_never_matches():
    """docs/eval_protocol.md §3: ord(answerKey)-65 turns label "1" into gold "1", which is not a valid letter."""
    item = EvalItem("arc_challenge", "x", "direct", "q", "1", 4096, 1, num_choices=4,
                    meta={"gold_faithful": "1", "gold_corrected": "A"})
    r = score_item(item, "A", "faithful")
    assert r["score"] == 0.0 and not r["invalid"]
    assert r["variants"]["corrected"]["correct"] and r["variants"]["corrected"]["score"] == 1.0
    r = score_item(item, "1", "faithful")
    assert r["invalid"] and r["score"] == pytest.approx(0.25)


# ---------------------------------------------------------------- boxed
@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{\\frac{1}{\\sqrt{2}}}.", "\\frac{1}{\\sqrt{2}}"),   # nested braces
    ("\\fbox{ 7 }", "7"),
    ("\\boxed{3} then \\fbox{4}", "3"),       # \boxed takes precedence over a later \fbox (reference)
    ("\\boxed{1} and \\boxed{2}", "2"),       # the last one
    ("\\boxed{unbalanced", None),
    ("no box", None),
    ("\\boxed{}", ""),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


# ---------------------------------------------------------------- GSM8K
@pytest.mark.parametrize("pred,expected", [
    ("The total is \\boxed{1,234}.", 1234),     # commas removed
    ("\\boxed{-5}", -5),                        # negatives
    ("\\boxed{17.5}", 17),                      # decimals truncated by int(float())
    ("\\boxed{-0.5}", 0),
    ("\\boxed{\\$18}", None),                   # becomes "\18" and fails (docs/eval_protocol.md §8 quirk)
    ("\\boxed{18 dollars}", None),              # unit text fails
    ("\\boxed{$1,000}", 1000),
    ("42", 42),                                 # whole text when unboxed
    (" 42\n", 42),
    ("The answer is 42", None),                 # unboxed CoT fails
    ("\\fbox{7}", 7),
    ("\\boxed{} 5", None),                      # empty box -> whole text, which fails
    ("", None),
    ("\\boxed{1e400}", None),                   # OverflowError -> invalid
])
def test_gsm8k_extract(pred, expected):
    assert gsm8k_extract(pred) == expected


def test_gsm8k_gold_and_score():
    assert gsm8k_gold("Some work\nmore\n#### 1,234") == 1234
    assert gsm8k_gold("a #### b\n#### -3 ") == -3
    r = score_gsm8k("\\boxed{17.9}", 17)
    assert r == {"extracted": 17, "correct": True, "score": 1.0, "invalid": False}
    r = score_gsm8k("no idea", 17)
    assert r["invalid"] and not r["correct"] and r["extracted"] is None


# ---------------------------------------------------------------- MATH
QUIRKS = [  # docs/eval_protocol.md §9 table: (gold, prediction, faithful verify, corrected verify)
    ("\\dfrac{3}{4}", "\\frac{3}{4}", False, True),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{3}}{2}", False, True),
    ("(3,-1)", "(3,-1)", False, True),
    ("x^2+1", "x^2+1", False, True),
    ("2\\sqrt{5}", "2", True, False),     # faithful false positive
    ("\\frac{1}{2}", "0.5", True, True),
]


@pytest.mark.parametrize("gold,pred,faithful,corrected", QUIRKS)
def test_math_quirk_table(gold, pred, faithful, corrected):
    gen = f"Thus the answer is $\\boxed{{{pred}}}$."
    f = score_math(gen, gold, "faithful")
    c = score_math(gen, gold, "corrected")
    assert f["extracted"] == pred and not f["invalid"]
    assert f["correct"] is faithful
    assert c["correct"] is corrected


def test_math_unboxed_is_invalid_but_checked():
    r = score_math("2", "2", "faithful")
    assert r["invalid"] and r["correct"] and r["extracted"] == "2"


def test_math_gold():
    assert math_gold("so $\\boxed{\\frac{a}{b}}$ and") == "\\frac{a}{b}"
    assert math_gold("\\fbox{5}") == "5"
    with pytest.raises(ValueError):
        math_gold("no answer")


# ---------------------------------------------------------------- DROP
def test_drop_normalize():
    assert normalize_answer("The Patriots") == "patriots"
    assert normalize_answer("3") == "3.0"
    assert normalize_answer("24-yard") == "24.0 yard"
    assert normalize_answer("May 7, 1364") == "may 7.0 1364.0"


@pytest.mark.parametrize("pred,gold,em,f1", [
    ("3", ("3",), 1.0, 1.0),
    ("3.0", ("3",), 1.0, 1.0),                          # numbers canonicalised as floats
    ("three", ("3",), 0.0, 0.0),
    ("the Patriots", ("Patriots",), 1.0, 1.0),           # articles removed
    ("7 May 1364", ("7 May 1364",), 1.0, 1.0),           # date gold "day month year"
    ("May 7, 1364", ("7 May 1364",), 0.0, 1.0),          # same bag, different order
    ("Tom Brady", ("Tom Brady", "Randy Moss"), 0.0, 0.5),  # multi-span gold, one span predicted
    ("25 yard", ("24-yard",), 0.0, 0.0),                 # gold number missing from prediction
    ("yard", ("24-yard",), 0.0, 0.0),
    ("24 yards", ("24-yard",), 0.0, 0.5),
    ("one two four five six seven", ("one two three",), 0.0, 0.44),  # 0.444.. rounded to 2 decimals
])
def test_drop_em_f1(pred, gold, em, f1):
    assert em_f1(pred, gold) == (em, pytest.approx(f1))


def test_drop_multi_span_prediction_alignment():
    assert em_f1(["Randy Moss", "Tom Brady"], ("Tom Brady", "Randy Moss")) == (1.0, 1.0)
    assert em_f1(["Randy Moss", "Benjamin"], ("Tom Brady", "Randy Moss")) == (0.0, 0.5)


def test_drop_golds_and_max():
    ans = {"number": "4", "date": {"day": "", "month": "", "year": ""}, "spans": []}
    va = [dict(ans), {"number": "", "date": {"day": "", "month": "", "year": ""}, "spans": ["four"]},
          {"number": "", "date": {"day": "7", "month": "May", "year": "1364"}, "spans": []}]
    assert drop_golds(ans, va) == [("4",), ("four",), ("7 May 1364",)]
    assert drop_golds(ans) == [("4",), ("",)]         # missing validated_answers -> one empty answer
    r = score_drop("  four \n", [("",), ("4",), ("four",)])
    assert r == {"extracted": "four", "em": 1.0, "f1": 1.0}
    assert score_drop("x", [("",)]) == {"extracted": "x", "em": 0.0, "f1": 0.0}


# ---------------------------------------------------------------- voting and aggregation
def test_majority_vote():
    assert majority_vote([None, "A", "B", "B", "A"]) == ("A", 2)   # tie -> first seen
    assert majority_vote([3, 5, 5]) == (5, 2)
    assert majority_vote([None, None]) == (None, 0)


def test_pick_majority_uses_task_extractor():
    item = EvalItem("gsm8k", "g", "synth,cot", "q", 17, 3072, None)
    preds = ["\\boxed{12}", "\\boxed{17.5}", "junk", "\\boxed{17}"]
    assert [vote_key(item, p) for p in preds] == [12, 17, None, 17]
    assert pick_majority(item, preds) == (1, 17, 2)
    mcq = EvalItem("boolq", "b", "direct", "q", "A", 4096, 1, num_choices=2)
    assert pick_majority(mcq, ["C", "b", "B", "a"]) == (1, "B", 2)


def _rec(task, subject, f, c, invalid=False):
    return {"task": task, "subject": subject, "variants": {
        "faithful": {"score": f, "invalid": invalid}, "corrected": {"score": c, "invalid": invalid}}}


def test_aggregate_mmlu_macro_and_micro():
    recs = [_rec("mmlu", "a", 1.0, 1.0), _rec("mmlu", "b", 0.0, 0.0), _rec("mmlu", "b", 0.0, 0.0),
            _rec("mmlu", "b", 0.25, 0.0, invalid=True)]
    m = aggregate(recs)["mmlu"]
    assert m["faithful"]["acc"] == pytest.approx((1.0 + 0.25 / 3) / 2)   # macro over subjects
    assert m["faithful"]["invalid"] == pytest.approx((0 + 1 / 3) / 2)
    assert m["faithful"]["n"] == 4 and m["faithful"]["n_groups"] == 2
    assert m["corrected"]["acc"] == pytest.approx(1 / 4)                  # micro, strict
    assert m["corrected"]["acc_macro"] == pytest.approx(0.5)
