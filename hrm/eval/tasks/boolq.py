"""BoolQ (docs/eval_protocol.md §6): dev split, 5 shots = the first 5 rows of train.

Query = passage + "\\nQuestion: " + capitalize(question) + "?"; A = "Yes", B = "No"; gold A iff `answer` is true.
Id = "dev.jsonl:<0-based line>".
"""

from __future__ import annotations

from pathlib import Path

from hrm.eval.item import EvalItem
from hrm.eval.prompts import BOOLQ_CHOICES, boolq_query
from hrm.eval.task import jsonl_mcq_items, mcq_shots_prompt, mcq_task

DEV = ("boolq/dev.jsonl", "BoolQ evaluation (dev split)")
TRAIN = ("boolq/train.jsonl", "BoolQ few-shot exemplars (first 5 train rows)")
NUM_SHOTS = 5


def parts(row: dict) -> tuple[str, list[str], str]:
    """(query, choices, gold letter) of one release row."""
    return boolq_query(row["passage"], row["question"]), list(BOOLQ_CHOICES), "A" if row["answer"] else "B"


prompt = mcq_shots_prompt(parts)


def read(data_dir: Path, variant: str) -> list[EvalItem]:
    return jsonl_mcq_items("boolq", data_dir, variant, eval_file=DEV, shot_file=TRAIN, num_shots=NUM_SHOTS,
                           prompt=prompt, parts=parts, item_id=lambda line, row: f"dev.jsonl:{line}")


TASK = mcq_task(
    name="boolq", header="BoolQ", read=read, prompt=prompt, order=50,
    published={"paper_xl": 86.18, "readme_xl": 86.2, "paper_l": 84.86, "readme_l": 85.0},
)
