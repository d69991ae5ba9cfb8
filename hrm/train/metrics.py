"""Metric sinks: JSONL always, TensorBoard (tensorboardX) and W&B optional; a tqdm progress bar.

docs/conventions.md §6: only process 0 writes; every other process gets a writer whose methods do nothing.
`metrics.jsonl` holds one JSON object per logged step ({"step": k, ...}). Locally it is appended and
flushed on every write, so a killed run keeps everything logged so far; on a remote run dir
(`gs://…`, which cannot append) the whole file is rewritten at most every `REMOTE_FLUSH_S` seconds
and on close. On resume (`keep_through=step`) rows past the restored step are dropped, so the file
holds one row per step. Non-finite floats are written as the strings "NaN", "Infinity",
"-Infinity" (strict JSON has no literal for them). W&B is imported lazily and only if enabled; if
enabled but not installed the error says how to fix it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, Mapping, Optional

import numpy as np

from hrm.config import LoggingConfig
from hrm.data.paths import as_path, is_remote

REMOTE_FLUSH_S = 60.0


def _to_python(v: Any) -> Any:
    """Scalars (python, numpy, jax) → python numbers; strings pass through; other values → str."""
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        if math.isfinite(v):
            return v
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    try:
        arr = np.asarray(v)
    except Exception:
        return str(v)
    if arr.size == 1 and arr.dtype.kind in "biuf":
        x = arr.reshape(()).item()
        return _to_python(x)
    return str(v)


def _kept_lines(text: str, keep_through: Optional[int]) -> tuple[list[str], bool]:
    """Lines of an existing metrics.jsonl to keep: complete JSON rows with step <= keep_through (all
    complete rows if None). Returns (lines, whether anything was dropped)."""
    kept, dropped = [], False
    for line in text.splitlines():
        try:
            step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):  # a row cut short by a kill, or not a row
            dropped = dropped or bool(line.strip())
            continue
        if keep_through is not None and step > keep_through:
            dropped = True
            continue
        kept.append(line)
    return kept, dropped


class _JsonlFile:
    """Append-only JSONL file on a local or remote (epath) run directory."""

    def __init__(self, path: Any, keep_through: Optional[int]):
        self.path = path
        self.remote = is_remote(path)
        old = path.read_text() if path.exists() else ""
        self._lines, dropped = _kept_lines(old, keep_through)
        self._last_upload = time.monotonic()
        if self.remote:
            self._fh = None
            if dropped:
                self._upload()
            return
        if dropped:  # rewrite atomically, then append
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in self._lines))
            tmp.replace(path)
        self._lines = []
        self._fh = open(path, "a", encoding="utf-8")

    def _upload(self) -> None:
        self.path.write_text("".join(line + "\n" for line in self._lines))
        self._last_upload = time.monotonic()

    def write(self, line: str) -> None:
        if self._fh is not None:
            self._fh.write(line + "\n")
            self._fh.flush()
            return
        self._lines.append(line)
        if time.monotonic() - self._last_upload >= REMOTE_FLUSH_S:
            self._upload()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        elif self.remote and self._lines is not None:
            self._upload()
            self._lines = None


class MetricsWriter:
    """Writes step metrics to `<run_dir>/metrics.jsonl`, TensorBoard and W&B (process 0 only).

    Usage: `w = MetricsWriter(run_dir, cfg.logging, jax.process_index()); w.write(step, {...});
    w.close()`. Values may be python, numpy or (already fetched) jax scalars. `run_dir` may be a
    local path or a URL (`gs://…`). `keep_through=k` (a resume at step k) drops existing
    metrics.jsonl rows with step > k before appending.
    """

    def __init__(self, run_dir: Any, cfg: LoggingConfig, process_index: int = 0,
                 run_config: Optional[Mapping[str, Any]] = None, run_name: Optional[str] = None,
                 keep_through: Optional[int] = None):
        self.active = process_index == 0
        self.run_dir = as_path(run_dir)
        self._jsonl = None
        self._tb = None
        self._wandb = None
        if not self.active:
            return
        wandb = None
        if cfg.wandb:
            try:
                import wandb  # type: ignore[import-not-found]
            except ImportError:
                raise RuntimeError(
                    "logging.wandb=true but the 'wandb' package is not installed; install it "
                    "(pip install wandb) or set logging.wandb=false") from None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = _JsonlFile(self.run_dir / "metrics.jsonl", keep_through)
        if cfg.tensorboard:
            from tensorboardX import SummaryWriter  # a pinned dependency

            self._tb = SummaryWriter(logdir=str(self.run_dir / "tensorboard"))
        if wandb is not None:
            self._wandb = wandb.init(project=cfg.wandb_project, name=run_name,
                                     dir=None if is_remote(self.run_dir) else str(self.run_dir),
                                     config=dict(run_config) if run_config else None, resume="allow")

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log one step's metrics to every enabled sink."""
        if not self.active:
            return
        record = {"step": int(step), "time": time.time()}
        record.update({k: _to_python(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(record))
        numeric = {k: v for k, v in record.items()
                   if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(numeric, step=int(step))

    def write_text(self, tag: str, text: str, step: int = 0) -> None:
        """Free text (e.g. the resolved config) to TensorBoard/W&B; JSONL gets {"step", tag: text}."""
        if not self.active:
            return
        self._jsonl.write(json.dumps({"step": int(step), tag: text}))
        if self._tb is not None:
            self._tb.add_text(tag, text, int(step))

    def close(self) -> None:
        """Flush and close every sink (idempotent)."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _fmt(key: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    if key == "lr":
        return f"{v:.2e}"
    if key in ("bp", "bp_steps"):
        return str(int(v))
    if key in ("tok_s", "tokens_per_s"):
        return f"{v / 1e3:.1f}k" if v < 1e6 else f"{v / 1e6:.2f}M"
    if key in ("acc", "accuracy"):
        return f"{v:.3f}"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


class ProgressBar:
    """tqdm bar over training steps showing step, loss, acc, tok/s, lr, bp and tqdm's ETA.

    `update(step, loss=..., acc=..., tok_s=..., lr=..., bp=...)` moves the bar to `step`
    (absolute, so it may skip steps between log points). `enabled=False` (or process != 0) → no-op.
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = "train"):
        self._bar = None
        self._pos = int(initial)
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=int(total), initial=int(initial), desc=desc, unit="step",
                             dynamic_ncols=True, smoothing=0.1)

    def update(self, step: int, **fields: Any) -> None:
        """Advance to absolute `step` and show `fields` (tok_s is shown as tok/s)."""
        if self._bar is None:
            return
        step = int(step)
        if fields:  # set before advancing so the refresh shows this step's values
            shown = {("tok/s" if k == "tok_s" else k): _fmt(k, _to_python(v)) for k, v in fields.items()}
            self._bar.set_postfix(shown, refresh=False)
        if step > self._pos:
            self._bar.update(step - self._pos)
            self._pos = step

    def write(self, msg: str, file: Any = None) -> None:
        """Print a line (to stderr by default) above the bar without breaking it (`tqdm.write`)."""
        file = sys.stderr if file is None else file
        if self._bar is None:
            print(msg, file=file, flush=True)
        else:
            self._bar.write(msg, file=file)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
