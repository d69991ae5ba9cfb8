"""Release-file access with integrity checks: existence, sha256 and item counts (docs/eval_protocol.md §12 item 9).

Known checksums come from the benchmark data folder's SOURCES.md and SHA256SUMS (shared/benchdata). A mismatch
(or a count that differs from docs/eval_protocol.md §12) is a `DataIntegrityWarning` naming the file, never an error: a
user may legitimately evaluate a re-serialised copy. A missing file is a `MissingDataError` naming the file and what it
is needed for.

Multi-file releases (MMLU CSVs, MATH JSONs) are checked per directory against an aggregate digest: sha256 of the
lines "<sha256>  <name>\\n" over the directory's files sorted by name (computed from benchdata/SHA256SUMS). On a
mismatch, if the data directory holds a SHA256SUMS listing, the individual files that differ from it are named.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Iterable, Optional

from hrm.data.tokenizer import file_sha256
from hrm.eval.errors import DataIntegrityWarning, MissingDataError, TaskError

# Full sha256 of single release files (SOURCES.md, SHA256SUMS). HellaSwag train: only the published prefix is known.
KNOWN_SHA256: dict[str, str] = {
    "gsm8k/test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
    "arc/ARC-Challenge-Test.jsonl": "9fa8ffb3e3a1f88cb302d53dd95aae81e39209ad9bcf974376b319d8fd35717c",
    "arc/ARC-Challenge-Dev.jsonl": "55224364abd2477f66a9a57c5cbef109fb71d83019aa5e37aec0e7ab757746ca",
    "boolq/dev.jsonl": "ebc29ea3808c5c611672384b3de56e83349fe38fc1fe876fd29b674d81d0a80a",
    "boolq/train.jsonl": "cc7a79d44479867e8323a7b0c5c1d82edf516ca34912201f9384c3a3d098d8db",
    "winogrande/dev.jsonl": "1aeac79cf46a3dcbe59a71ca7e5372a1490cde2b4ae2387dc56f00378104d2e8",
    "winogrande/train_debiased.jsonl": "c6d40c05ee57ee9ca6c101afd6429b134b779e10bfaf2c3b89109d5f8ea75b89",
    "hellaswag/hellaswag_val.jsonl": "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588",
    "hellaswag/hellaswag_train.jsonl": "dae5e692",
    "drop/drop_dataset_dev.json": "f25f09a9e939e946dbb37799b3b3e2c2a9f7416e524017cc4a79780f2ba6edca",
}

# Aggregate digests of multi-file directories (see module docstring), from benchdata/SHA256SUMS.
KNOWN_DIR_SHA256: dict[str, str] = {
    "mmlu/dev": "00d0c3e2d00d9fd4f38ecf888d1053a39eb455ce7c5903e6626973e5a246fa5c",
    "mmlu/test": "1f0cec94ac3236778d79014c784c2b2e1e7d5a14bc3a332891c982e24f70d533",
    "math/test/algebra": "6b55fb5a2b1dafbb5af1ded73a6fa54611162eb7a1a1a0b8640caf6ac8fde3e7",
    "math/test/counting_and_probability": "fb8418193ca04438dab0bdf75c9e996292d28ae40b821a244e1bda1b27b55ded",
    "math/test/geometry": "3a3cfbcf15c276021004ffb657b42bd83869ff539717a47aa6a92a739dfc0add",
    "math/test/intermediate_algebra": "a4a669ec84f62ed8cbe9754a4d1eab7f607f1f6fb6a49df04c9454a536e765a6",
    "math/test/number_theory": "29d142bd0e0a80eb0947ba56b27655c04222ada98a5e9bd658cb2a1cf8d3da37",
    "math/test/prealgebra": "6a6028b6b16f1abdad6d6f5924c4d94220536ad6e9a5272fec14735e5176bc04",
    "math/test/precalculus": "95a1ea298f8cde4c2027ee386051fe36eec63d83f88c0e36e294448cb8348c9e",
}

# docs/eval_protocol.md §12 item 9 (and SOURCES.md for the few-shot sources).
EXPECTED_COUNTS: dict[str, int] = {
    "mmlu/test": 14042, "mmlu/dev": 285,
    "arc/ARC-Challenge-Test.jsonl": 1172, "arc/ARC-Challenge-Dev.jsonl": 299,
    "hellaswag/hellaswag_val.jsonl": 10042, "hellaswag/hellaswag_train.jsonl": 39905,
    "winogrande/dev.jsonl": 1267, "winogrande/train_debiased.jsonl": 9248,
    "boolq/dev.jsonl": 3270, "boolq/train.jsonl": 9427,
    "drop/drop_dataset_dev.json": 9536,
    "gsm8k/test.jsonl": 1319,
    "math/test": 5000,
}


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, cached per (path, size, mtime) so repeated loads stay cheap."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = file_sha256(path)
    return _HASH_CACHE[key]


def require(data_dir: Path, rel: str, purpose: str) -> Path:
    """`data_dir/rel`, or a `MissingDataError` naming the file and why it is needed."""
    path = Path(data_dir) / rel
    if not path.exists():
        raise MissingDataError(
            f"missing benchmark file {path} (needed for {purpose}). Provide the original release file at this path "
            f"(see docs/eval_protocol.md and benchdata/SOURCES.md for where it comes from and its sha256).")
    return path


def check_file(data_dir: Path, rel: str) -> None:
    """Warn (naming the file) if `rel`'s sha256 differs from the known release checksum."""
    known = KNOWN_SHA256.get(rel)
    if known is None:
        return
    digest = sha256_file(Path(data_dir) / rel)
    if not digest.startswith(known):
        warnings.warn(f"{Path(data_dir) / rel}: sha256 {digest} differs from the known release checksum "
                      f"{known}{'…' if len(known) < 64 else ''}; results may not be comparable "
                      "(docs/eval_protocol.md §12)",
                      DataIntegrityWarning, stacklevel=2)


