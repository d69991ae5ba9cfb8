"""Brace-matched extraction of the last `\\boxed{...}` (docs/eval_protocol.md §8, §9).

Reproduces the reference's `last_boxed_only_string` exactly, including its precedence: the last `\\boxed` wins and
`\\fbox` is only looked for when the text holds no `\\boxed` at all. The brace scan starts at the macro name and
takes the first `{` after it, so `\\boxed 5` (no braces) borrows a later brace group, as in the reference.
"""

from __future__ import annotations

from typing import Optional


def last_boxed(text: str) -> Optional[str]:
    """Stripped contents of the last `\\boxed{...}` (else last `\\fbox{...}`), or None if absent/unbalanced."""
    idx = text.rfind("\\boxed")
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return None
    depth = 0
    left = None
    for i in range(idx, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
            if left is None:
                left = i
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[left + 1:i].strip() if left is not None else None
    return None
