"""Inspect the epochs training will consume: which source rows, in which order (docs/data_format.md §5).

    python -m hrm.data.epochs DIR --epoch K          # one line per example in epoch order: <file>\t<0-based line>
    python -m hrm.data.epochs DIR --summary          # per epoch and file: count, tokens, cumulative unique coverage

The order is exactly the pipeline's (hrm/data/pipeline.py): a prepared epoch as stored; past the last prepared
epoch N, prepared epoch K mod N reshuffled with (seed, K); a directory without prepared epochs is one pool
reshuffled with (seed, K) (`--seed` = the training run's data.shuffle_seed). Packing later drops the incomplete last
batch of each epoch (its size depends on the batch shape; see the pipeline's epoch stats). File names are base
names when those are unique, else the paths recorded at preparation.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterator, Sequence

import numpy as np

from hrm.data import records


def epoch_order(data_dir: str | os.PathLike, meta: dict, epoch: int, seed: int = 0) -> np.ndarray:
    """Global record ids of training epoch `epoch` in order (the pipeline's rule, see the module docstring)."""
    n_prep = records.num_prepared_epochs(meta)
    if not n_prep:
        return np.random.default_rng([seed, epoch]).permutation(int(meta["num_examples"]))
    base = np.asarray(records.load_epoch(data_dir, epoch % n_prep, mmap=False))
    if epoch < n_prep:
        return base
    return base[np.random.default_rng([seed, epoch]).permutation(len(base))]


def display_names(labels: Sequence[str]) -> list[str]:
    """Base names of the source labels when unique, else the full labels."""
    base = [lab.rsplit("/", 1)[-1] for lab in labels]
    return base if len(set(base)) == len(base) else list(labels)


def epoch_rows(data_dir: str | os.PathLike, epoch: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(file names, file index per example, 0-based line per example) of `epoch` in training order."""
    meta = records.read_metadata(data_dir)
    labels, file_of = records.record_sources(meta)
    lines = records.load_lines(data_dir, meta)
    ids = epoch_order(data_dir, meta, epoch, seed)
    return display_names(labels), file_of[ids], lines[ids]


def summary_rows(data_dir: str | os.PathLike, epochs: int | None = None, seed: int = 0) -> Iterator[list]:
    """Rows [epoch, file, rows in file, examples, tokens, distinct rows, cumulative distinct, cumulative coverage]
    per epoch and file, then an "(all)" row per epoch."""
    meta = records.read_metadata(data_dir)
    labels, file_of = records.record_sources(meta)
    names = display_names(labels)
    lengths = records.load_lengths(data_dir, meta)
    tok = lengths[:, 0].astype(np.int64) + lengths[:, 1]
    nf = len(labels)
    rows_per_file = np.bincount(file_of, minlength=nf)
    n_ep = epochs or records.num_prepared_epochs(meta) or 1
    seen = np.zeros(len(tok), bool)
    for e in range(n_ep):
        ids = epoch_order(data_dir, meta, e, seed)
        f = file_of[ids]
        count = np.bincount(f, minlength=nf)
        tokens = np.bincount(f, weights=tok[ids], minlength=nf).astype(np.int64)
        uniq = np.unique(ids)
        distinct = np.bincount(file_of[uniq], minlength=nf)
        seen[uniq] = True
        cum = np.bincount(file_of[seen], minlength=nf)
        for k in range(nf):
            yield [e, names[k], int(rows_per_file[k]), int(count[k]), int(tokens[k]), int(distinct[k]), int(cum[k]),
                   round(float(cum[k] / max(rows_per_file[k], 1)), 4)]
        yield [e, "(all)", len(tok), len(ids), int(tokens.sum()), len(uniq), int(seen.sum()),
               round(float(seen.sum() / max(len(tok), 1)), 4)]


SUMMARY_HEADER = ["epoch", "file", "rows", "examples", "tokens", "distinct", "cum_distinct", "cum_coverage"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hrm.data.epochs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", help="prepared data directory (local or gs://…)")
    p.add_argument("--epoch", type=int, default=None, help="print this epoch's examples in order")
    p.add_argument("--summary", action="store_true", help="per-file counts, tokens and coverage per epoch")
    p.add_argument("--epochs", type=int, default=None, help="epochs to summarise (default: the prepared ones, or 1)")
    p.add_argument("--seed", type=int, default=0, help="the run's data.shuffle_seed (pool and cycled epochs only)")
    args = p.parse_args(argv)
    if (args.epoch is None) == (not args.summary):
        p.error("give --epoch K or --summary")
    if args.epoch is not None and args.epoch < 0:
        p.error("--epoch must be >= 0")
    try:
        if args.summary:
            meta = records.read_metadata(args.data_dir)
            ep = meta.get("epochs")
            desc = (f"{ep['count']} prepared epochs ({ep.get('source')}, seed {ep.get('seed')})" if ep
                    else "no prepared epochs: one pool reshuffled per epoch")
            print(f"# {args.data_dir}: {meta['num_examples']} records, {desc}")
            print("\t".join(SUMMARY_HEADER))
            for row in summary_rows(args.data_dir, args.epochs, args.seed):
                print("\t".join(map(str, row)))
        else:
            names, files, lines = epoch_rows(args.data_dir, args.epoch, args.seed)
            out = sys.stdout
            for f, line in zip(files.tolist(), lines.tolist()):
                out.write(f"{names[f]}\t{line}\n")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `| head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
