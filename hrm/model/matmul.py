"""Projections with fp32 master weights, low-precision compute and fp32 weight gradients (SPEC §1.11).

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

import jax
import jax.numpy as jnp


def _transposed_specs(spec: str) -> tuple[str, str]:
    """For 'x,w->y': the einsum specs of dx = f(dy, w) and dw = f(x, dy)."""
    lhs, out = spec.replace(" ", "").split("->")
    xs, ws = lhs.split(",")
    return f"{out},{ws}->{xs}", f"{xs},{out}->{ws}"


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _project(spec: str, x: jax.Array, w: jax.Array, compute_dtype) -> jax.Array:
    return jnp.einsum(spec, x.astype(compute_dtype), w.astype(compute_dtype))


def _project_fwd(spec, x, w, compute_dtype):
    xc, wc = x.astype(compute_dtype), w.astype(compute_dtype)
    return jnp.einsum(spec, xc, wc), (xc, wc, x.dtype, w.dtype)


def _project_bwd(spec, compute_dtype, res, dy):
    xc, wc, x_dtype, w_dtype = res
    dx_spec, dw_spec = _transposed_specs(spec)
    dx = jnp.einsum(dx_spec, dy.astype(compute_dtype), wc).astype(x_dtype)
    dw = jnp.einsum(dw_spec, xc, dy.astype(compute_dtype), preferred_element_type=jnp.float32)
    return dx, dw.astype(w_dtype)  # fp32 master weights: the fp32 sum is kept as is


_project.defvjp(_project_fwd, _project_bwd)


def project(spec: str, x: jax.Array, w: jax.Array, compute_dtype=None) -> jax.Array:
    """einsum(spec, x, w) in `compute_dtype` (default x.dtype), weight gradient accumulated and returned
    in fp32. `spec` is 'x_axes,w_axes->out_axes' with no axis summed within a single operand."""
    compute_dtype = jnp.dtype(compute_dtype or x.dtype)
    if compute_dtype == jnp.float32 and x.dtype == jnp.float32 and w.dtype == jnp.float32:
        return jnp.einsum(spec, x, w)
    return _project(spec, x, w, compute_dtype)
