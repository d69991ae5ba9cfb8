"""The paper's Tab. 1–3 at laptop scale: a reproducible FLOPs-matched study (`python -m hrm.study`).

grid.py (cells, FLOPs matching), runner.py (one cell: train + held-out exact match -> result.json),
orchestrate.py (the grid as subprocesses), report.py (results.json, results.md, figures), paper.py (the
published rows, docs/eval_protocol.md §13.3–13.5). Results: docs/study/.
"""
