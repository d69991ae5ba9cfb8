"""Reader tests: real release files (counts, ids, checksums) and small generated files for the missing
releases (HellaSwag, DROP, BoolQ train), with byte-for-byte prompt pins for the generated ones (docs/eval_protocol.md
§2–9)."""

import hashlib
import json
import shutil
import warnings

import pytest

from hrm.eval.prompts import DROP_SHOTS
from hrm.eval.tasks import DataIntegrityWarning, MissingDataError, load_task, load_tasks, parse_tasks

pytestmark = pytest.mark.filterwarnings("error::hrm.eval.tasks.DataIntegrityWarning")


def _no_integrity_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    bad = [str(w.message) for w in caught if issubclass(w.category, DataIntegrityWarning)]
    assert not bad, bad
    return out


# ---------------------------------------------------------------- real files
@pytest.mark.parametrize("task,count,first_id", [
    ("gsm8k", 1319, "test.jsonl:0"),
    ("math", 5000, "test/algebra/1.json"),
    ("mmlu", 14042, "abstract_algebra/0"),
    ("arc_challenge", 1172, "Mercury_7175875"),
    ("winogrande", 1267, "3FCO4VKOZ4BJQ6IFC0VAIBK4KTWE7U-2"),
])
def test_real_counts_and_ids(benchdata_dir, task, count, first_id):
    items = _no_integrity_warnings(load_task, task, benchdata_dir)
    assert len(items) == count and items[0].id == first_id
    assert len({it.id for it in items}) == count
    assert all(it.task == task and it.prompt == it.prompt.strip() for it in items)


def test_real_item_fields(benchdata_dir):
    g = load_task("gsm8k", benchdata_dir, limit=3)
    assert [it.gold for it in g] == [18, 3, 70000] and g[0].condition == "synth,cot"
    assert (g[0].max_context, g[0].max_tokens, g[0].temperature) == (3072, None, 0.0)
    m = load_task("math", benchdata_dir, limit=1)[0]
    assert m.gold == "2" and m.subject == "algebra"
    assert m.prompt == "How many vertical asymptotes does the graph of $y=\\frac{2}{x^2+x-6}$ have?"
    mm = load_task("mmlu", benchdata_dir)
    assert len({it.subject for it in mm}) == 57 and mm[0].num_choices == 4
    assert (mm[0].condition, mm[0].max_context, mm[0].max_tokens) == ("direct", 4096, 1)
    euro = [it for it in mm if it.subject == "high_school_european_history"]
    assert euro[0].prompt.count("Answer:") == 4                   # 3 shots + target (docs/eval_protocol.md §2)
    assert mm[0].prompt.count("Answer:") == 6                     # 5 shots + target
    w = load_task("winogrande", benchdata_dir, limit=1)[0]
    assert w.gold == "B" and w.num_choices == 2 and "_" in w.prompt
    corrected = load_task("mmlu", benchdata_dir, "corrected", limit=1)[0]
    assert corrected.max_context == 3072                          # docs/eval_protocol.md §11 MCQ context


def test_real_arc_golds(benchdata_dir):
    f = load_task("arc_challenge", benchdata_dir, "faithful")
    c = load_task("arc_challenge", benchdata_dir, "corrected")
    numeric = [(a, b) for a, b in zip(f, c) if a.gold != b.gold]
    assert len(numeric) == 22                                     # docs/eval_protocol.md §3
    assert all(a.gold in "1234" and b.gold in "ABCD" for a, b in numeric)
    assert f[0].prompt.count("Answer:") == 26                     # 25 Dev shots + target
    assert {it.num_choices for it in f} == {3, 4, 5}


def test_limit_and_task_list(benchdata_dir):
    items = load_tasks("gsm8k,math", benchdata_dir, limit=2)
    assert [it.task for it in items] == ["gsm8k", "gsm8k", "math", "math"]
    assert parse_tasks("all") == ["mmlu", "arc_challenge", "hellaswag", "winogrande", "boolq", "drop",
                                  "gsm8k", "math"]
    with pytest.raises(ValueError, match="unknown task"):
        parse_tasks("gsm9k")


