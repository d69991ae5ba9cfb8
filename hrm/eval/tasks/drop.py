"""DROP reader (SPEC §7.7): `drop_dataset_dev.json`, 9,536 questions, 3 fixed hard-coded shots.

The file maps passage ids to {passage, qa_pairs[...], wiki_url}; questions are taken in file order (passages,
then qa_pairs), as the HF `EleutherAI/drop` builder does. Golds follow lm-eval `process_docs` (see
`hrm.eval.scoring.drop.drop_golds`). Id = `query_id`.
"""

from __future__ import annotations

import json
from pathlib import Path

from hrm.eval.prompts import drop_prompt
from hrm.eval.scoring.drop import drop_golds
from hrm.eval.tasks.base import EvalItem, TaskError, gen_item
from hrm.eval.tasks.files import check_count, check_file, require

DEV = "drop/drop_dataset_dev.json"


def load(data_dir: Path, variant: str) -> list[EvalItem]:
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
            item = gen_item("drop", str(qa["query_id"]), drop_prompt(entry["passage"], qa["question"]), golds)
            item.meta["section_id"] = section_id
            items.append(item)
    check_count(data_dir, DEV, len(items))
    return items
