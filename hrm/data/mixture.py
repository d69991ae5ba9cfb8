"""Per-epoch stratified sampling of the training mixture (docs/data_format.md §2, §5), deterministic from a seed.

A mixture file is YAML:

    description: optional text
    rules:                       # the first rule whose prefix matches the source file's name wins
      - {prefix: "SYNTH__", max_per_file: 20000}
      - {prefix: "gsm8k_train.jsonl", repeat: 10}

A file no rule matches contributes all its rows once per epoch. Per file and epoch we take
`min(max_per_file, rows) × repeat` rows by walking a per-file random permutation with a persistent cursor; when the
permutation is exhausted it is redrawn, with the rows already taken in the current epoch placed last, so later epochs
see new rows and an epoch repeats a row only when it asks for more rows than the file has (repeat > 1). Then all rows
of the epoch are permuted globally. Random streams: file `name` uses `default_rng([seed, crc32(name)])`, the global
permutation of epoch e `default_rng([seed, EPOCH_STREAM, e])`, so adding a file does not change another file's draws.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import zlib
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("hrm.data")

RULE_KEYS = ("prefix", "max_per_file", "repeat")
TOP_KEYS = ("rules", "description")
EPOCH_STREAM = 0x65706F63  # "epoc": separates the global-permutation stream from per-file streams


class MixtureError(ValueError):
    """A mixture file that cannot be used; the message names the file and the rule."""


@dataclasses.dataclass(frozen=True)
class Rule:
    prefix: str
    max_per_file: int | None = None  # None = all rows
    repeat: int = 1

    def take(self, rows: int) -> int:
        """Rows drawn per epoch from a file of `rows` rows: min(max_per_file, rows) × repeat."""
        cap = rows if self.max_per_file is None else min(self.max_per_file, rows)
        return cap * self.repeat


@dataclasses.dataclass(frozen=True)
class Mixture:
    rules: tuple[Rule, ...]
    path: str = "<inline>"
    sha256: str = ""

    def match(self, name: str) -> int | None:
        """Index of the first rule whose prefix starts `name`, or None."""
        for i, r in enumerate(self.rules):
            if name.startswith(r.prefix):
                return i
        return None

    def to_json(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "rules": [dataclasses.asdict(r) for r in self.rules]}


def _positive_int(v: Any, what: str, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise MixtureError(f"{where}: {what} must be a positive integer, got {v!r}")
    return v


def parse_mixture(obj: Any, path: str = "<inline>", sha256: str = "") -> Mixture:
    """Validate a parsed mixture document; errors name `path` and the rule (1-based, with its prefix)."""
    if not isinstance(obj, dict):
        raise MixtureError(f"{path}: expected a mapping with a 'rules' list, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(TOP_KEYS))
    if unknown:
        raise MixtureError(f"{path}: unknown top-level key(s) {unknown} (known: {', '.join(TOP_KEYS)})")
    raw = obj.get("rules")
    if not isinstance(raw, list) or not raw:
        raise MixtureError(f"{path}: 'rules' must be a non-empty list of {{prefix, max_per_file, repeat}}")
    rules = []
    for i, r in enumerate(raw, 1):
        if not isinstance(r, dict):
            raise MixtureError(f"{path}: rule {i}: expected a mapping, got {r!r}")
        where = f"{path}: rule {i} (prefix {r.get('prefix')!r})"
        bad = sorted(set(r) - set(RULE_KEYS))
        if bad:
            raise MixtureError(f"{where}: unknown key(s) {bad} (known: {', '.join(RULE_KEYS)})")
        prefix = r.get("prefix")
        if not isinstance(prefix, str) or not prefix:
            raise MixtureError(f"{where}: 'prefix' must be a non-empty string")
        cap = r.get("max_per_file")
        cap = None if cap is None else _positive_int(cap, "max_per_file", where)
        rep = _positive_int(r.get("repeat", 1), "repeat", where)
        rules.append(Rule(prefix, cap, rep))
    return Mixture(tuple(rules), path, sha256)


def load_mixture(path: str) -> Mixture:
    """Read and validate a mixture YAML file (local or remote)."""
    import yaml

    from hrm.data import paths

    if not paths.exists(path):
        raise FileNotFoundError(f"mixture file not found: {path}")
    text = paths.read_bytes(path)
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MixtureError(f"{path}: malformed YAML{at}: {getattr(e, 'problem', None) or e}") from None
    return parse_mixture(obj, str(path), hashlib.sha256(text).hexdigest())


def _file_stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def draw_file(rows: int, take: int, epochs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices (0-based within the file) drawn per epoch: a persistent cursor over a random permutation.

    On exhaustion the permutation is redrawn with the rows already taken this epoch last, so an epoch holds
    `take` distinct rows whenever take ≤ rows.
    """
    perm, cursor, out = rng.permutation(rows), 0, []
    for _ in range(epochs):
        parts, need = [], take
        while need > 0:
            if cursor == rows:
                taken = np.zeros(rows, bool)
                if parts:
                    taken[np.concatenate(parts)] = True
                perm = np.concatenate([rng.permutation(np.flatnonzero(~taken)), rng.permutation(np.flatnonzero(taken))])
                cursor = 0
            k = min(need, rows - cursor)
            parts.append(perm[cursor:cursor + k])
            cursor += k
            need -= k
        out.append(np.concatenate(parts) if parts else np.zeros(0, np.int64))
    return out


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One source file: `name` (unique key: report, random stream), its global record ids in line order, and the
    file name rules are matched against (`match_name`, default `name`)."""

    name: str
    records: np.ndarray
    match_name: str = ""


def sample_epochs(files: Sequence[SourceFile], mixture: Mixture | None, epochs: int,
                  seed: int) -> tuple[list[np.ndarray], dict]:
    """Realise `epochs` epochs: per-epoch arrays of global record ids (globally permuted) and a report.

    Without a mixture every file contributes all its rows once per epoch (one fresh permutation per epoch).
    Rules that match no file are reported with a warning.
    """
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    per_epoch: list[list[np.ndarray]] = [[] for _ in range(epochs)]
    report: dict[str, dict] = {}
    used: set[int] = set()
    for f in sorted(files, key=lambda f: f.name):
        k = mixture.match(f.match_name or f.name) if mixture else None
        rule = mixture.rules[k] if k is not None else Rule("")
        if k is not None:
            used.add(k)
        rows = len(f.records)
        take = rule.take(rows) if rows else 0
        report[f.name] = {"rows": rows, "rule": rule.prefix if k is not None else None, "per_epoch": take}
        if not take:
            continue
        for e, local in enumerate(draw_file(rows, take, epochs, _file_stream(seed, f.name))):
            per_epoch[e].append(np.asarray(f.records)[local])
    if mixture:
        for i, r in enumerate(mixture.rules):
            if i not in used:
                log.warning("%s: rule %d (prefix %r) matches no input file", mixture.path, i + 1, r.prefix)
    out = []
    for e, parts in enumerate(per_epoch):
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        out.append(ids[np.random.default_rng([seed, EPOCH_STREAM, e]).permutation(len(ids))])
    return out, report
