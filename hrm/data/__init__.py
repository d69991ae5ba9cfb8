"""Data: tokenizers, offline preparation into ArrayRecord shards, and the Grain packing pipeline
(docs/prefixlm_packing.md, docs/data_format.md).

Public entry points:
  load_tokenizer(path)                      -> Tokenizer (SentencePiece .model or HF tokenizer.json)
  load_dataset_tokenizer(data_dir)          -> the Tokenizer recorded in a prepared directory's metadata
  make_train_iterator(data_dir, *, seq_len, global_batch_rows, seed, ...) -> TrainIterator
  to_global(batch, mesh, batch_partition_spec) -> dict of global jax.Array
  ensure_default_dataset(root=DEFAULT_ROOT) -> Path of the prepared built-in dataset
Command lines: `python -m hrm.data.prepare` (preparation, mixtures, epochs), `python -m hrm.data.epochs` (inspector).
Heavy modules (grain, jax) are imported lazily so tokenizer-only users stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hrm.data.tokenizer import SpecialIds, Tokenizer, load_tokenizer, train_sentencepiece

__all__ = ["SpecialIds", "Tokenizer", "load_tokenizer", "train_sentencepiece", "load_dataset_tokenizer",
           "make_train_iterator", "to_global", "ensure_default_dataset", "read_metadata"]


def load_dataset_tokenizer(data_dir: str | Path) -> Tokenizer:
    """Tokenizer stored with a prepared data directory (metadata `tokenizer.path`, relative to the directory;
    the directory may be `gs://…`)."""
    from hrm.data import paths
    from hrm.data.records import read_metadata as _read

    meta = _read(data_dir)
    p = str(meta["tokenizer"]["path"])
    tok = load_tokenizer(p if p.startswith("/") or paths.is_remote(p) else paths.join(data_dir, p))
    want = meta["tokenizer"].get("sha256")
    if want and tok.file_hash != want:
        raise ValueError(f"{data_dir}: tokenizer {tok.path} has sha256 {tok.file_hash}, metadata says {want}")
    return tok


def __getattr__(name: str) -> Any:
    if name in ("make_train_iterator", "to_global"):
        from hrm.data import pipeline

        return getattr(pipeline, name)
    if name == "ensure_default_dataset":
        from hrm.data.default_dataset import ensure_default_dataset

        return ensure_default_dataset
    if name == "read_metadata":
        from hrm.data.records import read_metadata

        return read_metadata
    raise AttributeError(name)
