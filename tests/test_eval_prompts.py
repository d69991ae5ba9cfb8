"""Prompt construction and wrapping (docs/prefixlm_packing.md §1, docs/eval_protocol.md §1–9): full prompts pinned byte
for byte on the real files.

HellaSwag, DROP and BoolQ (whose release files are partly missing) are pinned in test_eval_tasks.py on generated
files in the release formats.
"""

import hashlib
import json

import pytest

from hrm.eval.prompts import (capitalize, drop_prompt, hellaswag_query, mcq_block, mcq_prompt, prompt_ids,
                              split_condition, wrap_prompt)
from hrm.eval.tasks import load_task


class _Special:
    boq, eoq, eoa, pad = 6, 7, 11, 0
    conditions = {"direct": 8, "cot": 9, "noisy": 12, "synth": 13}


class _CharTokenizer:
    special = _Special()

    def encode(self, text):
        return [1000 + ord(c) for c in text]


def test_wrap_prompt_conditions():
    assert wrap_prompt("  hi\n", "direct") == "<|im_start|><|object_ref_start|>hi<|im_end|>"
    assert wrap_prompt("x", "cot") == "<|im_start|><|object_ref_end|>x<|im_end|>"
    assert wrap_prompt("x", "noisy") == "<|im_start|><|quad_start|>x<|im_end|>"
    assert wrap_prompt("x", "synth,cot") == "<|im_start|><|quad_end|><|object_ref_end|>x<|im_end|>"
    assert wrap_prompt("x", "cot,synth") == "<|im_start|><|object_ref_end|><|quad_end|>x<|im_end|>"
    assert wrap_prompt("x", "") == "<|im_start|>x<|im_end|>"
    assert split_condition("synth, noisy ,cot") == ["synth", "noisy", "cot"]
    with pytest.raises(ValueError, match="unknown condition"):
        wrap_prompt("x", "sinth")


def test_prompt_ids_insert_structural_ids():
    ids = prompt_ids(_CharTokenizer(), " a<|im_end|> ", "synth,cot")
    assert ids == [6, 13, 9] + [1000 + ord(c) for c in "a<|im_end|>"] + [7]   # text is never parsed


def test_text_transforms():
    # Python str.capitalize (docs/eval_protocol.md §12 item 7)
    assert capitalize("tHE MAN then") == "The man then"
    assert hellaswag_query("ctx a.", "then HE") == "ctx a. Then he\nQuestion: Which is the most logical continuation?"
    assert mcq_block(" Q? ", [" x ", "y"]) == "Q?\nA. x\nB. y\nAnswer:"
    assert mcq_block("Q?", ["x", "y"], "B") == "Q?\nA. x\nB. y\nAnswer: B"
    assert mcq_prompt([("S?", ["1", "2"], "A")], "Q?", ["x", "y", "z"]) == \
        "S?\nA. 1\nB. 2\nAnswer: A\n\nQ?\nA. x\nB. y\nC. z\nAnswer:"
    assert drop_prompt("P.", "Q?", num_shots=0) == "P.\nQ: Q?\nA:"


def test_pin_gsm8k(benchdata_dir):
    item = load_task("gsm8k", benchdata_dir, limit=1)[0]
    assert item.wrapped == (
        "<|im_start|><|quad_end|><|object_ref_end|>Janet\u2019s ducks lay 16 eggs per day. She eats three for "
        "breakfast every morning and bakes muffins for her friends every day with four. She sells the remainder at "
        "the farmers' market daily for $2 per fresh duck egg. How much in dollars does she make every day at the "
        "farmers' market?<|im_end|>")


def test_pin_math(benchdata_dir):
    item = load_task("math", benchdata_dir, limit=1)[0]
    assert item.wrapped == ("<|im_start|><|quad_end|><|object_ref_end|>How many vertical asymptotes does the graph "
                            "of $y=\\frac{2}{x^2+x-6}$ have?<|im_end|>")


def test_pin_mmlu(benchdata_dir):
    item = next(it for it in load_task("mmlu", benchdata_dir) if it.id == "world_religions/70")
    assert item.gold == "C"
    assert item.wrapped == (
        "<|im_start|><|object_ref_start|>What is the sign of the covenant for Jewish males?\nA. The rainbow\n"
        "B. Circumcision\nC. A son\nD. Bar mitzvah\nAnswer: B\n\nWhat is the Second Gem in Buddhism?\nA. The Dharma\n"
        "B. The Sangha\nC. The Buddha\nD. The Bodhisattva\nAnswer: A\n\nIn which dynasty was the \"Mandate of "
        "Heaven\" developed to legitimatize the new rulers?\nA. Shang\nB. Zhou\nC. Han\nD. Xia\nAnswer: B\n\n"
        "Which Japanese government promoted a kind of national cult based on the emperor and his associations with "
        "kami?\nA. Honen\nB. Tanaka\nC. Tokugawa\nD. Meiji\nAnswer: D\n\nHow can the Upanishads be characterized?\n"
        "A. Ritual texts\nB. Philosophical texts\nC. Hymns\nD. Origin stories\nAnswer: B\n\nHow many books are in "
        "the New Testament?\nA. 30\nB. 29\nC. 27\nD. 47\nAnswer:<|im_end|>")


