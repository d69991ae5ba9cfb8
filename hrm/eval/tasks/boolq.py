"""BoolQ reader (SPEC §7.6): dev split, 5 shots = the first 5 rows of train.

Query = passage + "\\nQuestion: " + capitalize(question) + "?"; A = "Yes", B = "No"; gold A iff `answer` is true.
Id = "dev.jsonl:<0-based line>".
"""

from __future__ import annotations

from pathlib import Path

from hrm.eval.prompts import BOOLQ_CHOICES, boolq_query
from hrm.eval.tasks.base import EvalItem, jsonl_mcq_items

DEV = "boolq/dev.jsonl"
TRAIN = "boolq/train.jsonl"
NUM_SHOTS = 5


def _parts(row: dict) -> tuple[str, list[str], str]:
    return boolq_query(row["passage"], row["question"]), list(BOOLQ_CHOICES), "A" if row["answer"] else "B"


def load(data_dir: Path, variant: str) -> list[EvalItem]:
    return jsonl_mcq_items("boolq", data_dir, DEV, "BoolQ evaluation (dev split)", TRAIN, "BoolQ few-shot exemplars (first 5 train rows)", NUM_SHOTS, _parts,
                           lambda line, row: f"dev.jsonl:{line}", variant)
