"""The compiled plan: what the sharded step communicates, read from the optimised HLO (hrm/train/hlo_stats.py).

- With activations batch-sharded over data x fsdp, no collective may carry a tensor with the global batch
  dimension (only weights, gradients and tensor-parallel partial sums move), on 8 CPU devices and for a TPU
  topology (libtpu AOT).
- Weight gradients are reduced across chips in fp32 (the reference's FSDP reduce dtype), not bf16.
- The HLO parser counts loop trip counts and async collective pairs correctly.
"""

from __future__ import annotations

import importlib.util

import jax
import numpy as np
import pytest

from hrm.config import load_config
from hrm.train.hlo_stats import HloProgram, collectives_with_dim
from hrm.train.setup import setup
from hrm.train.step import compile_train_step

ROWS = 40  # global batch rows: a size no other dimension of the small models has (d <= 256, T 64, V 256, I >= 512)
SMALL = ["model.hidden_size=128", "model.num_heads=2", "model.head_dim=64", "model.vocab_size=256",
         "data.seq_len=64", f"train.global_batch_rows={ROWS}", "train.total_steps=10", "model.loss_chunk=32",
         "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", "model.remat=full"]


def compile_step(overrides: list[str], devices=None, bp: int = 5):
    merged = dict(o.split("=", 1) for o in SMALL + overrides)  # later entries win
    cfg = load_config("configs/tiny.yaml", [f"{k}={v}" for k, v in merged.items()])
    s = setup(cfg, devices, process_count=1)
    step = compile_train_step(cfg, s.spec, s.tx, s.total_steps, bp, s.state_shardings, s.batch_sharding)
    with jax.set_mesh(s.mesh):
        return s, HloProgram(step.lower(s.abstract_state, s.abstract_batch()).compile().as_text())


# ----------------------------------------------------------------------------- the parser


SYNTHETIC = """HloModule m

%body (p: (s32[], f32[8,16])) -> (s32[], f32[8,16]) {
  %p = (s32[], f32[8,16]) parameter(0)
  %x = f32[8,16]{1,0} get-tuple-element(%p), index=1
  %ag-start = (f32[8,16], f32[32,16]) all-gather-start(%x), dimensions={0}
  %ag-done = f32[32,16]{1,0} all-gather-done(%ag-start)
  %inner = (s32[], bf16[4]) while(%t), condition=%cond2, body=%body2
  ROOT %t = (s32[], f32[8,16]) tuple(%i, %x)
}

%body2 (q: (s32[], bf16[4])) -> (s32[], bf16[4]) {
  %ar = bf16[4]{0} all-reduce(%y), replica_groups={}, to_apply=%add
}

%cond2 (q: (s32[], bf16[4])) -> pred[] {
  %c2 = s32[] constant(3)
  %g2 = s32[] get-tuple-element(%q), index=0
  ROOT %lt2 = pred[] compare(%g2, %c2), direction=LT
}

%cond (p: (s32[], f32[8,16])) -> pred[] {
  %c = s32[] constant(5)
  %g = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%g, %c), direction=LT
}

ENTRY %main (a: f32[8,16]) -> f32[8,16] {
  %a = f32[8,16]{1,0} parameter(0)
  %w = (s32[], f32[8,16]) while(%init), condition=%cond, body=%body
  %rs = f32[2,16]{1,0} reduce-scatter(%a), dimensions={0}, to_apply=%add
  ROOT %r = f32[8,16] get-tuple-element(%w), index=1
}
"""


def test_parser_counts_trip_counts_nested_loops_and_async_pairs_once():
    p = HloProgram(SYNTHETIC)
    assert p.multiplicity["body"] == 5 and p.multiplicity["body2"] == 15
    s = p.collective_summary()
    # all-gather 32x16 f32 five times (counted at -done only), all-reduce 4 bf16 fifteen times, one reduce-scatter
    assert s["collective_bytes_by_kind"] == {"all-gather f32": 5 * 32 * 16 * 4, "all-reduce bf16": 15 * 4 * 2,
                                             "reduce-scatter f32": 2 * 16 * 4}
    assert s["collective_ops"] == {"all-gather": 5, "all-reduce": 15, "reduce-scatter": 1}
    assert s["unknown_trip_count_loops"] == 0
    assert collectives_with_dim(p, 32) == ["body/ag-done: all-gather f32[32,16]{1,0}"]
    assert collectives_with_dim(p, 8) and not collectives_with_dim(p, 7)


# ----------------------------------------------------------------------------- 8 CPU devices


def test_cpu_sharded_step_never_communicates_the_global_batch():
    _, prog = compile_step([])
    assert prog.collectives(), "a sharded step must communicate (FSDP gathers, gradient reductions)"
    assert collectives_with_dim(prog, ROWS) == []


def test_check_detects_batch_traffic_when_activations_are_not_batch_sharded():
    """Negative control: with the batch rule removed the same check must fire (the test above can fail)."""
    _, prog = compile_step(["mesh.rules={act_batch: null}"])
    assert collectives_with_dim(prog, ROWS)


# ----------------------------------------------------------------------------- TPU topology (libtpu AOT)


@pytest.fixture(scope="module")
def tpu_plan():
    if importlib.util.find_spec("libtpu") is None:
        pytest.skip("libtpu not installed (pip install 'jax[tpu]==0.10.2' enables AOT TPU compilation)")
    from hrm.train.aot import topology_devices

    try:
        devices = topology_devices("v5p:2x2x2")
    except RuntimeError as e:
        pytest.skip(str(e))
    return compile_step(["model.compute_dtype=bfloat16", "model.head_dim=128", "model.hidden_size=256",
                         "model.attention_backend=splash", "model.attention_block_q=128",
                         "model.attention_block_kv=128"], devices)


@pytest.mark.tpu_backend
def test_tpu_sharded_step_never_communicates_the_global_batch(tpu_plan):
    _, prog = tpu_plan
    assert prog.collectives() and collectives_with_dim(prog, ROWS) == []


@pytest.mark.tpu_backend
def test_tpu_weight_gradients_are_reduced_in_fp32(tpu_plan):
    """Every reduction whose result has the per-device shape of a (per-layer) weight runs in fp32."""
    s, prog = tpu_plan
    weight_shapes = set()
    for leaf in jax.tree.leaves(s.abstract_state["params"]):
        local = tuple(leaf.sharding.shard_shape(leaf.shape))
        for shape in (local, local[1:], tuple(leaf.shape), tuple(leaf.shape[1:])):
            weight_shapes.add(tuple(d for d in shape if d != 1))
    reductions = [(ins, dt, dims) for ins, kind, _ in prog.collectives() if kind in ("all-reduce", "reduce-scatter")
                  for dt, dims in ins.result_shapes() if tuple(d for d in dims if d != 1) in weight_shapes]
    assert reductions, "expected weight-gradient reductions in a data/fsdp-parallel step"
    bad = [f"{ins.name}: {dt}{list(dims)}" for ins, dt, dims in reductions if dt != "f32"]
    assert not bad, bad
    assert np.isfinite(prog.collective_summary()["collective_bytes_per_device"])