@pytest.mark.parametrize("task,missing", [
    ("boolq", "boolq/train.jsonl"), ("hellaswag", "hellaswag/hellaswag_val.jsonl"),
    ("drop", "drop/drop_dataset_dev.json"),
])
def test_missing_release_files(benchdata_dir, task, missing):
    with pytest.raises(MissingDataError, match=missing):
        load_task(task, benchdata_dir)


def test_checksum_and_count_mismatch_warn(benchdata_dir, tmp_path):
    (tmp_path / "gsm8k").mkdir()
    lines = (benchdata_dir / "gsm8k/test.jsonl").read_text(encoding="utf-8").split("\n")
    (tmp_path / "gsm8k/test.jsonl").write_text("\n".join(lines[:5]) + "\n", encoding="utf-8")
    with pytest.warns(DataIntegrityWarning) as record:
        items = load_task("gsm8k", tmp_path)
    messages = " ".join(str(w.message) for w in record)
    assert "gsm8k/test.jsonl: sha256" in messages and "5 items, expected 1319" in messages
    assert len(items) == 5


def test_directory_checksum_names_file(benchdata_dir, tmp_path):
    for split in ("test", "dev"):
        (tmp_path / "mmlu" / split).mkdir(parents=True)
        shutil.copy(benchdata_dir / f"mmlu/{split}/virology_{split}.csv", tmp_path / f"mmlu/{split}")
    (tmp_path / "SHA256SUMS").write_text("0" * 64 + "  ./mmlu/test/virology_test.csv\n")
    with pytest.warns(DataIntegrityWarning) as record:
        items = load_task("mmlu", tmp_path)
    messages = " ".join(str(w.message) for w in record)
    assert "mmlu/test/virology_test.csv" in messages and "aggregate sha256" in messages
    assert items[0].id == "virology/0"


# ---------------------------------------------------------------- generated files
def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _hellaswag_row(i, label):
    return {"ind": 100 + i, "activity_label": "Cooking", "ctx_a": f"A man cuts onion {i}.",
            "ctx_b": "tHE MAN then", "ctx": "unused", "split": "val", "split_type": "indomain", "label": label,
            "endings": [f" stirs {i}.", "sings ", "runs", "sleeps"], "source_id": "x"}


def test_hellaswag_generated(tmp_path):
    _jsonl(tmp_path / "hellaswag/hellaswag_train.jsonl", [_hellaswag_row(i, i % 4) for i in range(12)])
    _jsonl(tmp_path / "hellaswag/hellaswag_val.jsonl", [_hellaswag_row(50, 2), _hellaswag_row(51, 0)])
    with pytest.warns(DataIntegrityWarning):
        items = load_task("hellaswag", tmp_path)
    assert [it.id for it in items] == ["150", "151"] and items[0].gold == "C" and items[0].num_choices == 4
    def block(i, ans):
        return (f"A man cuts onion {i}. The man then\nQuestion: Which is the most logical continuation?\n"
                f"A. stirs {i}.\nB. sings\nC. runs\nD. sleeps\nAnswer:{ans}")
    expected = "\n\n".join([block(i, " " + "ABCD"[i % 4]) for i in range(10)] + [block(50, "")])
    assert items[0].prompt == expected
    assert items[0].wrapped == "<|im_start|><|object_ref_start|>" + expected + "<|im_end|>"


def test_hellaswag_missing_train(tmp_path):
    _jsonl(tmp_path / "hellaswag/hellaswag_val.jsonl", [_hellaswag_row(50, 2)])
    with pytest.raises(MissingDataError, match="hellaswag_train.jsonl"):
        load_task("hellaswag", tmp_path)


def _drop_answer(number="", spans=(), date=("", "", "")):
    return {"number": number, "date": dict(zip(("day", "month", "year"), date)), "spans": list(spans)}


