"""Run evaluation items through a generator, score them, and write per-example JSONL plus results (SPEC §7.1).

Interfaces assumed (written elsewhere):

* generator.generate(prompt_ids: list[list[int]], max_new_tokens: list[int], temperature: float, seed: int)
  -> list[list[int]]: generated ids per prompt, EOA already removed; stops at EOA or after max_new_tokens.
  Greedy when temperature < 1e-5 (SPEC §7.1 decoding).
* tokenizer.encode(text) -> list[int] (special-token strings are not parsed), tokenizer.decode(ids) -> str, and
  tokenizer.special with int `boq`, `eoq`, `eoa`, `pad` and dict `conditions` name -> id.

Protocol (SPEC §7.1): prompt ids = [boq] + condition ids + encode(stripped prompt) + [eoq]. A prompt with
>= max_context tokens is not sent and yields the empty prediction (scored invalid). Otherwise the budget is
max_context - prompt_len, capped by max_tokens when set. Items with equal (max_context, max_tokens, temperature)
are generated together in calls of `batch_size` prompts. With num_samples > 1 each item is sampled N times
(seed + 1_000_003 * sample + chunk offset) and scored by majority vote (`hrm.eval.scoring.vote`).
Only process 0 writes files.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

from hrm.eval.prompts import prompt_ids
from hrm.eval.scoring import score_item
from hrm.eval.scoring.aggregate import aggregate
from hrm.eval.scoring.vote import pick_majority
from hrm.eval.tasks.base import EvalItem, check_variant

SAMPLE_SEED_STRIDE = 1_000_003


class Generator(Protocol):
    def generate(self, prompt_ids: list[list[int]], max_new_tokens: list[int], temperature: float,
                 seed: int) -> list[list[int]]: ...


def is_main_process() -> bool:
    """True on JAX process 0 (or when JAX is not in use); only it writes files (STYLE §6)."""
    if "jax" not in sys.modules:
        return True
    import jax

    return jax.process_index() == 0


def plan_item(tokenizer: Any, item: EvalItem) -> tuple[list[int], int]:
    """(prompt ids, max_new_tokens); max_new_tokens = 0 marks an over-long prompt that is not run (SPEC §7.1)."""
    ids = prompt_ids(tokenizer, item.prompt, item.condition)
    room = item.max_context - len(ids)
    if room <= 0:
        return ids, 0
    return ids, room if item.max_tokens is None else min(item.max_tokens, room)


def _clean(ids: Sequence[int], eoa: Optional[int], limit: int) -> list[int]:
    """Defensive: cut at the first EOA (should already be removed) and at the token budget."""
    ids = list(ids)
    if eoa is not None and eoa in ids:
        ids = ids[: ids.index(eoa)]
    return ids[:limit]


def generate_all(generator: Generator, tokenizer: Any, items: Sequence[EvalItem], *, batch_size: int = 32,
                 num_samples: int = 1, seed: int = 0, temperature: Optional[float] = None,
                 progress: bool = True) -> tuple[list[list[str]], list[dict]]:
    """Predictions (num_samples strings per item, in item order) and per-item generation facts."""
    from tqdm import tqdm

    plans = [plan_item(tokenizer, item) for item in items]
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


def make_record(index: int, item: EvalItem, predictions: Sequence[str], variant: str,
                facts: Optional[dict] = None) -> dict[str, Any]:
    """One per-example JSONL record: identity, prediction(s), gold and both variants' scores."""
    rec: dict[str, Any] = {"task": item.task, "id": item.id, "prompt_index": index, "condition": item.condition}
    if item.subject is not None:
        rec["subject"] = item.subject
    if item.num_choices is not None:
        rec["num_choices"] = item.num_choices
    rec.update(facts or {})
    if len(predictions) > 1:
        rep, _, votes = pick_majority(item, predictions)
        rec.update({"prediction": predictions[rep], "predictions": list(predictions), "votes": votes})
    else:
        rec["prediction"] = predictions[0]
    rec["gold"] = item.gold_json()
    if item.meta:
        rec["meta"] = item.meta
    rec.update(score_item(item, rec["prediction"], variant))
    return rec


def run_tasks(generator: Generator, tokenizer: Any, items: Sequence[EvalItem], *, variant: str = "faithful",
              batch_size: int = 32, num_samples: int = 1, seed: int = 0, temperature: Optional[float] = None,
              out_dir: Optional[str | Path] = None, size_label: Optional[str] = None, progress: bool = True,
              run_info: Optional[dict] = None) -> dict[str, Any]:
    """Generate, score and (on process 0, if `out_dir`) write `predictions.jsonl`, `results.json`, `results.md`.

    Returns {"records": [...], "metrics": {task: {"faithful": ..., "corrected": ...}}, "markdown": str}.
    """
    check_variant(variant)
    if num_samples < 1 or batch_size < 1:
        raise ValueError("num_samples and batch_size must be >= 1")
    if num_samples > 1 and all((it.temperature if temperature is None else temperature) < 1e-5 for it in items):
        warnings.warn(f"num_samples={num_samples} with greedy decoding gives identical samples; "
                      "set a temperature for majority voting", stacklevel=2)
    preds, facts = generate_all(generator, tokenizer, items, batch_size=batch_size, num_samples=num_samples,
                                seed=seed, temperature=temperature, progress=progress)
    records = [make_record(i, item, preds[i], variant, facts[i]) for i, item in enumerate(items)]
    metrics = aggregate(records)
    from hrm.eval.results import render_markdown, write_outputs

    info = {"variant": variant, "size": size_label, "num_samples": num_samples, "seed": seed,
            "temperature": temperature, "batch_size": batch_size, **(run_info or {})}
    markdown = render_markdown(metrics, variant=variant, size_label=size_label, info=info)
    if out_dir is not None and is_main_process():
        write_outputs(Path(out_dir), records, metrics, markdown, info)
    return {"records": records, "metrics": metrics, "markdown": markdown}


def write_jsonl(path: str | Path, rows: Sequence[dict]) -> None:
    """One JSON object per line, UTF-8, keys in insertion order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


SCORE_FIELDS = ("extracted", "correct", "score", "invalid", "em", "f1", "variants")


def rescore_records(lines: Sequence[dict], variant: str = "faithful",
                    data_dir: Optional[str | Path] = None) -> list[dict]:
    """Re-score prediction lines (see `hrm.eval.scoring.inline`): each output line repeats the input line with
    fresh `extracted` and score fields. Lines without an inline gold are looked up by (task, id) in `data_dir`."""
    from hrm.eval.scoring.inline import has_inline_gold, item_from_line
    from hrm.eval.tasks import TaskError, load_tasks

    check_variant(variant)
    need = sorted({str(line.get("task")) for line in lines if not has_inline_gold(line)})
    lookup: dict[tuple[str, str], EvalItem] = {}
    if need:
        if not data_dir:
            raise TaskError(f"lines of {', '.join(need)} have no inline gold; pass --data_dir to look ids up")
        lookup = {(it.task, it.id): it for it in load_tasks(need, data_dir, variant)}
    out = []
    for line in lines:
        if has_inline_gold(line):
            item = item_from_line(line)
        else:
            key = (str(line.get("task")), str(line.get("id")))
            if key not in lookup:
                raise TaskError(f"no {key[0]} item with id {key[1]!r} in {data_dir}")
            item = lookup[key]
        if item.subject is not None and "subject" not in line:
            line = {**line, "subject": item.subject}
        base = {k: v for k, v in line.items() if k not in SCORE_FIELDS}
        out.append({**base, **score_item(item, str(line["prediction"]), variant)})
    return out
