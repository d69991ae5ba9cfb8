"""GSM8K test reader (SPEC §7.8): zero-shot bare `question`, condition synth,cot, integer gold after `####`."""

from __future__ import annotations

from pathlib import Path

from hrm.eval.scoring.gsm8k import gsm8k_gold
from hrm.eval.tasks.base import EvalItem, gen_item
from hrm.eval.tasks.files import read_jsonl

REL = "gsm8k/test.jsonl"


def load(data_dir: Path, variant: str) -> list[EvalItem]:
    """1,319 items; id = "test.jsonl:<0-based line>"."""
    rows = read_jsonl(data_dir, REL, "GSM8K evaluation (test split)")
    return [gen_item("gsm8k", f"test.jsonl:{i}", row["question"], gsm8k_gold(row["answer"])) for i, row in rows]
