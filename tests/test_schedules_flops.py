"""LR / bp schedules (docs/recurrence.md §2.1, docs/optimizer.md §3) and analytic FLOPs (docs/optimizer.md §5)."""

import math

import jax
import jax.numpy as jnp
import pytest

from hrm.config import ModelConfig, OptimConfig
from hrm.train import flops, schedules

XL = ModelConfig(vocab_size=65536, hidden_size=1536, num_heads=12, n_layers=32)
L = ModelConfig(vocab_size=65536, hidden_size=1280, num_heads=10, n_layers=24)


# ----------------------------------------------------------------------------- LR (docs/optimizer.md §3)


def test_lr_pretrain_warmup_then_constant():
    opt = OptimConfig(lr=2.2e-4, lr_warmup_steps=2000, lr_min_ratio=1.0)
    assert schedules.lr_at(1, opt, 305176) == pytest.approx(2.2e-4 / 2000)
    assert schedules.lr_at(1000, opt, 305176) == pytest.approx(1.1e-4)
    assert schedules.lr_at(1999, opt, 305176) == pytest.approx(2.2e-4 * 1999 / 2000)
    for s in (2000, 2001, 100000, 305176):
        assert schedules.lr_at(s, opt, 305176) == pytest.approx(2.2e-4)


def test_lr_sft_cosine_no_warmup():
    opt = OptimConfig(lr=3e-5, lr_warmup_steps=0, lr_min_ratio=0.1)
    total = 1000
    assert schedules.lr_at(0, opt, total) == pytest.approx(3e-5)
    assert schedules.lr_at(500, opt, total) == pytest.approx(3e-5 * (0.1 + 0.9 * 0.5))
    assert schedules.lr_at(1000, opt, total) == pytest.approx(3e-6)
    assert schedules.lr_at(1, opt, total) == pytest.approx(
        3e-5 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 1000))))


def test_lr_traced_matches_python():
    opt = OptimConfig(lr=1e-3, lr_warmup_steps=10, lr_min_ratio=0.2)
    f = jax.jit(lambda s: schedules.lr_at(s, opt, 100))
    for s in (1, 5, 10, 11, 50, 100):
        assert float(f(jnp.int32(s))) == pytest.approx(schedules.lr_at(s, opt, 100), rel=1e-6)


# ----------------------------------------------------------------------------- bp (docs/recurrence.md §2.1)


def test_bp_boundaries_small():
    m = ModelConfig(bp_warmup_ratio=0.2)  # warmup = 60 for total 300
    got = {s: schedules.bp_steps_at(s, 300, m) for s in (1, 19, 20, 39, 40, 59, 60, 61, 300)}
    assert got == {1: 2, 19: 2, 20: 3, 39: 3, 40: 4, 59: 4, 60: 5, 61: 5, 300: 5}
    assert schedules.bp_phase_boundaries(300, m) == [(1, 2), (20, 3), (40, 4), (60, 5)]


def test_bp_xl_example_and_sft():
    total = schedules.total_steps_from(4, 15e9, 196608)  # 60e9 tokens seen
    assert total == 305175  # floor(60e9 / 196608) = 305175.78...
    b = schedules.bp_phase_boundaries(total, XL)
    assert [bp for _, bp in b] == [2, 3, 4, 5]
    assert b[1][0] == pytest.approx(20345, abs=1) and b[2][0] == pytest.approx(40690, abs=1)
    assert b[3][0] == math.ceil(0.2 * total)  # bp 5 from step = warmup on (~61.0k)
    for first, bp in b:
        assert schedules.bp_steps_at(first, total, XL) == bp
        if first > 1:
            assert schedules.bp_steps_at(first - 1, total, XL) == bp - 1
    sft = ModelConfig(bp_warmup_ratio=0.0)
    assert schedules.bp_steps_at(1, 100, sft) == 5
    assert schedules.bp_phase_boundaries(100, sft) == [(1, 5)]


def test_total_steps_from():
    assert schedules.total_steps_from(1.0, 1000, 100) == 10
    assert schedules.total_steps_from(2.5, 1000, 300) == 8
    with pytest.raises(ValueError):
        schedules.total_steps_from(1, 1000, 0)


# ----------------------------------------------------------------------------- FLOPs (docs/optimizer.md §5)


def test_param_counts_match_spec():
    assert flops.params_per_layer(XL) == 30_670_848
    assert flops.stack_params(XL) == pytest.approx(0.4907e9, rel=1e-3)
    assert flops.head_params(XL) == pytest.approx(0.1007e9, rel=1e-3)
    assert 2 * flops.stack_params(L) == pytest.approx(0.527e9, rel=2e-3)


