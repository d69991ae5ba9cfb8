"""Evaluation of HRM-Text on the eight paper benchmarks and held-out instruction/response files (docs/eval_protocol.md).

Layout (everything but `generate` and `model_loading` imports without JAX, so `eval.py --dump_prompts/--rescore/
--dry_run` stay fast):

* `task`      — `Task`, the spec of one benchmark (reader, prompt builder, scorer per variant, vote key,
                aggregate, primary metric, published numbers), and the shared pieces of the MCQ and generation kinds.
* `tasks`     — one module per benchmark, each exporting `TASK`, and the registry that discovers them
                (`get_task`, `parse_tasks`, `load_tasks`).
* `item`, `errors`, `prompts`, `release_files` — the evaluation item, errors, prompt strings, release-file checks.
* `scoring`   — answer extraction and per-example scorers, majority vote, task-independent aggregates.
* `metrics`   — scores and per-task metrics through the specs (both variants of docs/eval_protocol.md §11).
* `runner`    — `run_tasks(generator, tokenizer, items, ...)`: batching, generation, scoring, output files.
* `results`, `published` — Markdown tables beside the published numbers (docs/eval_protocol.md §13), JSON/JSONL files.
* `rescore`   — scoring a predictions file without a model.
* `generate`, `model_loading` — the KV-cache generation engine and checkpoint loading (JAX).
"""
