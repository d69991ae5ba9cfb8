"""Runner tests with a fake character tokenizer and a fake generator (docs/eval_protocol.md §1 batching, context,
EOA)."""

import json

import pytest

import hrm.eval.runner as runner
from hrm.eval.item import EvalItem
from hrm.eval.rescore import rescore_records
from hrm.eval.runner import run_tasks
from hrm.eval.task import gen_item, mcq_item
from hrm.eval.tasks import load_tasks

BOQ, EOQ, EOA = 1, 2, 3
CONDITIONS = {"direct": 4, "cot": 5, "noisy": 6, "synth": 7}


class Special:
    boq, eoq, eoa, pad = BOQ, EOQ, EOA, 0
    conditions = CONDITIONS


class CharTokenizer:
    """One id per character (ord + 100); structural ids below 100 decode to nothing."""

    special = Special()

    def encode(self, text):
        return [ord(c) + 100 for c in text]

    def decode(self, ids):
        return "".join(chr(i - 100) for i in ids if i >= 100)


class FakeGenerator:
    """Answers with `respond(prompt_text, seed)`; records every call. Appends EOA to test the defensive cut."""

    def __init__(self, respond):
        self.respond, self.calls = respond, []

    def generate(self, prompt_ids, max_new_tokens, temperature, seed):
        tok = CharTokenizer()
        self.calls.append({"n": len(prompt_ids), "max_new_tokens": list(max_new_tokens),
                           "temperature": temperature, "seed": seed})
        outs = []
        for ids, budget in zip(prompt_ids, max_new_tokens):
            assert ids[0] == BOQ and ids[-1] == EOQ and len(ids) + budget <= 4096
            text = self.respond(tok.decode(ids), seed)
            outs.append(tok.encode(text)[:budget] + [EOA])
        return outs


def _items():
    return [
        mcq_item("boolq", "b0", "Is it?\nA. Yes\nB. No\nAnswer:", "A", 2, "faithful"),
        mcq_item("boolq", "b1", "Not it?\nA. Yes\nB. No\nAnswer:", "B", 2, "faithful"),
        gen_item("gsm8k", "g0", "What is 6*3?", 18, "synth,cot"),
        gen_item("gsm8k", "g1", "What is 2+2?", 4, "synth,cot"),
        gen_item("math", "m0", "Compute 1/2.", "\\frac{1}{2}", "synth,cot"),
        EvalItem("boolq", "long", "direct", "x" * 50, "A", max_context=40, max_tokens=1, num_choices=2),
    ]


def _respond(prompt, seed):
    answers = {"Is it?": "A", "Not it?": "a", "6*3": "so \\boxed{18}", "2+2": "\\boxed{5}", "1/2": "\\boxed{0.5}"}
    return next((a for k, a in answers.items() if k in prompt), "?")


