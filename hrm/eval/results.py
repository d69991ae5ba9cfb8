"""Results files and Markdown tables in the paper's layout (docs/eval_protocol.md §11 "always report the variant, the
code version and the evaluation counts", §13 published numbers). Tables are built from the task specs.

Table 1: our numbers under the faithful protocol beside the published rows of the same size (docs/eval_protocol.md §13).
Table 2: the corrected protocol (docs/eval_protocol.md §11: strict MCQ, ARC label-index gold, MMLU micro, MATH boxed,
MCQ context 3072). Each row label says whose prompts produced the generations it scores. Then counts, a table per task
outside the summary (the held-out `default` task, with its groups) and a per-task detail list.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence

from hrm.eval.item import VARIANTS
from hrm.eval.published import published_rows
from hrm.eval.tasks import all_tasks, get_task


def code_version() -> str:
    """git HEAD (or "nogit") plus a digest of the hrm/eval sources, so uncommitted edits are visible."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "nogit"
    except (OSError, subprocess.SubprocessError):
        head = "nogit"
    return f"{head}+eval-{digest.hexdigest()[:10]}"


def _pct(x: Optional[float], digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def prompts_label(table_variant: str, run_variant: str, both_protocols: bool) -> str:
    """Whose prompts produced the generations a table scores: its own protocol's when the run generated both
    (`both_protocols`), else the run's (the other table then only rescores them)."""
    return table_variant if both_protocols or table_variant == run_variant else run_variant


def render_markdown(metrics: dict[str, dict[str, Any]], variant: str = "faithful",
                    size_label: Optional[str] = None, info: Optional[dict] = None,
                    both_protocols: bool = False) -> str:
    """Markdown summary: faithful table with published rows, corrected table, other tasks, details.

    `both_protocols`: the other variant's metrics come from its own prompts and context (see `hrm.eval.runner`);
    when False they rescore the run variant's generations, and the table says so.
    """
    info = dict(info or {})
    version = info.get("code_version") or code_version()
    out = [f"# HRM-Text evaluation ({variant} protocol, code {version}, size {size_label or 'unknown'})", ""]
    if info.get("checkpoint"):
        step = info.get("step")
        out += [f"checkpoint `{info['checkpoint']}`" + ("" if step is None else f", step {step}"), ""]
    columns = [t for t in all_tasks() if t.in_all]
    if any(t.name in metrics for t in columns):
        def ours(v: str) -> list[str]:
            return [_pct(metrics[t.name][v].get(t.primary_metric)) if t.name in metrics else "—" for t in columns]

        def label(v: str) -> str:
            return f"ours ({prompts_label(v, variant, both_protocols)} prompts)"

        out.append("## Paper-faithful scoring (docs/eval_protocol.md §1–10; DROP = F1)")
        rows = [[label("faithful"), *ours("faithful")]]
        rows += [[src, *[str(vals[t.name]) if t.name in vals else "—" for t in columns]]
                 for src, vals in published_rows(size_label, columns)]
        rows.append(["n (ours)", *[str(metrics[t.name]["faithful"]["n"]) if t.name in metrics else "—"
                                   for t in columns]])
        out += _table(["model", *[t.header for t in columns]], rows) + [""]
        out.append("## Corrected scoring (docs/eval_protocol.md §11: strict MCQ, ARC label-index, MMLU micro, "
                   "MATH boxed, MCQ context 3072)")
        head = [t.header + (f" ({t.corrected_note})" if t.corrected_note else "") for t in columns]
        out += _table(["model", *head], [[label("corrected"), *ours("corrected")]]) + [""]
        if not both_protocols:
            other = "corrected" if variant == "faithful" else "faithful"
            out += [f"The {other} row rescores the {variant} generations ({variant} prompts and context); "
                    f"`eval.py --checkpoint` generates the {other} prompts too.", ""]
    for task in [t for t in metrics if not get_task(t).in_all]:
        spec = get_task(task)
        m = metrics[task][variant]
        key = spec.primary_metric
        groups = m.get("n_by_group", {})
        out.append(f"## {task} ({spec.header})")
        out += _table(["group", key, "n"], [["overall", _pct(m[key]), str(m["n"])]]
                      + [[g, _pct(m[f"{key}_{g}"]), str(n)] for g, n in groups.items()]) + [""]
    out.append("## Details")
    for task, both in metrics.items():
        for v in VARIANTS:
            m = both[v]
            keys = [k for k in m if not isinstance(m[k], dict)
                    and (not k.startswith("acc_") or k in ("acc_micro", "acc_macro"))]
            out.append(f"- {task} [{v}]: " + ", ".join(
                f"{k}={m[k]}" if isinstance(m[k], int) else f"{k}={m[k]:.4f}" for k in keys))
    return "\n".join(out) + "\n"


def write_jsonl(path: str | Path, rows: Sequence[dict]) -> None:
    """One JSON object per line, UTF-8, keys in insertion order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_outputs(out_dir: Path, records: list[dict], metrics: dict, markdown: str, info: dict) -> dict[str, str]:
    """Write predictions.jsonl, results.json and results.md into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"predictions": out_dir / "predictions.jsonl", "results": out_dir / "results.json",
             "markdown": out_dir / "results.md"}
    write_jsonl(paths["predictions"], records)
    payload = {"code_version": info.get("code_version") or code_version(), **info, "metrics": metrics,
               "counts": {t: m["faithful"]["n"] for t, m in metrics.items()}}
    paths["results"].write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown, encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}
