"""A benchmark as one spec: `Task` (docs/eval_protocol.md), and the shared pieces of the two task kinds.

Every module in `hrm.eval.tasks` exports one `TASK = Task(...)`; the registry (`hrm.eval.tasks`) discovers them
and everything else reads the spec: the runner and rescoring call `score[variant]`, majority voting calls
`vote_key`, per-task metrics come from `aggregate`, the results tables use `header`, `order`, `primary_metric`,
`corrected_note` and `published`. Nothing outside a task's module lists task names.

Kinds (docs/eval_protocol.md §1 default config): `mcq_task` fills in the multiple-choice protocol (condition `direct`,
one greedy token, context 4096 / 3072 corrected, 1/k credit for invalid answers in the faithful variant, strict in the
corrected one); `generation_task` the free-generation one (context 3072, no token cap, the task's own scorer).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Optional, Sequence

from hrm.eval.errors import TaskError
from hrm.eval.item import VARIANTS, EvalItem
from hrm.eval.prompts import letters, mcq_prompt
from hrm.eval.release_files import read_jsonl, require
from hrm.eval.scoring.aggregates import accuracy
from hrm.eval.scoring.mcq import mcq_extract, score_mcq

Reader = Callable[..., list[EvalItem]]  # read(data_dir: Path, variant: str, **options) -> items
Scorer = Callable[[EvalItem, str], dict]  # score(item, prediction) -> {"extracted", ...score fields}
Aggregate = Callable[[Sequence[dict], str], dict]  # aggregate(records, variant) -> metrics

# docs/eval_protocol.md §1 table; §7.11: corrected uses paper Tab. 8's 3072
MCQ_CONTEXT = {"faithful": 4096, "corrected": 3072}
GEN_CONTEXT = 3072


@dataclasses.dataclass(frozen=True)
class Task:
    """Everything the evaluation knows about one benchmark.

    name: the task's name on the command line and in records. kind: "mcq" or "generation" (documentation and
    dry-run output; behaviour comes from the fields below). header: its column header in the results tables.
    condition: the condition tag(s) its prompts use (docs/prefixlm_packing.md §1).
    read: `read(data_dir, variant, **options) -> [EvalItem]` over the original release files.
    prompt: the prompt builder the reader uses, `prompt(row, shots, variant) -> str` on release rows.
    score: one scorer per variant (docs/eval_protocol.md §11), `score(item, prediction) -> dict` with `extracted` plus
      `correct`/`score`/`invalid` (accuracy tasks) or `em`/`f1`.
    vote_key: the answer a sample votes for in majority voting, None for an invalid answer.
    aggregate: `aggregate(records, variant) -> metrics` over the records' `variants[variant]` scores.
    primary_metric: the metric the summary table shows. published: {source id: percent} (ids in
      `hrm.eval.published.SOURCES`). corrected_note: shown beside the header in the corrected table.
    item_from_line: an item whose gold comes from a predictions line (rescoring), None if it holds no gold.
    in_all: part of `--tasks all` and a column of the summary tables (else it gets its own table).
    order: position in `all` and in the tables. aliases: other accepted names.
    """

    name: str
    kind: str
    header: str
    condition: str
    read: Reader
    prompt: Callable[..., str]
    score: Mapping[str, Scorer]
    vote_key: Callable[[EvalItem, str], Optional[Hashable]]
    aggregate: Aggregate
    item_from_line: Callable[[dict], Optional[EvalItem]]
    primary_metric: str = "acc"
    published: Mapping[str, float] = dataclasses.field(default_factory=dict)
    corrected_note: str = ""
    in_all: bool = True
    order: int = 1000
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        missing = [v for v in VARIANTS if v not in self.score]
        if missing:
            raise TaskError(f"task {self.name!r} has no scorer for variant(s) {missing}")


def simple_accuracy(records: Sequence[dict], variant: str) -> dict[str, Any]:
    """`acc`, `invalid`, `n` over the examples (most accuracy tasks)."""
    return accuracy([r["variants"][variant] for r in records])


def stripped_vote(item: EvalItem, prediction: str) -> Optional[str]:
    """The stripped generation, None if empty (DROP, exact-match tasks)."""
    return prediction.strip() or None


def line_item(task: str, line: dict, gold: Any, **fields: Any) -> EvalItem:
    """An `EvalItem` with an empty prompt for rescoring one predictions line whose gold is `gold`."""
    meta = {k: v for k, v in (line.get("meta") or {}).items() if k in ("gold_faithful", "gold_corrected")}
    fields.setdefault("subject", line.get("subject"))
    return EvalItem(task=task, id=str(line.get("id", "")), condition=line.get("condition") or "direct",
                    prompt="", gold=gold, max_context=0, max_tokens=None, meta=meta, **fields)


# ---------------------------------------------------------------- multiple choice (docs/eval_protocol.md §1 MCQ
# layout/scoring)
def mcq_item(task: str, id_: str, prompt: str, gold: str, num_choices: int, variant: str,
             subject: Optional[str] = None, meta: Optional[dict] = None) -> EvalItem:
    """An MCQ item with the docs/eval_protocol.md §1 kwargs: condition direct, one token, greedy, context 4096 (3072
    corrected)."""
    return EvalItem(task=task, id=id_, condition="direct", prompt=prompt, gold=gold,
                    max_context=MCQ_CONTEXT[variant], max_tokens=1, num_choices=num_choices,
                    subject=subject, meta=dict(meta or {}))


def _mcq_scorer(variant: str) -> Scorer:
    def score(item: EvalItem, prediction: str) -> dict[str, Any]:
        gold = (item.meta or {}).get(f"gold_{variant}", item.gold)
        return {**score_mcq(prediction, gold, int(item.num_choices), variant), "gold": gold}

    score.__doc__ = f"MCQ letter scoring, {variant} variant (gold from meta['gold_{variant}'] when present)."
    return score


def mcq_vote(item: EvalItem, prediction: str) -> Optional[str]:
    """The letter, None if not one of the item's valid letters."""
    letter = mcq_extract(prediction)
    return letter if letter in letters(int(item.num_choices)) else None


