"""Projections with fp32 master weights, low-precision compute and fp32 weight gradients (docs/model.md §11).

The reference runs FSDP2 with bf16 compute and `reduce_dtype=fp32`: weight gradients are summed
across data-parallel ranks in fp32. In JAX, `einsum(x_bf16, w.astype(bf16))` makes the weight
cotangent bf16, and once activations are batch-sharded the partial weight gradients of every chip
would be reduce-scattered in bf16. `project` fixes that with a custom VJP: the forward is the plain
compute-dtype einsum; the backward computes the input gradient in the compute dtype and the weight
gradient with bf16 operands but fp32 accumulation *and output* (`preferred_element_type=float32`),
so the cross-chip reduction that XLA inserts after it runs on fp32 partial sums. With fp32 compute
(CPU, parity) it is exactly the plain einsum and its autodiff.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from hrm.sharding import constrain


def _transposed_specs(spec: str) -> tuple[str, str]:
    """For 'x,w->y': the einsum specs of dx = f(dy, w) and dw = f(x, dy)."""
    lhs, out = spec.replace(" ", "").split("->")
    xs, ws = lhs.split(",")
    return f"{out},{ws}->{xs}", f"{xs},{out}->{ws}"


@functools.lru_cache(maxsize=None)
def _projector(spec: str, compute_dtype: str, w_names: Optional[tuple]):
    """The custom-VJP einsum for one (spec, compute dtype, weight names); cached per call site kind."""
    cd = jnp.dtype(compute_dtype)
    dx_spec, dw_spec = _transposed_specs(spec)

    @jax.custom_vjp
    def f(x, w):
        return jnp.einsum(spec, x.astype(cd), w.astype(cd))

    def fwd(x, w):
        xc, wc = x.astype(cd), w.astype(cd)
        return jnp.einsum(spec, xc, wc), (xc, wc, jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))

    def bwd(res, dy):
        xc, wc, x_like, w_like = res
        dx = jnp.einsum(dx_spec, dy.astype(cd), wc).astype(x_like.dtype)
        dw = jnp.einsum(dw_spec, xc, dy.astype(cd), preferred_element_type=jnp.float32)
        if w_names is not None:  # sharded like the weight: the cross-chip sum becomes an fp32 reduce-scatter
            dw = constrain(dw, w_names)
        return dx, dw.astype(w_like.dtype)  # fp32 master weights: the fp32 sum is kept as is

    f.defvjp(fwd, bwd)
    return f


def project(spec: str, x: jax.Array, w: jax.Array, compute_dtype=None, w_names: Optional[Sequence] = None) -> jax.Array:
    """einsum(spec, x, w) in `compute_dtype` (default x.dtype), weight gradient accumulated and returned
    in fp32. `spec` is 'x_axes,w_axes->out_axes' with no axis summed within a single operand. `w_names`
    (the weight's logical axes) shard the weight gradient like the weight, so data-parallel partial sums
    are reduce-scattered (FSDP) instead of all-reduced."""
    compute_dtype = jnp.dtype(compute_dtype or x.dtype)
    if compute_dtype == jnp.float32 and x.dtype == jnp.float32 and w.dtype == jnp.float32:
        return jnp.einsum(spec, x, w)
    return _projector(spec, compute_dtype.name, None if w_names is None else tuple(w_names))(x, w)
