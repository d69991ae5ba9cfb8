"""Decode speed with the KV cache vs recomputing the sequence at every step (docs/checkpoints.md §9).

The cached engine (`hrm.eval.generate.Generator`) prefills the prompt once and then runs one token per
step through all H_cycles*(L_cycles+1) stack applications against per-step caches. Two recomputation
baselines, each one jit per buffer shape with a `fori_loop` inside (so no side pays Python dispatch per token):

* `prefix` (the fair one): at every step a PrefixLM forward over the tokens present so far, in a buffer grown
  in `--bucket`-token steps up to the final length (one compiled shape each; < bucket padding positions), with the
  LM head applied at the last position only.
* `full` (the worst case): a forward over the fixed [B, prompt + N] buffer with logits at every position.

All decode greedily with EOA disabled, so they generate the same tokens (checked). Compile time is excluded
(a warm-up call per shape). Prints a table and ends with one line `RESULT {json}`: per length N,
`speedup_prefix_N` / `speedup_N` = time to generate N tokens by prefix / full recomputation over the time with
the cache.

    python bench/generation.py [--config configs/tiny.yaml --batch 2 --prompt 32 --lengths 64,128,512]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from pathlib import Path


import jax
import jax.numpy as jnp
import numpy as np

from hrm.config import load_config
from hrm.eval.generate import Generator
from hrm.model import build_model


def recompute_fn(model, prompt_len: int, total: int):
    """jit(prompt, new): greedy decoding by a full forward over [B, total] per step (`new` is traced,
    so a 1-token warm-up compiles the same program)."""

    @jax.jit
    def run(prompt, new):
        B = prompt.shape[0]
        buf = jnp.zeros((B, total), jnp.int32).at[:, :prompt_len].set(prompt)
        pos = jnp.broadcast_to(jnp.arange(total, dtype=jnp.int32), (B, total))
        prefix = (pos < prompt_len).astype(jnp.int32)

        def step(t, buf):
            n = prompt_len + t  # tokens present
            seg = (pos < n).astype(jnp.int32)
            logits = model(buf, pos, seg, prefix)
            nxt = jnp.argmax(jnp.take(logits, n - 1, axis=1).astype(jnp.float32), axis=-1).astype(jnp.int32)
            return jax.lax.dynamic_update_slice(buf, nxt[:, None], (0, n))

        buf = jax.lax.fori_loop(0, new, step, buf)
        return buf[:, prompt_len:]

    return run


def prefix_recompute_fn(model, prompt_len: int, total: int, bucket: int):
    """run(prompt, new): greedy decoding by a forward over the tokens present so far, the buffer grown in
    `bucket`-token steps (one jitted `fori_loop` per buffer length), head at the last position only."""

    @functools.partial(jax.jit, static_argnames="length")
    def segment(buf, start, stop, *, length):
        B = buf.shape[0]
        buf = jnp.zeros((B, length), jnp.int32).at[:, :buf.shape[1]].set(buf[:, :length])
        pos = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (B, length))
        prefix = (pos < prompt_len).astype(jnp.int32)

        def step(n, buf):  # n = tokens present
            z = model.hidden(buf, pos, (pos < n).astype(jnp.int32), prefix)
            logits = model.head(jax.lax.dynamic_slice_in_dim(z, n - 1, 1, axis=1))
            nxt = jnp.argmax(logits[:, 0].astype(jnp.float32), axis=-1).astype(jnp.int32)
            return jax.lax.dynamic_update_slice(buf, nxt[:, None], (0, n))

        return jax.lax.fori_loop(start, stop, step, buf)

    # Buffer lengths: bucket multiples above the prompt, then `total` itself (no padding in the last one).
    lengths = [n for n in range(bucket, total, bucket) if n > prompt_len] + [total]

    def run(prompt, new):
        buf, n = prompt, prompt_len
        stop = prompt_len + new
        for length in lengths:
            if n >= stop:
                break
            upto = min(length, stop)  # step n writes position n, so a buffer of `length` serves n < length
            buf = segment(buf, n, upto, length=length)
            n = upto
        return buf[:, prompt_len:prompt_len + new]

    def warm_up(prompt):
        buf = prompt
        for length in lengths:
            buf = segment(buf, prompt_len, prompt_len, length=length)
        return jax.block_until_ready(buf)

    run.warm_up = warm_up
    return run


def timed(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs/tiny.yaml"))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--lengths", default="64,128,512")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--python_loop_up_to", default=128, help="also time the Python-loop decoder up to this length")
    ap.add_argument("--bucket", type=int, default=64, help="growth step of the prefix-recompute buffer")
    args = ap.parse_args()
    cfg = load_config(args.config).model
    cfg = dataclasses.replace(cfg, compute_dtype=args.dtype, max_seq_len=max(cfg.max_seq_len, 4096))
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    prompts = rng.integers(16, cfg.vocab_size, size=(args.batch, args.prompt)).astype(np.int32)
    cache_dtype = jnp.float32 if args.dtype == "float32" else jnp.bfloat16
    print(f"model d={cfg.hidden_size} layers/stack={cfg.layers_per_stack} H_cycles={cfg.H_cycles} "
          f"L_cycles={cfg.L_cycles} vocab={cfg.vocab_size} {args.dtype}; batch {args.batch}, prompt {args.prompt}, "
          f"{jax.device_count()} x {jax.devices()[0].platform}")
    print(f"{'new tokens':>10} {'cache while s':>14} {'cache python s':>15} {'prefix s':>9} {'full s':>8} "
          f"{'cache tok/s':>12} {'prefix tok/s':>13} {'speedup prefix':>15} {'speedup full':>13} {'same':>5}")
    result = {"batch": args.batch, "prompt": args.prompt, "d": cfg.hidden_size, "dtype": args.dtype,
              "bucket": args.bucket}
    python_up_to = int(args.python_loop_up_to)
    for new in [int(x) for x in args.lengths.split(",")]:
        times, outs = {}, {}
        for loop in ("while", "python") if new <= python_up_to else ("while",):
            # min_bucket/max_context = prompt + new: one compiled shape; a 2-token call compiles the prefill
            # and (Python loop) the per-token step.
            gen = Generator(model, eoa_id=None, max_context=args.prompt + new, batch_size=args.batch,
                            cache_dtype=cache_dtype, loop=loop, min_bucket=args.prompt + new)
            gen.generate(prompts.tolist(), 2)
            times[loop], outs[loop] = timed(gen.generate, prompts.tolist(), new)
        rec = recompute_fn(model, args.prompt, args.prompt + new)
        rec(jnp.asarray(prompts), 1).block_until_ready()
        t_rec, rec_out = timed(rec, jnp.asarray(prompts), new)
        pre = prefix_recompute_fn(model, args.prompt, args.prompt + new, args.bucket)
        pre.warm_up(jnp.asarray(prompts))
        t_pre, pre_out = timed(pre, jnp.asarray(prompts), new)
        ref = np.array(outs["while"])
        same = np.array_equal(np.asarray(rec_out), ref) and np.array_equal(np.asarray(pre_out), ref) and \
            outs["while"] == outs.get("python", outs["while"])
        best = min(times.values())
        toks = args.batch * new
        py = f"{times['python']:>15.3f}" if "python" in times else f"{'-':>15}"
        print(f"{new:>10} {times['while']:>14.3f} {py} {t_pre:>9.3f} {t_rec:>8.3f} {toks / best:>12.1f} "
              f"{toks / t_pre:>13.1f} {t_pre / best:>15.1f} {t_rec / best:>13.1f} {str(same):>5}")
        result[f"cache_while_s_{new}"] = round(times["while"], 4)
        if "python" in times:
            result[f"cache_python_s_{new}"] = round(times["python"], 4)
        result[f"recompute_prefix_s_{new}"] = round(t_pre, 4)
        result[f"recompute_s_{new}"] = round(t_rec, 4)
        result[f"speedup_prefix_{new}"] = round(t_pre / best, 2)
        result[f"speedup_{new}"] = round(t_rec / best, 2)
        result[f"same_tokens_{new}"] = bool(same)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
