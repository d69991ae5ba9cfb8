"""Mesh construction and logical→physical sharding (docs/conventions.md §6, §12 "sharding golden specs")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from hrm.config import MeshConfig
from hrm.mesh import make_mesh, resolve_mesh_shape
from hrm.sharding import (batch_sharding, constrain, logical_to_spec, sharded_fraction, sharding_report,
                          state_shardings, with_shardings)

RULES = MeshConfig().rules


@pytest.mark.parametrize("sizes,expected", [((1, -1, 1), (1, 8, 1)), ((2, 2, 2), (2, 2, 2)),
                                            ((1, 4, 2), (1, 4, 2)), ((-1, 2, 1), (4, 2, 1))])
def test_mesh_shapes(sizes, expected):
    mesh = make_mesh(MeshConfig(data=sizes[0], fsdp=sizes[1], tensor=sizes[2]))
    assert tuple(mesh.shape.values()) == expected
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert all(t == AxisType.Auto for t in mesh.axis_types)


def test_mesh_errors():
    with pytest.raises(ValueError, match="does not divide"):
        make_mesh(MeshConfig(data=3, fsdp=-1, tensor=1))
    with pytest.raises(ValueError, match="multiply to 4"):
        make_mesh(MeshConfig(data=2, fsdp=2, tensor=1))
    with pytest.raises(ValueError, match="at most one -1"):
        resolve_mesh_shape((-1, -1, 1), 8)


def test_mesh_explicit_devices():
    devs = jax.devices()[:4]
    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=2), devices=devs)
    assert tuple(mesh.shape.values()) == (1, 2, 2)
    assert list(mesh.devices.flat) == devs
    assert all(t == AxisType.Auto for t in mesh.axis_types)


def test_logical_to_spec_golden():
    assert logical_to_spec(("embed", "mlp"), RULES) == P("fsdp", "tensor")
    assert logical_to_spec(("vocab", "embed"), RULES) == P("tensor", "fsdp")
    assert logical_to_spec(("layers", "embed", "heads", "head_dim"), RULES) == P(None, "fsdp", "tensor", None)
    assert logical_to_spec(("act_batch", "act_len", "act_embed"), RULES) == P(("data", "fsdp"), None, None)
    # a mesh axis is used once: the later "mlp" (tensor) is dropped after "heads" took it
    assert logical_to_spec(("heads", "mlp"), RULES) == P("tensor", None)
    # list rule minus an already-used axis keeps the rest
    assert logical_to_spec(("embed", "act_batch"), RULES) == P("fsdp", "data")
    assert logical_to_spec((None, "embed"), RULES) == P(None, "fsdp")
    with pytest.raises(KeyError, match="no entry"):
        logical_to_spec(("nonsense",), RULES)


def test_non_divisible_fallback():
    mesh = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
    assert logical_to_spec(("embed", "mlp"), RULES, (64, 5), mesh) == P("fsdp", None)
    assert logical_to_spec(("embed", "mlp"), RULES, (6, 64), mesh) == P(None, "tensor")
    assert logical_to_spec(("act_batch", None), RULES, (6, 3), mesh) == P(None, None)

    class M(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.zeros((6, 64)), out_sharding=("embed", "mlp"))

    with nnx.use_eager_sharding(False):
        abstract = nnx.state(nnx.eval_shape(M))
    report = sharding_report(abstract, mesh, RULES)
    assert len(report) == 1 and "embed=6" in report[0] and "fsdp=4" in report[0]


class _Block(nnx.Module):
    def __init__(self, d, i, v):
        self.embed = nnx.Param(jnp.zeros((v, d)), out_sharding=("vocab", "embed"))
        self.qkv = nnx.Param(jnp.zeros((d, 4, 2, d // 2)), out_sharding=("embed", "qkv_group", "heads", "head_dim"))
        self.up = nnx.Param(jnp.zeros((d, 2 * i)), out_sharding=("embed", "mlp"))
        self.down = nnx.Param(jnp.zeros((i, d)), out_sharding=("mlp", "embed"))
        self.bias = nnx.Param(jnp.zeros((d,)))  # unannotated -> replicated
        self.zl = nnx.Variable(jnp.zeros((d,), jnp.bfloat16))


def _abstract():
    with nnx.use_eager_sharding(False):
        model = nnx.eval_shape(lambda: _Block(64, 128, 512))
        return nnx.split(model)


def test_state_shardings_golden():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    _, state = _abstract()
    sh = state_shardings(state, mesh, RULES)
    specs = {k: v.get_value().spec for k, v in nnx.to_flat_state(sh)}
    assert specs == {
        ("bias",): P(), ("down",): P("tensor", "fsdp"), ("embed",): P("tensor", "fsdp"),
        ("qkv",): P("fsdp", None, "tensor", None), ("up",): P("fsdp", "tensor"), ("zl",): P(),
    }
    # the sharding tree plugs straight into ShapeDtypeStructs and jit out_shardings
    abstract = with_shardings(state, sh)
    assert nnx.to_flat_state(abstract)[1][1].get_value().sharding.spec == P("tensor", "fsdp")
    # >= 98% of parameter bytes sharded (docs/conventions.md §6)
    frac = sharded_fraction(state, sh)
    assert frac > 0.98
    assert 0 < sharded_fraction(state, state_shardings(state, make_mesh(MeshConfig(1, 1, 8)), RULES)) < frac


def test_batch_sharding_and_constrain():
    mesh = make_mesh(MeshConfig(data=2, fsdp=4, tensor=1))
    bs = batch_sharding(mesh, RULES)
    assert bs.spec == P(("data", "fsdp"), None)
    x = jax.device_put(np.zeros((16, 8), np.int32), bs)
    assert len(x.addressable_shards) == 8 and x.addressable_shards[0].data.shape == (2, 8)

    @jax.jit
    def f(y):
        return constrain(y * 2, ("act_batch", "act_embed"), RULES)

    with jax.set_mesh(mesh):
        out = f(jnp.ones((16, 4)))
    assert out.sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"), None)), 2)
    assert constrain(jnp.ones(3), ("act_embed",), RULES).shape == (3,)  # no mesh -> no-op
