"""MMLU reader (SPEC §7.2): test CSVs of the original `data.tar`, 5 dev shots per subject (3 for European history).

CSV files have no header: question, A, B, C, D, answer letter; fields may hold quoted commas and newlines, so the
csv module parses them. Subjects come from `test/<subject>_test.csv`, sorted (the HF `cais/mmlu` `all` order).
Shots are the first rows of `dev/<subject>_dev.csv` in file order, formatted with their gold letter; there is no
subject header (SPEC §7.12 item 3). Id = "<subject>/<0-based row of the subject's test CSV>".
"""

from __future__ import annotations

import csv
from pathlib import Path

from hrm.eval.prompts import mcq_prompt
from hrm.eval.tasks.base import EvalItem, MissingDataError, TaskError, mcq_item
from hrm.eval.tasks.files import check_count, check_dir, require

NUM_SHOTS = 5
SPECIAL_SHOTS = {"high_school_european_history": 3}  # ref hrm_benchmarking.yaml `special_shots` (context length)


def read_csv(path: Path) -> list[tuple[str, list[str], str]]:
    """(question, [A, B, C, D], answer letter) rows of one MMLU CSV."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if len(row) != 6 or row[5].strip() not in ("A", "B", "C", "D"):
                raise TaskError(f"{path}: row {i} is not 'question,A,B,C,D,answer' ({len(row)} fields)")
            rows.append((row[0], row[1:5], row[5].strip()))
    return rows


def load(data_dir: Path, variant: str) -> list[EvalItem]:
    test_dir = require(data_dir, "mmlu/test", "MMLU evaluation (test split)")
    dev_dir = require(data_dir, "mmlu/dev", "MMLU few-shot exemplars (dev split)")
    test_files = sorted(test_dir.glob("*_test.csv"))
    if not test_files:
        raise MissingDataError(f"no <subject>_test.csv files in {test_dir} (MMLU evaluation, SPEC §7.2)")
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
        for row, (question, choices, answer) in enumerate(read_csv(test_file)):
            prompt = mcq_prompt(shots, question, choices)
            items.append(mcq_item("mmlu", f"{subject}/{row}", prompt, answer, 4, variant, subject=subject))
    check_count(data_dir, "mmlu/test", len(items))
    check_count(data_dir, "mmlu/dev", n_dev)
    return items
