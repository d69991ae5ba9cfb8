"""Import the reference's on-disk format (SPEC §6.6) into our shards without re-tokenising.

A reference directory holds `tokens.npy` (flat ids, memory-mapped), `epoch_{e}/{inst_start,inst_len,resp_start,
resp_len}.npy` and `metadata.json` with `tokenizer_info` = {tokenizer_path, boq, eoq, eoa, condition_mapping,
vocab_size}. The reference pre-samples and pre-shuffles one row list per epoch (SPEC §6.5); our pipeline shuffles per
epoch itself, so we import the rows of ONE epoch (default 0) as the example pool, in their stored order. Repeated rows
(the 10× repeats of small sets) stay repeated, so the mixture of that epoch is preserved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hrm.data import records
from hrm.data.shard_units import PROGRESS, write_json_atomic
from hrm.data.tokenizer import CONDITION_TOKENS, SpecialIds, file_sha256, padded_size, resolve_tokenizer_path


def _special_ids(info: dict, ref_dir: Path) -> SpecialIds:
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

            path = Path(info.get("tokenizer_path") or "")
            path = path if path.is_absolute() else ref_dir / path
            try:
                tok = load_tokenizer(path)
            except FileNotFoundError:
                raise ValueError(f"{ref_dir}/metadata.json: condition {name!r} is not an id and the tokenizer "
                                 f"{path} is not available to look it up") from None
        conds[name] = tok.special.conditions[name]
    pad = int(info.get("pad", 0))
    return SpecialIds(pad=pad, boq=int(info["boq"]), eoq=int(info["eoq"]), eoa=int(info["eoa"]), conditions=conds)


def read_reference_dir(ref_dir: str | Path, epoch: int = 0) -> dict[str, Any]:
    """Load index arrays and metadata of one epoch; validate bounds against tokens.npy."""
    ref = Path(ref_dir)
    meta_path = ref / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found (SPEC §6.6 layout expected)")
    meta = json.loads(meta_path.read_text())
    info = meta.get("tokenizer_info")
    if not isinstance(info, dict):
        raise ValueError(f"{meta_path}: missing tokenizer_info")
    tokens = np.load(ref / "tokens.npy", mmap_mode="r")
    ep = ref / f"epoch_{epoch}"
    idx = {k: np.load(ep / f"{k}.npy").astype(np.int64) for k in ("inst_start", "inst_len", "resp_start", "resp_len")}
    n = len(idx["inst_start"])
    if any(len(v) != n for v in idx.values()):
        raise ValueError(f"{ep}: index arrays have different lengths")
    for s, l in (("inst_start", "inst_len"), ("resp_start", "resp_len")):
        bad = np.flatnonzero((idx[s] < 0) | (idx[l] < 0) | (idx[s] + idx[l] > len(tokens)))
        if bad.size:
            raise ValueError(f"{ep}/{s}.npy row {int(bad[0])}: span outside tokens.npy (len {len(tokens)})")
    vocab = info.get("vocab_size") or meta.get("vocab_size") or int(tokens.max()) + 1
    return {"tokens": tokens, "index": idx, "info": info, "special": _special_ids(info, ref), "vocab_size": int(vocab),
            "num_rows": n}


def import_reference(ref_dir: str | Path, out_dir: str | Path, *, epoch: int = 0, shard_size: int = 100_000,
                     skip_bad: bool = False) -> tuple[list[dict], dict]:
    """Write shards for one reference epoch; resumable per shard. Returns (shard stats, tokenizer/special info).

    Rows with an empty response (resp_len == 0) are bad records (reported, or skipped with `skip_bad`).
    """
    ref, out = Path(ref_dir), Path(out_dir)
    data = read_reference_dir(ref, epoch)
    tokens, idx, special = data["tokens"], data["index"], data["special"]
    dtype = records.token_dtype(data["vocab_size"])
    cond_ids = frozenset(special.conditions.values())
    progress = out / PROGRESS
    label = f"{ref}/epoch_{epoch}"
    for chunk, lo in enumerate(range(0, data["num_rows"], shard_size)):
        marker = progress / f"u00000-{chunk:05d}.json"
        if marker.is_file():
            continue
        name = f"u00000-{chunk:05d}.array_record"
        writer = records.ShardWriter(out / name, dtype, special.boq, cond_ids)
        stats: dict[str, Any] = {"path": name, "unit": 0, "source": label, "skipped": []}
        lens = []
        for r in range(lo, min(lo + shard_size, data["num_rows"])):
            if idx["resp_len"][r] < 1:
                if not skip_bad:
                    raise ValueError(f"{label}: row {r}: empty response (use --skip_bad to skip and count)")
                stats["skipped"].append({"file": label, "line": r, "reason": "empty response"})
                continue
            s, li = idx["inst_start"][r], idx["inst_len"][r]
            t, lo_ = idx["resp_start"][r], idx["resp_len"][r]
            writer.write(np.asarray(tokens[s:s + li]), np.asarray(tokens[t:t + lo_]))
            lens.append((li, lo_))
        writer.close()
        lens_a = np.asarray(lens, np.int64).reshape(-1, 2)
        stats.update(num_examples=len(lens_a), inst_tokens=int(lens_a[:, 0].sum()),
                     resp_tokens=int(lens_a[:, 1].sum()), num_tokens=int(lens_a.sum()),
                     histogram=records.length_histogram(lens_a.sum(1)), next_line=r + 1)
        write_json_atomic(marker, stats)
    info = data["info"]
    tok_path = Path(info.get("tokenizer_path") or "")
    tok_path = tok_path if tok_path.is_absolute() else ref / tok_path
    try:
        tok_path = resolve_tokenizer_path(tok_path)
    except FileNotFoundError:
        pass  # recorded as given; the hash stays null
    tokenizer = {"path": str(tok_path), "source_path": str(tok_path), "backend": "reference",
                 "sha256": file_sha256(tok_path) if tok_path.is_file() else None,
                 "vocab_size": data["vocab_size"], "padded_vocab_size": padded_size(data["vocab_size"])}
    return [json.loads(p.read_text()) for p in sorted(progress.glob("u00000-*.json"))], {
        "tokenizer": tokenizer, "special": special, "source": {"reference_dir": str(ref), "epoch": epoch}}
