"""Ahead-of-time compilation of the real train step for a TPU topology on a CPU-only machine.

    python train.py --config configs/xl.yaml --compile_only --topology v5p:2x2x2

Uses libtpu's compiler without TPU hardware (`jax.experimental.topologies.get_topology_desc`,
STYLE "Ahead-of-time TPU compilation"): builds the mesh from the topology's devices, lowers the
jitted step on ShapeDtypeStructs carrying NamedShardings and compiles it, then reports per-device
memory (arguments, temporaries, outputs, total vs the chip's HBM) and HLO FLOPs next to the
analytic FLOPs (SPEC §9). Without --topology the step is compiled for the local devices.
libtpu is an extra install (`pip install "jax[tpu]==0.10.2"`); it is imported only here.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp

from hrm.config import Config
from hrm.mesh import make_mesh
from hrm.model.scan import unrolled_scans
from hrm.sharding import batch_sharding
from hrm.train.flops import device_peak, flops_per_step
from hrm.train.loop import check_batch_layout, global_batch_rows
from hrm.train.state import abstract_state, make_optimizer, model_spec, state_sharding
from hrm.train.step import BATCH_KEYS, compile_train_step, train_step


def _flops(cost: Any) -> float:
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def unrolled_hlo_flops(cfg: Config, spec, tx, total: int, bp: Optional[int], state, batch) -> float:
    """Global FLOPs of one train step from XLA's cost analysis of the step lowered (not compiled) for
    the host backend with every scan unrolled; shardings do not change the global count."""
    strip = lambda t: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), t)  # noqa: E731
    fn = functools.partial(train_step, cfg=cfg, spec=spec, tx=tx, total_steps=total, bp_steps=bp)
    with unrolled_scans():
        return _flops(jax.jit(fn).lower(strip(state), strip(batch)).cost_analysis())


def topology_devices(topology: str) -> list:
    """Devices of a TPU topology such as 'v5p:2x2x2' (needs libtpu; no hardware)."""
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    from jax.experimental import topologies

    try:
        topo = topologies.get_topology_desc(platform="tpu", topology_name=topology)
    except Exception as e:  # noqa: BLE001 - libtpu missing or unknown name
        raise RuntimeError(f"cannot get TPU topology {topology!r} ({type(e).__name__}: {e}). AOT compilation "
                           f"needs libtpu: pip install \"jax[tpu]==0.10.2\"; names look like v5p:2x2x2, "
                           f"v5e:4x4, v6e:2x2, v4:2x2x2") from None
    return list(topo.devices)


def compile_only(cfg: Config, topology: str = "", bp_steps: Optional[int] = None) -> dict[str, Any]:
    """Compile the train step (at `bp_steps`, default bp_max_steps) and return the memory/FLOPs report."""
    topology = topology or cfg.mesh.topology
    devices = topology_devices(topology) if topology else jax.devices()
    mesh = make_mesh(cfg.mesh, devices)
    rows = global_batch_rows(cfg)
    check_batch_layout(cfg, rows, dict(mesh.shape), 1)
    T = cfg.data.seq_len
    bp = (bp_steps or cfg.model.bp_max_steps) if cfg.model.arch == "hrm" else None
    spec = model_spec(cfg)
    total = cfg.train.total_steps or 100_000
    tx = make_optimizer(cfg, total)
    shardings = state_sharding(spec, mesh, cfg.mesh.rules)
    b_sh = batch_sharding(mesh, cfg.mesh.rules)
    state = abstract_state(cfg, tx, shardings)
    batch = {k: jax.ShapeDtypeStruct((rows, T), jnp.int32, sharding=b_sh) for k in BATCH_KEYS}
    step = compile_train_step(cfg, spec, tx, total, bp, shardings, b_sh)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0

    mem = compiled.memory_analysis()
    arg, out, tmp = mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.temp_size_in_bytes
    alias = getattr(mem, "alias_size_in_bytes", 0)
    peak = arg + out + tmp - alias
    n_dev = len(devices)
    # XLA counts a while-loop body once, so the compiled (scanned) program's FLOPs undercount by the
    # layer/cycle trip counts; count on the same step lowered with every scan unrolled instead.
    loop_once_flops = _flops(compiled.cost_analysis()) * n_dev  # per-device SPMD program
    hlo_flops = unrolled_hlo_flops(cfg, spec, tx, total, bp, state, batch)
    tokens = rows * T
    analytic = flops_per_step(cfg.model, bp or cfg.model.bp_max_steps, tokens, visible_keys_sum=float(tokens * T))
    kind = devices[0].device_kind
    chip = device_peak(kind)
    hbm = chip[1] if chip else None
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    print(f"AOT compile of {cfg.name} ({n_params / 1e9:.3f}B params) for {topology or 'local devices'}: "
          f"{n_dev} x {kind}, mesh {dict(mesh.shape)}, batch {rows}x{T}, bp_steps {bp}, compiled in {compile_s:.1f}s")
    gib = 2 ** 30
    print(f"  per-device memory: arguments {arg / gib:.2f} GiB, outputs {out / gib:.2f} GiB (aliased "
          f"{alias / gib:.2f}), temporaries {tmp / gib:.2f} GiB, total {peak / gib:.2f} GiB"
          + (f" of {hbm / gib:.0f} GiB HBM ({peak / hbm:.1%})" if hbm else ""))
    print(f"  FLOPs per step: HLO (scans unrolled) {hlo_flops:.3e} vs analytic {analytic['total']:.3e} (dense attention; "
          f"{analytic['total_excl_attention']:.3e} without) -> ratio {hlo_flops / analytic['total']:.3f}")
    return {
        "config": cfg.name, "topology": topology or "local", "device_kind": kind, "n_devices": n_dev,
        "mesh": dict(mesh.shape), "bp_steps": bp, "batch_rows": rows, "seq_len": T, "compile_s": round(compile_s, 1),
        "argument_bytes": int(arg), "output_bytes": int(out), "temp_bytes": int(tmp), "alias_bytes": int(alias),
        "bytes_per_device": int(peak), "hbm_bytes": int(hbm) if hbm else None,
        "hbm_fraction": round(peak / hbm, 4) if hbm else None,
        "hlo_flops": hlo_flops, "hlo_flops_loop_bodies_once": loop_once_flops, "analytic_flops": analytic["total"],
        "flops_ratio": round(hlo_flops / analytic["total"], 4) if analytic["total"] else None,
    }
