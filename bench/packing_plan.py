"""Packing-plan time and efficiency at pod scale: one epoch of N realistic-length examples, on one core.

    .venv/bin/python bench/packing_plan.py --examples 10000000 --seq_len 4096 [--rows 48] [--open_rows 8]

Example lengths (instruction + response tokens) are `clip(round(exp(normal(6.3, 0.9))), 8, 4096)` from
`np.random.default_rng(0)` (mean ≈ 800 tokens); the instruction takes a uniform 10–60% of each (≥ 2 tokens, BOQ + EOQ)
and the response the rest (≥ 1). The plan is exactly the pipeline's (hrm/data/packing.py `plan_epoch`: overlong
policy, chunked best-fit, batches of `rows` rows; 48 × 4096 = XL's 196,608-token global batch) applied to the
(seed 0, epoch 0) shuffle of the pool. `plan_s` (wall) and `plan_cpu_s` (process CPU time: the one-core cost when
the machine is shared) count the shuffle and the plan; peak RSS is reported to show the O(examples) memory.
Run it with one BLAS/numpy thread (set below). Ends with one `RESULT {json}` line.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


from hrm.data import packing  # noqa: E402


def realistic_lengths(n: int, seq_len: int = 4096) -> np.ndarray:
    """int32 [n, 3] (Li, Lo, head) with Li + Lo = clip(round(exp(normal(6.3, 0.9))), 8, seq_len)."""
    rng = np.random.default_rng(0)
    total = np.clip(np.round(np.exp(rng.normal(6.3, 0.9, n))), 8, seq_len).astype(np.int64)
    li = np.clip(np.round(total * rng.uniform(0.1, 0.6, n)), 2, total - 1).astype(np.int64)
    return np.stack([li, total - li, np.full(n, 2)], 1).astype(np.int32)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=1_000_000)
    ap.add_argument("--seq_len", type=int, default=4096)
    ap.add_argument("--rows", type=int, default=48, help="rows per global batch (XL: 196,608 / 4096 = 48)")
    ap.add_argument("--open_rows", type=int, default=packing.DEFAULT_OPEN_ROWS)
    ap.add_argument("--overlong", default="reference")
    args = ap.parse_args()
    lengths = realistic_lengths(args.examples, args.seq_len)
    rss0 = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    order = np.random.default_rng([0, 0]).permutation(len(lengths))
    plan = packing.plan_epoch(lengths, order, seq_len=args.seq_len, rows=args.rows, overlong=args.overlong,
                              open_rows=args.open_rows)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    st = plan.stats
    tokens = int(lengths[:, :2].astype(np.int64).sum())
    print(f"{args.examples:,} examples, {tokens:,} tokens (mean {tokens / args.examples:.0f}), seq_len "
          f"{args.seq_len}, {args.rows} rows/batch, {args.open_rows} open rows")
    print(f"plan: {dt:.2f}s wall, {cpu:.2f}s CPU ({args.examples / dt / 1e6:.2f} M examples/s), "
          f"{st['num_batches']:,} batches, "
          f"efficiency {100 * st['packing_efficiency']:.2f}%, dropped tail {st['dropped_tail']} examples, "
          f"peak RSS {_rss_mib():.0f} MiB (lengths alone {rss0:.0f} MiB)")
    print("RESULT " + json.dumps({
        "examples": args.examples, "seq_len": args.seq_len, "rows": args.rows, "open_rows": args.open_rows,
        "plan_s": round(dt, 3), "plan_cpu_s": round(cpu, 3), "packing_efficiency": round(st["packing_efficiency"], 5),
        "num_batches": st["num_batches"], "dropped_tail": st["dropped_tail"], "peak_rss_mib": round(_rss_mib()),
    }))


if __name__ == "__main__":
    main()
