"""The study grid: the paper's Tab. 1–3 comparisons (docs/eval_protocol.md §13.3–13.5) and the bp schedules, at laptop
scale.

Every cell is the CPU recipe of `configs/tiny.yaml` on the `study` suite (hrm.data.default_dataset) with the shared
`BASE` overrides (d 128, 2 heads, SwiGLU 256, 128-token rows × 16, fp32), plus the cell's own keys. The reference
cell is HRM (2 + 2 layers, H2 L3, bp 2→5 over the first 20% of `BASE_STEPS` steps). FLOPs follow docs/optimizer.md §5
exactly as `hrm.train.flops` counts them (every stack application, no-grad ones forward only, 6·N_head for the LM head;
attention scores excluded, as the paper), on every token slot of every step:

- Tab. 1: the Transformer with HRM's parameters trains on more tokens (more steps) until its FLOPs match HRM's; the
  deep Transformer trains on HRM's tokens with as many layers as make its FLOPs match; the Looped (Universal)
  Transformer and RINS use the paper's recurrence on HRM's tokens (their FLOPs are within ±10% of HRM's, as in the
  paper: 1.0 / 1.1 × 1e21).
- Tab. 2: TRM with one shared stack. "TRM 1B": a 4-layer shared stack (HRM's parameters), H2 L1, bp 1/1. "TRM 0.6B":
  a 2-layer shared stack, HRM's recurrence with the final bp 5 pattern (half HRM's parameters, HRM's FLOPs);
  "HRM 0.6B": HRM with 1 + 1 layers (TRM 0.6B's parameters, half its FLOPs).
- Tab. 3: loss on all tokens (`data.target_only=false`, P(x)) vs response only, causal vs PrefixLM, for HRM and the
  FLOPs-matched Transformer.
- bp: HRM with a fixed horizon of 2 or 5 and full backprop (bp 8) beside the 2→5 warmup, on HRM's tokens.

This module is pure Python (no JAX computation): `list` and the unit tests use it.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Optional

from hrm.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
BASE_CONFIG = REPO / "configs" / "tiny.yaml"
BASE_STEPS = 120  # HRM's steps; everything else is derived from it
SEEDS = (0, 1)
BASE = (
    "model.hidden_size=128", "model.num_heads=2", "model.intermediate_size=256", "model.n_layers=4",
    "model.vocab_size=512", "model.max_seq_len=128", "model.compute_dtype=float32", "model.attention_backend=xla",
    "data.seq_len=128", "train.global_batch_rows=16",
    "optim.lr=2e-3", "optim.lr_warmup_steps=20", "optim.lr_min_ratio=0.1", "optim.ema_decay=0.95",
    "eval.dtype=float32", "logging.tensorboard=false", "logging.progress_bar=false", "train.log_every=1",
    "checkpoint.keep_last=1", "checkpoint.async_save=false",
)
HELDOUT_POINTS = 8  # held-out loss evaluations over training (plus the last step)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One configuration of the grid.

    name: CLI name (`--cell`). tables: the paper tables it appears in ("1", "2", "3", "bp"). label: our row label;
    paper: the paper's row it stands for (docs/eval_protocol.md §13.3–13.5; None for the bp rows, which have no table in
    the paper).
    overrides: config keys on top of BASE. steps: "base" (BASE_STEPS, HRM's tokens) or "match" (as many steps as
    make its training FLOPs equal HRM's). match_layers: choose model.n_layers so that FLOPs per token match HRM's.
    """

    name: str
    tables: tuple[str, ...]
    label: str
    paper: Optional[str]
    overrides: tuple[str, ...] = ()
    steps: str = "base"
    match_layers: bool = False


HRM = ("model.arch=hrm",)
TRANSFORMER = ("model.arch=transformer", "model.half_layers=false")
CAUSAL = ("model.attn_type=causal",)
PX = ("data.target_only=false",)

GRID: tuple[Cell, ...] = (
    Cell("hrm", ("1", "2", "3", "bp"), "HRM 2+2 layers, H2L3, bp 2→5", "HRM 1B", HRM),
    Cell("transformer", ("1", "3"), "Transformer 4 layers, more tokens", "Transformer 1B", TRANSFORMER, steps="match"),
    Cell("transformer_deep", ("1",), "Transformer deep, HRM's tokens", "Transformer 3B (Deep)", TRANSFORMER,
         match_layers=True),
    Cell("ut", ("1",), "Looped Transformer 4 layers × 4, bp 2", "Looped Transformer 1B",
         ("model.arch=ut", "model.half_layers=false", "model.cycles=4", "model.bp_cycles=2")),
    Cell("rins", ("1",), "RINS 2+2 layers, L×7 (bp 4) then H", "RINS 1B",
         ("model.arch=rins", "model.half_layers=true", "model.L_cycles=7", "model.L_bp_cycles=4")),
    Cell("trm_h2l1", ("2",), "TRM shared 4 layers, H2L1, bp 1/1", "TRM 1B (unstable)",
         ("model.arch=trm", "model.half_layers=false", "model.H_cycles=2", "model.L_cycles=1",
          "model.H_bp_steps=1", "model.L_bp_steps=1")),
    Cell("hrm_small", ("2",), "HRM 1+1 layers, H2L3, bp 2→5", "HRM 0.6B", HRM + ("model.n_layers=2",)),
    Cell("trm", ("2",), "TRM shared 2 layers, H2L3, bp 2/3", "TRM 0.6B",
         ("model.arch=trm", "model.half_layers=true", "model.H_cycles=2", "model.L_cycles=3",
          "model.H_bp_steps=2", "model.L_bp_steps=3")),
    Cell("transformer_px_causal", ("3",), "Transformer, P(x), causal", "Transformer 1B P(x) causal",
         TRANSFORMER + CAUSAL + PX, steps="match"),
    Cell("transformer_causal", ("3",), "Transformer, P(xa|xq), causal", "Transformer 1B P(xa|xq) causal",
         TRANSFORMER + CAUSAL, steps="match"),
    Cell("hrm_px_causal", ("3",), "HRM, P(x), causal", "HRM 1B P(x) causal", HRM + CAUSAL + PX),
    Cell("hrm_causal", ("3",), "HRM, P(xa|xq), causal", "HRM 1B P(xa|xq) causal", HRM + CAUSAL),
    Cell("hrm_bp2", ("bp",), "HRM, fixed bp 2", None, HRM + ("model.bp_min_steps=2", "model.bp_max_steps=2")),
    Cell("hrm_bp5", ("bp",), "HRM, fixed bp 5", None, HRM + ("model.bp_min_steps=5", "model.bp_max_steps=5")),
    Cell("hrm_bp8", ("bp",), "HRM, full backprop (bp 8)", None, HRM + ("model.bp_min_steps=8", "model.bp_max_steps=8")),
)
CELLS = {c.name: c for c in GRID}
REFERENCE = "hrm"


