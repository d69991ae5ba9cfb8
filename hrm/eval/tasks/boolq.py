"""BoolQ reader (SPEC §7.6): dev split, 5 shots = the first 5 rows of train.

Query = passage + "\\nQuestion: " + capitalize(question) + "?"; A = "Yes", B = "No"; gold A iff `answer` is true.
Id = "dev.jsonl:<0-based line>".
"""

from __future__ import annotations

from pathlib import Path

from hrm.eval.prompts import BOOLQ_CHOICES, boolq_query, mcq_prompt
from hrm.eval.tasks.base import EvalItem, mcq_item
from hrm.eval.tasks.files import read_jsonl, require

DEV = "boolq/dev.jsonl"
TRAIN = "boolq/train.jsonl"
NUM_SHOTS = 5


def _parts(row: dict) -> tuple[str, list[str], str]:
    return boolq_query(row["passage"], row["question"]), list(BOOLQ_CHOICES), "A" if row["answer"] else "B"


def load(data_dir: Path, variant: str) -> list[EvalItem]:
    require(data_dir, DEV, "BoolQ evaluation (dev split)")
    require(data_dir, TRAIN, "BoolQ few-shot exemplars (first 5 train rows)")
    dev = read_jsonl(data_dir, DEV, "BoolQ evaluation (dev split)")
    train = read_jsonl(data_dir, TRAIN, "BoolQ few-shot exemplars (first 5 train rows)")
    shots = [_parts(row) for _, row in train[:NUM_SHOTS]]
    items = []
    for i, row in dev:
        query, choices, gold = _parts(row)
        items.append(mcq_item("boolq", f"dev.jsonl:{i}", mcq_prompt(shots, query, choices), gold, 2, variant))
    return items
