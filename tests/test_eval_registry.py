"""Task specs and their registry (one module per benchmark, discovered), and the results tables built from the
specs: published numbers, column order, a new benchmark added as one file (docs/eval_protocol.md, §13)."""

import json
import sys
import textwrap

import pytest

import hrm.eval.tasks as tasks_pkg
from hrm.eval.item import VARIANTS
from hrm.eval.results import render_markdown
from hrm.eval.task import Task
from hrm.eval.tasks import TaskError, all_tasks, benchmarks, get_task, load_task, parse_tasks

PAPER = ["mmlu", "arc_challenge", "hellaswag", "winogrande", "boolq", "drop", "gsm8k", "math"]


def test_registry_discovers_every_task_module():
    assert benchmarks() == PAPER
    assert [t.name for t in all_tasks()] == PAPER + ["default"]
    for task in all_tasks():
        assert isinstance(task, Task) and set(task.score) == set(VARIANTS)
        assert task.kind in ("mcq", "generation") and task.primary_metric in ("acc", "f1")
    assert [get_task(a).name for a in ("arc", "arc_c", "hella", "wino")] == \
        ["arc_challenge", "arc_challenge", "hellaswag", "winogrande"]
    assert parse_tasks("gsm8k, ARC ,all") == ["gsm8k", "arc_challenge"] + [t for t in PAPER if t not in
                                                                          ("gsm8k", "arc_challenge")]
    with pytest.raises(TaskError, match="unknown task 'piqa'; known: all, mmlu"):
        get_task("piqa")
    with pytest.raises(TaskError, match="no tasks"):
        parse_tasks(" , ")


def test_published_numbers_in_the_tables():
    """The numbers moved into the task specs print exactly as the paper/README tables (docs/eval_protocol.md §13.1,
    §13.3, §13.4)."""
    metrics = {"gsm8k": {v: {"acc": 0.5, "invalid": 0.0, "n": 2} for v in VARIANTS}}
    xl = render_markdown(metrics, size_label="1B", info={"code_version": "x"})
    assert "| model | MMLU | ARC-C | Hella | Wino | BoolQ | DROP | GSM8K | MATH |" in xl
    assert ("| paper Tab. 1/4 HRM 1B (eval_protocol §13.3) | 60.73 | 81.91 | 63.42 | 72.38 | 86.18 | 82.21 | 84.53 "
            "| 56.16 |") in xl
    assert "| ref README XL (eval_protocol §13.1) | 60.7 | 81.9 | 63.4 | 72.4 | 86.2 | 82.3 | 84.7 | 56.5 |" in xl
    assert "| ours (faithful prompts) | — | — | — | — | — | — | 50.00 | — |" in xl
    assert "| model | MMLU (micro) | ARC-C (label-idx) | Hella | Wino | BoolQ | DROP | GSM8K | MATH (boxed) |" in xl
    large = render_markdown(metrics, size_label="L", info={"code_version": "x"})
    assert ("| paper Tab. 2 HRM 0.6B (eval_protocol §13.4) | 56.87 | 74.32 | 50.48 | 66.38 | 84.86 | 78.07 | 78.39 "
            "| 50.28 |") in large
    assert "| ref README L (eval_protocol §13.1) | 56.6 | 75.9 | 52.7 | 67.6 | 85.0 | 78.6 | 77.6 | 51.2 |" in large
    assert "paper Tab" not in render_markdown(metrics, size_label=None, info={"code_version": "x"})


def test_tables_say_whose_prompts_they_score():
    metrics = {"boolq": {v: {"acc": 1.0, "invalid": 0.0, "n": 1} for v in VARIANTS}}
    one = render_markdown(metrics, variant="faithful", info={"code_version": "x"})
    assert one.count("| ours (faithful prompts) |") == 2
    assert "The corrected row rescores the faithful generations (faithful prompts and context)" in one
    both = render_markdown(metrics, variant="faithful", info={"code_version": "x"}, both_protocols=True)
    assert "| ours (faithful prompts) |" in both and "| ours (corrected prompts) |" in both
    assert "rescores" not in both


