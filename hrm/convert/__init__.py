"""Checkpoint interop: reference native and transformers layouts <-> our parameters (SPEC §10)."""
