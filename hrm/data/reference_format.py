"""Import the reference's on-disk format (docs/data_format.md §6) into our shards without re-tokenising.

A reference directory holds `tokens.npy` (flat ids, memory-mapped), `epoch_{e}/{inst_start,inst_len,resp_start,
resp_len}.npy` and `metadata.json` with `tokenizer_info` = {tokenizer_path, boq, eoq, eoa, condition_mapping,
vocab_size}. data_io realised every epoch by stratified sampling and shuffled it (docs/data_format.md §5), so we import
ALL `epoch_*` directories (or one, with `epoch=`): the distinct examples (identified by their instruction start in
tokens.npy) become records in tokens.npy order, and each epoch becomes `epochs/epoch_{e}.npy`, its rows in the
stored order (repeats, e.g. the 10× repeats of small sets, stay repeats). The provenance of a record is
`<ref>/tokens.npy` and its rank among the distinct examples (the reference keeps no source file names).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from hrm.data import paths, records
from hrm.data.shard_units import PROGRESS, write_json_atomic
from hrm.data.tokenizer import CONDITION_TOKENS, SpecialIds, file_sha256, padded_size, resolve_tokenizer_path

FIELDS = ("inst_start", "inst_len", "resp_start", "resp_len")


def _special_ids(info: dict, ref_dir: str) -> SpecialIds:
    """Special ids from tokenizer_info; condition_mapping values may be ids or token strings."""
    mapping = info.get("condition_mapping") or {}
    conds: dict[str, int] = {}
    tok = None
    for name in CONDITION_TOKENS:
        v = mapping.get(name)
        if isinstance(v, list) and len(v) == 1:
            v = v[0]
        if isinstance(v, (int, np.integer)):
            conds[name] = int(v)
            continue
        if tok is None:
            from hrm.data.tokenizer import load_tokenizer

            path = _tokenizer_path(info, ref_dir)
            try:
                tok = load_tokenizer(path)
            except FileNotFoundError:
                raise ValueError(f"{ref_dir}/metadata.json: condition {name!r} is not an id and the tokenizer "
                                 f"{path} is not available to look it up") from None
        conds[name] = tok.special.conditions[name]
    pad = int(info.get("pad", 0))
    return SpecialIds(pad=pad, boq=int(info["boq"]), eoq=int(info["eoq"]), eoa=int(info["eoa"]), conditions=conds)


def _tokenizer_path(info: dict, ref_dir: str) -> str:
    p = str(info.get("tokenizer_path") or "")
    return p if p.startswith("/") or paths.is_remote(p) else os.fspath(paths.join(ref_dir, p))


def list_epochs(ref_dir: str) -> list[int]:
    """Sorted epoch numbers of the `epoch_{e}/` directories."""
    try:
        names = [p.name for p in paths.as_path(ref_dir).iterdir()]
    except ImportError as e:
        raise paths.remote_error(ref_dir, e) from None
    return sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"epoch_(\d+)", n)))


def read_reference_dir(ref_dir: str, epochs: list[int] | None = None) -> dict[str, Any]:
    """Load metadata, tokens (memory-mapped) and the index arrays of `epochs` (default all); validate bounds."""
    ref = os.fspath(paths.as_path(ref_dir))
    meta_path = paths.join(ref, "metadata.json")
    if not paths.exists(meta_path):
        raise FileNotFoundError(f"{meta_path} not found (docs/data_format.md §6 layout expected)")
    meta = json.loads(paths.read_text(meta_path))
    info = meta.get("tokenizer_info")
    if not isinstance(info, dict):
        raise ValueError(f"{meta_path}: missing tokenizer_info")
    tokens = np.load(paths.local_file(paths.join(ref, "tokens.npy")), mmap_mode="r")
    epochs = list_epochs(ref) if epochs is None else list(epochs)
    if not epochs:
        raise FileNotFoundError(f"{ref}: no epoch_*/ directories")
    index = {}
    for e in epochs:
        ep = paths.join(ref, f"epoch_{e}")
        if not paths.exists(ep):
            raise FileNotFoundError(f"{ep} not found (epochs present: {list_epochs(ref)})")
        idx = {k: paths.load_npy(ep / f"{k}.npy").astype(np.int64) for k in FIELDS}
        n = len(idx["inst_start"])
        if any(len(v) != n for v in idx.values()):
            raise ValueError(f"{ep}: index arrays have different lengths")
        for s, ln in (("inst_start", "inst_len"), ("resp_start", "resp_len")):
            bad = np.flatnonzero((idx[s] < 0) | (idx[ln] < 0) | (idx[s] + idx[ln] > len(tokens)))
            if bad.size:
                raise ValueError(f"{ep}/{s}.npy row {int(bad[0])}: span outside tokens.npy (len {len(tokens)})")
        index[e] = idx
    vocab = info.get("vocab_size") or meta.get("vocab_size") or int(tokens.max()) + 1
    return {"tokens": tokens, "index": index, "info": info, "special": _special_ids(info, ref),
            "vocab_size": int(vocab), "ref": ref}


def _distinct_examples(ref: str, index: dict[int, dict], skip_bad: bool) -> tuple[dict, dict[int, np.ndarray], list]:
    """Pool of distinct examples (sorted by inst_start) and each epoch's rows as pool ids; bad rows reported."""
    skipped, kept = [], {}
    for e, idx in index.items():
        bad = np.flatnonzero(idx["resp_len"] < 1)
        if bad.size and not skip_bad:
            raise ValueError(f"{ref}/epoch_{e}: row {int(bad[0])}: empty response (use --skip_bad to skip and count)")
        skipped += [{"file": f"{ref}/epoch_{e}", "line": int(r), "reason": "empty response"} for r in bad]
        kept[e] = np.flatnonzero(idx["resp_len"] >= 1)
    starts = np.concatenate([index[e]["inst_start"][kept[e]] for e in index])
    pool_starts, first = np.unique(starts, return_index=True)
    pool = {k: np.concatenate([index[e][k][kept[e]] for e in index])[first] for k in FIELDS}
    epochs = {}
    for e, idx in index.items():
        ids = np.searchsorted(pool_starts, idx["inst_start"][kept[e]])
        for k in FIELDS[1:]:
            diff = np.flatnonzero(pool[k][ids] != idx[k][kept[e]])
            if diff.size:
                r = int(kept[e][diff[0]])
                raise ValueError(f"{ref}/epoch_{e}: row {r}: same inst_start as another row but a different {k}")
        epochs[e] = ids.astype(records.index_dtype(len(pool_starts)))
    return pool, epochs, skipped