PIQA = '''
"""PIQA (an example benchmark added as one file): valid split, 2 shots = the first 2 train rows."""

from hrm.eval.prompts import letters
from hrm.eval.task import jsonl_mcq_items, mcq_shots_prompt, mcq_task

VALID = ("piqa/valid.jsonl", "PIQA evaluation (valid split)")
TRAIN = ("piqa/train.jsonl", "PIQA few-shot exemplars (first 2 train rows)")


def parts(row):
    return row["goal"], [row["sol1"], row["sol2"]], letters(2)[int(row["label"])]


prompt = mcq_shots_prompt(parts)


def read(data_dir, variant):
    return jsonl_mcq_items("piqa", data_dir, variant, eval_file=VALID, shot_file=TRAIN, num_shots=2,
                           prompt=prompt, parts=parts, item_id=lambda line, row: f"valid.jsonl:{line}")


TASK = mcq_task(name="piqa", header="PIQA", read=read, prompt=prompt, order=90, published={"paper_xl": 70.0})
'''


@pytest.fixture
def extra_task_dir(tmp_path, monkeypatch):
    """A directory added to the task package's search path, with a fresh registry (restored afterwards)."""
    extra = tmp_path / "extra_tasks"
    extra.mkdir()
    monkeypatch.setattr(tasks_pkg, "__path__", [*tasks_pkg.__path__, str(extra)])
    monkeypatch.setattr(tasks_pkg, "_REGISTRY", {})
    monkeypatch.setattr(tasks_pkg, "_ALIASES", {})
    for name in ("piqa", "broken"):
        monkeypatch.delitem(sys.modules, f"hrm.eval.tasks.{name}", raising=False)
    yield extra
    for name in ("piqa", "broken"):
        sys.modules.pop(f"hrm.eval.tasks.{name}", None)


def test_a_new_benchmark_is_one_file(extra_task_dir, tmp_path):
    """Dropping one module into the package makes a task: --tasks, `all`, reading, scoring, tables."""
    (extra_task_dir / "piqa.py").write_text(textwrap.dedent(PIQA))
    data = tmp_path / "data/piqa"
    data.mkdir(parents=True)
    rows = [{"goal": f"Open jar {i}", "sol1": "twist", "sol2": "smash", "label": i % 2} for i in range(3)]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "valid.jsonl").write_text(json.dumps(rows[1]) + "\n")
    assert parse_tasks("all")[-1] == "piqa" and get_task("piqa").header == "PIQA"
    item = load_task("piqa", tmp_path / "data")[0]
    assert item.prompt == ("Open jar 0\nA. twist\nB. smash\nAnswer: A\n\nOpen jar 1\nA. twist\nB. smash\nAnswer: B"
                           "\n\nOpen jar 1\nA. twist\nB. smash\nAnswer:")
    assert (item.gold, item.max_tokens, item.max_context) == ("B", 1, 4096)

    from hrm.eval.metrics import aggregate, score_item

    rec = {"task": "piqa", "subject": None, **score_item(item, "b")}
    assert rec["correct"] and rec["variants"]["corrected"]["score"] == 1.0
    md = render_markdown(aggregate([rec]), size_label="XL", info={"code_version": "x"})
    assert "| model | MMLU | ARC-C | Hella | Wino | BoolQ | DROP | GSM8K | MATH | PIQA |" in md
    assert "| 84.53 | 56.16 | 70.0 |" in md and "| 84.7 | 56.5 | — |" in md


def test_a_module_without_task_is_an_error(extra_task_dir):
    (extra_task_dir / "broken.py").write_text("X = 1\n")
    with pytest.raises(TaskError, match="broken.py: a task module must export TASK"):
        get_task("mmlu")
