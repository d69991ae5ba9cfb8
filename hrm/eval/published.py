"""Published HRM-Text numbers to print beside ours (SPEC §8.1, §8.4, §8.5), in percent.

Two sources per size because they disagree (SPEC §8.8): the paper tables (2 decimals) and the reference README
runs (1 decimal). XL = the released "1B"; L = "0.6B". DROP is presumably F1 (SPEC §7.7, §12 item 5).
"""

from __future__ import annotations

from typing import Optional

COLUMNS = ("mmlu", "arc_challenge", "hellaswag", "winogrande", "boolq", "drop", "gsm8k", "math")
HEADERS = {"mmlu": "MMLU", "arc_challenge": "ARC-C", "hellaswag": "Hella", "winogrande": "Wino",
           "boolq": "BoolQ", "drop": "DROP", "gsm8k": "GSM8K", "math": "MATH"}


def _row(*values: float) -> dict[str, float]:
    return dict(zip(COLUMNS, values))


PUBLISHED: dict[str, list[tuple[str, dict[str, float]]]] = {
    "XL": [
        ("paper Tab. 1/4 HRM 1B (SPEC §8.4)", _row(60.73, 81.91, 63.42, 72.38, 86.18, 82.21, 84.53, 56.16)),
        ("ref README XL (SPEC §8.1)", _row(60.7, 81.9, 63.4, 72.4, 86.2, 82.3, 84.7, 56.5)),
    ],
    "L": [
        ("paper Tab. 2 HRM 0.6B (SPEC §8.5)", _row(56.87, 74.32, 50.48, 66.38, 84.86, 78.07, 78.39, 50.28)),
        ("ref README L (SPEC §8.1)", _row(56.6, 75.9, 52.7, 67.6, 85.0, 78.6, 77.6, 51.2)),
    ],
}

_ALIASES = {"xl": "XL", "1b": "XL", "hrm-text-1b": "XL", "hrm 1b": "XL",
            "l": "L", "0.6b": "L", "600m": "L", "hrm-text-0.6b": "L", "hrm 0.6b": "L"}


def canonical_size(size_label: Optional[str]) -> Optional[str]:
    """'XL' or 'L' for a recognised size label ("XL", "1B", "l", "0.6B", ...), else None."""
    if not size_label:
        return None
    return _ALIASES.get(str(size_label).strip().lower())


def published_for(size_label: Optional[str]) -> list[tuple[str, dict[str, float]]]:
    """Published rows (source, {task: percent}) for the size; [] for an unknown size (ours are shown alone)."""
    size = canonical_size(size_label)
    return list(PUBLISHED.get(size, [])) if size else []
