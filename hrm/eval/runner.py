"""Run evaluation items through a generator, score them, and write per-example JSONL plus results (docs/eval_protocol.md
§1).

Interfaces assumed (written elsewhere):

* generator.generate(prompt_ids: list[list[int]], max_new_tokens: list[int], temperature: float, seed: int)
  -> list[list[int]]: generated ids per prompt, EOA already removed; stops at EOA or after max_new_tokens.
  Greedy when temperature < 1e-5 (docs/eval_protocol.md §1 decoding).
* tokenizer.encode(text) -> list[int] (special-token strings are not parsed), tokenizer.decode(ids) -> str, and
  tokenizer.special with int `boq`, `eoq`, `eoa`, `pad` and dict `conditions` name -> id.

Protocol (docs/eval_protocol.md §1): prompt ids = [boq] + condition ids + encode(stripped prompt) + [eoq]. A prompt with
>= max_context tokens is not sent and yields the empty prediction (scored invalid). Otherwise the budget is
max_context - prompt_len, capped by max_tokens when set. Items with equal (max_context, max_tokens, temperature)
are generated together in calls of `batch_size` prompts. With num_samples > 1 each item is sampled N times
(seed + 1_000_003 * sample + chunk offset) and scored by majority vote (`hrm.eval.metrics.pick_majority`).
Only process 0 writes files.

Both protocols (docs/eval_protocol.md §11): `twins` are the same questions built for the other variant. A twin whose
prompt ids or token budget differ from the run item's (ARC shots with numeric labels, MCQ context 4096 vs 3072) is
generated too and recorded under `rerun`; otherwise the run's generation is that variant's generation as well. The other
variant's metrics then come from its own prompts and context.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

from tqdm import tqdm

from hrm.eval.item import EvalItem, check_variant, other_variant
from hrm.eval.metrics import aggregate, pick_majority, score_item
from hrm.eval.prompts import prompt_ids
from hrm.eval.results import render_markdown, write_outputs

SAMPLE_SEED_STRIDE = 1_000_003


class Generator(Protocol):
    def generate(self, prompt_ids: list[list[int]], max_new_tokens: list[int], temperature: float,
                 seed: int) -> list[list[int]]: ...


def is_main_process() -> bool:
    """True on JAX process 0 (or when JAX is not in use); only it writes files (docs/conventions.md §6)."""
    if "jax" not in sys.modules:
        return True
    import jax

    return jax.process_index() == 0


def _budget(item: EvalItem, n_prompt: int) -> int:
    room = item.max_context - n_prompt
    if room <= 0:
        return 0
    return room if item.max_tokens is None else min(item.max_tokens, room)


def plan_item(tokenizer: Any, item: EvalItem) -> tuple[list[int], int]:
    """(prompt ids, max_new_tokens); max_new_tokens = 0 marks an over-long prompt that is not run
    (docs/eval_protocol.md §1)."""
    ids = prompt_ids(tokenizer, item.prompt, item.condition)
    return ids, _budget(item, len(ids))


def _clean(ids: Sequence[int], eoa: Optional[int], limit: int) -> list[int]:
    """Defensive: cut at the first EOA (should already be removed) and at the token budget."""
    ids = list(ids)
    if eoa is not None and eoa in ids:
        ids = ids[: ids.index(eoa)]
    return ids[:limit]


def generate_all(generator: Generator, tokenizer: Any, items: Sequence[EvalItem], *, batch_size: int = 32,
                 num_samples: int = 1, seed: int = 0, temperature: Optional[float] = None,
                 progress: bool = True, plans: Optional[Sequence[tuple[list[int], int]]] = None
                 ) -> tuple[list[list[str]], list[dict]]:
    """Predictions (num_samples strings per item, in item order) and per-item generation facts.

    `plans` are the items' `plan_item` results when the caller already has them.
    """
    plans = list(plans) if plans is not None else [plan_item(tokenizer, item) for item in items]
    facts = [{"n_prompt_tokens": len(ids), "max_new_tokens": budget, "skipped": budget == 0}
             for ids, budget in plans]
    preds = [[""] * num_samples for _ in items]
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):
        if plans[i][1] > 0:
            temp = float(item.temperature if temperature is None else temperature)
            groups.setdefault((item.max_context, item.max_tokens, temp), []).append(i)
    eoa = getattr(getattr(tokenizer, "special", None), "eoa", None)
    total = sum(len(v) for v in groups.values()) * num_samples
    with tqdm(total=total, desc="generation", disable=not (progress and is_main_process()),
              dynamic_ncols=True) as bar:
        for (_, _, temp), members in groups.items():
            for sample in range(num_samples):
                for start in range(0, len(members), batch_size):
                    chunk = members[start:start + batch_size]
                    budgets = [plans[i][1] for i in chunk]
                    out = generator.generate([plans[i][0] for i in chunk], budgets, temp,
                                             seed + SAMPLE_SEED_STRIDE * sample + start)
                    if len(out) != len(chunk):
                        raise RuntimeError(f"generator returned {len(out)} outputs for {len(chunk)} prompts")
                    for i, ids, budget in zip(chunk, out, budgets):
                        preds[i][sample] = tokenizer.decode(_clean(ids, eoa, budget))
                    bar.update(len(chunk))
    return preds, facts


def _with_votes(item: EvalItem, predictions: Sequence[str]) -> dict[str, Any]:
    """{"prediction"} for one sample, else the majority's representative plus all samples and its votes."""
    if len(predictions) == 1:
        return {"prediction": predictions[0]}
    rep, _, votes = pick_majority(item, predictions)
    return {"prediction": predictions[rep], "predictions": list(predictions), "votes": votes}


