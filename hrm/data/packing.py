"""Overlong policies, the global first-fit packing plan and vectorised PrefixLM row construction (SPEC §4.2–4.3, §6.5).

The plan is computed from example *lengths only* and is the same on every host: epoch e's examples are shuffled with
(seed, e), packed first-fit into global batches of `rows` rows of `seq_len` slots, and host p later reads only rows
[p·rows/P, (p+1)·rows/P) of each batch. So batch k is a pure function of (seed, k, data) and does not depend on the
number of hosts (SPEC §4.3 port note: examples never split, positions restart per example).

Packer: first-fit over the rows of the open batch; an example that fits no row waits in a bounded look-ahead queue and
is tried first in the next batch (deterministic, delay ≤ one batch per queue slot). The batch closes when no row can take
the shortest example or the queue is full. The epoch's tail batches are kept only if none of their rows is empty;
otherwise their examples are counted as `dropped_tail` (the reference drops the last batch, SPEC §4.3).
"""

from __future__ import annotations

import dataclasses

import numpy as np

OVERLONG_POLICIES = ("truncate", "drop", "reference")
FIELDS = ("inputs", "targets", "loss_mask", "segment_ids", "positions", "prefix_mask")


def apply_overlong(lengths: np.ndarray, seq_len: int, policy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Effective (Li, Lo) per example and a keep mask under an overlong policy.

    An example occupies Li + Lo − 1 slots (SPEC §4.2); it is overlong if that exceeds `seq_len`.
    * "drop": overlong examples are dropped.
    * "truncate": the instruction is cut from the LEFT, keeping BOQ + condition tokens and EOQ, so the whole response
      is kept; dropped if even an instruction of just head + EOQ leaves no room.
    * "reference": data_io's rule (SPEC §6.5): resp_len capped at seq_len + 1 − inst_len, dropped if that is < 1;
      instructions are never cut and a capped response loses its EOA.
    """
    if policy not in OVERLONG_POLICIES:
        raise ValueError(f"overlong policy {policy!r}; choose one of {OVERLONG_POLICIES}")
    li, lo, head = (lengths[:, k].astype(np.int64) for k in range(3))
    fits = li + lo - 1 <= seq_len
    eff_li, eff_lo = li.copy(), lo.copy()
    if policy == "drop":
        keep = fits
    elif policy == "truncate":
        new_li = seq_len + 1 - lo
        keep = fits | (new_li >= head + 1)
        eff_li = np.where(fits, li, new_li)
    else:
        new_lo = seq_len + 1 - li
        keep = fits | (new_lo >= 1)
        eff_lo = np.where(fits, lo, new_lo)
    counts = {"overlong": int((~fits).sum()), "overlong_truncated": int((~fits & keep).sum()),
              "overlong_dropped": int((~keep).sum())}
    return eff_li, eff_lo, keep, counts


@dataclasses.dataclass
class EpochPlan:
    """Packing of one epoch. Items are grouped per batch, then per row (`row` is the row within its batch)."""

    example: np.ndarray  # int64 [E] global record index
    row: np.ndarray  # int32 [E]
    batch_bounds: np.ndarray  # int64 [num_batches + 1] item offsets
    stats: dict

    @property
    def num_batches(self) -> int:
        return len(self.batch_bounds) - 1


def first_fit(slot_lens: np.ndarray, rows: int, seq_len: int, lookahead: int) -> tuple[list[list[list[int]]], int]:
    """Pack items (indices into `slot_lens`, in order) into batches of `rows` rows; returns (batches, dropped)."""
    m = slot_lens.tolist()
    n = len(m)
    if n == 0:
        return [], 0
    min_len = min(m)
    batches: list[list[list[int]]] = []
    pending: list[int] = []
    nxt = 0
    while nxt < n or pending:
        rem = [seq_len] * rows
        content: list[list[int]] = [[] for _ in range(rows)]
        waiting: list[int] = []

        def place(i: int) -> bool:
            need = m[i]
            for r in range(rows):
                if rem[r] >= need:
                    rem[r] -= need
                    content[r].append(i)
                    return True
            return False

        for i in pending:
            if not place(i):
                waiting.append(i)
        while nxt < n and len(waiting) < lookahead:
            i = nxt
            nxt += 1
            if not place(i):
                waiting.append(i)
                if max(rem) < min_len:  # no row can take even the shortest example: close the batch
                    break
        pending = waiting
        if nxt >= n and any(not c for c in content):  # ragged tail: drop it and everything after
            dropped = sum(len(c) for c in content) + len(pending)
            return batches, dropped
        batches.append(content)
    return batches, 0


def plan_epoch(lengths: np.ndarray, *, seq_len: int, rows: int, seed: int, epoch: int, overlong: str,
               lookahead: int) -> EpochPlan:
    """Shuffle (seed, epoch), apply the overlong policy, pack first-fit; returns the epoch's plan and stats."""
    eff_li, eff_lo, keep, counts = apply_overlong(lengths, seq_len, overlong)
    order = np.random.default_rng([seed, epoch]).permutation(len(lengths))
    order = order[keep[order]]
    slots = (eff_li + eff_lo - 1)[order]
    batches, dropped = first_fit(slots, rows, seq_len, lookahead)
    items, row_ids, bounds = [], [], [0]
    for content in batches:
        for r, c in enumerate(content):
            items.extend(c)
            row_ids.extend([r] * len(c))
        bounds.append(len(items))
    items_a = np.asarray(items, np.int64)
    real = int(slots[items_a].sum()) if len(items_a) else 0
    capacity = len(batches) * rows * seq_len
    stats = dict(counts, epoch=epoch, num_batches=len(batches), examples=len(items_a), dropped_tail=dropped,
                 real_tokens=real, slots=capacity, packing_efficiency=real / capacity if capacity else 0.0)
    return EpochPlan(example=order[items_a] if len(items_a) else items_a, row=np.asarray(row_ids, np.int32),
                     batch_bounds=np.asarray(bounds, np.int64), stats=stats)


def gather_examples(flat: np.ndarray, li: np.ndarray, lo: np.ndarray, eff_li: np.ndarray, eff_lo: np.ndarray,
                    head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply the overlong policy to decoded records: (flat i‖o of every kept example, length n_e) — vectorised.

    Each example is taken as two pieces of its record: piece 1 = the head (BOQ + conditions) when the instruction is
    cut from the left, else empty; piece 2 = the rest, starting after the removed instruction tokens and ending
    after eff_lo response tokens (a capped response, policy "reference", SPEC §6.5).
    """
    li, lo, eff_li, eff_lo, head = (np.asarray(x, np.int64) for x in (li, lo, eff_li, eff_lo, head))
    rec_start = np.cumsum(li + lo) - (li + lo)
    cut = li - eff_li  # instruction tokens removed after the head
    p1_len = np.where(cut > 0, head, 0)
    p2_start = rec_start + np.where(cut > 0, head + cut, 0)
    p2_len = eff_li + eff_lo - p1_len
    starts = np.stack([rec_start, p2_start], 1).ravel()
    lens = np.stack([p1_len, p2_len], 1).ravel()
    off = np.cumsum(lens) - lens
    gather = np.repeat(starts - off, lens) + np.arange(int(lens.sum()))
    return flat[gather], eff_li + eff_lo


def build_rows(flat: np.ndarray, n: np.ndarray, inst_lens: np.ndarray, rows: np.ndarray, num_rows: int,
               seq_len: int) -> dict[str, np.ndarray]:
    """Pack full sequences s = i‖o (concatenated in `flat`, lengths `n`, instruction lengths Li) into [num_rows, seq_len] int32 fields (SPEC §4.2 layout).

    inputs = i‖o[:-1], targets[j] = s[j+1] where loss_mask (j ≥ Li − 1) else 0, positions restart at 0,
    prefix_mask = j < Li, segment_ids = 1..k per row, everything 0 on padding. `rows[e]` = row of example e;
    examples of one row appear in order. Vectorised: one pass of numpy ops over all tokens.
    """
    out = {k: np.zeros(num_rows * seq_len, np.int32) for k in FIELDS}
    n = np.asarray(n, np.int64)
    if not len(n):
        return {k: v.reshape(num_rows, seq_len) for k, v in out.items()}
    m = n - 1  # slots per example
    src_start = np.cumsum(n) - n
    rows = np.asarray(rows, np.int64)
    # offset of each example inside its row: exclusive cumsum of m restarted at each row change
    csum = np.cumsum(m) - m
    first_of_row = np.r_[True, rows[1:] != rows[:-1]]
    row_base = np.maximum.accumulate(np.where(first_of_row, csum, 0))
    dst_start = rows * seq_len + (csum - row_base)
    k = np.arange(len(n))
    seg = k - np.maximum.accumulate(np.where(first_of_row, k, 0)) + 1
    ex = np.repeat(k, m)
    j = np.arange(int(m.sum())) - np.repeat(csum, m)
    src = src_start[ex] + j
    dst = dst_start[ex] + j
    li = np.asarray(inst_lens, np.int64)[ex]
    loss = j >= li - 1
    out["inputs"][dst] = flat[src]
    out["targets"][dst] = np.where(loss, flat[src + 1], 0)
    out["loss_mask"][dst] = loss
    out["segment_ids"][dst] = seg[ex]
    out["positions"][dst] = j
    out["prefix_mask"][dst] = j < li
    return {k: v.reshape(num_rows, seq_len) for k, v in out.items()}
