"""MATH (Hendrycks) test reader (SPEC §7.9): all 5,000 `test/<subject>/<n>.json`, zero-shot bare `problem`.

Order: subjects alphabetically (the HF `EleutherAI/hendrycks_math` config order), files by numeric name. Gold =
contents of the last `\\boxed{}` of `solution`. Condition synth,cot. Id = "test/<subject>/<n>.json".
"""

from __future__ import annotations

import json
from pathlib import Path

from hrm.eval.scoring.hendrycks_math import math_gold
from hrm.eval.tasks.base import EvalItem, MissingDataError, TaskError, gen_item
from hrm.eval.tasks.files import check_count, check_dir, require

SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
            "prealgebra", "precalculus")


def _file_order(path: Path) -> tuple:
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.name)


def load(data_dir: Path, variant: str) -> list[EvalItem]:
    root = require(data_dir, "math/test", "MATH evaluation (test split)")
    items: list[EvalItem] = []
    for subject in SUBJECTS:
        sub = root / subject
        if not sub.is_dir():
            raise MissingDataError(f"missing benchmark directory {sub} (MATH test subject {subject!r}; "
                                   "expected the MATH.tar layout test/<subject>/<n>.json, SPEC §7.9)")
        files = sorted(sub.glob("*.json"), key=_file_order)
        check_dir(data_dir, f"math/test/{subject}", files)
        for path in files:
            row = json.loads(path.read_text(encoding="utf-8"))
            try:
                gold = math_gold(row["solution"])
            except (KeyError, ValueError) as e:
                raise TaskError(f"{path}: cannot read the gold answer ({e})") from None
            items.append(gen_item("math", f"test/{subject}/{path.name}", row["problem"], gold, subject=subject))
    check_count(data_dir, "math/test", len(items))
    return items
