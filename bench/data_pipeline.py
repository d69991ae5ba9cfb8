"""Data pipeline throughput on this machine: packed tokens/s from prepared shards and preparation tokens/s.

    .venv/bin/python bench/data_pipeline.py [--root data/default] [--steps 40]

Uses the built-in default dataset (generated if missing). Packing is measured at seq_len 4096 with 16 rows per batch
(the "4096-equivalent" setting: ~65 short examples per row) and at the default training shape 256 × 16. Packed
tokens/s counts real (non-padding) tokens delivered per second by the host iterator (worker_count=0, one prefetch
thread); slot tokens/s is also printed. Preparation is the tokenize-and-write path of `hrm.data.prepare` with the
dataset's tokenizer. Ends with one `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrm.data.default_dataset import DEFAULT_ROOT, ensure_default_dataset  # noqa: E402
from hrm.data.pipeline import make_train_iterator  # noqa: E402
from hrm.data.prepare import prepare  # noqa: E402


def bench_packing(root: Path, seq_len: int, rows: int, steps: int) -> dict:
    it = make_train_iterator(root, seq_len=seq_len, global_batch_rows=rows, seed=0, process_index=0,
                             process_count=1, worker_count=0, prefetch=2)
    t0 = time.perf_counter()
    next(it)  # includes the epoch-0 packing plan
    first = time.perf_counter() - t0
    real = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        b = next(it)
        real += int((b["segment_ids"] > 0).sum())
    dt = time.perf_counter() - t0
    st = it.epoch_stats(0)
    it.close()
    return {"seq_len": seq_len, "rows": rows, "first_batch_s": round(first, 3), "real_tokens_per_s": real / dt,
            "slot_tokens_per_s": steps * rows * seq_len / dt, "packing_efficiency": st["packing_efficiency"],
            "steps_per_epoch": st["num_batches"], "overlong": st["overlong"], "dropped_tail": st["dropped_tail"]}


def bench_prepare(root: Path, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        meta = prepare(out=tmp, inputs=[str(root / "raw" / "train.jsonl")], tokenizer=str(root / "tokenizer.model"),
                       shard_size=20_000, workers=workers, progress=False)
        dt = time.perf_counter() - t0
    return {"workers": workers, "examples": meta["num_examples"], "tokens": meta["num_tokens"], "seconds": dt,
            "tokens_per_s": meta["num_tokens"] / dt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    t0 = time.perf_counter()
    root = ensure_default_dataset(args.root)
    print(f"default dataset ready in {time.perf_counter() - t0:.2f}s at {root}")
    big = bench_packing(root, 4096, 16, min(args.steps, 20))
    small = bench_packing(root, 256, 16, args.steps * 5)
    for r in (big, small):
        print(f"pack seq_len={r['seq_len']:5d} rows={r['rows']}: {r['real_tokens_per_s'] / 1e6:6.2f} M real tok/s, "
              f"{r['slot_tokens_per_s'] / 1e6:6.2f} M slot tok/s, efficiency {100 * r['packing_efficiency']:.2f}%, "
              f"{r['steps_per_epoch']} steps/epoch, first batch {r['first_batch_s']}s")
    prep = bench_prepare(root, 1)
    print(f"prepare (1 worker): {prep['tokens']} tokens in {prep['seconds']:.2f}s = "
          f"{prep['tokens_per_s'] / 1e6:.2f} M tok/s")
    print(f"ratios: packed/target(1M) = {big['real_tokens_per_s'] / 1e6:.1f}x at 4096, "
          f"{small['real_tokens_per_s'] / 1e6:.1f}x at 256")
    print("RESULT " + json.dumps({
        "packed_tokens_per_s": round(big["real_tokens_per_s"]),
        "prepare_tokens_per_s": round(prep["tokens_per_s"]),
        "packing_efficiency": round(big["packing_efficiency"], 5),
        "packed_tokens_per_s_seq256": round(small["real_tokens_per_s"]),
        "packing_efficiency_seq256": round(small["packing_efficiency"], 5),
    }))


if __name__ == "__main__":
    main()
