"""MMLU (docs/eval_protocol.md §2): test CSVs of the original `data.tar`, 5 dev shots per subject (3 for European
history).

CSV files have no header: question, A, B, C, D, answer letter; fields may hold quoted commas and newlines, so the
csv module parses them. Subjects come from `test/<subject>_test.csv`, sorted (the HF `cais/mmlu` `all` order).
Shots are the first rows of `dev/<subject>_dev.csv` in file order, formatted with their gold letter; there is no
subject header (docs/eval_protocol.md §12 item 3). Id = "<subject>/<0-based row of the subject's test CSV>".
Metric: faithful = macro average over subjects (docs/eval_protocol.md §2); corrected = micro over questions, macro
beside (docs/eval_protocol.md §11).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional, Sequence

from hrm.eval.errors import MissingDataError, TaskError
from hrm.eval.item import EvalItem
from hrm.eval.prompts import mcq_prompt
from hrm.eval.release_files import check_count, check_dir, require
from hrm.eval.scoring.aggregates import grouped_accuracy
from hrm.eval.task import mcq_item, mcq_item_from_line, mcq_task

NUM_SHOTS = 5
SPECIAL_SHOTS = {"high_school_european_history": 3}  # ref hrm_benchmarking.yaml `special_shots` (context length)

Row = tuple[str, list[str], str]  # (question, [A, B, C, D], answer letter)


def read_csv(path: Path) -> list[Row]:
    """(question, [A, B, C, D], answer letter) rows of one MMLU CSV."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if len(row) != 6 or row[5].strip() not in ("A", "B", "C", "D"):
                raise TaskError(f"{path}: row {i} is not 'question,A,B,C,D,answer' ({len(row)} fields)")
            rows.append((row[0], row[1:5], row[5].strip()))
    return rows


def prompt(row: Row, shots: Sequence[Row], variant: str = "faithful") -> str:
    """The shots with their gold letters, then the target question (docs/eval_protocol.md §1 MCQ layout, no subject
    header)."""
    return mcq_prompt(shots, row[0], row[1])


def read(data_dir: Path, variant: str) -> list[EvalItem]:
    test_dir = require(data_dir, "mmlu/test", "MMLU evaluation (test split)")
    dev_dir = require(data_dir, "mmlu/dev", "MMLU few-shot exemplars (dev split)")
    test_files = sorted(test_dir.glob("*_test.csv"))
    if not test_files:
        raise MissingDataError(f"no <subject>_test.csv files in {test_dir} (MMLU evaluation, docs/eval_protocol.md §2)")
    subjects = [p.name[: -len("_test.csv")] for p in test_files]
    dev_files = [require(data_dir, f"mmlu/dev/{s}_dev.csv", f"MMLU few-shot exemplars of {s!r}") for s in subjects]
    check_dir(data_dir, "mmlu/test", test_files)
    check_dir(data_dir, "mmlu/dev", sorted(dev_dir.glob("*_dev.csv")))
    items: list[EvalItem] = []
    n_dev = 0
    for subject, test_file, dev_file in zip(subjects, test_files, dev_files):
        dev = read_csv(dev_file)
        n_dev += len(dev)
        shots = dev[: SPECIAL_SHOTS.get(subject, NUM_SHOTS)]
        for i, row in enumerate(read_csv(test_file)):
            items.append(mcq_item("mmlu", f"{subject}/{i}", prompt(row, shots, variant), row[2], 4, variant,
                                  subject=subject))
    check_count(data_dir, "mmlu/test", len(items))
    check_count(data_dir, "mmlu/dev", n_dev)
    return items


def aggregate(records: Sequence[dict], variant: str) -> dict[str, Any]:
    """Faithful: macro over subjects (docs/eval_protocol.md §2). Corrected: micro over questions, macro beside
    (docs/eval_protocol.md §11)."""
    rows = [r["variants"][variant] for r in records]
    if variant == "faithful":
        return grouped_accuracy(records, rows, headline="macro")
    return grouped_accuracy(records, rows, headline="micro", macro_beside=True)


def item_from_line(line: dict) -> Optional[EvalItem]:
    """MCQ rescoring form; the subject is taken from an id "<subject>/<row>" when the line has none."""
    item = mcq_item_from_line("mmlu", line)
    if item is not None and item.subject is None and "/" in item.id:
        item.subject = item.id.split("/", 1)[0]
    return item


TASK = mcq_task(
    name="mmlu", header="MMLU", read=read, prompt=prompt, order=10, aggregate=aggregate,
    item_from_line=item_from_line, corrected_note="micro",
    published={"paper_xl": 60.73, "readme_xl": 60.7, "paper_l": 56.87, "readme_l": 56.6},
)
