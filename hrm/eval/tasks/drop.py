"""DROP (docs/eval_protocol.md §7): `drop_dataset_dev.json`, 9,536 questions, 3 fixed hard-coded shots; EM and F1 (F1
shown).

The file maps passage ids to {passage, qa_pairs[...], wiki_url}; questions are taken in file order (passages,
then qa_pairs), as the HF `EleutherAI/drop` builder does. Golds follow lm-eval `process_docs` (see
`hrm.eval.scoring.drop.drop_golds`). Id = `query_id`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from hrm.eval.errors import TaskError
from hrm.eval.item import EvalItem
from hrm.eval.prompts import drop_prompt
from hrm.eval.release_files import check_count, check_file, require
from hrm.eval.scoring.aggregates import em_f1
from hrm.eval.scoring.drop import drop_golds, score_drop
from hrm.eval.task import gen_item, generation_task, line_item, stripped_vote

DEV = "drop/drop_dataset_dev.json"
CONDITION = "direct"


def prompt(row: tuple[str, dict], shots: Sequence = (), variant: str = "faithful") -> str:
    """`row` = (passage, qa pair): the 3 fixed shots, then passage + Q + "A:" (docs/eval_protocol.md §7)."""
    passage, qa = row
    return drop_prompt(passage, qa["question"])


def read(data_dir: Path, variant: str) -> list[EvalItem]:
    path = require(data_dir, DEV, "DROP evaluation (dev split)")
    check_file(data_dir, DEV)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TaskError(f"{path}: not valid JSON ({e})") from None
    items = []
    for section_id, entry in data.items():
        for qa in entry["qa_pairs"]:
            golds = drop_golds(qa["answer"], qa.get("validated_answers"))
            item = gen_item("drop", str(qa["query_id"]), prompt((entry["passage"], qa)), golds, CONDITION)
            item.meta["section_id"] = section_id
            items.append(item)
    check_count(data_dir, DEV, len(items))
    return items


def score(item: EvalItem, prediction: str) -> dict[str, Any]:
    return score_drop(prediction, item.gold)


def item_from_line(line: dict) -> Optional[EvalItem]:
    """Release form `answer` (+ `validated_answers`), or `gold`: a list of span lists or one string."""
    if "answer" in line:
        return line_item("drop", line, drop_golds(line["answer"], line.get("validated_answers")))
    if "gold" not in line:
        return None
    gold = line["gold"]
    if isinstance(gold, str):
        return line_item("drop", line, [(gold,)])
    return line_item("drop", line, [tuple(g) if isinstance(g, (list, tuple)) else (str(g),) for g in gold])


TASK = generation_task(
    name="drop", header="DROP", condition=CONDITION, read=read, prompt=prompt, score=score,
    vote_key=stripped_vote, item_from_line=item_from_line, order=60, primary_metric="f1",
    aggregate=lambda records, variant: em_f1([r["variants"][variant] for r in records]),
    published={"paper_xl": 82.21, "readme_xl": 82.3, "paper_l": 78.07, "readme_l": 78.6},
)
