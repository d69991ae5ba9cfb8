"""HellaSwag (docs/eval_protocol.md §4): validation split, 10 shots = the first 10 rows of train.

Query = ctx_a + " " + capitalize(ctx_b) + "\\nQuestion: Which is the most logical continuation?", the 4 endings
verbatim (no "[title]" clean-up, no activity label), gold = int(label) (an int in the jsonl, a string in HF).
Id = the dataset's `ind`.
"""

from __future__ import annotations

from pathlib import Path

from hrm.eval.item import EvalItem
from hrm.eval.prompts import hellaswag_query, letters
from hrm.eval.task import jsonl_mcq_items, mcq_shots_prompt, mcq_task

VAL = ("hellaswag/hellaswag_val.jsonl", "HellaSwag evaluation (validation split)")
TRAIN = ("hellaswag/hellaswag_train.jsonl", "HellaSwag few-shot exemplars (first 10 train rows)")
NUM_SHOTS = 10


def parts(row: dict) -> tuple[str, list[str], str]:
    """(query, choices, gold letter) of one release row."""
    endings = list(row["endings"])
    return hellaswag_query(row["ctx_a"], row["ctx_b"]), endings, letters(len(endings))[int(row["label"])]


prompt = mcq_shots_prompt(parts)


def read(data_dir: Path, variant: str) -> list[EvalItem]:
    return jsonl_mcq_items("hellaswag", data_dir, variant, eval_file=VAL, shot_file=TRAIN, num_shots=NUM_SHOTS,
                           prompt=prompt, parts=parts, item_id=lambda line, row: str(row["ind"]))


TASK = mcq_task(
    name="hellaswag", header="Hella", read=read, prompt=prompt, order=30, aliases=("hella",),
    published={"paper_xl": 63.42, "readme_xl": 63.4, "paper_l": 50.48, "readme_l": 52.7},
)
