"""Logical axis names → PartitionSpecs / NamedShardings: the one place that happens (docs/conventions.md §6).

Parameters carry logical axis names in their Flax 0.12 Variable metadata `out_sharding`, e.g.
`nnx.Param(w, out_sharding=("embed", "mlp"))`; activations name them at constraint points. The table
`MeshConfig.rules` maps each logical name to a mesh axis, a list of mesh axes, or None. Two
rules are applied on top of the table:

- a mesh axis may appear only once in a spec: a later dimension asking for an axis that an earlier
  dimension already uses silently drops it;
- if the mesh size of a dimension's axes does not divide that dimension (when shape and mesh are
  known), the dimension is replicated instead. `sharding_report` lists every such fallback.

`state_shardings` turns an abstract NNX state into a matching tree of `NamedSharding`;
`with_shardings` makes sharded ShapeDtypeStructs (restore/AOT targets); `sharded_fraction` backs the
docs/conventions.md §6 test "≥ 98% of parameter bytes are sharded".
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hrm.mesh import MESH_AXES

Rules = Mapping[str, Any]  # logical name -> mesh axis | list of mesh axes | None
Names = Sequence[Optional[str]]


def _axes_for(name: Optional[str], rules: Rules) -> tuple[str, ...]:
    """Mesh axes a logical name maps to (a bare mesh axis name maps to itself)."""
    if name is None:
        return ()
    if name in rules:
        target = rules[name]
        if target is None:
            return ()
        return (target,) if isinstance(target, str) else tuple(target)
    if name in MESH_AXES:
        return (name,)
    raise KeyError(f"logical axis {name!r} has no entry in mesh.rules (known: {sorted(rules)})")


def _spec_and_fallbacks(names: Names, rules: Rules, shape: Optional[Sequence[int]],
                        mesh_shape: Optional[Mapping[str, int]]) -> tuple[PartitionSpec, list[str]]:
    if shape is not None and len(shape) != len(names):
        raise ValueError(f"logical axes {tuple(names)} do not match an array of rank {len(shape)}")
    used: set[str] = set()
    entries: list[Any] = []
    notes: list[str] = []
    for i, name in enumerate(names):
        axes = tuple(a for a in _axes_for(name, rules) if a not in used)
        if axes and shape is not None and mesh_shape is not None:
            size = math.prod(mesh_shape.get(a, 1) for a in axes)
            if shape[i] % size:
                notes.append(f"dim {i} ({name}={shape[i]}) not divisible by {'x'.join(axes)}={size}: replicated")
                axes = ()
        used.update(axes)
        entries.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*entries), notes


def logical_to_spec(names: Names, rules: Rules, shape: Optional[Sequence[int]] = None,
                    mesh: Optional[Mesh] = None) -> PartitionSpec:
    """PartitionSpec for an array whose dimensions carry logical `names` (docs/conventions.md §6 table).

    With `shape` and `mesh`, dimensions whose mesh size does not divide them are replicated.
    The spec always has one entry per dimension (None = replicated).
    """
    mesh_shape = dict(mesh.shape) if mesh is not None else None
    return _spec_and_fallbacks(names, rules, shape, mesh_shape)[0]


def _names_of(v: Any) -> Optional[tuple]:
    """Logical names of a Variable (`out_sharding` metadata), or None if unannotated."""
    if isinstance(v, nnx.Variable):
        names = v.get_metadata().get("out_sharding")
        return tuple(names) if names else None
    return None


def _shape_of(x: Any) -> Optional[tuple[int, ...]]:
    x = x.get_value() if isinstance(x, nnx.Variable) else x
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else None


def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules) -> Any:
    """Tree of `NamedSharding` matching an NNX (abstract) state.

    Variables keep their type and metadata and hold the sharding as value (as
    `nnx.get_named_sharding` does), so the result can be passed as `jax.jit` in/out shardings for
    that state. Variables without `out_sharding` and plain array leaves are replicated.
    """
    def one(x):
        shape = _shape_of(x)
        names = _names_of(x)
        spec = PartitionSpec() if names is None else logical_to_spec(names, rules, shape, mesh)
        sharding = NamedSharding(mesh, spec)
        return x.replace(sharding) if _is_var(x) else sharding

    return jax.tree.map(one, abstract_state, is_leaf=_is_var)


def sharding_report(abstract_state: Any, mesh: Mesh, rules: Rules) -> list[str]:
    """Human-readable list of annotated dimensions that fell back to replication."""
    out = []
    for path, x in jax.tree_util.tree_flatten_with_path(abstract_state, is_leaf=_is_var)[0]:
        names = _names_of(x)
        if names is not None:
            _, notes = _spec_and_fallbacks(names, rules, _shape_of(x), dict(mesh.shape))
            out += [f"{jax.tree_util.keystr(path)}: {n}" for n in notes]
    return out


def with_shardings(tree: Any, shardings: Any = None, dtype: Any = None) -> Any:
    """`jax.ShapeDtypeStruct`s of `tree`'s arrays carrying shardings: restore targets, AOT `.lower` arguments.

    `shardings`: a matching tree of shardings, one `Sharding` for every leaf, or None to keep each leaf's own
    `.sharding` (none for abstract leaves without one). `dtype` overrides every leaf's dtype.
    """
    if shardings is None or isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(
            a.shape, dtype or a.dtype, sharding=shardings or getattr(a, "sharding", None)), tree)
    return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, dtype or a.dtype, sharding=sh), tree, shardings)


def batch_sharding(mesh: Mesh, rules: Rules,
                   names: Names = ("act_batch", "act_len")) -> NamedSharding:
    """Sharding of a `[B, T]` batch field: B over the `act_batch` axes, T by `act_len` (None)."""
    return NamedSharding(mesh, logical_to_spec(names, rules))


_ACTIVE_RULES: contextvars.ContextVar[Optional[Rules]] = contextvars.ContextVar("activation_rules", default=None)


@contextlib.contextmanager
def activation_rules(rules: Rules) -> Iterator[None]:
    """Within this context (entered while tracing a step), `constrain` shards activations by `rules`.

    Together with `jax.set_mesh(mesh)` around lowering, this turns the model's logical activation
    names (`act_batch`, `act_heads`, ...) into `with_sharding_constraint`s; outside it they are no-ops,
    so the same model code runs unsharded in tests, eval and single-device tools.
    """
    token = _ACTIVE_RULES.set(rules)
    try:
        yield
    finally:
        _ACTIVE_RULES.reset(token)


@contextlib.contextmanager
def tracing_context(mesh: Optional[Mesh], rules: Rules) -> Iterator[None]:
    """Enter while tracing a step: the mesh's abstract mesh plus `activation_rules(rules)`, so the model's
    activation constraints (and shard_map'ed kernels) see the mesh the step is compiled for. No-op without
    a mesh."""
    if mesh is None:
        yield
        return
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), activation_rules(rules):
        yield


def activation_spec(names: Names, shape: Sequence[int], rules: Optional[Rules] = None) -> Optional[PartitionSpec]:
    """PartitionSpec of an activation under the active mesh and rules, or None when either is absent."""
    rules = _ACTIVE_RULES.get() if rules is None else rules
    mesh = jax.sharding.get_abstract_mesh()
    if rules is None or mesh.empty:
        return None
    return _spec_and_fallbacks(names, rules, shape, dict(mesh.shape))[0]


def constrain(x: jax.Array, names: Names, rules: Optional[Rules] = None) -> jax.Array:
    """`with_sharding_constraint` by logical names under the active `jax.set_mesh` mesh and rules.

    No-op when no mesh or no rules are active (single-device tests, eval). Non-divisible dimensions
    are replicated.
    """
    spec = activation_spec(names, x.shape, rules)
    return x if spec is None else jax.lax.with_sharding_constraint(x, spec)


def _is_sharded(s: Any) -> bool:
    return not getattr(s, "is_fully_replicated", True)


def sharded_fraction(tree: Any, shardings: Any) -> float:
    """Fraction of the bytes of `tree` whose sharding splits them over more than one device."""
    leaves = jax.tree.leaves(tree)
    shards = jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
    if len(leaves) != len(shards):
        raise ValueError(f"tree has {len(leaves)} leaves but shardings has {len(shards)}")
    total = sharded = 0
    for x, s in zip(leaves, shards):
        nbytes = int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
        total += nbytes
        sharded += nbytes if _is_sharded(s) else 0
    return sharded / total if total else 0.0