def get_cell(name: str) -> Cell:
    """The cell called `name`; ConfigError listing the grid otherwise."""
    if name not in CELLS:
        raise ConfigError(f"--cell {name!r}: not in the study grid; choose one of {', '.join(CELLS)}")
    return CELLS[name]


# ----------------------------------------------------------------------------- FLOPs


def step_flops(cfg: Config, step: int, total_steps: int) -> float:
    """Analytic training FLOPs of 1-based `step` (docs/optimizer.md §5, attention excluded) over every token slot of
    the batch."""
    from hrm.model.registry import bp_steps_at
    from hrm.train.flops import flops_per_step

    tokens = cfg.train.global_batch_rows * cfg.data.seq_len
    return flops_per_step(cfg.model, bp_steps_at(cfg.model, step, total_steps), tokens)["total_excl_attention"]


def train_flops(cfg: Config, total_steps: int) -> float:
    """Σ over the run's steps of `step_flops` (the bp schedule changes the cost per step)."""
    return sum(step_flops(cfg, s, total_steps) for s in range(1, total_steps + 1))


def merged(*groups: tuple[str, ...] | list[str]) -> list[str]:
    """key=value overrides of several groups, a later group's value of a key replacing an earlier one."""
    out: dict[str, str] = {}
    for group in groups:
        for item in group:
            key, value = item.split("=", 1)
            out.pop(key, None)
            out[key] = value
    return [f"{k}={v}" for k, v in out.items()]


def _load(overrides: tuple[str, ...]) -> Config:
    return load_config(BASE_CONFIG, merged(BASE, overrides))


def _matched_layers(cell: Cell) -> int:
    """n_layers whose FLOPs per step come closest to the reference's mean FLOPs per step."""
    target = train_flops(_load(CELLS[REFERENCE].overrides), BASE_STEPS) / BASE_STEPS
    per = {n: step_flops(_load(cell.overrides + (f"model.n_layers={n}",)), 1, BASE_STEPS) for n in range(1, 65)}
    return min(per, key=lambda n: abs(per[n] - target))


@functools.lru_cache(maxsize=None)
def cell_plan(name: str) -> tuple[tuple[str, ...], int]:
    """(overrides incl. matched n_layers, total steps) of cell `name` (without seed/run-dir keys)."""
    cell = get_cell(name)
    overrides = cell.overrides
    if cell.match_layers:
        overrides = overrides + (f"model.n_layers={_matched_layers(cell)}",)
    steps = BASE_STEPS
    if cell.steps == "match":
        budget = train_flops(_load(CELLS[REFERENCE].overrides), BASE_STEPS)
        cfg = _load(overrides)
        steps = round(budget / step_flops(cfg, 1, BASE_STEPS))  # fixed-horizon cells cost the same every step
    elif cell.steps != "base":
        raise ValueError(f"cell {name}: steps must be 'base' or 'match', got {cell.steps!r}")
    return overrides, steps


def cell_config(name: str, seed: int, run_dir: str, data_path: str, compile_cache: str = "") -> Config:
    """The full run Config of (cell, seed): BASE + cell + matched keys + seed (init, data order) + paths."""
    overrides, steps = cell_plan(name)
    extra = [f"name=study-{name}-s{seed}", f"train.total_steps={steps}", f"train.run_dir={run_dir}",
             f"data.path={data_path}", f"model.init_seed={seed}", f"data.shuffle_seed={seed}", f"train.seed={seed}",
             f"train.eval_every={max(1, steps // HELDOUT_POINTS)}", f"checkpoint.every_steps={steps}"]
    if compile_cache:
        extra.append(f"train.compile_cache_dir={compile_cache}")
    return load_config(BASE_CONFIG, merged(BASE, overrides, extra))


def describe_grid() -> list[dict]:
    """One row per cell: name, tables, label, paper row, arch, params, steps, train FLOPs and ratio to HRM."""
    from hrm.train.flops import total_params

    ref = None
    rows = []
    for cell in GRID:
        overrides, steps = cell_plan(cell.name)
        cfg = _load(overrides)
        fl = train_flops(cfg, steps)
        ref = fl if cell.name == REFERENCE else ref
        rows.append({"cell": cell.name, "tables": list(cell.tables), "label": cell.label, "paper": cell.paper,
                     "arch": cfg.model.arch, "n_layers": cfg.model.n_layers, "params": total_params(cfg.model),
                     "steps": steps, "tokens": steps * cfg.train.global_batch_rows * cfg.data.seq_len,
                     "train_flops": fl})
    for r in rows:
        r["flops_vs_hrm"] = r["train_flops"] / ref
    return rows
