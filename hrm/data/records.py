"""On-disk format of prepared data: ArrayRecord shards of tokenized examples (see data/README.md).

One record = one example (docs/prefixlm_packing.md §2): a 12-byte header `b"HX"`, token width (2 or 4), reserved byte,
then little-endian uint32 instruction length Li and response length Lo, then Li + Lo token ids (instruction ids i, then
response ids o) as little-endian uint16 (vocab ≤ 65,535) or uint32 — the same width rule as the reference's tokens.npy
(docs/data_format.md §6). Each shard `X.array_record` has a sidecar `X.lengths.npy` (int32 [n, 3]: Li, Lo, head) so the
training pipeline can plan packing without reading records; `head` = number of leading BOQ + condition tokens (kept when
an overlong instruction is truncated from the left), and `X.lines.npy` (int64 [n]: the record's 0-based line or row
index in its source file, the provenance `python -m hrm.data.epochs` prints). Prepared epochs (docs/data_format.md §5)
are `epochs/epoch_{e}.npy`: the global record ids of epoch e in training order. `metadata.json` describes the directory.
Paths may be local or remote (`gs://…`, see hrm/data/paths.py); shards and sidecars are written locally.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hrm.data import paths

MAGIC = b"HX"
HEADER_BYTES = 12
METADATA = "metadata.json"
EPOCHS_DIR = "epochs"
FORMAT_NAME = "hrm-text-shards"
FORMAT_VERSION = 1
LENGTH_BINS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65535 else np.dtype("<u4")


def encode_record(inst: Sequence[int], resp: Sequence[int], dtype: np.dtype) -> bytes:
    """Serialise one example (instruction ids, response ids)."""
    toks = np.concatenate([np.asarray(inst, np.int64).reshape(-1), np.asarray(resp, np.int64).reshape(-1)])
    if toks.size and (toks.min() < 0 or toks.max() > np.iinfo(dtype).max):
        raise ValueError(f"token id out of range for {dtype}")
    head = MAGIC + bytes([dtype.itemsize, 0]) + np.array([len(inst), len(resp)], "<u4").tobytes()
    return head + toks.astype(dtype).tobytes()


def decode_record(rec: bytes) -> tuple[np.ndarray, int]:
    """Return (all ids i‖o as int32, Li)."""
    if rec[:2] != MAGIC:
        raise ValueError("not an hrm-text example record (bad magic)")
    width = rec[2]
    li, lo = np.frombuffer(rec, "<u4", count=2, offset=4)
    toks = np.frombuffer(rec, "<u2" if width == 2 else "<u4", offset=HEADER_BYTES)
    if toks.size != li + lo:
        raise ValueError(f"corrupt record: header says {li}+{lo} tokens, body has {toks.size}")
    return toks.astype(np.int32), int(li)


def decode_records(recs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised `decode_record` over many records: (flat ids int32 of all i‖o concatenated, Li [n], Lo [n])."""
    if not recs:
        return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    width = recs[0][2]
    buf = b"".join(recs)
    nbytes = np.fromiter(map(len, recs), np.int64, len(recs))
    u8 = np.frombuffer(buf, np.uint8)
    byte_starts = np.cumsum(nbytes) - nbytes
    if not ((u8[byte_starts] == MAGIC[0]) & (u8[byte_starts + 1] == MAGIC[1]) & (u8[byte_starts + 2] == width)).all():
        raise ValueError("bad record header (magic or mixed token widths)")
    words = np.frombuffer(buf, "<u2" if width == 2 else "<u4").astype(np.int64)
    starts = byte_starts // width
    hdr = HEADER_BYTES // width
    if width == 2:
        li = words[starts + 2] | (words[starts + 3] << 16)
        lo = words[starts + 4] | (words[starts + 5] << 16)
    else:
        li, lo = words[starts + 1], words[starts + 2]
    if not (nbytes // width - hdr == li + lo).all():
        raise ValueError("corrupt record: header lengths do not match the body")
    keep = np.ones(len(words), bool)
    keep[(starts[:, None] + np.arange(hdr)).ravel()] = False
    return words[keep].astype(np.int32), li, lo


class ShardReader:
    """Random access by global record index over shards (one ArrayRecordReader per shard, opened lazily).

    Reads each shard's records in one `read(positions)` call without a thread pool (cheaper than
    `ArrayRecordDataSource.__getitems__` for the few thousand small records of one batch). Picklable.
    """

    def __init__(self, shard_files: Sequence[str | os.PathLike], counts: Sequence[int]):
        self.paths = [os.fspath(p) for p in shard_files]
        self.bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._readers: list[Any] = [None] * len(self.paths)

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def __getstate__(self) -> dict:
        return {"paths": self.paths, "bounds": self.bounds}

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._readers = [None] * len(self.paths)

    def _reader(self, s: int) -> Any:
        if self._readers[s] is None:
            from array_record.python.array_record_module import ArrayRecordReader

            # ArrayRecord opens POSIX paths only: remote shards are staged into the local cache once (paths.py)
            r = ArrayRecordReader(paths.local_file(self.paths[s]), options="readahead_buffer_size:0",
                                  file_reader_buffer_size=32768)
            if r.num_records() != self.bounds[s + 1] - self.bounds[s]:
                raise ValueError(f"{self.paths[s]}: {r.num_records()} records, metadata says "
                                 f"{self.bounds[s + 1] - self.bounds[s]}")
            self._readers[s] = r
        return self._readers[s]

    def read(self, idx: np.ndarray) -> list[bytes]:
        idx = np.asarray(idx, np.int64)
        shard = np.searchsorted(self.bounds, idx, side="right") - 1
        out: list[bytes] = [b""] * len(idx)
        for s in np.unique(shard).tolist():
            sel = np.flatnonzero(shard == s)
            recs = self._reader(s).read((idx[sel] - self.bounds[s]).tolist())
            for k, r in zip(sel.tolist(), recs):
                out[k] = r
        return out


def head_length(inst: Sequence[int], boq: int, condition_ids: frozenset[int]) -> int:
    """Number of leading structural tokens (BOQ + conditions) of an instruction."""
    n = 1 if len(inst) and inst[0] == boq else 0
    while n < len(inst) - 1 and inst[n] in condition_ids:
        n += 1
    return n


class ShardWriter:
    """Writes one ArrayRecord shard plus its lengths sidecar; files appear atomically on `close()`."""

    def __init__(self, path: str | Path, dtype: np.dtype, boq: int, condition_ids: frozenset[int]):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._writer = ArrayRecordWriter(str(self._tmp), "group_size:1")
        self._dtype, self._boq, self._conds = dtype, boq, condition_ids
        self._lengths: list[tuple[int, int, int]] = []
        self._lines: list[int] = []

    def write(self, inst: Sequence[int], resp: Sequence[int], line: int = -1) -> None:
        """Append one example; `line` = its 0-based line/row in the source file (-1 = unknown)."""
        self._writer.write(encode_record(inst, resp, self._dtype))
        self._lengths.append((len(inst), len(resp), head_length(inst, self._boq, self._conds)))
        self._lines.append(line)

    def __len__(self) -> int:
        return len(self._lengths)

    def close(self) -> None:
        self._writer.close()
        lengths = np.asarray(self._lengths, np.int32).reshape(-1, 3)
        np.save(lengths_path(self.path), lengths)
        np.save(lines_path(self.path), np.asarray(self._lines, np.int64))
        os.replace(self._tmp, self.path)


def _sidecar(shard: Any, suffix: str) -> Any:
    s = os.fspath(shard).removesuffix(".array_record") + suffix
    return s if isinstance(shard, str) else type(shard)(s)


def lengths_path(shard: Any) -> Any:
    """`X.lengths.npy` beside shard `X.array_record` (same path type as `shard`)."""
    return _sidecar(shard, ".lengths.npy")


def lines_path(shard: Any) -> Any:
    """`X.lines.npy` beside shard `X.array_record` (same path type as `shard`)."""
    return _sidecar(shard, ".lines.npy")


def length_histogram(total_lengths: np.ndarray) -> dict[str, int]:
    """Counts of Li + Lo per bucket `<=b` (plus `>last`)."""
    edges = np.asarray(LENGTH_BINS)
    idx = np.searchsorted(edges, total_lengths, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    keys = [f"<={b}" for b in LENGTH_BINS] + [f">{LENGTH_BINS[-1]}"]
    return {k: int(c) for k, c in zip(keys, counts)}


def merge_histograms(hists: Sequence[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for h in hists:
        for k, v in h.items():
            out[k] = out.get(k, 0) + v
    keys = [f"<={b}" for b in LENGTH_BINS] + [f">{LENGTH_BINS[-1]}"]
    return {k: out.get(k, 0) for k in keys}


def read_metadata(data_dir: str | os.PathLike) -> dict:
    p = paths.join(data_dir, METADATA)
    if not paths.exists(p):
        raise FileNotFoundError(f"{p} not found: prepare the data with `python -m hrm.data.prepare`")
    meta = json.loads(paths.read_text(p))
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{p}: not an {FORMAT_NAME} directory (format={meta.get('format')!r})")
    return meta


def shard_paths(data_dir: str | os.PathLike, meta: dict | None = None) -> list[str]:
    """Shard paths as strings (absolute local paths or URIs)."""
    meta = meta or read_metadata(data_dir)
    return [os.fspath(paths.join(data_dir, s["path"])) for s in meta["shards"]]


def load_lengths(data_dir: str | os.PathLike, meta: dict | None = None) -> np.ndarray:
    """Concatenated [N, 3] (Li, Lo, head) over all shards, in global record order."""
    parts = [paths.load_npy(lengths_path(p)) for p in shard_paths(data_dir, meta)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 3), np.int32)


def load_lines(data_dir: str | os.PathLike, meta: dict | None = None) -> np.ndarray:
    """int64 [N]: each record's 0-based line/row in its source file. Directories prepared before provenance was
    recorded have no `.lines.npy` sidecars: FileNotFoundError saying to prepare again."""
    parts = []
    for p in shard_paths(data_dir, meta):
        lp = lines_path(p)
        if not paths.exists(lp):
            raise FileNotFoundError(f"{lp} not found: {data_dir} was prepared without per-example provenance; "
                                    "prepare it again with this version of `python -m hrm.data.prepare`")
        parts.append(paths.load_npy(lp))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def record_sources(meta: dict) -> tuple[list[str], np.ndarray]:
    """(source labels in first-appearance order, int32 [N] label index per record) from the shard list."""
    labels: list[str] = []
    index: dict[str, int] = {}
    ids = []
    for sh in meta["shards"]:
        k = index.setdefault(sh["source"], len(labels))
        if k == len(labels):
            labels.append(sh["source"])
        ids.append(np.full(sh["num_examples"], k, np.int32))
    return labels, (np.concatenate(ids) if ids else np.zeros(0, np.int32))


def num_prepared_epochs(meta: dict) -> int:
    """Epochs realised at preparation time (0 = a single pool, reshuffled per epoch by the pipeline)."""
    return int((meta.get("epochs") or {}).get("count", 0))


def epoch_path(data_dir: str | os.PathLike, epoch: int) -> Any:
    return paths.join(data_dir, EPOCHS_DIR, f"epoch_{epoch}.npy")


def load_epoch(data_dir: str | os.PathLike, epoch: int, mmap: bool = True) -> np.ndarray:
    """Global record ids of prepared epoch `epoch`, in training order."""
    return paths.load_npy(epoch_path(data_dir, epoch), mmap=mmap)


def index_dtype(n: int) -> np.dtype:
    """Smallest integer dtype for record ids < n (int32 up to 2^31 records)."""
    return np.dtype(np.int32) if n < 2 ** 31 else np.dtype(np.int64)
