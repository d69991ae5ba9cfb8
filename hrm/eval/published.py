"""Where the published HRM-Text numbers come from, per model size (docs/eval_protocol.md §13.1, §13.3, §13.4, §13.7).

The numbers themselves live in each task's spec (`Task.published`, {source id: percent}); this module names the
sources and the size labels. Two sources per size because they disagree (docs/eval_protocol.md §13.7): the paper tables
(2 decimals) and the reference README runs (1 decimal). XL = the released "1B"; L = "0.6B".
"""

from __future__ import annotations

from typing import Optional, Sequence

# size -> [(source id used in Task.published, row label)]: the rows of docs/eval_protocol.md §13.3 and §13.4 for
# the paper, §13.1 for the reference's README.
SOURCES: dict[str, list[tuple[str, str]]] = {
    "XL": [("paper_xl", "paper Tab. 1/4 HRM 1B (eval_protocol §13.3)"),
           ("readme_xl", "ref README XL (eval_protocol §13.1)")],
    "L": [("paper_l", "paper Tab. 2 HRM 0.6B (eval_protocol §13.4)"),
          ("readme_l", "ref README L (eval_protocol §13.1)")],
}

_ALIASES = {"xl": "XL", "1b": "XL", "hrm-text-1b": "XL", "hrm 1b": "XL",
            "l": "L", "0.6b": "L", "600m": "L", "hrm-text-0.6b": "L", "hrm 0.6b": "L"}


def canonical_size(size_label: Optional[str]) -> Optional[str]:
    """'XL' or 'L' for a recognised size label ("XL", "1B", "l", "0.6B", ...), else None."""
    if not size_label:
        return None
    return _ALIASES.get(str(size_label).strip().lower())


def published_rows(size_label: Optional[str], tasks: Sequence) -> list[tuple[str, dict[str, float]]]:
    """(row label, {task name: percent}) per source of the size, over `tasks` (Task specs); [] for an unknown
    size (ours are shown alone). A task without a number from a source is left out of that row."""
    size = canonical_size(size_label)
    rows = []
    for source, label in SOURCES.get(size, []) if size else []:
        rows.append((label, {t.name: t.published[source] for t in tasks if source in t.published}))
    return rows
