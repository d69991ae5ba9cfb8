"""ARC-Challenge (docs/eval_protocol.md §3): Test split, 25 shots = the first 25 rows of Dev, letters by position.

Gold, per docs/eval_protocol.md §11: faithful = `chr(ord(answerKey))` (the pre-PR-#2 `ord(answerKey) - 65` index turned
back into a "letter"), so the 22 test rows with numeric labels "1"-"4" get a digit gold that can never match a valid
letter; corrected = the letter of `answerKey`'s position within `choices.label`. Shots carry the same variant's
gold letter. Both golds are kept in `meta` so one run reports both variants. Id = the dataset's `id`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hrm.eval.errors import TaskError
from hrm.eval.item import EvalItem
from hrm.eval.prompts import letters, mcq_prompt
from hrm.eval.release_files import read_jsonl
from hrm.eval.task import mcq_item, mcq_task

TEST = "arc/ARC-Challenge-Test.jsonl"
DEV = "arc/ARC-Challenge-Dev.jsonl"
NUM_SHOTS = 25


def arc_golds(row: dict) -> dict[str, str]:
    """{'faithful': ..., 'corrected': ...} gold letters of one release row (docs/eval_protocol.md §3, §11)."""
    key = str(row["answerKey"])
    labels = [str(c["label"]) for c in row["question"]["choices"]]
    if key not in labels:
        raise TaskError(f"ARC row {row.get('id')!r}: answerKey {key!r} not among labels {labels}")
    return {"faithful": chr(ord("A") + ord(key) - 65), "corrected": letters(len(labels))[labels.index(key)]}


def _parts(row: dict) -> tuple[str, list[str]]:
    return row["question"]["stem"], [c["text"] for c in row["question"]["choices"]]


def prompt(row: dict, shots: Sequence[dict], variant: str) -> str:
    """The shots with the variant's gold letters (a digit in the faithful variant for numeric labels), then the
    target question (docs/eval_protocol.md §1 MCQ layout, §3)."""
    return mcq_prompt([(*_parts(s), arc_golds(s)[variant]) for s in shots], *_parts(row))


def read(data_dir: Path, variant: str) -> list[EvalItem]:
    test = read_jsonl(data_dir, TEST, "ARC-Challenge evaluation (Test split)")
    dev = read_jsonl(data_dir, DEV, "ARC-Challenge few-shot exemplars (Dev split)")
    shots = [row for _, row in dev[:NUM_SHOTS]]
    items = []
    for _, row in test:
        golds = arc_golds(row)
        meta = {"gold_faithful": golds["faithful"], "gold_corrected": golds["corrected"]}
        items.append(mcq_item("arc_challenge", str(row["id"]), prompt(row, shots, variant), golds[variant],
                              len(_parts(row)[1]), variant, meta=meta))
    return items


TASK = mcq_task(
    name="arc_challenge", header="ARC-C", read=read, prompt=prompt, order=20, aliases=("arc", "arc_c"),
    corrected_note="label-idx",
    published={"paper_xl": 81.91, "readme_xl": 81.9, "paper_l": 74.32, "readme_l": 75.9},
)
