"""HRM-Text in JAX/Flax NNX: model, data, training, checkpointing and evaluation.

See README.md for the two commands that set up and run everything, and ../shared/SPEC.md
(mirrored facts in docstrings as "SPEC §x") for the semantics this package reproduces.
"""

__version__ = "0.1.0"
