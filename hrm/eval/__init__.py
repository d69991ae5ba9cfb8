"""Evaluation of HRM-Text on the eight paper benchmarks and the built-in default tasks (SPEC §7).

Layout (each piece importable without JAX, so `eval.py --dump_prompts/--rescore/--dry_run` stay fast):

* `prompts`   — condition tokens, prompt wrapping and the per-benchmark prompt strings (SPEC §4.1, §7.1-§7.9).
* `tasks`     — readers of the original release files, one module per benchmark, plus `registry` (SPEC §7.12).
* `scoring`   — answer extraction, per-example scorers (faithful and corrected, SPEC §7.11), majority vote,
                and per-task aggregation.
* `runner`    — `run_tasks(generator, tokenizer, items, ...)`: batching, generation, scoring, JSONL/JSON output.
* `results`   — Markdown tables in the paper's layout beside the published numbers (`published`, SPEC §8).

The KV-cache generation engine (`generate.py`) and checkpoint loading (`model_loading.py`) live in sibling
modules written separately; this package only assumes the small interfaces documented in `runner`.
"""
