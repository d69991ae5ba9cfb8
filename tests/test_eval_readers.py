"""Every benchmark reader and prompt builder on small files in the original release formats, written here
(docs/eval_protocol.md §2–9), so they run in a fresh clone without ../shared. Prompts are pinned byte for byte against
strings spelled out independently of the code. (The real release files are covered in test_eval_tasks.py and
test_eval_prompts.py, which skip without ../shared/benchdata.)"""

import csv
import json
import warnings

import pytest

from hrm.eval.errors import DataIntegrityWarning, MissingDataError, TaskError
from hrm.eval.tasks import get_task, load_task

DIRECT, SYNTH_COT = "<|im_start|><|object_ref_start|>", "<|im_start|><|quad_end|><|object_ref_end|>"


def _quiet_load(*args, **kwargs):
    """load_task on generated files: their checksums and counts differ from the release, which only warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataIntegrityWarning)
        return load_task(*args, **kwargs)


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)


# ---------------------------------------------------------------- MMLU (data.tar CSVs)
def test_mmlu_csv_reader_and_prompt(tmp_path):
    dev = [[f"Dev {i}, with \"quotes\"\nand a newline?", f"a{i}", "b", "c", " d ", "ABCD"[i % 4]] for i in range(6)]
    _csv(tmp_path / "mmlu/dev/virology_dev.csv", dev)
    _csv(tmp_path / "mmlu/dev/high_school_european_history_dev.csv", dev)
    _csv(tmp_path / "mmlu/test/virology_test.csv", [["What, is it?", "1", "2", "3", "4", "C"],
                                                     ["Second?", "x", "y", "z", "w", "A"]])
    _csv(tmp_path / "mmlu/test/high_school_european_history_test.csv", [["Long?", "p", "q", "r", "s", "D"]])
    items = _quiet_load("mmlu", tmp_path)
    # Subjects sorted by file name; ids "<subject>/<row>"; 3 shots for European history (special_shots).
    assert [(it.id, it.subject, it.gold) for it in items] == [
        ("high_school_european_history/0", "high_school_european_history", "D"),
        ("virology/0", "virology", "C"), ("virology/1", "virology", "A")]

    def block(q, choices, answer):
        return q + "".join(f"\n{L}. {c}" for L, c in zip("ABCD", choices)) + "\nAnswer:" + answer

    shots = [block(f"Dev {i}, with \"quotes\"\nand a newline?", [f"a{i}", "b", "c", "d"], " " + "ABCD"[i % 4])
             for i in range(5)]
    assert items[1].prompt == "\n\n".join(shots + [block("What, is it?", ["1", "2", "3", "4"], "")])
    assert items[1].wrapped == DIRECT + items[1].prompt + "<|im_end|>"
    assert items[0].prompt.count("Answer:") == 4
    assert (items[1].condition, items[1].num_choices, items[1].max_tokens, items[1].max_context) == \
        ("direct", 4, 1, 4096)
    assert _quiet_load("mmlu", tmp_path, "corrected")[1].max_context == 3072
    row = ("Q?", ["w", "x", "y", "z"], "B")
    assert get_task("mmlu").prompt(row, [row], "faithful") == \
        "Q?\nA. w\nB. x\nC. y\nD. z\nAnswer: B\n\nQ?\nA. w\nB. x\nC. y\nD. z\nAnswer:"


def test_mmlu_bad_rows_and_missing_shots(tmp_path):
    _csv(tmp_path / "mmlu/test/virology_test.csv", [["Q?", "1", "2", "3", "4", "E"]])
    (tmp_path / "mmlu/dev").mkdir(parents=True)
    with pytest.raises(MissingDataError, match="virology_dev.csv"):
        _quiet_load("mmlu", tmp_path)
    _csv(tmp_path / "mmlu/dev/virology_dev.csv", [["S?", "1", "2", "3", "4", "A"]])
    with pytest.raises(TaskError, match="virology_test.csv: row 0"):
        _quiet_load("mmlu", tmp_path)


# ---------------------------------------------------------------- ARC (ARC-V1-Feb2018 JSONL)
def _arc_row(i, labels, key, stem=None):
    return {"id": f"Mercury_{i}", "question": {"stem": stem or f"Which one {i}?", "choices": [
        {"text": f" choice {j} ", "label": lab} for j, lab in enumerate(labels)]}, "answerKey": key}


def test_arc_reader_and_prompt(tmp_path):
    dev = [_arc_row(i, ["A", "B", "C", "D"], "ABCD"[i % 4]) for i in range(26)]
    dev[1] = _arc_row(1, ["1", "2", "3"], "3")
    _jsonl(tmp_path / "arc/ARC-Challenge-Dev.jsonl", dev)
    _jsonl(tmp_path / "arc/ARC-Challenge-Test.jsonl", [_arc_row(100, ["A", "B", "C", "D", "E"], "E"),
                                                        _arc_row(101, ["1", "2", "3", "4"], "2")])
    faithful = _quiet_load("arc_challenge", tmp_path, "faithful")
    corrected = _quiet_load("arc_challenge", tmp_path, "corrected")
    assert [it.id for it in faithful] == ["Mercury_100", "Mercury_101"]
    assert [it.num_choices for it in faithful] == [5, 4]
    assert [it.gold for it in faithful] == ["E", "2"] and [it.gold for it in corrected] == ["E", "B"]
    assert faithful[1].meta == {"gold_faithful": "2", "gold_corrected": "B"}

    def block(i, n, answer):
        return f"Which one {i}?" + "".join(f"\n{'ABCDE'[j]}. choice {j}" for j in range(n)) + "\nAnswer:" + answer

    shots = [block(i, 3 if i == 1 else 4, " " + ("3" if i == 1 else "ABCD"[i % 4])) for i in range(25)]
    assert faithful[0].prompt == "\n\n".join(shots + [block(100, 5, "")])    # 25 shots, digit gold kept
    shots[1] = block(1, 3, " C")                                               # corrected: position letter
    assert corrected[0].prompt == "\n\n".join(shots + [block(100, 5, "")])
    with pytest.raises(TaskError, match="answerKey 'Z'"):
        get_task("arc").prompt(dev[0], [_arc_row(0, ["A", "B"], "Z")], "faithful")


# ---------------------------------------------------------------- HellaSwag, Winogrande, BoolQ (JSONL)
def test_hellaswag_prompt_builder():
    row = {"ind": 4, "ctx_a": "A man sits.", "ctx_b": "hE then", "endings": [" a", "b ", "c", "d"], "label": "1"}
    shot = dict(row, label=3)
    expected = ("A man sits. He then\nQuestion: Which is the most logical continuation?\nA. a\nB. b\nC. c\nD. d\n"
                "Answer: D\n\nA man sits. He then\nQuestion: Which is the most logical continuation?\nA. a\nB. b\n"
                "C. c\nD. d\nAnswer:")
    assert get_task("hellaswag").prompt(row, [shot], "faithful") == expected


def test_winogrande_reader_and_prompt(tmp_path):
    def row(i, answer):
        return {"qID": f"q{i}", "sentence": f"Tom gave Bob {i} because _ was kind.", "option1": "Tom",
                "option2": "Bob", "answer": answer}

    _jsonl(tmp_path / "winogrande/train_debiased.jsonl", [row(i, "12"[i % 2]) for i in range(7)])
    _jsonl(tmp_path / "winogrande/dev.jsonl", [row(50, "2"), row(51, "1")])
    items = _quiet_load("winogrande", tmp_path)
    assert [(it.id, it.gold, it.num_choices) for it in items] == [("q50", "B", 2), ("q51", "A", 2)]
    shots = "".join(f"Tom gave Bob {i} because _ was kind.\nA. Tom\nB. Bob\nAnswer: {'AB'[i % 2]}\n\n"
                    for i in range(5))
    assert items[0].prompt == shots + "Tom gave Bob 50 because _ was kind.\nA. Tom\nB. Bob\nAnswer:"


def test_boolq_reader_and_prompt(tmp_path):
    def row(i, answer):
        return {"question": f"is it TRUE number {i}", "title": "T", "answer": answer, "passage": f"Passage {i}."}

    _jsonl(tmp_path / "boolq/train.jsonl", [row(i, i % 2 == 0) for i in range(6)])
    _jsonl(tmp_path / "boolq/dev.jsonl", [row(90, False), row(91, True)])
    items = _quiet_load("boolq", tmp_path)
    assert [(it.id, it.gold) for it in items] == [("dev.jsonl:0", "B"), ("dev.jsonl:1", "A")]
    shots = "".join(f"Passage {i}.\nQuestion: Is it true number {i}?\nA. Yes\nB. No\nAnswer: {'AB'[i % 2]}\n\n"
                    for i in range(5))
    assert items[1].prompt == shots + "Passage 91.\nQuestion: Is it true number 91?\nA. Yes\nB. No\nAnswer:"
    assert items[1].wrapped == DIRECT + items[1].prompt + "<|im_end|>"


@pytest.mark.parametrize("task,files", [
    ("boolq", ("boolq/dev.jsonl", "boolq/train.jsonl")),
    ("winogrande", ("winogrande/dev.jsonl", "winogrande/train_debiased.jsonl")),
    ("hellaswag", ("hellaswag/hellaswag_val.jsonl", "hellaswag/hellaswag_train.jsonl")),
])
def test_jsonl_mcq_missing_files_named(tmp_path, task, files):
    with pytest.raises(MissingDataError, match=files[0]):
        load_task(task, tmp_path)
    _jsonl(tmp_path / files[0], [{}])
    with pytest.raises(MissingDataError, match=files[1]):   # the shot source is checked before reading
        load_task(task, tmp_path)


# ---------------------------------------------------------------- GSM8K, MATH, DROP
def test_gsm8k_reader(tmp_path):
    _jsonl(tmp_path / "gsm8k/test.jsonl", [{"question": " How many?\n", "answer": "work\n#### 1,234"},
                                           {"question": "Next?", "answer": "#### -3"}])
    (tmp_path / "gsm8k/test.jsonl").write_text((tmp_path / "gsm8k/test.jsonl").read_text() + "\n")  # blank line
    items = _quiet_load("gsm8k", tmp_path)
    assert [(it.id, it.gold, it.prompt) for it in items] == [("test.jsonl:0", 1234, "How many?"),
                                                             ("test.jsonl:1", -3, "Next?")]
    assert items[0].wrapped == SYNTH_COT + "How many?<|im_end|>"
    assert (items[0].max_context, items[0].max_tokens) == (3072, None)
    (tmp_path / "gsm8k/test.jsonl").write_text('{"question": "x", "answer": "#### 1"}\nnot json\n')
    with pytest.raises(TaskError, match="test.jsonl:2: not valid JSON"):
        _quiet_load("gsm8k", tmp_path)


def test_math_reader(tmp_path):
    from hrm.eval.tasks.hendrycks_math import SUBJECTS

    for subject in SUBJECTS:
        (tmp_path / "math/test" / subject).mkdir(parents=True)
    for n in (10, 2):
        (tmp_path / f"math/test/algebra/{n}.json").write_text(json.dumps(
            {"problem": f"Solve {n}.", "level": "Level 1", "type": "Algebra",
             "solution": f"So $\\boxed{{\\frac{{{n}}}{{2}}}}$."}))
    (tmp_path / "math/test/geometry/1.json").write_text(json.dumps(
        {"problem": "Area?", "level": "Level 2", "type": "Geometry", "solution": "\\fbox{4}"}))
    items = _quiet_load("math", tmp_path)
    assert [(it.id, it.subject, it.gold) for it in items] == [
        ("test/algebra/2.json", "algebra", "\\frac{2}{2}"), ("test/algebra/10.json", "algebra", "\\frac{10}{2}"),
        ("test/geometry/1.json", "geometry", "4")]
    assert items[0].wrapped == SYNTH_COT + "Solve 2.<|im_end|>"
    (tmp_path / "math/test/geometry/2.json").write_text(json.dumps({"problem": "p", "solution": "no box"}))
    with pytest.raises(TaskError, match="geometry/2.json: cannot read the gold"):
        _quiet_load("math", tmp_path)
    (tmp_path / "math/test/geometry/2.json").unlink()
    (tmp_path / "math/test/precalculus").rmdir()
    with pytest.raises(MissingDataError, match="precalculus"):
        _quiet_load("math", tmp_path)


def test_drop_prompt_builder():
    from hrm.eval.prompts import DROP_SHOTS

    shots = "".join(f"{p}\nQ: {q}\nA: {a}\n\n" for p, q, a in DROP_SHOTS)
    assert get_task("drop").prompt(("The passage.", {"question": "Who?"})) == shots + "The passage.\nQ: Who?\nA:"


# ---------------------------------------------------------------- held-out pairs (task `default`)
def test_heldout_file_in_the_training_schema(tmp_path):
    path = tmp_path / "mine.jsonl"
    _jsonl(path, [{"instruction": "2+2=", "response": "4"},
                  {"prompt": "Capital of France?", "completion": "Paris", "condition": "synth, cot",
                   "task": "geo", "id": "g1"},
                  {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}])
    items = load_task("default", path)
    assert [(it.id, it.subject, it.condition, it.prompt, it.gold) for it in items] == [
        ("mine.jsonl:0", None, "direct", "2+2=", "4"), ("g1", "geo", "synth,cot", "Capital of France?", "Paris"),
        ("mine.jsonl:2", None, "direct", "Hi", "Hello")]
    assert (items[0].max_tokens, items[0].max_context) == (64, 256)
    assert load_task("default", path, options={"max_context": 99})[0].max_context == 99


@pytest.mark.parametrize("line,message", [
    ('{"instruction": "x"}', "has 'instruction' but not 'response'"),
    ('{"instruction": "x", "response": " "}', "empty response"),
    ('{"instruction": "x", "response": "y", "condition": "fast"}', "unknown condition"),
    ("{oops", "not valid JSON"),
])
def test_heldout_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "h.jsonl"
    path.write_text('{"instruction": "ok", "response": "ok"}\n' + line + "\n")
    with pytest.raises(TaskError, match=f"h.jsonl:2: .*{message}"):
        load_task("default", path)


def test_heldout_missing_is_named(tmp_path):
    with pytest.raises(MissingDataError, match="heldout.jsonl"):
        load_task("default", tmp_path)
