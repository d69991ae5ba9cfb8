"""CPU training-step speed of this checkout against a baseline checkout, timed in the same run (issue 12).

Times the jitted training step that `train.py` runs (forward, truncated backward, AdamAtan2, EMA; fp32 compute)
on one packed PrefixLM row, built as: `rng = np.random.default_rng(0)`; while at least 256 slots remain, append an
example with instruction length `rng.integers(32, 160)` and response length `rng.integers(16, 96)` (it occupies
Li + Lo - 1 slots, docs/prefixlm_packing.md §2); token ids are drawn afterwards from the same generator.

Absolute times vary between machines and with load, so the result is a ratio. Each side (`new` = the package
imported normally, `base` = the checkout at `--baseline_repo`, imported through PYTHONPATH) runs in its own worker
process that builds the state, compiles the step once and then waits; the parent asks the workers for `--steps`
timed steps in turn, `--rounds` times (A/B interleaved, so a burst of load from other jobs hits both sides), and
reports medians. Between rounds the parent times a large fp32 matmul (`--peak_n`) to estimate this machine's fp32
matmul peak; the best time counts. Achieved GFLOP/s uses the analytic FLOPs of the step (`hrm.train.flops`,
including the PrefixLM attention-score FLOPs of this row's examples).

    python bench/train_step.py --hidden 256 --layers 8 --heads 4 --vocab 8192 --tokens 2048 --bp 5 --steps 2
    python bench/train_step.py ... --baseline_repo none          # this checkout only
    python bench/train_step.py ... --profile /tmp/prof           # + one jax.profiler trace per side

Ends with one line `RESULT {json}`: `step_s`, `tokens_per_s`, `gflops_per_s`, `peak_gflops_per_s`,
`peak_fraction` (this checkout), the same for the baseline under `base_*`, and `speedup` = base / new step time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_BASELINE = "/tmp/hrm_base"  # `git worktree add /tmp/hrm_base 712fefc` (the code of issue 12's 18.8 s/step)
MIN_REMAINING = 256


# ----------------------------------------------------------------------------- the packed row


def example_lengths(tokens: int) -> list[tuple[int, int]]:
    """(instruction, response) lengths of the examples packed into one row of `tokens` slots (issue 12 recipe)."""
    rng = np.random.default_rng(0)
    lengths, used = [], 0
    while tokens - used >= MIN_REMAINING:
        li, lo = int(rng.integers(32, 160)), int(rng.integers(16, 96))
        lengths.append((li, lo))
        used += li + lo - 1
    return lengths


def packed_row(tokens: int, vocab: int) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
    """The benchmark row as [1, T] int32 batch fields (hrm.data.packing.build_rows) and its example lengths."""
    from hrm.data.packing import build_rows

    lengths = example_lengths(tokens)
    n = np.array([li + lo for li, lo in lengths], np.int64)
    rng = np.random.default_rng(0)
    for _ in lengths:  # the same generator state as in `example_lengths`, then the token ids
        rng.integers(32, 160), rng.integers(16, 96)
    flat = rng.integers(0, vocab, int(n.sum())).astype(np.int32)
    rows = build_rows(flat, n, np.array([li for li, _ in lengths]), np.zeros(len(n), np.int64), 1, tokens)
    return rows, lengths


# ----------------------------------------------------------------------------- worker side


def _config(args):
    from hrm.config import load_config

    t = args.tokens
    over = [f"model.arch={args.arch}", f"model.hidden_size={args.hidden}", f"model.n_layers={args.layers}",
            f"model.num_heads={args.heads}", f"model.vocab_size={args.vocab}", f"model.max_seq_len={t}",
            "model.compute_dtype=float32", "model.param_dtype=float32", f"data.seq_len={t}",
            "train.global_batch_rows=1", "train.total_steps=1000"]
    if args.bp > 5:
        over.append(f"model.bp_max_steps={args.bp}")
    return load_config(None, over)


def resolve_bp(args) -> int:
    """`--bp` if the architecture has a bp_steps schedule (HRM's warmup), else 0 (a fixed horizon). Resolved once
    in the parent with this checkout's registry, then passed to both workers (the baseline may predate it)."""
    from hrm.model.registry import max_bp_steps

    return 0 if max_bp_steps(_config(args).model) is None else args.bp


def _build_step(cfg, side: str, bp):
    """(compiled step, state, batch sharding) through the side's own APIs: `hrm.train.setup` on this checkout,
    the state functions of 712fefc on the baseline; both compile with `StepCache`, as the training loop does."""
    from hrm.train.step import StepCache

    if side == "new":
        from hrm.train.setup import setup

        s = setup(cfg, total_steps=cfg.train.total_steps)
        state, state_sh, batch_sh = s.fresh_state(), s.state_shardings, s.batch_sharding
        steps = StepCache(cfg, s.spec, s.tx, s.total_steps, state_sh, batch_sh)
    else:
        from hrm.mesh import make_mesh
        from hrm.sharding import batch_sharding
        from hrm.train.state import init_state, make_optimizer, model_spec, state_sharding

        mesh = make_mesh(cfg.mesh)
        spec, tx = model_spec(cfg), make_optimizer(cfg, cfg.train.total_steps)
        state_sh, batch_sh = state_sharding(spec, mesh, cfg.mesh.rules), batch_sharding(mesh, cfg.mesh.rules)
        state = init_state(cfg, spec, tx, state_sh)
        steps = StepCache(cfg, spec, tx, cfg.train.total_steps, state_sh, batch_sh)
    return steps, state, batch_sh


def worker(args) -> None:
    """Compile, run one warm-up step, print `READY {json}`, then answer `RUN n` with `TIMES [...]` until `QUIT`."""
    import jax

    cfg = _config(args)
    rows = dict(np.load(args.row))
    bp = args.bp or None
    t0 = time.perf_counter()
    steps, state, batch_sh = _build_step(cfg, args.worker, bp)
    batch = {k: jax.device_put(v, batch_sh) for k, v in rows.items()}
    step = steps(bp, state, batch)
    compile_s = time.perf_counter() - t0
    state, metrics = step(state, batch)
    loss = float(metrics["loss"])
    if args.profile:
        out = Path(args.profile) / args.worker
        with jax.profiler.trace(str(out)):
            state, metrics = step(state, batch)
            jax.block_until_ready(state)
    print("READY " + json.dumps({"compile_s": compile_s, "loss": loss, "devices": jax.device_count(),
                                 "hrm": __import__("hrm").__file__}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "QUIT":
            break
        times = []
        for _ in range(int(cmd[1])):
            t0 = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready((state, metrics))
            times.append(time.perf_counter() - t0)
        print("TIMES " + json.dumps(times), flush=True)


# ----------------------------------------------------------------------------- parent side


class Worker:
    """One worker process (a side of the comparison) driven over stdin/stdout."""

    def __init__(self, side: str, args, row_path: str, pythonpath: str | None):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
        env.setdefault("JAX_PLATFORMS", "cpu")  # do not probe for a TPU (libtpu may be installed for AOT)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        if args.dump:
            env["XLA_FLAGS"] = f"--xla_dump_to={Path(args.dump) / side}"
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--row", row_path,
               *(f"--{k}={getattr(args, k)}" for k in ("hidden", "layers", "heads", "vocab", "tokens", "bp", "arch"))]
        if args.profile:
            cmd.append(f"--profile={args.profile}")
        self.side = side
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=pythonpath or os.getcwd())
        self.ready = self._expect("READY")

    def _expect(self, tag: str):
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
        raise RuntimeError(f"{self.side} worker exited (code {self.proc.wait()}) before printing {tag}; "
                           f"its stderr above says why")

    def run(self, n: int) -> list[float]:
        self.proc.stdin.write(f"RUN {n}\n")
        self.proc.stdin.flush()
        return self._expect("TIMES")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("QUIT\n")
            self.proc.stdin.close()
            self.proc.wait()


def matmul_peak(n: int, reps: int = 5) -> float:
    """Best fp32 FLOP/s of an n x n @ n x n matmul (jitted, result blocked on)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def step_flops(args, lengths) -> float:
    """Analytic FLOPs of one step on the row (docs/optimizer.md §5), attention scores on the row's PrefixLM examples."""
    from hrm.train.flops import flops_per_step, visible_keys_total

    cfg = _config(args)
    bp = args.bp or None
    # An example of Li + Lo tokens occupies Li + Lo - 1 slots: its prefix is Li slots, its response Lo - 1.
    vis = visible_keys_total([(li, lo - 1) for li, lo in lengths], "prefixlm")
    return flops_per_step(cfg.model, bp, args.tokens, vis)["total"]


def parent(args) -> dict:
    base = None if args.baseline_repo.lower() == "none" else Path(args.baseline_repo)
    if base is not None and not (base / "hrm" / "__init__.py").is_file():
        sys.exit(f"--baseline_repo {base}: no checkout there (expected {base}/hrm/__init__.py). Create one with "
                 f"`git worktree add {base} 712fefc`, or pass --baseline_repo none to time this checkout only.")
    rows, lengths = packed_row(args.tokens, args.vocab)
    flops = step_flops(args, lengths)
    with tempfile.TemporaryDirectory() as tmp:
        row_path = os.path.join(tmp, "row.npz")
        np.savez(row_path, **rows)
        workers = [Worker("new", args, row_path, None)]
        try:
            if base is not None:
                workers.append(Worker("base", args, row_path, str(base)))
            for w in workers:
                print(f"{w.side}: compiled in {w.ready['compile_s']:.1f}s, first loss {w.ready['loss']:.4f} "
                      f"({w.ready['hrm']})", flush=True)
            times: dict[str, list[float]] = {w.side: [] for w in workers}
            peaks = []
            for r in range(args.rounds):
                for w in (workers if r % 2 == 0 else workers[::-1]):
                    t = w.run(args.steps)
                    times[w.side] += t
                    print(f"round {r + 1}/{args.rounds} {w.side}: " + " ".join(f"{x:.2f}s" for x in t), flush=True)
                peaks.append(matmul_peak(args.peak_n))
        finally:
            for w in workers:
                w.close()
    peak = max(peaks)
    result = {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "vocab": args.vocab,
              "tokens": args.tokens, "bp": args.bp, "arch": args.arch, "examples": len(lengths),
              "real_tokens": int(rows["segment_ids"].astype(bool).sum()), "step_flops": flops,
              "peak_gflops_per_s": peak / 1e9, "rounds": args.rounds, "steps_per_round": args.steps,
              "load_avg_1m": os.getloadavg()[0]}
    for side, ts in times.items():
        pre = "" if side == "new" else "base_"
        med = statistics.median(ts)
        result.update({f"{pre}step_s": med, f"{pre}step_s_min": min(ts), f"{pre}tokens_per_s": args.tokens / med,
                       f"{pre}gflops_per_s": flops / med / 1e9, f"{pre}peak_fraction": flops / med / peak,
                       f"{pre}times": [round(x, 3) for x in ts]})
    if "base" in times:
        result["speedup"] = result["base_step_s"] / result["step_s"]
        # Paired per-round ratios: robust to load that changes between rounds.
        n = args.steps
        ratios = [statistics.median(times["base"][i:i + n]) / statistics.median(times["new"][i:i + n])
                  for i in range(0, len(times["new"]), n)]
        result["speedup_per_round"] = [round(x, 3) for x in ratios]
        result["speedup_median_of_rounds"] = statistics.median(ratios)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8, help="model.n_layers (total; HRM splits it in half)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--tokens", type=int, default=2048, help="slots of the packed row")
    p.add_argument("--bp", type=int, default=5, help="bp_steps of the timed step (HRM)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per side and round")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds (alternating order)")
    p.add_argument("--arch", default="hrm")
    p.add_argument("--baseline_repo", default=DEFAULT_BASELINE,
                   help="checkout of the baseline (default: %(default)s); 'none' times this checkout only")
    p.add_argument("--peak_n", type=int, default=2048, help="matrix size of the fp32 matmul peak")
    p.add_argument("--profile", default="", help="directory for one jax.profiler trace per side")
    p.add_argument("--dump", default="", help="directory for XLA dumps (--xla_dump_to) per side")
    p.add_argument("--worker", choices=("new", "base"), help=argparse.SUPPRESS)
    p.add_argument("--row", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before jax is imported (the parent's matmul peak)
    if args.worker:
        worker(args)
        return
    args.bp = resolve_bp(args)
    print("RESULT " + json.dumps(parent(args)))


if __name__ == "__main__":
    main()
