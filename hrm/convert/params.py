"""Move parameter dicts keyed by attribute paths in and out of a model (used by every importer)."""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from hrm.convert.layouts import ConversionError


def _variable(model: nnx.Module, path: tuple[str, ...]) -> nnx.Variable:
    obj = model
    for part in path:
        if not hasattr(obj, part):
            raise ConversionError(f"model has no parameter at '{'.'.join(path)}'")
        obj = getattr(obj, part)
    if not isinstance(obj, nnx.Variable):
        raise ConversionError(f"'{'.'.join(path)}' is not a model variable")
    return obj


def assign_params(model: nnx.Module, ours: Mapping[tuple[str, ...], np.ndarray]) -> None:
    """Overwrite model variables in place, keeping each variable's dtype; shapes must match exactly."""
    for path, value in ours.items():
        var = _variable(model, path)
        current = var[...]
        if tuple(current.shape) != tuple(value.shape):
            raise ConversionError(f"'{'.'.join(path)}': checkpoint shape {tuple(value.shape)} "
                                  f"!= model shape {tuple(current.shape)}")
        var[...] = jnp.asarray(value, dtype=current.dtype)


def extract_params(model: nnx.Module | nnx.State) -> dict[tuple[str, ...], np.ndarray]:
    """All Param and Buffer values of a model (or of an nnx State) as NumPy arrays keyed by attribute path."""
    state = model if isinstance(model, nnx.State) else nnx.state(model)
    out = {}
    for path, var in nnx.to_flat_state(state):
        out[tuple(str(p) for p in path)] = np.asarray(var[...] if hasattr(var, "__getitem__") else var)
    return out