def dir_digest(files: Iterable[Path], root: Path) -> tuple[str, dict[str, str]]:
    """Aggregate digest of `files` (names relative to `root`) and the per-file sha256 map."""
    per_file = {p.relative_to(root).as_posix(): sha256_file(p) for p in files}
    lines = "".join(f"{per_file[name]}  {name}\n" for name in sorted(per_file))
    return hashlib.sha256(lines.encode()).hexdigest(), per_file


def check_dir(data_dir: Path, rel: str, files: list[Path]) -> None:
    """Warn if the files of directory `rel` differ from the release; name the differing files when possible."""
    known = KNOWN_DIR_SHA256.get(rel)
    if known is None:
        return
    root = Path(data_dir) / rel
    digest, per_file = dir_digest(files, root)
    if digest == known:
        return
    listing = _read_sums(Path(data_dir) / "SHA256SUMS")
    bad = [f"{root / name}" for name, h in sorted(per_file.items())
           if listing is not None and listing.get(f"{rel}/{name}") not in (None, h)]
    detail = f"files differing from SHA256SUMS: {', '.join(bad)}" if bad else (
        f"{len(files)} files; no per-file listing to compare against")
    warnings.warn(f"{root}: contents differ from the known release (aggregate sha256 {digest} != {known}); {detail}",
                  DataIntegrityWarning, stacklevel=2)


def _read_sums(path: Path) -> Optional[dict[str, str]]:
    if not path.exists():
        return None
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            out[parts[1].strip().removeprefix("./")] = parts[0]
    return out


def check_count(data_dir: Path, rel: str, count: int) -> None:
    """Warn (naming the file) if `count` differs from the docs/eval_protocol.md §12 expected count for `rel`."""
    expected = EXPECTED_COUNTS.get(rel)
    if expected is not None and count != expected:
        warnings.warn(f"{Path(data_dir) / rel}: {count} items, expected {expected} (docs/eval_protocol.md §12 item 9)",
                      DataIntegrityWarning, stacklevel=2)


def read_jsonl(data_dir: Path, rel: str, purpose: str) -> list[tuple[int, dict]]:
    """(0-based line number, parsed object) for every non-blank line of a checked JSONL release file.

    Existence, sha256 and line count are checked. Line numbers are kept because some ids are "<file>:<line>".
    """
    path = require(data_dir, rel, purpose)
    check_file(data_dir, rel)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")  # not splitlines(): U+2028 may occur inside JSON strings
    rows = []
    for i, line in enumerate(lines):
        if line.strip():
            try:
                rows.append((i, json.loads(line)))
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}:{i + 1}: not valid JSON ({e})") from None
    check_count(data_dir, rel, len(rows))
    return rows
