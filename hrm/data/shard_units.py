"""One unit of preparation work: tokenize one input file (or one TFDS index range) into ArrayRecord shards.

Runs in a worker process (or in-process with `--workers 1`). Resumable at shard granularity: each finished shard gets a
marker `.progress/<shard>.json` holding its stats and the next source line; a rerun continues after the last marker
and skips the unit entirely once `.progress/<unit>.done.json` exists. Bad records raise `BadRecord` as
"file:line: reason" unless `skip_bad`, in which case each one is listed in the shard marker (docs/data_format.md §7
drops empty responses; we additionally report them).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hrm.data import records, sources
from hrm.data.tokenizer import Tokenizer, load_tokenizer

PROGRESS = ".progress"
ENCODE_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class Unit:
    """A source slice: `kind` "file" (path) or "tfds" (name, split, data_dir, [start, end))."""

    index: int
    kind: str
    path: str = ""
    name: str = ""
    split: str = ""
    data_dir: str | None = None
    start: int = 0
    end: int = 0

    @property
    def uid(self) -> str:
        return f"u{self.index:05d}"

    @property
    def label(self) -> str:
        return self.path if self.kind == "file" else f"tfds:{self.name}/{self.split}"


@dataclasses.dataclass(frozen=True)
class UnitConfig:
    out_dir: str
    tokenizer_path: str
    shard_size: int
    skip_bad: bool
    field_map: dict[str, str] | None = None
    tfds_module: str | None = None  # imported in workers to register a custom TFDS builder


_TOKENIZERS: dict[str, Tokenizer] = {}


def _tokenizer(path: str) -> Tokenizer:
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _raw_records(unit: Unit, start_line: int, tfds_module: str | None) -> Iterator[tuple[int, Any]]:
    if unit.kind == "file":
        return sources.iter_file(unit.path, start_line)
    if tfds_module:
        importlib.import_module(tfds_module)
    src = sources.open_tfds_source(unit.name, unit.split, unit.data_dir)
    return sources.iter_data_source(src, max(unit.start, start_line - 1), unit.end)


def _resume_point(progress: Path, uid: str) -> tuple[int, int]:
    """(next chunk index, next source line) after the last completed shard of this unit."""
    chunk, line = 0, 1
    while (m := progress / f"{uid}-{chunk:05d}.json").is_file():
        line = json.loads(m.read_text())["next_line"]
        chunk += 1
    return chunk, line


def process_unit(unit: Unit, cfg: UnitConfig) -> dict:
    """Tokenize `unit` into shards; returns {"unit", "examples", "skipped"} (counts for this call)."""
    out, progress = Path(cfg.out_dir), Path(cfg.out_dir) / PROGRESS
    if (progress / f"{unit.uid}.done.json").is_file():
        return {"unit": unit.index, "examples": 0, "skipped": 0, "resumed": True}
    tok = _tokenizer(cfg.tokenizer_path)
    dtype = records.token_dtype(tok.vocab_size)
    cond_ids = frozenset(tok.special.conditions.values())
    chunk, start_line = _resume_point(progress, unit.uid)
    n_ex = n_skip = 0

    writer: records.ShardWriter | None = None
    stats: dict[str, Any] = {}
    pending: list[tuple[int, sources.Example]] = []

    def new_writer() -> None:
        nonlocal writer, stats
        name = f"{unit.uid}-{chunk:05d}.array_record"
        writer = records.ShardWriter(out / name, dtype, tok.special.boq, cond_ids)
        stats = {"path": name, "unit": unit.index, "source": unit.label, "skipped": [], "lengths": []}

    def finish_shard(next_line: int) -> None:
        nonlocal writer, chunk
        assert writer is not None
        writer.close()
        lens = np.asarray(stats.pop("lengths"), np.int64).reshape(-1, 2)
        stats.update(num_examples=len(lens), inst_tokens=int(lens[:, 0].sum()), resp_tokens=int(lens[:, 1].sum()),
                     num_tokens=int(lens.sum()), histogram=records.length_histogram(lens.sum(1)),
                     next_line=next_line)
        write_json_atomic(progress / f"{unit.uid}-{chunk:05d}.json", stats)
        chunk += 1
        writer = None

    def flush_pending() -> None:
        """Tokenize buffered examples in one batch call and write them; closes full shards."""
        nonlocal n_ex
        if not pending:
            return
        insts = tok.encode_batch([e.instruction for _, e in pending])
        resps = tok.encode_batch([e.response for _, e in pending])
        for (line, ex), it, rt in zip(pending, insts, resps):
            if writer is None:
                new_writer()
            inst = tok.special.wrap_instruction(it, ex.condition)
            resp = [*rt, tok.special.eoa]
            writer.write(inst, resp, line - 1)  # 0-based line/row in the source (provenance)
            stats["lengths"].append((len(inst), len(resp)))
            n_ex += 1
            if len(writer) >= cfg.shard_size:
                finish_shard(line + 1)
        pending.clear()

    last_line = start_line - 1
    for line, raw in _raw_records(unit, start_line, cfg.tfds_module):
        last_line = line
        try:
            if isinstance(raw, sources.BadRecord):
                raise raw
            ex = sources.extract_example(raw, cfg.field_map)
        except sources.BadRecord as e:
            if not cfg.skip_bad:
                raise sources.BadRecord(f"{unit.label}:{line}: {e} (use --skip_bad to skip and count)") from None
            if writer is None:
                new_writer()
            stats["skipped"].append({"file": unit.label, "line": line, "reason": str(e)})
            n_skip += 1
            continue
        pending.append((line, ex))
        if len(pending) >= min(ENCODE_BATCH, cfg.shard_size):
            flush_pending()
    flush_pending()
    if writer is not None:
        finish_shard(last_line + 1)
    write_json_atomic(progress / f"{unit.uid}.done.json", {"unit": unit.index, "source": unit.label,
                                                             "shards": chunk})
    return {"unit": unit.index, "examples": n_ex, "skipped": n_skip, "resumed": False}


def collect_shard_stats(out_dir: Path) -> list[dict]:
    """All shard markers in deterministic (unit, chunk) order."""
    return [json.loads(p.read_text()) for p in sorted((out_dir / PROGRESS).glob("u*-*.json"))]
