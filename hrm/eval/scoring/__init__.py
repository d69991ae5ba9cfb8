"""Per-example answer extraction and scoring, one module per answer form, plus task-independent aggregates.

`mcq` (one letter), `gsm8k` (integer from the last box), `hendrycks_math` (math-verify), `drop` (EM/F1),
`exact` (exact match), `boxed` (brace-matched `\\boxed{}`), `vote` (majority vote), `aggregates` (means).
Nothing here names a task: each task's spec (`hrm.eval.tasks.<name>.TASK`) picks its scorers, and
`hrm.eval.metrics` applies them (docs/eval_protocol.md §1–11).
"""
