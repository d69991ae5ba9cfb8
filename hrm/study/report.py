"""The study report: `<out>/results.json` ({"cells": [result, ...], plus the grid and per-effect verdicts),
`<out>/results.md` (our rows beside the paper's Tab. 1–3, effect by effect) and the figures (hrm.study.figures),
all from `<out>/runs/*/result.json`.

Per-cell numbers are means over seeds with the seeds' range. The primary score is held-out exact match (greedy,
answer-only, 100 problems per task); the secondary one is the held-out response-token loss (EMA weights), the only
loss comparable across objectives. An effect "holds" when both agree with the paper's direction, is "reversed" when
both disagree, "mixed" otherwise; differences no larger than the seed spread of either cell are flagged.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional

from hrm.study.grid import BASE, BASE_STEPS, GRID, SEEDS, describe_grid
from hrm.study.paper import BENCHMARKS, EFFECTS, PAPER_ROWS, Effect, paper_mean

TABLES = (("1", "Tab. 1: FLOPs-matched architectures"), ("2", "Tab. 2: HRM vs TRM"),
          ("3", "Tab. 3: objective and attention"), ("bp", "Backprop horizon (paper §2.1.2, App. C; no table)"))


def load_results(out: str | Path) -> list[dict]:
    """Every `<out>/runs/*/result.json`, in grid order then seed order."""
    order = {c.name: i for i, c in enumerate(GRID)}
    found = [json.loads(p.read_text()) for p in sorted(Path(out).glob("runs/*/result.json"))]
    return sorted((r for r in found if r["cell"] in order), key=lambda r: (order[r["cell"]], r["seed"]))


def _stat(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(results: list[dict]) -> dict[str, dict[str, Any]]:
    """cell -> mean/min/max over seeds of exact match (overall and per task), held-out loss, final loss, CPU time."""
    by_cell: dict[str, list[dict]] = {}
    for r in results:
        by_cell.setdefault(r["cell"], []).append(r)
    out = {}
    for cell, rs in by_cell.items():
        tasks = sorted(rs[0]["eval"]["per_task"])
        out[cell] = {
            "seeds": [r["seed"] for r in rs], "label": rs[0]["label"], "paper": rs[0]["paper"],
            "params": rs[0]["params"], "steps": rs[0]["steps"], "tokens": rs[0]["tokens"],
            "train_flops": rs[0]["train_flops"],
            "exact_match": _stat([r["eval"]["overall"] for r in rs]),
            "per_task": {t: _stat([r["eval"]["per_task"][t] for r in rs]) for t in tasks},
            "heldout_loss": _stat([r["heldout_loss"] for r in rs]),
            "final_loss": _stat([r["final_loss"] for r in rs]),
            "grad_norm_max": _stat([r["grad_norm"]["max"] for r in rs]),
            "cpu_s": _stat([r["cpu_s"]["total"] for r in rs]),
            "wall_s": _stat([r["wall_s"]["total"] for r in rs]),
        }
    return out


def verdict(effect: Effect, s: dict[str, dict]) -> Optional[dict[str, Any]]:
    """Our direction for `effect` from the summary `s` (None if a cell is missing)."""
    if effect.better not in s or effect.worse not in s:
        return None
    b, w = s[effect.better], s[effect.worse]
    d_em = b["exact_match"]["mean"] - w["exact_match"]["mean"]
    d_loss = w["heldout_loss"]["mean"] - b["heldout_loss"]["mean"]  # > 0: `better` has the lower loss
    spread_em = max(x["exact_match"]["max"] - x["exact_match"]["min"] for x in (b, w))
    spread_loss = max(x["heldout_loss"]["max"] - x["heldout_loss"]["min"] for x in (b, w))
    if effect.kind == "matches":  # at least as good, up to seed noise
        ok_em, ok_loss = d_em >= -spread_em, d_loss >= -spread_loss
        word = "holds" if ok_em and ok_loss else "does not hold" if not (ok_em or ok_loss) else "mixed"
    else:
        word = "holds" if d_em > 0 and d_loss > 0 else "reversed" if d_em < 0 and d_loss < 0 else "mixed"
    noisy = abs(d_em) <= spread_em and abs(d_loss) <= spread_loss
    paper_d = paper_mean(b["paper"]) - paper_mean(w["paper"]) if b["paper"] and w["paper"] else None
    return {"table": effect.table, "claim": effect.claim, "better": effect.better, "worse": effect.worse,
            "paper_delta_mean8": paper_d, "delta_exact_match": d_em, "delta_heldout_loss": d_loss,
            "seed_spread_exact_match": spread_em, "seed_spread_heldout_loss": spread_loss,
            "verdict": word, "within_seed_spread": noisy}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (the paper's row names contain "P(xa|xq)")."""
    return text.replace("|", "\\|")