def test_run_tasks_batches_scores_and_writes(tmp_path):
    gen = FakeGenerator(_respond)
    result = run_tasks(gen, CharTokenizer(), _items(), batch_size=1, out_dir=tmp_path, size_label="XL",
                       progress=False)
    # MCQ group (4096, 1) then generation group (3072, None); the over-long prompt is never sent.
    assert [c["n"] for c in gen.calls] == [1, 1, 1, 1, 1]
    assert gen.calls[0]["max_new_tokens"] == [1]
    assert gen.calls[2]["max_new_tokens"] == [3072 - (2 + 2 + len("What is 6*3?"))]   # synth,cot = 2 ids
    assert all(c["temperature"] == 0.0 for c in gen.calls)
    recs = {r["id"]: r for r in result["records"]}
    assert recs["b0"]["correct"] and not recs["b1"]["correct"] and recs["b1"]["extracted"] == "A"
    assert recs["long"]["skipped"] and recs["long"]["prediction"] == "" and recs["long"]["invalid"]
    assert recs["long"]["score"] == 0.5 and recs["long"]["variants"]["corrected"]["score"] == 0.0
    assert recs["g0"]["correct"] and recs["g0"]["prediction"] == "so \\boxed{18}"    # EOA cut off
    assert not recs["g1"]["correct"] and recs["g1"]["extracted"] == 5
    assert recs["m0"]["correct"] and recs["m0"]["gold"] == "\\frac{1}{2}"
    m = result["metrics"]
    assert m["boolq"]["faithful"]["acc"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["boolq"]["corrected"]["acc"] == pytest.approx(1 / 3)
    assert m["gsm8k"]["faithful"] == {"acc": 0.5, "invalid": 0.0, "n": 2, "n_skipped": 0}
    assert m["boolq"]["faithful"]["n_skipped"] == m["boolq"]["corrected"]["n_skipped"] == 1
    lines = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["b0", "b1", "g0", "g1", "m0", "long"]
    assert [x["prompt_index"] for x in lines] == list(range(6))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["variant"] == "faithful" and saved["counts"] == {"boolq": 3, "gsm8k": 2, "math": 1}
    md = (tmp_path / "results.md").read_text()
    assert "| MMLU | ARC-C | Hella | Wino | BoolQ | DROP | GSM8K | MATH |" in md
    assert "paper Tab. 1/4 HRM 1B" in md and "| 84.53 |" in md and "Corrected scoring" in md


def test_batching_groups_by_generation_kwargs(tmp_path):
    gen = FakeGenerator(_respond)
    items = _items()[:5]
    run_tasks(gen, CharTokenizer(), items, batch_size=2, temperature=0.7, seed=5, progress=False)
    assert [c["n"] for c in gen.calls] == [2, 2, 1]
    assert [c["seed"] for c in gen.calls] == [5, 5, 7]
    assert all(c["temperature"] == 0.7 for c in gen.calls)


def test_majority_vote_over_samples():
    answers = {0: "\\boxed{18}", 1_000_003: "\\boxed{17}", 2_000_006: "\\boxed{18.0}"}
    gen = FakeGenerator(lambda prompt, seed: answers[seed])
    result = run_tasks(gen, CharTokenizer(), [gen_item("gsm8k", "g0", "What is 6*3?", 18, "synth,cot")], num_samples=3,
                       temperature=0.6, progress=False)
    with pytest.warns(UserWarning, match="greedy"):
        run_tasks(gen, CharTokenizer(), [gen_item("gsm8k", "g0", "What is 6*3?", 18, "synth,cot")], num_samples=2,
                  progress=False)
    rec = result["records"][0]
    assert rec["predictions"] == ["\\boxed{18}", "\\boxed{17}", "\\boxed{18.0}"]
    assert rec["votes"] == 2 and rec["prediction"] == "\\boxed{18}" and rec["correct"]


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "is_main_process", lambda: False)
    run_tasks(FakeGenerator(_respond), CharTokenizer(), _items()[:1], out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_runner_output_rescores_identically(tmp_path):
    result = run_tasks(FakeGenerator(_respond), CharTokenizer(), _items(), progress=False, variant="corrected")
    again = rescore_records(result["records"], variant="corrected")
    for a, b in zip(result["records"], again):
        assert {k: a[k] for k in ("extracted", "score", "invalid", "variants")} == \
               {k: b[k] for k in ("extracted", "score", "invalid", "variants")}


def test_default_tasks_end_to_end(tmp_path):
    rows = [{"task": "add", "id": "a0", "instruction": "1+1=", "response": "2", "condition": "direct"},
            {"task": "add", "id": "a1", "instruction": "2+2=", "response": "4", "condition": "direct"},
            {"task": "reverse", "id": "r0", "instruction": "reverse abc", "response": "cba", "condition": "cot"}]
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_tasks("default", tmp_path)
    gen = FakeGenerator(lambda p, s: {"1+1=": " 2 ", "2+2=": "5", "reverse abc": "cba"}[p])
    result = run_tasks(gen, CharTokenizer(), items, out_dir=tmp_path / "res", progress=False)
    assert gen.calls[0]["max_new_tokens"] == [64, 64, 64]
    m = result["metrics"]["default"]["faithful"]
    assert m["acc"] == pytest.approx(2 / 3) and m["acc_add"] == 0.5 and m["acc_reverse"] == 1.0 and m["n"] == 3
    assert "## default (exact match)" in (tmp_path / "res/results.md").read_text()


def _protocol_items(variant):
    """The same four questions built for `variant`: an ARC-like item whose shots differ between variants
    (docs/eval_protocol.md §3), an MCQ prompt of 3,500+ tokens (inside the faithful 4096 context, over the corrected
    3072), and two items whose plans are equal under both variants."""
    shot_answer = {"faithful": "1", "corrected": "A"}[variant]
    return [
        mcq_item("boolq", "same", "Is it?\nA. Yes\nB. No\nAnswer:", "A", 2, variant),
        mcq_item("boolq", "long", "L" * 3500 + "?\nA. Yes\nB. No\nAnswer:", "A", 2, variant),
        mcq_item("arc_challenge", "arc", f"Shot?\nA. x\nB. y\nAnswer: {shot_answer}\n\nQ?\nA. x\nB. y\nAnswer:",
                 {"faithful": "1", "corrected": "A"}[variant], 2, variant,
                 meta={"gold_faithful": "1", "gold_corrected": "A"}),
        gen_item("gsm8k", "g0", "What is 6*3?", 18, "synth,cot"),
    ]


def _protocol_respond(prompt, seed):
    if "Answer: 1\n\nQ?" in prompt:
        return "B"                          # the faithful (digit-gold) shots lead the model astray
    return "A" if ("Q?" in prompt or "Is it?" in prompt or "LLL" in prompt) else "\\boxed{18}"


def test_both_protocols_generate_their_own_prompts(tmp_path):
    gen = FakeGenerator(_protocol_respond)
    result = run_tasks(gen, CharTokenizer(), _protocol_items("faithful"), twins=_protocol_items("corrected"),
                       out_dir=tmp_path, progress=False)
    # Run groups first (MCQ 4096: same, long, arc; GSM8K), then the one twin that differs (ARC at 3072);
    # the long twin is over the corrected context, so it is skipped without a call.
    assert [c["n"] for c in gen.calls] == [3, 1, 1]
    recs = {r["id"]: r for r in result["records"]}
    assert all(r["both_protocols"] for r in recs.values())
    assert "rerun" not in recs["same"] and "rerun" not in recs["g0"]
    assert recs["long"]["rerun"]["skipped"] and recs["long"]["rerun"]["prediction"] == ""
    assert recs["long"]["variants"]["faithful"]["score"] == 1.0
    assert recs["long"]["variants"]["corrected"] == {"extracted": "", "correct": False, "score": 0.0,
                                                     "invalid": True, "gold": "A"}
    assert recs["arc"]["prediction"] == "B" and recs["arc"]["rerun"]["prediction"] == "A"
    assert recs["arc"]["variants"]["faithful"]["score"] == 0.0 and recs["arc"]["variants"]["corrected"]["correct"]
    m = result["metrics"]
    assert (m["boolq"]["faithful"]["acc"], m["boolq"]["corrected"]["acc"]) == (1.0, 0.5)
    assert (m["boolq"]["faithful"]["n_skipped"], m["boolq"]["corrected"]["n_skipped"]) == (0, 1)
    assert (m["arc_challenge"]["faithful"]["acc"], m["arc_challenge"]["corrected"]["acc"]) == (0.0, 1.0)
    assert "| ours (corrected prompts) |" in result["markdown"]
    assert json.loads((tmp_path / "results.json").read_text())["both_protocols"] is True
    # The predictions file rescores to the same numbers, reruns included.
    again = rescore_records([json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()])
    assert [r["variants"] for r in again] == [r["variants"] for r in result["records"]]
    # A corrected run with faithful twins reports the same two protocols.
    swapped = run_tasks(FakeGenerator(_protocol_respond), CharTokenizer(), _protocol_items("corrected"),
                        twins=_protocol_items("faithful"), variant="corrected", progress=False)
    assert {t: {v: x["acc"] for v, x in vs.items()} for t, vs in swapped["metrics"].items()} == \
        {t: {v: x["acc"] for v, x in vs.items()} for t, vs in m.items()}