def test_drop_generated(tmp_path):
    data = {
        "nfl_1": {"passage": " The Bills won 7-3. ", "wiki_url": "u", "qa_pairs": [
            {"question": "How many points?", "query_id": "q1", "answer": _drop_answer("7"),
             "validated_answers": [_drop_answer("7"), _drop_answer(spans=["seven"])]},
            {"question": "Who won?", "query_id": "q2", "answer": _drop_answer(spans=["Bills", "Buffalo"])}]},
        "history_2": {"passage": "It ended on 7 May 1364.", "wiki_url": "u", "qa_pairs": [
            {"question": "When?", "query_id": "q3", "answer": _drop_answer(date=("7", "May", "1364")),
             "validated_answers": []}]},
    }
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop/drop_dataset_dev.json").write_text(json.dumps(data, indent=4), encoding="utf-8")
    with pytest.warns(DataIntegrityWarning):
        items = load_task("drop", tmp_path)
    assert [it.id for it in items] == ["q1", "q2", "q3"]
    assert items[0].gold == [("7",), ("seven",)]
    assert items[1].gold == [("Bills", "Buffalo"), ("",)]
    assert items[2].gold == [("7 May 1364",)]
    assert (items[0].condition, items[0].max_context, items[0].max_tokens) == ("direct", 3072, None)
    shots = "".join(f"{p}\nQ: {q}\nA: {a}\n\n" for p, q, a in DROP_SHOTS)
    assert items[0].prompt == shots + " The Bills won 7-3. \nQ: How many points?\nA:"
    # Pin the full prompt byte for byte; the shot passages' lengths were cross-checked against the reference.
    assert [len(p) for p, _, _ in DROP_SHOTS] == [952, 1244, 1361]
    assert hashlib.sha256(items[0].wrapped.encode()).hexdigest() == \
        "c4852d12a3be1a439423be4903eedbc9b43fceca64b0dc57711e0a12bd9a0abe"
    assert items[0].prompt.startswith("To start the season, the Lions traveled south to Tampa")
    assert "first time since 2007\nQ: How many points did the buccaneers need to tie in the first?\nA: 3\n\n" \
           "Trying to snap" in items[0].prompt
    assert "Navarrese suffered a crushing defeat at the Battle of Cocherel.\nQ: How many years before " \
           "Navarrase used the captivity of John II?\nA: 9\n\n The Bills" in items[0].prompt


def test_boolq_generated_train(benchdata_dir, tmp_path):
    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq/dev.jsonl").symlink_to(benchdata_dir / "boolq/dev.jsonl")
    train = [{"question": f"is it TRUE number {i}", "title": "T", "answer": i % 2 == 0,
              "passage": f"Passage {i}."} for i in range(6)]
    _jsonl(tmp_path / "boolq/train.jsonl", train)
    with pytest.warns(DataIntegrityWarning, match="boolq/train.jsonl"):
        items = load_task("boolq", tmp_path)
    assert len(items) == 3270 and items[0].id == "dev.jsonl:0" and items[1].id == "dev.jsonl:1"
    first = json.loads((benchdata_dir / "boolq/dev.jsonl").read_text().split("\n")[0])
    shots = "".join(f"Passage {i}.\nQuestion: Is it true number {i}?\nA. Yes\nB. No\nAnswer: {'AB'[i % 2]}\n\n"
                    for i in range(5))
    expected = (shots + first["passage"] + "\nQuestion: " + first["question"].capitalize() + "?\nA. Yes\nB. No\n"
                "Answer:")
    assert items[0].prompt == expected.strip()
    assert items[0].gold == ("A" if first["answer"] else "B") == "B"
    assert items[0].prompt.endswith(
        "\nQuestion: Does ethanol take more energy make that produces?\nA. Yes\nB. No\nAnswer:")


def test_default_tasks(tmp_path):
    rows = [{"task": "add", "id": "add-0", "instruction": "1+1=", "response": "2", "condition": "direct"},
            {"task": "sort", "id": "sort-0", "instruction": "sort 3 1 2", "response": "1 2 3", "condition": "cot"}]
    _jsonl(tmp_path / "heldout.jsonl", rows)
    items = load_tasks("default", tmp_path, options={"default": {"max_tokens": 16}})
    assert [(it.id, it.subject, it.condition, it.max_tokens, it.max_context) for it in items] == [
        ("add-0", "add", "direct", 16, 256), ("sort-0", "sort", "cot", 16, 256)]
    assert items[1].wrapped == "<|im_start|><|object_ref_end|>sort 3 1 2<|im_end|>"