def import_reference(ref_dir: str, out_dir: str | os.PathLike, *, epoch: int | None = None,
                     shard_size: int = 100_000, skip_bad: bool = False) -> tuple[list[dict], dict, list[np.ndarray]]:
    """Write the distinct examples as shards (resumable per shard); returns (shard stats, tokenizer/special/source
    info, prepared epoch arrays in epoch order). Rows with an empty response are bad records."""
    data = read_reference_dir(ref_dir, None if epoch is None else [epoch])
    ref, out = data["ref"], os.fspath(out_dir)
    tokens, special = data["tokens"], data["special"]
    pool, epochs, skipped = _distinct_examples(ref, data["index"], skip_bad)
    dtype = records.token_dtype(data["vocab_size"])
    cond_ids = frozenset(special.conditions.values())
    progress = os.path.join(out, PROGRESS)
    label = f"{ref}/tokens.npy"
    n = len(pool["inst_start"])
    for chunk, lo in enumerate(range(0, n, shard_size)):
        marker = os.path.join(progress, f"u00000-{chunk:05d}.json")
        if os.path.isfile(marker):
            continue
        name = f"u00000-{chunk:05d}.array_record"
        writer = records.ShardWriter(os.path.join(out, name), dtype, special.boq, cond_ids)
        hi = min(lo + shard_size, n)
        for r in range(lo, hi):
            s, li = pool["inst_start"][r], pool["inst_len"][r]
            t, lr = pool["resp_start"][r], pool["resp_len"][r]
            writer.write(np.asarray(tokens[s:s + li]), np.asarray(tokens[t:t + lr]), line=r)
        writer.close()
        lens = np.stack([pool["inst_len"][lo:hi], pool["resp_len"][lo:hi]], 1)
        stats = {"path": name, "unit": 0, "source": label, "skipped": skipped if chunk == 0 else [],
                 "num_examples": hi - lo, "inst_tokens": int(lens[:, 0].sum()), "resp_tokens": int(lens[:, 1].sum()),
                 "num_tokens": int(lens.sum()), "histogram": records.length_histogram(lens.sum(1)), "next_line": hi}
        write_json_atomic(Path(marker), stats)
    info = data["info"]
    tok_path = _tokenizer_path(info, ref)
    try:
        tok_path = os.fspath(resolve_tokenizer_path(tok_path))
    except FileNotFoundError:
        pass  # recorded as given; the hash stays null
    tokenizer = {"path": tok_path, "source_path": tok_path, "backend": "reference",
                 "sha256": file_sha256(tok_path) if os.path.isfile(tok_path) else None,
                 "vocab_size": data["vocab_size"], "padded_vocab_size": padded_size(data["vocab_size"])}
    stats = [json.loads(open(os.path.join(progress, f)).read()) for f in sorted(os.listdir(progress))
             if re.fullmatch(r"u00000-\d{5}\.json", f)]
    return stats, {"tokenizer": tokenizer, "special": special,
                   "source": {"reference_dir": ref, "epochs": sorted(epochs)}}, [epochs[e] for e in sorted(epochs)]
