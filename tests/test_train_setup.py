"""The shared training setup (hrm/train/setup.py): one frozen description of mesh, batch layout,
model, optimiser and shardings, used by the loop, AOT compilation and tests."""

from __future__ import annotations

import dataclasses

import jax
import pytest
from jax.sharding import PartitionSpec

from hrm.config import ConfigError, load_config
from hrm.train.setup import PLACEHOLDER_TOTAL_STEPS, TrainSetup, setup

TINY = ["model.hidden_size=32", "model.num_heads=2", "model.vocab_size=128", "data.seq_len=32",
        "train.global_batch_rows=8", "train.total_steps=5"]


def _cfg(*extra):
    keys = {e.split("=", 1)[0] for e in extra}
    return load_config(None, [o for o in TINY if o.split("=", 1)[0] not in keys] + list(extra))


def test_setup_fields_and_abstract_state_match_init():
    s = setup(_cfg("mesh.fsdp=4", "mesh.tensor=2"))
    assert isinstance(s, TrainSetup)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.global_rows = 3  # type: ignore[misc]
    assert dict(s.mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}
    assert (s.global_rows, s.seq_len, s.total_steps, s.tokens_per_step) == (8, 32, 5, 256)
    assert s.batch_spec == PartitionSpec(("data", "fsdp"), None)
    batch = s.abstract_batch()
    assert set(batch) == {"inputs", "targets", "loss_mask", "segment_ids", "positions", "prefix_mask"}
    assert batch["inputs"].shape == (8, 32) and batch["inputs"].sharding == s.batch_sharding
    state = s.fresh_state()
    got = jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), state)
    want = jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), s.abstract_state)
    assert got == want


def test_setup_devices_total_steps_and_errors():
    s = setup(_cfg("mesh.fsdp=1"), jax.devices()[:1], total_steps=77)
    assert s.mesh.devices.size == 1 and s.total_steps == 77
    assert setup(_cfg("train.total_steps=0"), jax.devices()[:2]).total_steps == PLACEHOLDER_TOTAL_STEPS
    with pytest.raises(ConfigError, match="does not split over the 8 data x fsdp"):
        setup(_cfg("train.global_batch_rows=4"))
    with pytest.raises(ConfigError, match="mesh.data/fsdp/tensor"):
        setup(_cfg("mesh.fsdp=3"))
    with pytest.raises(ConfigError, match="processes"):
        setup(_cfg("mesh.fsdp=1", "train.global_batch_rows=2"), jax.devices()[:1], process_count=2)


def test_train_hook_keys_are_validated():
    assert _cfg("train.profile_steps=3:5").train.profile_steps == "3:5"
    for bad in ("3", "5:3", "0:2", "a:b"):
        with pytest.raises(ConfigError, match="train.profile_steps"):
            _cfg(f"train.profile_steps={bad}")
    with pytest.raises(ConfigError, match="train.eval_every"):
        _cfg("train.eval_every=-1")
    assert _cfg("train.allow_config_change=true").train.allow_config_change is True
    with pytest.raises(ConfigError, match="data.packing"):  # removed: packing is always the global first-fit plan
        _cfg("data.packing=first_fit")
