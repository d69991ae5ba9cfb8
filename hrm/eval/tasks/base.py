"""The evaluation item and per-task generation settings (SPEC §7.1, §7.11).

An `EvalItem` is one question ready to run: the stripped prompt text (few-shot context included, special tokens
excluded), its condition, its gold answer in the task's scoring form, and the generation kwargs. Items with equal
`gen_key` are batched together, as the reference groups benchmarks with identical kwargs (SPEC §7.1).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from hrm.eval.prompts import wrap_prompt

VARIANTS = ("faithful", "corrected")

MCQ_TASKS = ("mmlu", "arc_challenge", "hellaswag", "winogrande", "boolq")
GEN_TASKS = ("drop", "gsm8k", "math")
BENCHMARKS = ("mmlu", "arc_challenge", "hellaswag", "winogrande", "boolq", "drop", "gsm8k", "math")

# SPEC §7.1 default config table (ref evaluation/config/hrm_benchmarking.yaml).
GEN_CONTEXT = 3072
MCQ_CONTEXT = {"faithful": 4096, "corrected": 3072}  # SPEC §7.11: corrected uses paper Tab. 8's 3072
TASK_CONDITION = {"gsm8k": "synth,cot", "math": "synth,cot", "drop": "direct",
                  **{t: "direct" for t in MCQ_TASKS}}


class TaskError(ValueError):
    """A task name, variant or data file is invalid; the message says which and why."""


class MissingDataError(FileNotFoundError):
    """A release file a task needs (evaluation split or few-shot source) is absent; the message names it."""


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise TaskError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return variant


@dataclasses.dataclass
class EvalItem:
    """One evaluation question (SPEC §7).

    gold: MCQ -> letter for the item's variant; gsm8k -> int; math -> str (last boxed content of the solution);
    drop -> list of gold answers, each a list of spans (lm-eval `process_docs` form); default -> response str.
    meta: extra facts some scorers need, e.g. ARC `gold_corrected` (SPEC §7.3) or the default sub-task.
    """

    task: str
    id: str
    condition: str
    prompt: str
    gold: Any
    max_context: int
    max_tokens: Optional[int]
    temperature: float = 0.0
    num_choices: Optional[int] = None
    subject: Optional[str] = None
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prompt = self.prompt.strip()

    @property
    def wrapped(self) -> str:
        """The exact text the model sees, special-token strings written out (SPEC §7.1)."""
        return wrap_prompt(self.prompt, self.condition)

    @property
    def gen_key(self) -> tuple:
        """Items with equal keys share one generation call configuration (SPEC §7.1 grouping)."""
        return (self.max_context, self.max_tokens, float(self.temperature))

    def gold_json(self) -> Any:
        """`gold` as plain JSON (tuples become lists)."""
        if isinstance(self.gold, (list, tuple)):
            return [list(g) if isinstance(g, (list, tuple)) else g for g in self.gold]
        return self.gold


def mcq_item(task: str, id_: str, prompt: str, gold: str, num_choices: int, variant: str,
             subject: Optional[str] = None, meta: Optional[dict] = None) -> EvalItem:
    """An MCQ item with the SPEC §7.1 kwargs: condition direct, one token, greedy, context 4096 (3072 corrected)."""
    return EvalItem(task=task, id=id_, condition="direct", prompt=prompt, gold=gold,
                    max_context=MCQ_CONTEXT[variant], max_tokens=1, num_choices=num_choices,
                    subject=subject, meta=dict(meta or {}))


def gen_item(task: str, id_: str, prompt: str, gold: Any, subject: Optional[str] = None) -> EvalItem:
    """A free-generation item (DROP, GSM8K, MATH): context 3072, max_tokens unset, greedy (SPEC §7.1)."""
    return EvalItem(task=task, id=id_, condition=TASK_CONDITION[task], prompt=prompt, gold=gold,
                    max_context=GEN_CONTEXT, max_tokens=None, subject=subject)


def jsonl_mcq_items(task: str, data_dir: Path, eval_file: str, eval_purpose: str, shot_file: str,
                    shot_purpose: str, num_shots: int, parts, item_id, variant: str) -> list[EvalItem]:
    """MCQ items from a JSONL evaluation file whose few-shot exemplars are the first `num_shots` rows
    of another JSONL file (HellaSwag, Winogrande, BoolQ; SPEC §7.4–7.6).

    `parts(row) -> (query, choices, gold letter)`; `item_id(line, row) -> id`. Both files are checked
    before either is read, so a missing few-shot source is reported even when the evaluation file exists.
    """
    from hrm.eval.prompts import mcq_prompt
    from hrm.eval.tasks.files import read_jsonl, require

    require(data_dir, eval_file, eval_purpose)
    require(data_dir, shot_file, shot_purpose)
    rows = read_jsonl(data_dir, eval_file, eval_purpose)
    shots = [parts(row) for _, row in read_jsonl(data_dir, shot_file, shot_purpose)[:num_shots]]
    items = []
    for line, row in rows:
        query, choices, gold = parts(row)
        items.append(mcq_item(task, item_id(line, row), mcq_prompt(shots, query, choices), gold, len(choices),
                              variant))
    return items
