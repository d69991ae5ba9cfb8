"""Data pipeline on this machine: plan time and packed-serving throughput, plus preparation tokens/s.

    .venv/bin/python bench/data_pipeline.py [--mode both|default|realistic] [--examples 50000] [--steps 40]

* `default`: the built-in dataset (generated if missing; short examples, ~65 per 4096-token row) at seq_len 4096 ×
  16 rows and at the default training shape 256 × 16, plus the tokenize-and-write path of `hrm.data.prepare`.
* `realistic`: a synthetic prepared directory of `--examples` examples whose lengths follow
  bench/packing_plan.py (mean ≈ 800 tokens, random ids, vocab 65,536 → uint32 records), served at 4096 × 16.

For each shape, `plan_s` is the epoch-0 packing plan alone (computed before serving starts; epoch 1, which the
pipeline plans in a background thread during epoch 0, is planned before the window too) and the serving numbers count
only batches after the first: real (non-padding) tokens and slot tokens per second delivered by the host
iterator (worker_count=0, one prefetch thread). Ends with one `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


from hrm.data import records
from hrm.data.default_dataset import DEFAULT_ROOT, ensure_default_dataset
from hrm.data.pipeline import make_train_iterator
from hrm.data.prepare import prepare
from packing_plan import realistic_lengths


def bench_packing(root: Path, seq_len: int, rows: int, steps: int) -> dict:
    it = make_train_iterator(root, seq_len=seq_len, global_batch_rows=rows, seed=0, process_index=0,
                             process_count=1, worker_count=0, prefetch=2)
    t0 = time.perf_counter()
    st = it.source.plan(0).stats  # the plan alone
    plan_s = time.perf_counter() - t0
    it.source.plan(1)  # what the pipeline plans in the background during epoch 0: done now, outside the window
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    real = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        b = next(it)
        real += int((b["segment_ids"] > 0).sum())
    dt = time.perf_counter() - t0
    it.close()
    return {"seq_len": seq_len, "rows": rows, "plan_s": round(plan_s, 3), "first_batch_s": round(first, 3),
            "real_tokens_per_s": real / dt, "slot_tokens_per_s": steps * rows * seq_len / dt,
            "packing_efficiency": st["packing_efficiency"], "steps_per_epoch": st["num_batches"],
            "examples": len(it.source.lengths), "overlong": st["overlong"], "dropped_tail": st["dropped_tail"]}


def bench_prepare(root: Path, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        meta = prepare(out=Path(tmp) / "out", inputs=[str(root / "raw" / "train.jsonl")],
                       tokenizer=str(root / "tokenizer.model"), shard_size=20_000, workers=workers, progress=False)
        dt = time.perf_counter() - t0
    return {"workers": workers, "examples": meta["num_examples"], "tokens": meta["num_tokens"], "seconds": dt,
            "tokens_per_s": meta["num_tokens"] / dt}


def write_realistic(out: Path, n: int, shard_size: int = 20_000, vocab: int = 65_536) -> None:
    """A prepared directory (no tokenizer) of `n` random-id examples with realistic lengths."""
    lengths = realistic_lengths(n)
    dtype = records.token_dtype(vocab)
    rng = np.random.default_rng(1)
    shards = []
    for s, lo in enumerate(range(0, n, shard_size)):
        name = f"u00000-{s:05d}.array_record"
        w = records.ShardWriter(out / name, dtype, boq=6, condition_ids=frozenset({8}))
        part = lengths[lo:lo + shard_size]
        toks = rng.integers(32, vocab, int(part[:, :2].sum()))
        c = 0
        for li, lr, _ in part.tolist():
            inst = toks[c:c + li].copy()
            inst[0], inst[1], inst[-1] = 6, 8, 7  # BOQ, condition, EOQ
            w.write(inst, toks[c + li:c + li + lr], line=lo)
            c += li + lr
        w.close()
        shards.append({"path": name, "num_examples": len(part), "num_tokens": int(part[:, :2].sum()),
                       "source": "synthetic"})
    meta = {"format": records.FORMAT_NAME, "version": records.FORMAT_VERSION, "tokenizer": {"path": None},
            "vocab_size": vocab, "padded_vocab_size": vocab, "token_dtype": dtype.name,
            "special": {"pad": 0, "boq": 6, "eoq": 7, "eoa": 11, "conditions": {"direct": 8}},
            "num_examples": n, "num_tokens": int(lengths[:, :2].sum()), "shards": shards}
    (out / records.METADATA).write_text(json.dumps(meta))


def _line(r: dict) -> str:
    return (f"pack {r['examples']:,} examples at {r['seq_len']:5d} x {r['rows']}: plan {r['plan_s']:.2f}s, "
            f"serving {r['real_tokens_per_s'] / 1e6:6.2f} M real tok/s ({r['slot_tokens_per_s'] / 1e6:6.2f} M slot "
            f"tok/s), efficiency {100 * r['packing_efficiency']:.2f}%, {r['steps_per_epoch']} steps/epoch, first "
            f"batch {r['first_batch_s']}s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("both", "default", "realistic"), default="both")
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--examples", type=int, default=50_000, help="realistic mode: examples to synthesise")
    args = ap.parse_args()
    result = {}
    if args.mode in ("both", "default"):
        t0 = time.perf_counter()
        root = ensure_default_dataset(args.root)
        print(f"default dataset ready in {time.perf_counter() - t0:.2f}s at {root}")
        big = bench_packing(root, 4096, 16, min(args.steps, 20))
        small = bench_packing(root, 256, 16, args.steps * 5)
        for r in (big, small):
            print(_line(r))
        prep = bench_prepare(root, 1)
        print(f"prepare (1 worker): {prep['tokens']} tokens in {prep['seconds']:.2f}s = "
              f"{prep['tokens_per_s'] / 1e6:.2f} M tok/s")
        result.update({
            "packed_tokens_per_s": round(big["real_tokens_per_s"]), "plan_s": big["plan_s"],
            "prepare_tokens_per_s": round(prep["tokens_per_s"]),
            "packing_efficiency": round(big["packing_efficiency"], 5),
            "packed_tokens_per_s_seq256": round(small["real_tokens_per_s"]), "plan_s_seq256": small["plan_s"],
            "packing_efficiency_seq256": round(small["packing_efficiency"], 5)})
    if args.mode in ("both", "realistic"):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_realistic(Path(tmp), args.examples)
            print(f"realistic dataset: {args.examples:,} examples written in {time.perf_counter() - t0:.1f}s")
            real = bench_packing(Path(tmp), 4096, 16, args.steps)
        print(_line(real))
        result.update({"realistic_examples": args.examples, "realistic_plan_s": real["plan_s"],
                       "realistic_packed_tokens_per_s": round(real["real_tokens_per_s"]),
                       "realistic_packing_efficiency": round(real["packing_efficiency"], 5)})
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
