"""Checkpoint interop: reference native and transformers layouts <-> our parameters (docs/checkpoints.md)."""
