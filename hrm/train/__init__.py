"""Training: schedules (SPEC §3.1, §5.3), FLOPs/MFU (SPEC §9), metrics, checkpointing, distributed start-up.

Submodules are imported explicitly (`from hrm.train import checkpoint`); this package imports nothing
heavy at import time so that `hrm.train.distributed.maybe_initialize` can run before JAX initialises.
"""
