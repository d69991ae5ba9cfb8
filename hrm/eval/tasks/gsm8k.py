"""GSM8K (docs/eval_protocol.md §8): test split, zero-shot bare `question`, condition synth,cot, integer gold after
`####`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from hrm.eval.item import EvalItem
from hrm.eval.release_files import read_jsonl
from hrm.eval.scoring.gsm8k import gsm8k_extract, gsm8k_gold, score_gsm8k
from hrm.eval.task import gen_item, generation_task, line_item

REL = "gsm8k/test.jsonl"
CONDITION = "synth,cot"


def prompt(row: dict, shots: Sequence = (), variant: str = "faithful") -> str:
    """The bare question (zero-shot)."""
    return row["question"]


def read(data_dir: Path, variant: str) -> list[EvalItem]:
    """1,319 items; id = "test.jsonl:<0-based line>"."""
    rows = read_jsonl(data_dir, REL, "GSM8K evaluation (test split)")
    return [gen_item("gsm8k", f"test.jsonl:{i}", prompt(row), gsm8k_gold(row["answer"]), CONDITION)
            for i, row in rows]


def score(item: EvalItem, prediction: str) -> dict[str, Any]:
    return score_gsm8k(prediction, item.gold)


def item_from_line(line: dict) -> Optional[EvalItem]:
    """Release form `answer` ("... #### N"), or `gold`: an int or number string."""
    if "answer" in line:
        return line_item("gsm8k", line, gsm8k_gold(str(line["answer"])))
    if "gold" in line:
        return line_item("gsm8k", line, int(float(str(line["gold"]).replace(",", ""))))
    return None


TASK = generation_task(
    name="gsm8k", header="GSM8K", condition=CONDITION, read=read, prompt=prompt, score=score,
    vote_key=lambda item, prediction: gsm8k_extract(prediction), item_from_line=item_from_line, order=70,
    published={"paper_xl": 84.53, "readme_xl": 84.7, "paper_l": 78.39, "readme_l": 77.6},
)
