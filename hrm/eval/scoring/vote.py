"""Majority voting over N sampled generations (docs/eval_protocol.md §10 describes the reference's AIME variant).

Each sample's answer is extracted with the task's own `vote_key`; samples whose answer is invalid (an MCQ letter
outside the valid set, an unparsable GSM8K number, an empty DROP/default answer) do not vote. The most common
answer wins; ties go to the answer that appeared first. The item is then scored with the first sample whose answer
equals the winner (`hrm.eval.metrics.pick_majority`). MATH votes on the extracted string (no symbolic clustering
of equivalent forms).
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Optional, Sequence


def majority_vote(answers: Sequence[Optional[Hashable]]) -> tuple[Optional[Hashable], int]:
    """(winning answer, its count) among non-None answers; ties -> earliest first occurrence; (None, 0) if none."""
    valid = [a for a in answers if a is not None]
    if not valid:
        return None, 0
    counts = Counter(valid)
    best = max(counts.values())
    for a in valid:
        if counts[a] == best:
            return a, best
    raise AssertionError("unreachable")
