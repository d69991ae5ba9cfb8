"""The compiled plan of the real train step for a TPU topology, built on a CPU-only machine.

    python train.py --config configs/xl.yaml --compile_only --topology v5p:2x2x2

libtpu compiles without TPU hardware (`jax.experimental.topologies.get_topology_desc`, STYLE
"Ahead-of-time TPU compilation"): the mesh is built from the topology's devices, the step is lowered
under it on ShapeDtypeStructs carrying NamedShardings and compiled. The report (`compile_only`) is
what a pod would run, measured:

- memory: per-device arguments, temporaries, outputs (aliased donations subtracted) vs the chip's HBM;
- collectives: every all-gather / all-reduce / reduce-scatter / all-to-all / collective-permute of
  the optimised per-device HLO with its output bytes, times its loop trip counts (hrm/train/hlo_stats.py);
- FLOPs: XLA's cost analysis of the step lowered with every scan unrolled (XLA counts a loop body
  once). Pallas kernels are custom calls XLA cannot see: with a kernel attention backend the step is
  counted with a matmul-free stand-in for attention and the kernels' FLOPs are added from their
  computed blocks on a realistic packed batch times the kernel calls in the compiled program. The
  ratio to the analytic model FLOPs (docs/optimizer.md §5, PrefixLM-visible attention on the same batch) shows
  recompute (remat) and waste (dense attention over masked blocks);
- implied speed: step time and tokens/s at 40% and 50% MFU of the chips' bf16 peak.

Without --topology the step is compiled for the local devices. libtpu is an extra install
(`pip install "jax[tpu]==0.10.2"`); it is imported only here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from typing import Any, Optional

import jax

from hrm.config import Config
from hrm.data.synthetic import packed_layout
from hrm.model.attention import backend_module, key_ranges, shape_only_attention
from hrm.model.registry import max_bp_steps
from hrm.model.scan import unrolled_scans
from hrm.train.flops import device_peak, flops_per_step
from hrm.sharding import with_shardings
from hrm.train.hlo_stats import HloProgram
from hrm.train.loop import visible_keys_sum
from hrm.train.setup import TrainSetup, setup
from hrm.train.step import compile_train_step, train_step

GiB = 2 ** 30
REFERENCE_TOKENS_PER_S = 60e9 / (46 * 3600)  # the reference: 60B tokens in 46 h on 16 H100 (docs/optimizer.md §5)


def _flops(cost: Any) -> float:
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def topology_devices(topology: str) -> list:
    """Devices of a TPU topology such as 'v5p:2x2x2' (needs libtpu; no hardware)."""
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compiling only: no device is opened
    from jax.experimental import topologies

    try:
        topo = topologies.get_topology_desc(platform="tpu", topology_name=topology)
    except Exception as e:
        raise RuntimeError(f"cannot get TPU topology {topology!r} ({type(e).__name__}: {e}). AOT compilation "
                           f"needs libtpu: pip install \"jax[tpu]==0.10.2\"; names look like v5p:2x2x2, "
                           f"v5e:4x4, v6e:2x4, v4:2x2x2") from None
    return list(topo.devices)


def unrolled_hlo_flops(cfg: Config, s: TrainSetup, bp: Optional[int], shape_only: bool) -> float:
    """Global FLOPs of one train step from XLA's cost analysis of the step lowered (not compiled) for the
    host backend with every scan unrolled; shardings do not change the global count. With `shape_only`,
    attention is replaced by a matmul-free stand-in (its FLOPs are added separately)."""
    strip = lambda t: with_shardings(t, jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0]))  # noqa: E731
    fn = functools.partial(train_step, cfg=cfg, spec=s.spec, tx=s.tx, total_steps=s.total_steps, bp_steps=bp)
    with unrolled_scans(), (shape_only_attention() if shape_only else contextlib.nullcontext()):
        return _flops(jax.jit(fn).lower(strip(s.abstract_state), strip(s.abstract_batch())).cost_analysis())


def kernel_flops(cfg: Config, program: HloProgram, layout: dict) -> tuple[float, dict]:
    """Global FLOPs of the attention kernel calls in the compiled program (0 for backends without
    kernels): computed blocks of the realistic batch x FLOPs per block x calls per step."""
    backend = backend_module(cfg.model.attention_backend)
    names = getattr(backend, "KERNEL_NAMES", None)
    if not names:
        return 0.0, {}
    m = cfg.model
    lo, hi = key_ranges(layout["segment_ids"], layout["prefix_mask"], m.attn_type == "causal")
    counts = backend.block_counts(lo, hi, m.attention_block_q, m.attention_block_kv)
    per_call = backend.kernel_flops(counts, m.num_heads, m.resolved_head_dim)  # over the global batch
    calls = {k: program.custom_calls(name) for k, name in names.items()}
    total = float(sum(calls[k] * per_call[k] for k in calls))
    return total, {"kernel_calls": calls, "block_occupancy": counts["fwd"] / counts["dense"],
                   "kernel_flops_per_call": per_call}


def compile_only(cfg: Config, topology: str = "", bp_steps: Optional[int] = None,
                 count_recompute: bool = True) -> dict[str, Any]:
    """Compile the train step (at `bp_steps`, default the architecture's most expensive variant) under its
    mesh and return the plan report (also printed)."""
    topology = topology or cfg.mesh.topology
    devices = topology_devices(topology) if topology else jax.devices()
    s = setup(cfg, devices, process_count=1)
    bp = bp_steps or max_bp_steps(cfg.model)
    step = compile_train_step(cfg, s.spec, s.tx, s.total_steps, bp, s.state_shardings, s.batch_sharding)
    t0 = time.perf_counter()
    with jax.set_mesh(s.mesh):
        compiled = step.lower(s.abstract_state, s.abstract_batch()).compile()
    compile_s = time.perf_counter() - t0

    mem = compiled.memory_analysis()
    arg, out, tmp = mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.temp_size_in_bytes
    alias = getattr(mem, "alias_size_in_bytes", 0)
    peak = arg + out + tmp - alias
    program = HloProgram(compiled.as_text())
    collectives = program.collective_summary()

    n_dev, kind = len(devices), devices[0].device_kind
    tokens = s.tokens_per_step
    layout = packed_layout(s.global_rows, s.seq_len)
    visible = visible_keys_sum(layout, cfg.model.attn_type == "causal")
    analytic = flops_per_step(cfg.model, bp, tokens, visible_keys_sum=visible)
    k_flops, k_info = kernel_flops(cfg, program, layout)
    uses_kernel = bool(k_info)
    hlo_flops = unrolled_hlo_flops(cfg, s, bp, shape_only=uses_kernel)
    recompute = None
    if count_recompute and cfg.model.remat != "none":
        no_remat = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, remat="none"))
        recompute = hlo_flops - unrolled_hlo_flops(no_remat, setup(no_remat, devices, process_count=1), bp,
                                                   shape_only=uses_kernel)
        if uses_kernel:  # forward-kernel calls beyond one per layer application are recomputation
            layer_apps = int(analytic["n_applications"]) * cfg.model.layers_per_stack
            extra = k_info["kernel_calls"]["fwd"] - layer_apps
            recompute += extra * k_info["kernel_flops_per_call"]["fwd"]
    step_flops = hlo_flops + k_flops
    chip = device_peak(kind)
    hbm = chip[1] if chip else None
    implied = {}
    if chip:
        for u in (0.4, 0.5):
            t_step = analytic["total"] / (n_dev * chip[0] * u)
            implied[f"mfu_{int(u * 100)}"] = {"step_s": round(t_step, 3), "tokens_per_s": round(tokens / t_step)}
    n_params = sum(x.size for x in jax.tree.leaves(s.abstract_state["params"]))
    report = {
        "config": cfg.name, "topology": topology or "local", "device_kind": kind, "n_devices": n_dev,
        "mesh": dict(s.mesh.shape), "attention": cfg.model.attention_backend, "remat": cfg.model.remat,
        "loss_chunk": cfg.model.loss_chunk, "bp_steps": bp, "batch_rows": s.global_rows, "seq_len": s.seq_len,
        "params": int(n_params), "compile_s": round(compile_s, 1),
        "argument_bytes": int(arg), "output_bytes": int(out), "temp_bytes": int(tmp), "alias_bytes": int(alias),
        "bytes_per_device": int(peak), "hbm_bytes": int(hbm) if hbm else None,
        "hbm_fraction": round(peak / hbm, 4) if hbm else None,
        **collectives,
        "hlo_flops": hlo_flops, "kernel_flops": k_flops, "analytic_flops": analytic["total"],
        "analytic_flops_excl_attention": analytic["total_excl_attention"],
        "flops_ratio": round(step_flops / analytic["total"], 4) if analytic["total"] else None,
        "recompute_flops": recompute, "visible_key_fraction": round(visible / (tokens * s.seq_len), 4),
        **k_info, "implied": implied, "reference_tokens_per_s": round(REFERENCE_TOKENS_PER_S),
    }
    _print_report(report)
    return report


def _print_report(r: dict) -> None:
    print(f"AOT compile of {r['config']} ({r['params'] / 1e9:.3f}B params) for {r['topology']}: {r['n_devices']} x "
          f"{r['device_kind']}, mesh {r['mesh']}, batch {r['batch_rows']}x{r['seq_len']}, bp_steps {r['bp_steps']}, "
          f"attention {r['attention']}, remat {r['remat']}, compiled in {r['compile_s']:.1f}s")
    hbm = f" of {r['hbm_bytes'] / GiB:.0f} GiB HBM ({r['hbm_fraction']:.1%})" if r["hbm_bytes"] else ""
    print(f"  per-device memory: arguments {r['argument_bytes'] / GiB:.2f} GiB, outputs {r['output_bytes'] / GiB:.2f} "
          f"GiB (aliased {r['alias_bytes'] / GiB:.2f}), temporaries {r['temp_bytes'] / GiB:.2f} GiB, total "
          f"{r['bytes_per_device'] / GiB:.2f} GiB{hbm}")
    print(f"  collectives per device per step: {r['collective_bytes_per_device'] / GiB:.2f} GiB "
          + ", ".join(f"{k} {v / GiB:.2f}" for k, v in r["collective_bytes_by_kind"].items()))
    extra = f" + kernels {r['kernel_flops']:.3e}" if r["kernel_flops"] else ""
    rec = f"; remat recompute {r['recompute_flops']:.3e}" if r["recompute_flops"] is not None else ""
    print(f"  FLOPs per step: HLO (scans unrolled) {r['hlo_flops']:.3e}{extra} vs analytic {r['analytic_flops']:.3e} "
          f"(PrefixLM-visible attention, {r['visible_key_fraction']:.0%} of dense) -> ratio {r['flops_ratio']}{rec}")
    for k, v in r["implied"].items():
        print(f"  at {k.split('_')[1]}% MFU: {v['step_s']} s/step, {v['tokens_per_s']:,} tokens/s "
              f"(reference: {r['reference_tokens_per_s']:,} tokens/s on 16 H100)")
