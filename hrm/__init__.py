"""HRM-Text in JAX/Flax NNX: model, data, training, checkpointing and evaluation.

See README.md for the two commands that set up and run everything, and docs/ (the model, recurrence, optimizer,
data format, evaluation protocol and checkpoint formats; docstrings cite them as "docs/<file>.md §x") for the
semantics this package reproduces.
"""

__version__ = "0.1.0"
