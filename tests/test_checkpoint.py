"""Orbax checkpoint wrapper (docs/conventions.md §11): round trip with resharding, keep policy, async, data
iterator state, params-only loading, and atomicity under a kill mid-write."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hrm.config import CheckpointConfig, MeshConfig
from hrm.mesh import make_mesh
from hrm.sharding import with_shardings
from hrm.train.checkpoint import Checkpointer, load_params, resolve_step_dir


def _state(mesh, scale=1.0):
    fsdp = NamedSharding(mesh, P("fsdp", "tensor"))
    rep = NamedSharding(mesh, P())
    w = jax.device_put(jnp.arange(32 * 8, dtype=jnp.float32).reshape(32, 8) * scale, fsdp)
    return {
        "params": {"w": w, "b": jax.device_put(jnp.ones(8) * scale, rep)},
        "opt_state": {"ema": {"w": w + 1, "b": jax.device_put(jnp.zeros(8), rep)},
                      "count": jax.device_put(jnp.int32(7), rep)},
        "step": jax.device_put(jnp.int32(3), rep),
    }


def _abstract(state, mesh, spec=P()):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(
        mesh, spec if x.ndim == len(spec) else P())), state)


def _ds():
    return grain.MapDataset.range(1000).map(lambda x: x * 3).to_iter_dataset()


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))


def test_round_trip_reshard_and_data_iter(tmp_path, mesh):
    state = _state(mesh)
    it = iter(_ds())
    for _ in range(5):
        next(it)
    ck = Checkpointer(tmp_path, CheckpointConfig(every_steps=10, keep_last=2, async_save=False))
    assert ck.latest_step() is None
    assert ck.save(10, state, data_iter=it, meta={"git_sha": "abc", "config": {"a": 1}})
    expected_next = next(it)
    ck.close()

    ck = Checkpointer(tmp_path, CheckpointConfig(every_steps=10, keep_last=2, async_save=False))
    assert ck.latest_step() == 10
    other = make_mesh(MeshConfig(data=2, fsdp=1, tensor=4))
    target = _abstract(state, other, P("tensor", "data"))
    it2 = iter(_ds())
    restored, meta = ck.restore(None, target, data_iter=it2)
    assert meta == {"git_sha": "abc", "config": {"a": 1}}
    assert ck.restore_meta(10)["git_sha"] == "abc"
    w = restored["params"]["w"]
    assert w.sharding.is_equivalent_to(NamedSharding(other, P("tensor", "data")), 2)
    np.testing.assert_array_equal(np.asarray(w), np.asarray(state["params"]["w"]))
    assert int(restored["opt_state"]["count"]) == 7
    assert next(it2) == expected_next
    with pytest.raises(FileNotFoundError, match="not found"):
        ck.restore(20, target)
    ck.close()


def test_keep_policy_interval_and_force(tmp_path, mesh):
    state = _state(mesh)
    ck = Checkpointer(tmp_path, CheckpointConfig(every_steps=2, keep_last=2, keep_every=4, async_save=False))
    saved = [s for s in range(1, 13) if ck.save(s, state)]
    assert saved == [2, 4, 6, 8, 10, 12]
    assert ck.all_steps() == [4, 8, 10, 12]  # last two + every 4th
    assert ck.save(13, state, force=True) and ck.latest_step() == 13
    assert ck.save(13, state, force=True) is False  # already saved: skipped, not an error
    assert ck.all_steps() == [4, 8, 12, 13]
    ck.close()
    assert sorted(int(p.name) for p in tmp_path.iterdir()) == [4, 8, 12, 13]


def test_async_save_and_wait(tmp_path, mesh):
    state = _state(mesh, scale=2.0)
    ck = Checkpointer(tmp_path, CheckpointConfig(every_steps=1, keep_last=3, async_save=True))
    for s in (1, 2, 3):
        assert ck.save(s, state, meta={"s": s})
    ck.wait()
    assert ck.all_steps() == [1, 2, 3]
    restored, meta = ck.restore(3, with_shardings(state))
    assert meta == {"s": 3}
    np.testing.assert_array_equal(np.asarray(restored["opt_state"]["ema"]["w"]),
                                  np.asarray(state["opt_state"]["ema"]["w"]))
    assert restored["params"]["w"].sharding.is_equivalent_to(state["params"]["w"].sharding, 2)
    # once save() returns the arrays were copied: donating/deleting them (next train step) is safe
    fresh = jax.tree.map(lambda x: x + 1, state)
    assert ck.save(4, fresh)
    jax.tree.map(lambda x: x.delete(), fresh)
    ck.wait()
    restored, _ = ck.restore(4, with_shardings(state))
    np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), np.asarray(state["params"]["w"]) + 1)
    ck.close()


def test_load_params_and_missing_paths(tmp_path, mesh):
    run = tmp_path / "run"
    state = _state(mesh)
    with Checkpointer(run / "checkpoints", CheckpointConfig(every_steps=5, async_save=False)) as ck:
        ck.save(5, state)
        ck.save(10, _state(mesh, scale=3.0))
    abstract = _abstract(state["params"], mesh, P(None, "fsdp"))
    params = load_params(run, abstract, use_ema=False)  # run dir -> latest (10)
    assert set(params) == {"w", "b"}
    np.testing.assert_array_equal(np.asarray(params["w"]), 3.0 * np.asarray(state["params"]["w"]))
    assert params["w"].sharding.is_equivalent_to(NamedSharding(mesh, P(None, "fsdp")), 2)
    ema = load_params(run / "checkpoints" / "5", abstract, use_ema=True)  # a specific step dir
    np.testing.assert_array_equal(np.asarray(ema["w"]), np.asarray(state["opt_state"]["ema"]["w"]))
    assert resolve_step_dir(run / "checkpoints").name == "10"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_params(tmp_path / "nope", abstract, use_ema=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no finalized checkpoint"):
        load_params(tmp_path / "empty", abstract, use_ema=True)
    with Checkpointer(tmp_path / "fresh", CheckpointConfig()) as fresh:
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            fresh.restore(None, abstract)


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import jax.numpy as jnp
    from hrm.config import CheckpointConfig
    from hrm.train.checkpoint import Checkpointer

    class HangingIter:  # grain's handler calls get_state() while writing into the tmp dir
        def get_state(self):
            print("IN_WRITE", flush=True)
            time.sleep(600)

    ck = Checkpointer(sys.argv[1], CheckpointConfig(every_steps=1, async_save=False))
    ck.save(1, {"w": jnp.ones(4)}, meta={"s": 1})
    print("SAVED_1", flush=True)
    ck.save(2, {"w": jnp.full(4, 2.0)}, data_iter=HangingIter(), meta={"s": 2})
""")


def test_kill_during_write_resumes_from_previous_step(tmp_path, repo_root):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(repo_root))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        deadline = time.time() + 120
        lines = []
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.strip() == "IN_WRITE":
                break
        assert lines[-2:] == ["SAVED_1", "IN_WRITE"], lines
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.startswith("2.") and "tmp" in n for n in names), names  # unfinalized leftover
    ck = Checkpointer(tmp_path, CheckpointConfig(every_steps=1, async_save=False))
    assert ck.latest_step() == 1 and ck.all_steps() == [1]
    restored, meta = ck.restore(None, {"w": jax.ShapeDtypeStruct((4,), jnp.float32)})
    assert meta == {"s": 1}
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.ones(4))
    assert ck.save(2, {"w": jnp.full(4, 2.0)})  # the step can be written again
    ck.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]  # tmp dir cleaned up
