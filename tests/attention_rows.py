"""Packed PrefixLM rows for the attention tests (test_attention, test_attention_blocked, test_splash): segment ids
and prefix masks built from example layouts, random layouts, and the edge-case rows the backends must agree on."""

from __future__ import annotations

import numpy as np


def packed_rows(layouts: list[list[tuple[int, int]]], T: int) -> tuple[np.ndarray, np.ndarray]:
    """segment_ids, prefix_mask [B, T] for rows given as lists of (prefix_len, total_len) examples."""
    seg = np.zeros((len(layouts), T), np.int32)
    pre = np.zeros((len(layouts), T), np.int32)
    for b, exs in enumerate(layouts):
        s = 0
        for e, (p, n) in enumerate(exs):
            seg[b, s:s + n], pre[b, s:s + p] = e + 1, 1
            s += n
    return seg, pre


def random_rows(rng: np.random.Generator, B: int, T: int, max_len_div: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """B random rows of examples shorter than T // max_len_div (prefix may be empty or the whole example)."""
    layouts = []
    for _ in range(B):
        exs, s = [], 0
        while s < T - 2 and rng.random() > 0.1:
            n = int(min(rng.integers(1, T // max_len_div), T - s))
            exs.append((int(rng.integers(0, n + 1)), n))
            s += n
        layouts.append(exs)
    return packed_rows(layouts, T)


def edge_rows(T: int) -> tuple[np.ndarray, np.ndarray]:
    """Row 0: a prefix-only example (5, 5), a response of length 1 (6, 7), examples crossing block
    boundaries, trailing padding; row 1: padding only; row 2: one example filling the row; row 3: a long
    prefix crossing blocks, then a 1-token-prefix example, trailing padding."""
    return packed_rows([
        [(4, 9), (5, 5), (6, 7), (3, 10)],
        [],
        [(T // 3, T)],
        [(2, 10), (8, 20), (1, 3)],
    ], T)
