"""Winogrande (docs/eval_protocol.md §5): dev split, 5 shots = the first 5 rows of train_debiased.

Query = the raw sentence with its "_" blank kept; A = option1, B = option2; gold = answer - 1. Id = `qID`.
"""

from __future__ import annotations

from pathlib import Path

from hrm.eval.item import EvalItem
from hrm.eval.prompts import letters
from hrm.eval.task import jsonl_mcq_items, mcq_shots_prompt, mcq_task

DEV = ("winogrande/dev.jsonl", "Winogrande evaluation (dev split)")
TRAIN = ("winogrande/train_debiased.jsonl", "Winogrande few-shot exemplars (first 5 train_debiased rows)")
NUM_SHOTS = 5


def parts(row: dict) -> tuple[str, list[str], str]:
    """(query, choices, gold letter) of one release row."""
    return row["sentence"], [row["option1"], row["option2"]], letters(2)[int(row["answer"]) - 1]


prompt = mcq_shots_prompt(parts)


def read(data_dir: Path, variant: str) -> list[EvalItem]:
    return jsonl_mcq_items("winogrande", data_dir, variant, eval_file=DEV, shot_file=TRAIN, num_shots=NUM_SHOTS,
                           prompt=prompt, parts=parts, item_id=lambda line, row: str(row["qID"]))


TASK = mcq_task(
    name="winogrande", header="Wino", read=read, prompt=prompt, order=40, aliases=("wino",),
    published={"paper_xl": 72.38, "readme_xl": 72.4, "paper_l": 66.38, "readme_l": 67.6},
)
