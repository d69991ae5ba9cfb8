"""Raw instruction/response sources for preparation (docs/data_format.md §7): JSONL, JSONL.gz, Parquet, TFDS
ArrayRecord.

Every source yields `(location, fields)` where `location` is a 1-based line (JSONL) or row (Parquet, TFDS index + 1)
and `fields` is a parsed dict, or `(location, BadRecord)` when the raw record cannot even be parsed.
`extract_example(fields)` maps a dict onto (instruction, response, condition) accepting the aliases
instruction/response, prompt/completion, input/output, question/answer and chat-style `messages`; problems raise
`BadRecord` with a reason. Nothing is ever dropped silently: the caller reports `file:line: reason`.
Input paths may be local or remote (`gs://…`, read through etils.epath, see hrm/data/paths.py).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
from typing import Any, Iterator, Mapping, Sequence

from etils import epath

from hrm.data import paths

CONDITIONS = ("direct", "cot", "noisy", "synth")
FIELD_ALIASES = (("instruction", "response"), ("prompt", "completion"), ("input", "output"), ("question", "answer"))


class BadRecord(ValueError):
    """A record that cannot become an example; `str()` is the reason."""


@dataclasses.dataclass(frozen=True)
class Example:
    instruction: str
    response: str
    condition: str = "direct"


def _glob(pat: str) -> list[str]:
    if not paths.is_remote(pat):
        return sorted(glob.glob(pat, recursive=True))
    parts = pat.split("/")
    k = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = paths.as_path("/".join(parts[:k]))
    try:
        return sorted(os.fspath(p) for p in base.glob("/".join(parts[k:])))
    except ImportError as e:
        raise paths.remote_error(pat, e) from None


def expand_inputs(patterns: Sequence[str]) -> list[epath.Path]:
    """Files named by paths or globs (local or remote), sorted per pattern, duplicates removed; missing →
    FileNotFoundError."""
    out: list[epath.Path] = []
    for pat in patterns:
        hits = _glob(pat) if glob.has_magic(pat) else [pat]
        if not hits:
            raise FileNotFoundError(f"--inputs pattern matched no files: {pat}")
        for h in hits:
            p = paths.as_path(h)
            try:
                ok = p.is_file()
            except ImportError as e:
                raise paths.remote_error(h, e) from None
            if not ok:
                raise FileNotFoundError(f"input file not found: {h}")
            if p not in out:
                out.append(p)
    return out


def _str_field(fields: Mapping[str, Any], key: str) -> str:
    v = fields[key]
    if not isinstance(v, str):
        raise BadRecord(f"field {key!r} is {type(v).__name__}, expected a string")
    return v


def _from_messages(messages: Any) -> tuple[str, str]:
    if not isinstance(messages, list):
        raise BadRecord("field 'messages' is not a list")
    user = assistant = None
    for m in messages:
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise BadRecord("each message needs a string 'content'")
        if m.get("role") == "user" and user is None:
            user = m["content"]
        elif m.get("role") == "assistant" and user is not None and assistant is None:
            assistant = m["content"]
    if user is None or assistant is None:
        raise BadRecord("'messages' needs a user message followed by an assistant message")
    return user, assistant


def extract_example(fields: Any, field_map: Mapping[str, str] | None = None) -> Example:
    """Map a parsed record onto an `Example`; raise `BadRecord` naming what is wrong."""
    if not isinstance(fields, Mapping):
        raise BadRecord(f"record is a {type(fields).__name__}, expected an object")
    if field_map:
        missing = [src for src in field_map.values() if src not in fields]
        if missing:
            raise BadRecord(f"missing field(s) {missing}")
        fields = {dst: fields[src] for dst, src in field_map.items()}
    if "messages" in fields and "instruction" not in fields:
        inst, resp = _from_messages(fields["messages"])
    else:
        for ki, kr in FIELD_ALIASES:
            if ki in fields or kr in fields:
                if ki not in fields or kr not in fields:
                    raise BadRecord(f"has {ki if ki in fields else kr!r} but not {kr if ki in fields else ki!r}")
                inst, resp = _str_field(fields, ki), _str_field(fields, kr)
                break
        else:
            raise BadRecord("missing fields: need instruction/response (or prompt/completion, input/output, "
                            "question/answer, messages)")
    cond = fields.get("condition") or "direct"
    if not isinstance(cond, str):
        raise BadRecord(f"field 'condition' is {type(cond).__name__}, expected a string")
    for c in cond.split(","):
        if c.strip() not in CONDITIONS:
            raise BadRecord(f"unknown condition {c.strip()!r} (known: {', '.join(CONDITIONS)})")
    if not resp.strip():
        raise BadRecord("empty response")
    for name, text in (("instruction", inst), ("response", resp)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates from JSON escapes
            raise BadRecord(f"undecodable text in {name}: {e.reason}") from None
    return Example(inst, resp, ",".join(c.strip() for c in cond.split(",")))


def _decode_json(raw: bytes | str) -> Any:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRecord(f"undecodable text (not UTF-8 at byte {e.start})") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadRecord(f"malformed JSON: {e.msg} (column {e.colno})") from None


def iter_jsonl(path: str | os.PathLike, start_line: int = 1) -> Iterator[tuple[int, Any]]:
    """(line, dict | BadRecord) for every non-blank line at or after `start_line` (1-based)."""
    with paths.open_binary(path) as raw_f:
        f = gzip.GzipFile(fileobj=raw_f) if os.fspath(path).endswith(".gz") else raw_f
        for line_no, raw in enumerate(f, start=1):
            if line_no < start_line or not raw.strip():
                continue
            try:
                yield line_no, _decode_json(raw)
            except BadRecord as e:
                yield line_no, e


def iter_parquet(path: str | os.PathLike, start_line: int = 1) -> Iterator[tuple[int, Any]]:
    """(row, dict) per Parquet row (1-based), read in record batches."""
    import pyarrow.parquet as pq

    row = 0
    with paths.open_binary(path) as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=4096):
            if row + batch.num_rows < start_line:
                row += batch.num_rows
                continue
            for rec in batch.to_pylist():
                row += 1
                if row >= start_line:
                    yield row, rec


def iter_file(path: str | os.PathLike, start_line: int = 1) -> Iterator[tuple[int, Any]]:
    name = os.fspath(path).rsplit("/", 1)[-1].lower()
    if name.endswith(".parquet"):
        return iter_parquet(path, start_line)
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")):
        return iter_jsonl(path, start_line)
    raise ValueError(f"{path}: unsupported input format (use .jsonl, .jsonl.gz or .parquet)")


def _to_python(v: Any) -> Any:
    """TFDS data sources return `Text` features as bytes (docs/conventions.md §13 pitfall 8) and numpy scalars."""
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRecord(f"undecodable text (not UTF-8 at byte {e.start})") from None
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return _to_python(v.item())
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        return [_to_python(x) for x in v.tolist()]
    if isinstance(v, Mapping):
        return {k: _to_python(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_to_python(x) for x in v]
    return v


def iter_data_source(source: Any, start: int, end: int) -> Iterator[tuple[int, Any]]:
    """(index + 1, dict | BadRecord) over a random-access source (e.g. `tfds.data_source(...)`) range."""
    for i in range(start, end):
        try:
            yield i + 1, _to_python(source[i])
        except BadRecord as e:
            yield i + 1, e


def open_tfds_source(name: str, split: str, data_dir: str | None = None) -> Any:
    """`tfds.data_source(name, split=...)` over the builder's ArrayRecord files (no TensorFlow, docs/conventions.md
    §10)."""
    import tensorflow_datasets as tfds

    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)


def parse_field_map(spec: str | None) -> dict[str, str] | None:
    """"instruction=question,response=answer[,condition=tag]" → {"instruction": "question", ...}."""
    if not spec:
        return None
    out = {}
    for part in spec.split(","):
        if "=" not in part:
            raise ValueError(f"--field_map entry {part!r} is not dst=src")
        dst, src = (s.strip() for s in part.split("=", 1))
        if dst not in ("instruction", "response", "condition"):
            raise ValueError(f"--field_map target {dst!r} must be instruction, response or condition")
        out[dst] = src
    if "instruction" not in out or "response" not in out:
        raise ValueError("--field_map needs instruction=... and response=...")
    return out
