"""The evaluation item: one question ready to run (docs/eval_protocol.md §1, §11).

An `EvalItem` holds the stripped prompt text (few-shot context included, special tokens excluded), its condition,
its gold answer in the task's scoring form, and the generation kwargs. Items with equal `gen_key` are batched
together, as the reference groups benchmarks with identical kwargs (docs/eval_protocol.md §1).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from hrm.eval.errors import TaskError
from hrm.eval.prompts import wrap_prompt

VARIANTS = ("faithful", "corrected")  # docs/eval_protocol.md §11: the paper's protocol and the corrected one


def check_variant(variant: str) -> str:
    """`variant` if it is one of `VARIANTS`, else a `TaskError` listing them."""
    if variant not in VARIANTS:
        raise TaskError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return variant


def other_variant(variant: str) -> str:
    """The variant that is not `variant` (a run reports both, docs/eval_protocol.md §11)."""
    return VARIANTS[1 - VARIANTS.index(check_variant(variant))]


@dataclasses.dataclass
class EvalItem:
    """One evaluation question (docs/eval_protocol.md).

    gold: MCQ -> letter for the item's variant; gsm8k -> int; math -> str (last boxed content of the solution);
    drop -> list of gold answers, each a list of spans (lm-eval `process_docs` form); default -> response str.
    meta: extra facts some scorers need, e.g. ARC `gold_faithful`/`gold_corrected` (docs/eval_protocol.md §3).
    subject: the group the task's aggregate reports separately (MMLU subject, default sub-task), or None.
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
        """The exact text the model sees, special-token strings written out (docs/eval_protocol.md §1)."""
        return wrap_prompt(self.prompt, self.condition)

    @property
    def gen_key(self) -> tuple:
        """Items with equal keys share one generation call configuration (docs/eval_protocol.md §1 grouping)."""
        return (self.max_context, self.max_tokens, float(self.temperature))

    def gold_json(self) -> Any:
        """`gold` as plain JSON (tuples become lists)."""
        if isinstance(self.gold, (list, tuple)):
            return [list(g) if isinstance(g, (list, tuple)) else g for g in self.gold]
        return self.gold
