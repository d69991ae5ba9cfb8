"""Offline data preparation: sources → tokenized ArrayRecord shards + metadata.json (SPEC §4.1, §6.6, §6.7).

    python -m hrm.data.prepare --inputs 'raw/*.jsonl.gz' --out data/mine --tokenizer tok.model [--workers 4]
    python -m hrm.data.prepare --inputs raw.jsonl --out data/mine --train_tokenizer --vocab_size 4096
    python -m hrm.data.prepare --tfds my_builder --tfds_split train --field_map instruction=q,response=a --out D
    python -m hrm.data.prepare --reference /ramdisk/sft_data --out D          # SPEC §6.6 dir, no re-tokenising

Parallel over input files (TFDS: over index ranges), resumable (finished shards are recorded under `.progress/`;
a rerun skips them), bad records are an error naming `file:line` unless `--skip_bad` (then listed in metadata).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import multiprocessing
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from hrm.data import records, sources
from hrm.data.shard_units import PROGRESS, Unit, UnitConfig, collect_shard_stats, process_unit, write_json_atomic
from hrm.data.tokenizer import SpecialIds, Tokenizer, load_tokenizer, resolve_tokenizer_path, train_sentencepiece


def _fingerprint_check(out: Path, fingerprint: dict) -> None:
    """Refuse to resume into a directory prepared from different inputs/settings."""
    run = out / PROGRESS / "run.json"
    if run.is_file():
        old = json.loads(run.read_text())
        if old != fingerprint:
            diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise ValueError(f"{out} holds a preparation with different settings ({', '.join(diff)}); "
                             "use a fresh --out directory")
    else:
        write_json_atomic(run, fingerprint)


def _train_texts(units: Sequence[Unit], field_map: dict | None, limit: int) -> Any:
    """Instruction and response strings of the first `limit` good records (bad ones are handled later)."""
    n = 0
    for unit in units:
        it = (sources.iter_file(Path(unit.path)) if unit.kind == "file"
              else sources.iter_data_source(sources.open_tfds_source(unit.name, unit.split, unit.data_dir),
                                            unit.start, unit.end))
        for _, raw in it:
            try:
                ex = sources.extract_example(raw, field_map) if not isinstance(raw, Exception) else None
            except sources.BadRecord:
                ex = None
            if ex is None:
                continue
            yield ex.instruction[:10_000]  # the reference truncates training text to 10k chars (SPEC §6.4)
            yield ex.response[:10_000]
            n += 1
            if n >= limit:
                return


def _install_tokenizer(out: Path, tokenizer: str | None, train: bool, vocab_size: int, units: Sequence[Unit],
                       field_map: dict | None, sample: int) -> Tokenizer:
    """Copy (or train) the tokenizer into `out/` so the directory is self-contained."""
    if train:
        dst = out / "tokenizer.model"
        if dst.is_file():
            return load_tokenizer(dst)
        return train_sentencepiece(_train_texts(units, field_map, sample), dst, vocab_size=vocab_size)
    if not tokenizer:
        raise ValueError("give --tokenizer PATH or --train_tokenizer")
    src = resolve_tokenizer_path(tokenizer)
    dst = out / ("tokenizer.json" if src.suffix == ".json" else "tokenizer.model")
    if not dst.exists() or dst.resolve() != src.resolve():
        shutil.copyfile(src, dst)
    tok = load_tokenizer(dst)
    tok.source_path = str(src.resolve())
    return tok


def _units(inputs: Sequence[str], tfds_name: str | None, split: str, data_dir: str | None,
           shard_size: int) -> list[Unit]:
    if tfds_name:
        n = len(sources.open_tfds_source(tfds_name, split, data_dir))
        return [Unit(index=i, kind="tfds", name=tfds_name, split=split, data_dir=data_dir, start=s,
                     end=min(s + shard_size, n)) for i, s in enumerate(range(0, n, shard_size))]
    return [Unit(index=i, kind="file", path=str(p)) for i, p in enumerate(sources.expand_inputs(inputs))]


def _run_units(units: list[Unit], cfg: UnitConfig, workers: int, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(units), desc="prepare", unit="src", disable=not progress)
    if workers <= 1:
        for u in units:
            r = process_unit(u, cfg)
            bar.update(1)
            bar.set_postfix(examples=r["examples"], skipped=r["skipped"])
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork: callers may hold JAX/grain threads
        with ctx.Pool(min(workers, len(units))) as pool:
            for r in pool.imap_unordered(_process_star, [(u, cfg) for u in units]):
                bar.update(1)
                bar.set_postfix(examples=r["examples"], skipped=r["skipped"])
    bar.close()


def _process_star(args: tuple[Unit, UnitConfig]) -> dict:
    return process_unit(*args)


def write_metadata(out: Path, shard_stats: list[dict], tokenizer: dict, special: SpecialIds, sources_info: Any) -> dict:
    """Aggregate shard markers into metadata.json (schema in data/README.md)."""
    shards = [{k: s[k] for k in ("path", "num_examples", "num_tokens", "source")} for s in shard_stats
              if s["num_examples"] > 0]
    skipped = list(itertools.chain.from_iterable(s["skipped"] for s in shard_stats))
    vocab = int(tokenizer["vocab_size"])
    meta = {
        "format": records.FORMAT_NAME, "version": records.FORMAT_VERSION,
        "tokenizer": tokenizer, "vocab_size": vocab, "padded_vocab_size": int(tokenizer["padded_vocab_size"]),
        "special": special.to_json(), "token_dtype": records.token_dtype(vocab).name,
        "num_examples": sum(s["num_examples"] for s in shard_stats),
        "num_tokens": sum(s["num_tokens"] for s in shard_stats),
        "instruction_tokens": sum(s["inst_tokens"] for s in shard_stats),
        "response_tokens": sum(s["resp_tokens"] for s in shard_stats),
        "length_histogram": records.merge_histograms([s["histogram"] for s in shard_stats]),
        "num_skipped": len(skipped), "skipped": skipped, "sources": sources_info, "shards": shards,
    }
    if meta["num_examples"] == 0:
        raise ValueError(f"{out}: preparation produced no examples ({len(skipped)} skipped)")
    write_json_atomic(out / records.METADATA, meta)
    return meta


def prepare(*, out: str | Path, inputs: Sequence[str] = (), tokenizer: str | None = None,
            train_tokenizer: bool = False, vocab_size: int = 512, tokenizer_sample: int = 200_000,
            skip_bad: bool = False, workers: int = 1, shard_size: int = 100_000, tfds: str | None = None,
            tfds_split: str = "train", tfds_data_dir: str | None = None, field_map: dict | None = None,
            reference: str | None = None, reference_epoch: int = 0, tfds_module: str | None = None,
            progress: bool = True) -> dict:
    """Prepare a data directory; returns its metadata. Idempotent and resumable (see module docstring)."""
    out = Path(out)
    (out / PROGRESS).mkdir(parents=True, exist_ok=True)
    if shard_size < 1:
        raise ValueError("--shard_size must be >= 1")
    if reference:
        from hrm.data.reference_format import import_reference

        _fingerprint_check(out, {"mode": "reference", "reference": str(Path(reference).resolve()),
                                 "epoch": reference_epoch, "shard_size": shard_size})
        stats, info = import_reference(reference, out, epoch=reference_epoch, shard_size=shard_size,
                                       skip_bad=skip_bad)
        return write_metadata(out, stats, info["tokenizer"], info["special"], info["source"])
    if bool(inputs) == bool(tfds):
        raise ValueError("give exactly one of --inputs, --tfds or --reference")
    units = _units(inputs, tfds, tfds_split, tfds_data_dir, shard_size)
    fingerprint = {"mode": "tfds" if tfds else "files", "field_map": field_map, "shard_size": shard_size,
                   "units": [[u.label, u.start, u.end] + ([Path(u.path).stat().st_size] if u.path else [])
                             for u in units],
                   "tokenizer": "train:%d" % vocab_size if train_tokenizer else str(tokenizer)}
    _fingerprint_check(out, fingerprint)
    tok = _install_tokenizer(out, tokenizer, train_tokenizer, vocab_size, units, field_map, tokenizer_sample)
    cfg = UnitConfig(out_dir=str(out), tokenizer_path=str(tok.path), shard_size=shard_size, skip_bad=skip_bad,
                     field_map=field_map, tfds_module=tfds_module)
    _run_units(units, cfg, workers, progress)
    tok_info = tok.describe() | {"path": tok.path.name,
                                 "source_path": getattr(tok, "source_path", str(tok.path.resolve()))}
    src_info = {"tfds": tfds, "split": tfds_split} if tfds else [u.label for u in units]
    return write_metadata(out, collect_shard_stats(out), tok_info, tok.special, src_info)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hrm.data.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", nargs="*", default=[], help="JSONL / JSONL.gz / Parquet files or globs")
    p.add_argument("--out", required=True, help="output data directory")
    p.add_argument("--tokenizer", help=".model, tokenizer.json or a directory holding one")
    p.add_argument("--train_tokenizer", action="store_true", help="train a SentencePiece BPE on the inputs")
    p.add_argument("--vocab_size", type=int, default=512)
    p.add_argument("--tokenizer_sample", type=int, default=200_000, help="records used to train the tokenizer")
    p.add_argument("--skip_bad", action="store_true", help="skip and report bad records instead of failing")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--shard_size", type=int, default=100_000, help="examples per ArrayRecord shard")
    p.add_argument("--tfds", help="TFDS builder name (ArrayRecord, read with tfds.data_source)")
    p.add_argument("--tfds_split", default="train")
    p.add_argument("--tfds_data_dir", default=None)
    p.add_argument("--tfds_module", default=None, help="module to import first (registers a custom builder)")
    p.add_argument("--field_map", default=None, help="instruction=SRC,response=SRC[,condition=SRC]")
    p.add_argument("--reference", help="reference-format directory (SPEC §6.6)")
    p.add_argument("--reference_epoch", type=int, default=0)
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.tfds_module:
        importlib.import_module(args.tfds_module)
    try:
        meta = prepare(out=args.out, inputs=args.inputs, tokenizer=args.tokenizer,
                       train_tokenizer=args.train_tokenizer, vocab_size=args.vocab_size,
                       tokenizer_sample=args.tokenizer_sample, skip_bad=args.skip_bad, workers=args.workers,
                       shard_size=args.shard_size, tfds=args.tfds, tfds_split=args.tfds_split,
                       tfds_data_dir=args.tfds_data_dir, field_map=sources.parse_field_map(args.field_map),
                       reference=args.reference, reference_epoch=args.reference_epoch,
                       tfds_module=args.tfds_module, progress=not args.no_progress)
    except (sources.BadRecord, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"prepared {meta['num_examples']} examples, {meta['num_tokens']} tokens, {len(meta['shards'])} shards, "
          f"{meta['num_skipped']} skipped -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