@pytest.mark.parametrize("bp,grad", [(2, [6, 7]), (3, [3, 6, 7]), (4, [3, 5, 6, 7]), (5, [3, 4, 5, 6, 7])])
def test_stack_schedule_matches_spec_table(bp, grad):
    sched = flops.stack_schedule(XL, bp)
    assert [s for s, _ in sched] == ["L", "L", "L", "H", "L", "L", "L", "H"]
    assert [i for i, (_, g) in enumerate(sched) if g] == grad


def test_xl_per_token_and_totals():
    per_tok = flops.flops_per_token(XL, 5)
    assert per_tok == pytest.approx(18.3e9, rel=2e-3)
    assert per_tok * 196608 == pytest.approx(3.59e15, rel=3e-3)
    d = flops.flops_per_step(XL, 5, 60e9)
    assert d["stack_forward"] == pytest.approx(4.71e20, rel=2e-3)
    assert d["stack_backward"] == pytest.approx(5.89e20, rel=2e-3)
    assert d["head"] == pytest.approx(0.36e20, rel=2e-2)
    assert d["attention"] == 0.0 and d["total"] == d["total_excl_attention"]
    assert d["n_applications"] == 8 and d["n_grad_applications"] == 5
    # bp warmup: mean over the run, 0.8*bp5 + 0.2*(mean of bp 2,3,4 = 3) -> backward 5.42e20
    mean_bwd = 0.8 * d["stack_backward"] + 0.2 * flops.flops_per_step(XL, 3, 60e9)["stack_backward"]
    assert mean_bwd == pytest.approx(5.42e20, rel=3e-3)


def test_transformer_baseline():
    t = ModelConfig(arch="transformer", vocab_size=65536, hidden_size=1536, num_heads=12, n_layers=32)
    d = flops.flops_per_step(t, 2, 1.0)
    assert d["n_applications"] == 1 and d["n_grad_applications"] == 1
    n = 32 * flops.params_per_layer(t) + flops.head_params(t)
    assert d["total_excl_attention"] == pytest.approx(6 * n)


def test_attention_flops():
    assert flops.visible_keys(3, 2) == 9 + 2 * 3 + 3  # prefix 3x3, response sees 4 then 5
    assert flops.visible_keys(3, 2, "causal") == 15
    assert flops.visible_keys(0, 4) == 10
    assert flops.visible_keys_total([(3, 2), (0, 4)]) == 28
    assert flops.visible_keys_approx(10, 3, 2) == pytest.approx(2 * 18)
    m = ModelConfig(hidden_size=64, num_heads=2, n_layers=4)  # 2 layers per stack
    d = flops.flops_per_step(m, 5, 5, visible_keys_sum=18)
    # 8 applications forward + 5 gradient applications x2 more = 18 units of 4*d*keys per layer
    assert d["attention"] == pytest.approx(4 * 64 * 18 * 2 * (8 + 2 * 5))
    assert d["total"] == pytest.approx(d["total_excl_attention"] + d["attention"])


def test_device_peaks_and_mfu():
    assert flops.device_peak("TPU v5 lite")[0] == 197e12
    assert flops.device_peak("TPU v5")[0] == 459e12
    assert flops.device_peak("TPU v5p")[0] == 459e12
    assert flops.device_peak("TPU v6 lite")[0] == 918e12
    assert flops.device_peak("TPU v4")[1] == 32 * 1024**3
    assert flops.device_peak("NVIDIA H100 80GB HBM3")[0] == 989e12
    assert flops.device_peak("NVIDIA A100-SXM4-80GB")[0] == 312e12
    assert flops.device_peak("cpu") is None
    assert flops.mfu(1e15, 1.0, 8, "cpu") is None
    assert flops.mfu(989e12 * 8 * 0.4, 1.0, 8, "NVIDIA H100 80GB HBM3") == pytest.approx(0.4)


def test_visible_keys_of_a_packed_batch():
    import numpy as np

    from hrm.train.flops import visible_keys
    from hrm.train.loop import visible_keys_sum

    # one row: example A (prefix 3, total 5), example B (prefix 2, total 4), 2 padding slots
    seg = np.array([[1, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0]])
    pre = np.array([[1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0]])
    pos = np.array([[0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0]])
    got = visible_keys_sum({"segment_ids": seg, "prefix_mask": pre, "positions": pos})
    assert got == (3 * 3 + 4 + 5) + (2 * 2 + 3 + 4)
    assert got == visible_keys(3, 2) + visible_keys(2, 2)
