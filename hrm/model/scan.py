"""`jax.lax.scan` for layers and cycles, with a switch to unroll every scan (for FLOP counting).

XLA's cost analysis counts a while-loop body once, so a scanned model's HLO FLOPs undercount by the
trip counts. `unrolled_scans()` makes every model scan straight-line code (same math, larger
program) so `lower(...).cost_analysis()` sees every layer application; training never uses it.
"""

from __future__ import annotations

import contextlib
import threading

import jax

_state = threading.local()


@contextlib.contextmanager
def unrolled_scans():
    """Within this context, model scans are fully unrolled."""
    prev = getattr(_state, "unroll", False)
    _state.unroll = True
    try:
        yield
    finally:
        _state.unroll = prev


def scan(f, init, xs=None, length=None):
    """jax.lax.scan, fully unrolled inside `unrolled_scans()`."""
    return jax.lax.scan(f, init, xs, length=length, unroll=bool(getattr(_state, "unroll", False)))
