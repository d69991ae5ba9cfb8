"""Winogrande reader (SPEC §7.5): dev split, 5 shots = the first 5 rows of train_debiased.

Query = the raw sentence with its "_" blank kept; A = option1, B = option2; gold = answer - 1. Id = `qID`.
"""

from __future__ import annotations

from pathlib import Path

from hrm.eval.prompts import letters, mcq_prompt
from hrm.eval.tasks.base import EvalItem, mcq_item
from hrm.eval.tasks.files import read_jsonl, require

DEV = "winogrande/dev.jsonl"
TRAIN = "winogrande/train_debiased.jsonl"
NUM_SHOTS = 5


def _parts(row: dict) -> tuple[str, list[str], str]:
    return row["sentence"], [row["option1"], row["option2"]], letters(2)[int(row["answer"]) - 1]


def load(data_dir: Path, variant: str) -> list[EvalItem]:
    require(data_dir, DEV, "Winogrande evaluation (dev split)")
    require(data_dir, TRAIN, "Winogrande few-shot exemplars (first 5 train_debiased rows)")
    dev = read_jsonl(data_dir, DEV, "Winogrande evaluation (dev split)")
    train = read_jsonl(data_dir, TRAIN, "Winogrande few-shot exemplars (first 5 train_debiased rows)")
    shots = [_parts(row) for _, row in train[:NUM_SHOTS]]
    items = []
    for _, row in dev:
        query, choices, gold = _parts(row)
        items.append(mcq_item("winogrande", str(row["qID"]), mcq_prompt(shots, query, choices), gold, 2, variant))
    return items
