"""HellaSwag reader (SPEC §7.4): validation split, 10 shots = the first 10 rows of train.

Query = ctx_a + " " + capitalize(ctx_b) + "\\nQuestion: Which is the most logical continuation?", the 4 endings
verbatim (no "[title]" clean-up, no activity label), gold = int(label) (an int in the jsonl, a string in HF).
Id = the dataset's `ind`.
"""

from __future__ import annotations

from pathlib import Path

from hrm.eval.prompts import hellaswag_query, letters
from hrm.eval.tasks.base import EvalItem, jsonl_mcq_items

VAL = "hellaswag/hellaswag_val.jsonl"
TRAIN = "hellaswag/hellaswag_train.jsonl"
NUM_SHOTS = 10


def _parts(row: dict) -> tuple[str, list[str], str]:
    endings = list(row["endings"])
    return hellaswag_query(row["ctx_a"], row["ctx_b"]), endings, letters(len(endings))[int(row["label"])]


def load(data_dir: Path, variant: str) -> list[EvalItem]:
    return jsonl_mcq_items("hellaswag", data_dir, VAL, "HellaSwag evaluation (validation split)", TRAIN, "HellaSwag few-shot exemplars (first 10 train rows)", NUM_SHOTS, _parts,
                           lambda line, row: str(row["ind"]), variant)
