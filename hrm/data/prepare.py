"""Offline data preparation: sources → tokenized ArrayRecord shards + metadata.json (docs/prefixlm_packing.md §1,
docs/data_format.md §6, §7).

    python -m hrm.data.prepare --inputs 'raw/*.jsonl.gz' --out data/mine --tokenizer tok.model [--workers 4]
    python -m hrm.data.prepare --inputs raw.jsonl --out data/mine --train_tokenizer --vocab_size 4096
    python -m hrm.data.prepare --tfds my_builder --tfds_split train --field_map instruction=q,response=a --out D
    python -m hrm.data.prepare --inputs 'raw/*.jsonl' --mixture configs/mixtures/paper.yaml --epochs 4 --out D ...
    python -m hrm.data.prepare --reference REF_SFT_DATA --out D   # docs/data_format.md §6 dir: all epochs, no
    re-tokenising

Parallel over input files (TFDS: over index ranges). The directory is built in `D.partial/` and published into `D`
only when complete (hrm/data/staging.py); a failed run keeps `D.partial/` if it holds finished shards and the same
command resumes from them (`.progress/` markers). Bad records are an error naming `file:line` unless `--skip_bad`
(then listed in metadata). `--mixture FILE --epochs N` realises N epochs by per-file stratified sampling
(docs/data_format.md §5, hrm/data/mixture.py) into `epochs/epoch_{e}.npy`; `--epochs N` alone realises N reshuffles of
everything; neither leaves one pool that the pipeline reshuffles per epoch. `--out` may be `gs://…` (built locally, then
copied up).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hrm.data import mixture as mixture_mod
from hrm.data import paths, records, sources, staging
from hrm.data.shard_units import PROGRESS, Unit, UnitConfig, collect_shard_stats, process_unit, write_json_atomic
from hrm.data.tokenizer import SpecialIds, Tokenizer, load_tokenizer, resolve_tokenizer_path, train_sentencepiece

log = logging.getLogger("hrm.data")


def _fingerprint_check(out: Path, fingerprint: dict) -> None:
    """Refuse to resume into a (staging) directory prepared from different inputs/settings."""
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
        it = (sources.iter_file(unit.path) if unit.kind == "file"
              else sources.iter_data_source(sources.open_tfds_source(unit.name, unit.split, unit.data_dir),
                                            unit.start, unit.end))
        for _, raw in it:
            try:
                ex = sources.extract_example(raw, field_map) if not isinstance(raw, Exception) else None
            except sources.BadRecord:
                ex = None
            if ex is None:
                continue
            yield ex.instruction[:10_000]  # the reference truncates training text to 10k chars (docs/data_format.md §4)
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
    return [Unit(index=i, kind="file", path=os.fspath(p)) for i, p in enumerate(sources.expand_inputs(inputs))]


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


def write_metadata(out: Path, shard_stats: list[dict], tokenizer: dict, special: SpecialIds, sources_info: Any,
                   epochs_info: dict | None = None) -> dict:
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
    if epochs_info:
        meta["epochs"] = epochs_info
    write_json_atomic(out / records.METADATA, meta)
    return meta


def write_epochs(stage: Path, meta_shards: list[dict], epoch_ids: list[np.ndarray], info: dict) -> dict:
    """Write `epochs/epoch_{e}.npy` and return the metadata `epochs` block with per-epoch examples and tokens
    (`tokens_mean` is the reference's total_length, docs/data_format.md §6)."""
    lengths = records.load_lengths(stage, {"shards": meta_shards})
    tok = lengths[:, 0].astype(np.int64) + lengths[:, 1]
    (stage / records.EPOCHS_DIR).mkdir(exist_ok=True)
    dtype = records.index_dtype(len(tok))
    for e, ids in enumerate(epoch_ids):
        np.save(stage / records.EPOCHS_DIR / f"epoch_{e}.npy", np.asarray(ids, dtype))
    tokens = [int(tok[ids].sum()) for ids in epoch_ids]
    return dict(info, count=len(epoch_ids), examples=[int(len(ids)) for ids in epoch_ids], tokens=tokens,
                tokens_mean=round(sum(tokens) / len(tokens)))


def _realise_epochs(stage: Path, shard_stats: list[dict], mix: mixture_mod.Mixture | None, epochs: int,
                    seed: int) -> dict:
    """Stratified sampling over the prepared records (files keyed by source name, rows in line order)."""
    meta_shards = [{"path": s["path"], "num_examples": s["num_examples"], "source": s["source"]}
                   for s in shard_stats if s["num_examples"] > 0]
    labels, file_of = records.record_sources({"shards": meta_shards})
    base = [lab.rsplit("/", 1)[-1] for lab in labels]
    files = []
    for k, lab in enumerate(labels):
        name = base[k] if base.count(base[k]) == 1 else lab
        files.append(mixture_mod.SourceFile(name, np.flatnonzero(file_of == k), match_name=base[k]))
    ids, report = mixture_mod.sample_epochs(files, mix, epochs, seed)
    info = {"source": "mixture" if mix else "all", "seed": seed, "mixture": mix.to_json() if mix else None,
            "files": report}
    return write_epochs(stage, meta_shards, ids, info)


def _finished(out: str, fingerprint: dict) -> dict | None:
    """Metadata of an already published preparation with the same settings (idempotent rerun), else None."""
    if not paths.exists(paths.join(out, records.METADATA)):
        return None
    run = paths.join(out, PROGRESS, "run.json")
    old = json.loads(paths.read_text(run)) if paths.exists(run) else None
    if old != fingerprint:
        diff = sorted(k for k in set(old or {}) | set(fingerprint) if (old or {}).get(k) != fingerprint.get(k))
        raise ValueError(f"{out} already holds a preparation with different settings ({', '.join(diff)}); "
                         "use a fresh --out directory")
    return records.read_metadata(out)


def prepare(*, out: str | os.PathLike, inputs: Sequence[str] = (), tokenizer: str | None = None,
            train_tokenizer: bool = False, vocab_size: int = 512, tokenizer_sample: int = 200_000,
            skip_bad: bool = False, workers: int = 1, shard_size: int = 100_000, tfds: str | None = None,
            tfds_split: str = "train", tfds_data_dir: str | None = None, field_map: dict | None = None,
            reference: str | None = None, reference_epoch: int | None = None, tfds_module: str | None = None,
            progress: bool = True, mixture: str | None = None, epochs: int | None = None, seed: int = 0) -> dict:
    """Prepare a data directory; returns its metadata. Idempotent and resumable (see module docstring)."""
    out_s = os.fspath(out)
    if shard_size < 1:
        raise ValueError("--shard_size must be >= 1")
    if sum(map(bool, (inputs, tfds, reference))) != 1:
        raise ValueError("give exactly one of --inputs, --tfds or --reference")
    if reference and (mixture or epochs is not None):
        raise ValueError("--mixture/--epochs do not apply to --reference: it imports the reference's own epochs")
    if mixture and epochs is None:
        raise ValueError("--mixture needs --epochs N (how many epochs to realise; the paper trains 4)")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    mix = mixture_mod.load_mixture(mixture) if mixture else None  # bad mixture files fail before any work
    if reference:
        fingerprint = {"mode": "reference", "reference": os.fspath(paths.as_path(reference)),
                       "epoch": reference_epoch, "shard_size": shard_size}
    else:
        units = _units(inputs, tfds, tfds_split, tfds_data_dir, shard_size)
        fingerprint = {"mode": "tfds" if tfds else "files", "field_map": field_map, "shard_size": shard_size,
                       "units": [[u.label, u.start, u.end] + ([paths.as_path(u.path).stat().length] if u.path else [])
                                 for u in units],
                       "tokenizer": "train:%d" % vocab_size if train_tokenizer else str(tokenizer),
                       "sampling": {"mixture": mix.sha256 if mix else None, "epochs": epochs, "seed": seed}}
    done = _finished(out_s, fingerprint)
    if done is not None:
        return done
    stage = staging.staging_dir(out_s)
    (stage / PROGRESS).mkdir(parents=True, exist_ok=True)
    try:
        _fingerprint_check(stage, fingerprint)
        if reference:
            meta = _prepare_reference(stage, reference, reference_epoch, shard_size, skip_bad)
        else:
            meta = _prepare_sources(stage, units, tokenizer, train_tokenizer, vocab_size, tokenizer_sample,
                                    skip_bad, workers, shard_size, tfds, tfds_split, field_map, tfds_module,
                                    progress, mix, epochs, seed)
        staging.publish(stage, out_s)
    except BaseException:
        if staging.discard(stage):
            log.warning("finished shards kept in %s: rerun the same command to resume (or delete it)", stage)
        raise
    return meta


def _prepare_reference(stage: Path, reference: str, epoch: int | None, shard_size: int, skip_bad: bool) -> dict:
    from hrm.data.reference_format import import_reference

    stats, info, epoch_ids = import_reference(reference, stage, epoch=epoch, shard_size=shard_size,
                                              skip_bad=skip_bad)
    meta_shards = [{"path": s["path"], "num_examples": s["num_examples"]} for s in stats if s["num_examples"] > 0]
    epochs_info = write_epochs(stage, meta_shards, epoch_ids, {"source": "reference", "seed": None, "mixture": None,
                                                               "reference_epochs": info["source"]["epochs"]})
    return write_metadata(stage, stats, info["tokenizer"], info["special"], info["source"], epochs_info)


def _prepare_sources(stage: Path, units: list[Unit], tokenizer: str | None, train_tokenizer: bool, vocab_size: int,
                     tokenizer_sample: int, skip_bad: bool, workers: int, shard_size: int, tfds: str | None,
                     tfds_split: str, field_map: dict | None, tfds_module: str | None, progress: bool,
                     mix: mixture_mod.Mixture | None, epochs: int | None, seed: int) -> dict:
    tok = _install_tokenizer(stage, tokenizer, train_tokenizer, vocab_size, units, field_map, tokenizer_sample)
    cfg = UnitConfig(out_dir=str(stage), tokenizer_path=str(tok.path), shard_size=shard_size, skip_bad=skip_bad,
                     field_map=field_map, tfds_module=tfds_module)
    _run_units(units, cfg, workers, progress)
    tok_info = tok.describe() | {"path": tok.path.name,
                                 "source_path": getattr(tok, "source_path", str(tok.path.resolve()))}
    src_info = {"tfds": tfds, "split": tfds_split} if tfds else [u.label for u in units]
    stats = collect_shard_stats(stage)
    epochs_info = _realise_epochs(stage, stats, mix, epochs, seed) if epochs else None
    return write_metadata(stage, stats, tok_info, tok.special, src_info, epochs_info)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hrm.data.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", nargs="*", default=[], help="JSONL / JSONL.gz / Parquet files or globs")
    p.add_argument("--out", required=True, help="output data directory (local or gs://…)")
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
    p.add_argument("--mixture", default=None, help="stratified-sampling rules (YAML, e.g. configs/mixtures/paper.yaml)")
    p.add_argument("--epochs", type=int, default=None, help="epochs to realise (required with --mixture)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-epoch sampling and shuffles")
    p.add_argument("--reference",
                   help="reference-format directory (docs/data_format.md §6); imports all its epoch_* dirs")
    p.add_argument("--reference_epoch", type=int, default=None, help="import only this reference epoch")
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
                       tfds_module=args.tfds_module, progress=not args.no_progress, mixture=args.mixture,
                       epochs=args.epochs, seed=args.seed)
    except (sources.BadRecord, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ep = meta.get("epochs")
    extra = f", {ep['count']} epochs of {ep['examples']} examples" if ep else ""
    print(f"prepared {meta['num_examples']} examples, {meta['num_tokens']} tokens, {len(meta['shards'])} shards, "
          f"{meta['num_skipped']} skipped{extra} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
