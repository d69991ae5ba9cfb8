"""Winogrande reader (SPEC §7.5): dev split, 5 shots = the first 5 rows of train_debiased.

Query = the raw sentence with its "_" blank kept; A = option1, B = option2; gold = answer - 1. Id = `qID`.
"""

from __future__ import annotations

from pathlib import Path

from hrm.eval.prompts import letters
from hrm.eval.tasks.base import EvalItem, jsonl_mcq_items

DEV = "winogrande/dev.jsonl"
TRAIN = "winogrande/train_debiased.jsonl"
NUM_SHOTS = 5


def _parts(row: dict) -> tuple[str, list[str], str]:
    return row["sentence"], [row["option1"], row["option2"]], letters(2)[int(row["answer"]) - 1]


def load(data_dir: Path, variant: str) -> list[EvalItem]:
    return jsonl_mcq_items("winogrande", data_dir, DEV, "Winogrande evaluation (dev split)", TRAIN, "Winogrande few-shot exemplars (first 5 train_debiased rows)", NUM_SHOTS, _parts,
                           lambda line, row: str(row["qID"]), variant)
