"""Device mesh construction over the physical axes ("data", "fsdp", "tensor").

docs/conventions.md §6: every mesh in this codebase is built here, always with `AxisType.Auto` axes. On jax 0.10
`jax.make_mesh` defaults to Explicit axes, under which indexing, `with_sharding_constraint` and
`nnx.Embed` lookups fail (docs/conventions.md §13 pitfall 1), so the axis types are always passed explicitly.

Sizes come from `MeshConfig`; at most one may be -1 and is resolved from the device count. Explicit
`devices` (e.g. `jax.experimental.topologies.get_topology_desc(...).devices` for ahead-of-time TPU
compilation on a CPU box) are laid out in the given order with `jax.sharding.Mesh`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from hrm.config import MeshConfig

MESH_AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")


def resolve_mesh_shape(sizes: Sequence[int], n_devices: int) -> tuple[int, ...]:
    """Replace a single -1 in `sizes` so that the product equals `n_devices`.

    Raises ValueError naming the sizes and the device count when they cannot match.
    """
    sizes = [int(s) for s in sizes]
    named = ", ".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes))
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes ({named}): need positive sizes with at most one -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % known:
            raise ValueError(
                f"mesh sizes ({named}): the fixed sizes multiply to {known}, which does not divide "
                f"the {n_devices} available devices")
        sizes[sizes.index(-1)] = n_devices // known
    if math.prod(sizes) != n_devices:
        raise ValueError(
            f"mesh sizes ({named}) multiply to {math.prod(sizes)} but {n_devices} devices are "
            f"available; use -1 for one axis to fill the rest")
    return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """Build the ("data", "fsdp", "tensor") mesh with Auto axis types (docs/conventions.md §6).

    Args:
      cfg: mesh sizes; one may be -1 (filled from the device count).
      devices: optional explicit devices, e.g. TPU topology devices for AOT compilation. Default:
        all of `jax.devices()`, laid out by `jax.make_mesh` (topology-aware on TPU).
    """
    auto = (AxisType.Auto,) * len(MESH_AXES)
    if devices is None:
        shape = resolve_mesh_shape((cfg.data, cfg.fsdp, cfg.tensor), jax.device_count())
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto)
    devices = list(devices)
    shape = resolve_mesh_shape((cfg.data, cfg.fsdp, cfg.tensor), len(devices))
    return Mesh(np.array(devices, dtype=object).reshape(shape), MESH_AXES, axis_types=auto)
