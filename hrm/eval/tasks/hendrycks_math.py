"""MATH (Hendrycks) test, task `math` (docs/eval_protocol.md §9): all 5,000 `test/<subject>/<n>.json`, zero-shot bare
`problem`.

Order: subjects alphabetically (the HF `EleutherAI/hendrycks_math` config order), files by numeric name. Gold =
contents of the last `\\boxed{}` of `solution`. Condition synth,cot. Id = "test/<subject>/<n>.json".
Scoring: faithful = math_verify on the bare strings, corrected = both wrapped in `\\boxed{}` (docs/eval_protocol.md
§11).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from hrm.eval.errors import MissingDataError, TaskError
from hrm.eval.item import EvalItem
from hrm.eval.release_files import check_count, check_dir, require
from hrm.eval.scoring.hendrycks_math import math_extract, math_gold, score_math
from hrm.eval.task import gen_item, generation_task, line_item

SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
            "prealgebra", "precalculus")
CONDITION = "synth,cot"


def _file_order(path: Path) -> tuple:
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.name)


def prompt(row: dict, shots: Sequence = (), variant: str = "faithful") -> str:
    """The bare problem (zero-shot)."""
    return row["problem"]


def read(data_dir: Path, variant: str) -> list[EvalItem]:
    root = require(data_dir, "math/test", "MATH evaluation (test split)")
    items: list[EvalItem] = []
    for subject in SUBJECTS:
        sub = root / subject
        if not sub.is_dir():
            raise MissingDataError(f"missing benchmark directory {sub} (MATH test subject {subject!r}; "
                                   "expected the MATH.tar layout test/<subject>/<n>.json, docs/eval_protocol.md §9)")
        files = sorted(sub.glob("*.json"), key=_file_order)
        check_dir(data_dir, f"math/test/{subject}", files)
        for path in files:
            row = json.loads(path.read_text(encoding="utf-8"))
            try:
                gold = math_gold(row["solution"])
            except (KeyError, ValueError) as e:
                raise TaskError(f"{path}: cannot read the gold answer ({e})") from None
            items.append(gen_item("math", f"test/{subject}/{path.name}", prompt(row), gold, CONDITION,
                                  subject=subject))
    check_count(data_dir, "math/test", len(items))
    return items


def _scorer(variant: str):
    return lambda item, prediction: score_math(prediction, item.gold, variant)


def item_from_line(line: dict) -> Optional[EvalItem]:
    """Release form `solution`, or `gold`: the answer string."""
    if "solution" in line:
        return line_item("math", line, math_gold(str(line["solution"])))
    if "gold" in line:
        return line_item("math", line, str(line["gold"]))
    return None


TASK = generation_task(
    name="math", header="MATH", condition=CONDITION, read=read, prompt=prompt,
    score={"faithful": _scorer("faithful"), "corrected": _scorer("corrected")},
    vote_key=lambda item, prediction: math_extract(prediction)[0].strip() or None,
    item_from_line=item_from_line, order=80, corrected_note="boxed",
    published={"paper_xl": 56.16, "readme_xl": 56.5, "paper_l": 50.28, "readme_l": 51.2},
)
