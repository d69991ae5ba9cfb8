"""Training: schedules (docs/recurrence.md §2.1, docs/optimizer.md §3), FLOPs/MFU (docs/optimizer.md §5), metrics,
checkpointing, distributed start-up.

Submodules are imported explicitly (`from hrm.train import checkpoint`); this package imports nothing
heavy at import time so that `hrm.train.distributed.maybe_initialize` can run before JAX initialises.
"""