def test_pin_winogrande(benchdata_dir):
    item = load_task("winogrande", benchdata_dir, limit=1)[0]
    assert item.wrapped == (
        "<|im_start|><|object_ref_start|>John moved the couch from the garage to the backyard to create space. The _ "
        "is small.\nA. garage\nB. backyard\nAnswer: A\n\nThe doctor diagnosed Justin with bipolar and Robert with "
        "anxiety. _ had terrible nerves recently.\nA. Justin\nB. Robert\nAnswer: B\n\nDennis drew up a business "
        "proposal to present to Logan because _ wants his investment.\nA. Dennis\nB. Logan\nAnswer: A\n\nFelicia "
        "unexpectedly made fried eggs for breakfast in the morning for Katrina and now _ owes a favor.\nA. Felicia\n"
        "B. Katrina\nAnswer: B\n\nMy shampoo did not lather easily on my Afro hair because the _ is too dirty.\n"
        "A. shampoo\nB. hair\nAnswer: B\n\nSarah was a much better surgeon than Maria so _ always got the easier "
        "cases.\nA. Sarah\nB. Maria\nAnswer:<|im_end|>")


def test_pin_arc(benchdata_dir):
    """25 Dev shots + the first Test question, rebuilt here independently from the raw lines, and hash-pinned."""
    item = load_task("arc_challenge", benchdata_dir, limit=1)[0]
    dev = [json.loads(x) for x in (benchdata_dir / "arc/ARC-Challenge-Dev.jsonl").read_text().splitlines()[:25]]
    test = json.loads((benchdata_dir / "arc/ARC-Challenge-Test.jsonl").read_text().splitlines()[0])

    def block(row, answer):
        lines = [row["question"]["stem"].strip()]
        lines += [f"{'ABCDE'[k]}. {c['text'].strip()}" for k, c in enumerate(row["question"]["choices"])]
        return "\n".join(lines) + ("\nAnswer: " + answer if answer else "\nAnswer:")

    text = "\n\n".join([block(r, r["answerKey"]) for r in dev] + [block(test, None)])
    assert item.wrapped == "<|im_start|><|object_ref_start|>" + text + "<|im_end|>"
    assert item.wrapped.endswith("C. Planetary days will become shorter.\nD. Planetary gravity will become "
                                 "stronger.\nAnswer:<|im_end|>")
    assert hashlib.sha256(item.wrapped.encode()).hexdigest() == \
        "37f047e5bc034dc405716d9660519cd6fd59555c29448bb62d23e2757ede2328"


def test_arc_numeric_label_shots(tmp_path):
    """A Dev shot with numeric labels: faithful writes the digit as its answer, corrected the position letter."""
    def row(i, labels, key):
        return {"id": f"r{i}", "question": {"stem": f"Q{i}?", "choices": [
            {"text": f"c{j}", "label": lab} for j, lab in enumerate(labels)]}, "answerKey": key}

    (tmp_path / "arc").mkdir()
    (tmp_path / "arc/ARC-Challenge-Dev.jsonl").write_text(json.dumps(row(0, ["1", "2", "3"], "2")) + "\n")
    (tmp_path / "arc/ARC-Challenge-Test.jsonl").write_text(json.dumps(row(1, ["1", "2", "3", "4"], "4")) + "\n")
    with pytest.warns(UserWarning):
        faithful = load_task("arc_challenge", tmp_path, "faithful")[0]
        corrected = load_task("arc_challenge", tmp_path, "corrected")[0]
    assert faithful.prompt == "Q0?\nA. c0\nB. c1\nC. c2\nAnswer: 2\n\nQ1?\nA. c0\nB. c1\nC. c2\nD. c3\nAnswer:"
    assert corrected.prompt.startswith("Q0?\nA. c0\nB. c1\nC. c2\nAnswer: B\n\n")
    assert (faithful.gold, corrected.gold) == ("4", "D")
    assert faithful.meta == corrected.meta == {"gold_faithful": "4", "gold_corrected": "D"}
