"""Results files and Markdown tables in the paper's layout (SPEC §7.11 "always report the variant, the code
version and the evaluation counts", §8 published numbers).

Table 1: our numbers under the faithful scoring beside the published rows of the same size (SPEC §8). Table 2:
the corrected scoring (SPEC §7.11: strict MCQ, ARC label-index gold, MMLU micro, MATH boxed). Then counts and a
per-task detail list, plus a table for tasks outside the paper's eight (the built-in default tasks).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any, Optional

from hrm.eval.published import COLUMNS, HEADERS, published_for
from hrm.eval.scoring.aggregate import primary_metric

CORRECTED_NOTES = {"mmlu": "micro", "arc_challenge": "label-idx", "math": "boxed"}


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


def _ours(metrics: dict, variant: str) -> list[str]:
    return [_pct(metrics[t][variant].get(primary_metric(t))) if t in metrics else "—" for t in COLUMNS]


def render_markdown(metrics: dict[str, dict[str, Any]], variant: str = "faithful",
                    size_label: Optional[str] = None, info: Optional[dict] = None) -> str:
    """Markdown summary: faithful table with published rows, corrected table, counts, details, other tasks."""
    info = dict(info or {})
    version = info.get("code_version") or code_version()
    out = [f"# HRM-Text evaluation ({variant} protocol, code {version}, size {size_label or 'unknown'})", ""]
    bench = [t for t in COLUMNS if t in metrics]
    if bench:
        out.append("## Paper-faithful scoring (SPEC §7.1-§7.10; DROP = F1)")
        rows = [[f"ours ({variant} prompts)", *_ours(metrics, "faithful")]]
        rows += [[src, *[str(vals[t]) for t in COLUMNS]] for src, vals in published_for(size_label)]
        rows.append(["n (ours)", *[str(metrics[t]["faithful"]["n"]) if t in metrics else "—" for t in COLUMNS]])
        out += _table(["model", *[HEADERS[t] for t in COLUMNS]], rows) + [""]
        out.append("## Corrected scoring (SPEC §7.11: strict MCQ, ARC label-index, MMLU micro, MATH boxed)")
        head = [HEADERS[t] + (f" ({CORRECTED_NOTES[t]})" if t in CORRECTED_NOTES else "") for t in COLUMNS]
        out += _table(["model", *head], [[f"ours ({variant} prompts)", *_ours(metrics, "corrected")]]) + [""]
    other = [t for t in metrics if t not in COLUMNS]
    for task in other:
        m = metrics[task]["faithful"]
        groups = sorted(k[4:] for k in m if k.startswith("acc_"))
        out.append(f"## {task} (exact match)")
        out += _table(["group", "acc", "n"], [["overall", _pct(m["acc"]), str(m["n"])]]
                      + [[g, _pct(m[f"acc_{g}"]), ""] for g in groups]) + [""]
    out.append("## Details")
    for task, both in metrics.items():
        for v in ("faithful", "corrected"):
            m = both[v]
            keys = [k for k in m if not k.startswith("acc_") or k in ("acc_micro", "acc_macro")]
            out.append(f"- {task} [{v}]: " + ", ".join(
                f"{k}={m[k]}" if isinstance(m[k], int) else f"{k}={m[k]:.4f}" for k in keys))
    return "\n".join(out) + "\n"


def write_outputs(out_dir: Path, records: list[dict], metrics: dict, markdown: str, info: dict) -> dict[str, str]:
    """Write predictions.jsonl, results.json and results.md into `out_dir`; returns their paths."""
    from hrm.eval.runner import write_jsonl

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"predictions": out_dir / "predictions.jsonl", "results": out_dir / "results.json",
             "markdown": out_dir / "results.md"}
    write_jsonl(paths["predictions"], records)
    payload = {"code_version": info.get("code_version") or code_version(), **info, "metrics": metrics,
               "counts": {t: m["faithful"]["n"] for t, m in metrics.items()}}
    paths["results"].write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown, encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}