def mcq_item_from_line(task: str, line: dict) -> Optional[EvalItem]:
    """Rescoring form `{"gold": letter, "num_choices": k}` (+ optional `meta.gold_*`, `subject`)."""
    if "gold" not in line:
        return None
    if "num_choices" not in line:
        raise TaskError(f"{task} line {line.get('id', '?')!r}: an inline MCQ gold needs 'num_choices'")
    return line_item(task, line, str(line["gold"]).strip().upper(), num_choices=int(line["num_choices"]))


def mcq_task(*, name: str, header: str, read: Reader, prompt: Callable[..., str], order: int,
             published: Mapping[str, float], **overrides: Any) -> Task:
    """A multiple-choice benchmark (docs/eval_protocol.md §1): letter scorers per variant, letter votes, accuracy."""
    fields: dict[str, Any] = dict(
        kind="mcq", condition="direct", score={v: _mcq_scorer(v) for v in VARIANTS}, vote_key=mcq_vote,
        aggregate=simple_accuracy, item_from_line=lambda line: mcq_item_from_line(name, line))
    fields.update(overrides)
    return Task(name=name, header=header, read=read, prompt=prompt, order=order, published=published, **fields)


def jsonl_mcq_items(task: str, data_dir: Path, variant: str, *, eval_file: tuple[str, str],
                    shot_file: tuple[str, str], num_shots: int, prompt: Callable[..., str],
                    parts: Callable[[dict], tuple[str, list[str], str]],
                    item_id: Callable[[int, dict], str]) -> list[EvalItem]:
    """MCQ items from a JSONL evaluation file whose few-shot exemplars are the first `num_shots` rows of another
    JSONL file (HellaSwag, Winogrande, BoolQ; docs/eval_protocol.md §4–6).

    `eval_file`/`shot_file` are (relative path, purpose). `prompt(row, shots, variant)` builds the text;
    `parts(row) -> (query, choices, gold letter)`; `item_id(line, row) -> id`. Both files are checked before
    either is read, so a missing few-shot source is reported even when the evaluation file exists.
    """
    require(data_dir, *eval_file)
    require(data_dir, *shot_file)
    rows = read_jsonl(data_dir, *eval_file)
    shots = [row for _, row in read_jsonl(data_dir, *shot_file)[:num_shots]]
    items = []
    for line, row in rows:
        _, choices, gold = parts(row)
        items.append(mcq_item(task, item_id(line, row), prompt(row, shots, variant), gold, len(choices), variant))
    return items


def mcq_shots_prompt(parts: Callable[[dict], tuple[str, list[str], str]]) -> Callable[..., str]:
    """The prompt builder of a JSONL MCQ task: shots as (query, choices, gold letter), then the target block."""
    def prompt(row: dict, shots: Sequence[dict], variant: str = "faithful") -> str:
        query, choices, _ = parts(row)
        return mcq_prompt([parts(s) for s in shots], query, choices)

    return prompt


# ---------------------------------------------------------------- free generation (docs/eval_protocol.md §7–9)
def gen_item(task: str, id_: str, prompt: str, gold: Any, condition: str,
             subject: Optional[str] = None) -> EvalItem:
    """A free-generation item (DROP, GSM8K, MATH): context 3072, max_tokens unset, greedy (docs/eval_protocol.md §1)."""
    return EvalItem(task=task, id=id_, condition=condition, prompt=prompt, gold=gold,
                    max_context=GEN_CONTEXT, max_tokens=None, subject=subject)


def generation_task(*, name: str, header: str, condition: str, read: Reader, prompt: Callable[..., str],
                    score: Mapping[str, Scorer] | Scorer, vote_key: Callable[[EvalItem, str], Optional[Hashable]],
                    item_from_line: Callable[[dict], Optional[EvalItem]], order: int,
                    **overrides: Any) -> Task:
    """A free-generation benchmark; one `score` function serves both variants unless a mapping is given."""
    scores = score if isinstance(score, Mapping) else {v: score for v in VARIANTS}
    fields: dict[str, Any] = dict(kind="generation", aggregate=simple_accuracy)
    fields.update(overrides)
    return Task(name=name, header=header, condition=condition, read=read, prompt=prompt, score=scores,
                vote_key=vote_key, item_from_line=item_from_line, order=order, **fields)
