"""The study's figures (the only module that imports matplotlib):

- loss_vs_flops.png: per table (columns), the training loss (top, smoothed, response-only cells) and the held-out
  response loss (bottom) against cumulative training FLOPs, one line per cell (mean over seeds);
- exact_match.png: held-out exact match per task for every cell (mean over seeds, seed range as error bars);
- grad_norm.png: gradient norm over training for the bp-schedule cells (paper App. C: full backprop spikes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hrm.study.report import TABLES

SMOOTH = 10  # steps of the trailing mean on training curves


def _mean_curve(runs: list[dict], col: int, key: str = "loss_curve") -> tuple[np.ndarray, np.ndarray]:
    """(FLOPs, value) averaged over the seeds' curves (same steps, same FLOPs per step)."""
    arrs = [np.asarray(r[key], dtype=float) for r in runs]
    n = min(len(a) for a in arrs)
    return arrs[0][:n, 1], np.mean([a[:n, col] for a in arrs], axis=0)


def _smooth(y: np.ndarray, k: int = SMOOTH) -> np.ndarray:
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - k, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def _by_cell(results: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in results:
        out.setdefault(r["cell"], []).append(r)
    return out


def write_figures(out: Path, results: list[dict], grid: list[dict]) -> None:
    """Write the three PNGs into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _by_cell(results)
    fig, axes = plt.subplots(2, len(TABLES), figsize=(5 * len(TABLES), 8), sharex=False)
    for j, (key, title) in enumerate(TABLES):
        for g in grid:
            if key not in g["tables"] or g["cell"] not in runs:
                continue
            rs = runs[g["cell"]]
            if rs[0]["objective"] == "response":
                x, y = _mean_curve(rs, 2)
                axes[0, j].plot(x, _smooth(y), label=g["cell"], lw=1.2)
            x, y = _mean_curve(rs, 2, "heldout_curve")
            axes[1, j].plot(x, y, marker="o", ms=3, label=g["cell"], lw=1.2)
        axes[0, j].set_title(title, fontsize=9)
        axes[0, j].set_ylabel(f"training loss (response tokens, {SMOOTH}-step mean)")
        axes[1, j].set_ylabel("held-out loss (response tokens, EMA)")
        for i in (0, 1):
            axes[i, j].set_xlabel("training FLOPs (docs/optimizer.md §5)")
            axes[i, j].set_yscale("log")
            axes[i, j].grid(alpha=0.3)
            axes[i, j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "loss_vs_flops.png", dpi=110)
    plt.close(fig)

    cells = [g["cell"] for g in grid if g["cell"] in runs]
    tasks = sorted(runs[cells[0]][0]["eval"]["per_task"]) + ["overall"]
    fig, ax = plt.subplots(figsize=(max(10, 0.9 * len(cells) * len(tasks) / 4), 5))
    width = 0.8 / len(tasks)
    for k, t in enumerate(tasks):
        vals = [[r["eval"]["overall"] if t == "overall" else r["eval"]["per_task"][t] for r in runs[c]] for c in cells]
        mean = np.array([np.mean(v) for v in vals]) * 100
        lo = mean - np.array([min(v) for v in vals]) * 100
        hi = np.array([max(v) for v in vals]) * 100 - mean
        ax.bar(np.arange(len(cells)) + (k - (len(tasks) - 1) / 2) * width, mean, width, yerr=[lo, hi], label=t,
               capsize=1.5, error_kw={"lw": 0.6})
    ax.set_xticks(np.arange(len(cells)), cells, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("held-out exact match (%)")
    ax.set_title("Held-out exact match per task (mean over seeds, bars: seed range)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(tasks))
    fig.tight_layout()
    fig.savefig(out / "exact_match.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for g in grid:
        if "bp" in g["tables"] and g["cell"] in runs:
            for r in runs[g["cell"]]:
                a = np.asarray(r["loss_curve"], dtype=float)
                ax.plot(a[:, 0], a[:, 4], lw=0.8, label=f"{g['cell']} s{r['seed']}")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient norm")
    ax.set_yscale("log")
    ax.set_title("Gradient norm by backprop horizon")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "grad_norm.png", dpi=110)
    plt.close(fig)