def _pct(st: dict) -> str:
    return f"{100 * st['mean']:.1f} ({100 * st['min']:.1f}–{100 * st['max']:.1f})"


def _loss(st: dict) -> str:
    return f"{st['mean']:.3f} ({st['min']:.3f}–{st['max']:.3f})"


def _paper_cells(label: Optional[str]) -> str:
    if not label or label not in PAPER_ROWS:
        return "— | — | — | — | —"
    rec, flops, tokens, scores = PAPER_ROWS[label]
    flops_s, tokens_s = ("—" if x is None else x for x in (flops, tokens))
    return (f"{_cell(label)} | {rec} | {flops_s} | {tokens_s} | "
            f"{paper_mean(label):.2f} (MMLU {scores[0]:.1f}, GSM8K {scores[BENCHMARKS.index('GSM8K')]:.1f})")


def render_markdown(results: list[dict], s: dict[str, dict], verdicts: list[dict], grid: list[dict]) -> str:
    """results.md: setup, the side-by-side tables, per-task exact match, effects, CPU time, figures."""
    ref_flops = next(g["train_flops"] for g in grid if g["cell"] == "hrm")
    lines = ["# Study: the paper's tables at laptop scale", "",
             "Generated by `python -m hrm.study all --out docs/study` (rebuild the text and figures from the stored "
             "runs with `python -m hrm.study report`). Every number below is measured by this repository's code; the "
             "paper's columns are copied from docs/eval_protocol.md §13.3–13.5.", "",
             "## Setup", "",
             "- Data: the `study` suite of `hrm/data/default_dataset.py` (answer-only: addition of 2–5 digit numbers, "
             "multiplication up to 3 × 2 digits, sorting 5–10 digits, parity of 6–14 bits, 4×4 Sudoku with 4–10 "
             "blanks), 60,000 training problems, 100 held-out problems per task excluded from training.",
             f"- Model and recipe: `configs/tiny.yaml` with `{' '.join(BASE[:8])}` … (see `hrm/study/grid.py`): "
             f"d 128, 2 heads, SwiGLU 256, vocabulary 512, 16 rows × 128 tokens per step, AdamAtan2 lr 2e-3 (20 "
             f"warmup steps, cosine to 0.1×), EMA 0.95 (a horizon of ~20 steps), fp32. HRM trains {BASE_STEPS} steps; "
             f"seeds {list(SEEDS)} "
             "(initialisation and data order).",
             "- FLOPs: docs/optimizer.md §5 (every stack application, no-grad ones forward only, LM head 6·N·D; "
             "attention scores excluded as in the paper) over every token slot, summed over the actual bp schedule.",
             "- Scores: held-out exact match (greedy, EMA weights; mean over seeds, seed range in brackets) and "
             "held-out response-token loss (EMA weights, last step). One CPU thread per cell.", ""]
    for key, title in TABLES:
        cells = [g for g in grid if key in g["tables"]]
        lines += [f"## {title}", "",
                  "| ours | train FLOPs (vs HRM) | tokens | held-out exact match % | held-out loss | paper row | "
                  "recursions | FLOPs 1e21 | tokens T | paper mean of 8 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for g in cells:
            c = s.get(g["cell"])
            ours = f"{_pct(c['exact_match'])} | {_loss(c['heldout_loss'])}" if c else "not run | not run"
            lines.append(f"| `{g['cell']}`: {_cell(g['label'])} | {g['train_flops']:.3g} "
                         f"({g['train_flops'] / ref_flops:.2f}) | {g['tokens'] / 1e3:.0f}k | {ours} | "
                         f"{_paper_cells(g['paper'])} |")
        lines.append("")
    lines += ["## Effects: does the paper's direction hold here?", "",
              "| table | paper's claim | paper Δ (mean of 8) | our Δ exact match (pp) | our Δ held-out loss | "
              "verdict |", "| --- | --- | --- | --- | --- | --- |"]
    for v in verdicts:
        pd = "—" if v["paper_delta_mean8"] is None else f"{v['paper_delta_mean8']:+.2f}"
        flag = " (within seed spread)" if v["within_seed_spread"] else ""
        lines.append(f"| {v['table']} | {_cell(v['claim'])} (`{v['better']}` vs `{v['worse']}`) | {pd} | "
                     f"{100 * v['delta_exact_match']:+.1f} | {v['delta_heldout_loss']:+.3f} | "
                     f"**{v['verdict']}**{flag} |")
    lines += ["", "Δ loss > 0 means the first cell has the lower held-out loss (the paper's direction).", ""]
    tasks = sorted(next(iter(s.values()))["per_task"]) if s else []
    lines += ["## Held-out exact match per task (%)", "",
              "| cell | " + " | ".join(tasks) + " | overall | final train loss | max grad norm |",
              "| --- | " + " | ".join("---" for _ in tasks) + " | --- | --- | --- |"]
    for name, c in s.items():
        lines.append(f"| `{name}` | " + " | ".join(_pct(c["per_task"][t]) for t in tasks) +
                     f" | {_pct(c['exact_match'])} | {_loss(c['final_loss'])} | {c['grad_norm_max']['mean']:.2f} |")
    lines += ["", "Final train loss is each cell's own objective (P(x) cells: every token), mean of the last 10 steps.",
              "", "## CPU time per run", "",
              "| run | steps | CPU s train | CPU s eval | wall s | load average (start/end) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| `{r['cell']}` seed {r['seed']} | {r['steps']} | {r['cpu_s']['train']:.0f} | "
                     f"{r['cpu_s']['eval']:.0f} | {r['wall_s']['total']:.0f} | "
                     f"{r['loadavg']['start']:.1f} / {r['loadavg']['end']:.1f} |")
    cpu = sum(r["cpu_s"]["total"] for r in results)
    wall = sum(r["wall_s"]["total"] for r in results)
    lines += ["", f"Total: {cpu / 3600:.2f} CPU hours over {len(results)} runs "
              f"(≈ {cpu / 2 / 3600:.2f} h on 2 quiet cores "
              f"running two cells at a time); the runs' wall time summed to {wall / 3600:.2f} h on the shared machine.",
              "", "## Figures", "", "![loss vs FLOPs](loss_vs_flops.png)", "", "![exact match](exact_match.png)", "",
              "![gradient norms](grad_norm.png)", ""]
    return "\n".join(lines)


def write_report(out: str | Path) -> dict[str, Any]:
    """Write results.json, results.md and the figures under `out`; returns the results.json content."""
    from hrm.study.figures import write_figures

    out = Path(out)
    results = load_results(out)
    if not results:
        raise FileNotFoundError(f"no {out}/runs/*/result.json: run `python -m hrm.study all --out {out}` first")
    grid = describe_grid()
    s = summarise(results)
    verdicts = [v for v in (verdict(e, s) for e in EFFECTS) if v is not None]
    doc = {"cells": results, "grid": grid, "summary": s, "effects": verdicts}
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "results.md").write_text(render_markdown(results, s, verdicts, grid))
    write_figures(out, results, grid)
    return doc