def make_record(index: int, item: EvalItem, predictions: Sequence[str], variant: str,
                facts: Optional[dict] = None, rerun: Optional[dict] = None,
                both_protocols: bool = False) -> dict[str, Any]:
    """One per-example JSONL record: identity, prediction(s), gold and both variants' scores.

    `rerun` = {"variant", "prediction", generation facts, ...} of the other variant's own generation when its
    prompt or budget differed; `both_protocols` marks records whose other variant was checked (see module doc).
    """
    rec: dict[str, Any] = {"task": item.task, "id": item.id, "prompt_index": index, "condition": item.condition}
    if item.subject is not None:
        rec["subject"] = item.subject
    if item.num_choices is not None:
        rec["num_choices"] = item.num_choices
    rec.update(facts or {})
    rec.update(_with_votes(item, predictions))
    rec["gold"] = item.gold_json()
    if item.meta:
        rec["meta"] = item.meta
    if both_protocols:
        rec["both_protocols"] = True
    other = None
    if rerun is not None:
        rec["rerun"] = rerun
        other = {rerun["variant"]: rerun["prediction"]}
    rec.update(score_item(item, rec["prediction"], variant, other))
    return rec


def plan_twins(tokenizer: Any, items: Sequence[EvalItem], twins: Sequence[EvalItem],
               plans: Sequence[tuple[list[int], int]]) -> tuple[list[bool], dict[int, EvalItem], list]:
    """(has twin per item, {item index: twin that needs its own generation}, the twins' plans in that order).

    Twins are matched by (task, id); a twin needs its own generation when its prompt ids, token budget or
    temperature differ from the item's.
    """
    by_key = {(t.task, t.id): t for t in twins}
    has_twin = [False] * len(items)
    reruns: dict[int, EvalItem] = {}
    rerun_plans = []
    for i, item in enumerate(items):
        twin = by_key.get((item.task, item.id))
        if twin is None:
            continue
        has_twin[i] = True
        plan = plan_item(tokenizer, twin) if twin.prompt != item.prompt or twin.condition != item.condition \
            else (plans[i][0], _budget(twin, len(plans[i][0])))
        if plan != tuple(plans[i]) or twin.temperature != item.temperature:
            reruns[i] = twin
            rerun_plans.append(plan)
    return has_twin, reruns, rerun_plans


def run_tasks(generator: Generator, tokenizer: Any, items: Sequence[EvalItem], *, variant: str = "faithful",
              batch_size: int = 32, num_samples: int = 1, seed: int = 0, temperature: Optional[float] = None,
              out_dir: Optional[str | Path] = None, size_label: Optional[str] = None, progress: bool = True,
              run_info: Optional[dict] = None, twins: Optional[Sequence[EvalItem]] = None) -> dict[str, Any]:
    """Generate, score and (on process 0, if `out_dir`) write `predictions.jsonl`, `results.json`, `results.md`.

    `twins`: the same items built for the other variant (see module docstring); without them the other
    variant's metrics rescore this run's generations, and the tables say so.
    Returns {"records": [...], "metrics": {task: {"faithful": ..., "corrected": ...}}, "markdown": str}.
    """
    check_variant(variant)
    if num_samples < 1 or batch_size < 1:
        raise ValueError("num_samples and batch_size must be >= 1")
    if num_samples > 1 and all((it.temperature if temperature is None else temperature) < 1e-5 for it in items):
        warnings.warn(f"num_samples={num_samples} with greedy decoding gives identical samples; "
                      "set a temperature for majority voting", stacklevel=2)
    plans = [plan_item(tokenizer, item) for item in items]
    has_twin, reruns, rerun_plans = plan_twins(tokenizer, items, twins or [], plans)
    extra = list(reruns.values())
    preds, facts = generate_all(generator, tokenizer, [*items, *extra], batch_size=batch_size,
                                num_samples=num_samples, seed=seed, temperature=temperature, progress=progress,
                                plans=[*plans, *rerun_plans])
    slot = {i: len(items) + k for k, i in enumerate(reruns)}
    records = []
    for i, item in enumerate(items):
        rerun = None
        if i in slot:
            j = slot[i]
            rerun = {"variant": other_variant(variant), **facts[j], **_with_votes(reruns[i], preds[j])}
        records.append(make_record(i, item, preds[i], variant, facts[i], rerun, has_twin[i]))
    metrics = aggregate(records)
    both = bool(records) and all(has_twin)
    info = {"variant": variant, "size": size_label, "num_samples": num_samples, "seed": seed,
            "temperature": temperature, "batch_size": batch_size, "both_protocols": both, **(run_info or {})}
    markdown = render_markdown(metrics, variant=variant, size_label=size_label, info=info, both_protocols=both)
    if out_dir is not None and is_main_process():
        write_outputs(Path(out_dir), records, metrics, markdown, info)
    return {"records": records, "metrics": metrics, "markdown": markdown}
