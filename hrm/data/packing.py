"""Overlong policies, the packing plan and vectorised PrefixLM row construction (docs/prefixlm_packing.md §2–3,
docs/data_format.md §5).

The plan is computed from example *lengths only*, identically on every host: the epoch's examples (in the order
the pipeline gives: a prepared epoch, or a (seed, epoch) shuffle of the pool) are packed into rows of `seq_len`
slots, and consecutive groups of `rows` rows form the global batches; host p later reads only rows
[p·rows/P, (p+1)·rows/P) of each batch. So batch k is a pure function of (seed, k, data) and does not depend on the
number of hosts (docs/prefixlm_packing.md §3 port note: examples never split, positions restart per example).

Packer (`pack_rows`): the epoch is cut into equal chunks of at least `CHUNK` consecutive examples and at least
`MIN_CHUNK_ROWS` rows' worth of slots (`chunk_size`; short examples get longer chunks); within a chunk, best-fit over
`open_rows` open rows (an example goes to the open row it fills most tightly; if none can take it, the fullest open
row is closed and a new one opened). All chunks advance in lockstep, one example per numpy step over a
[chunks, open_rows] state, so planning is O(examples) time and memory with ~15 vectorised ops per step: 10M
examples of realistic length plan in a few seconds on one core (bench/packing_plan.py) at ≈ 99% slot use. Rows keep
chunk order (then opening order), so an example moves at most one chunk (≈ 800 rows at 4096 slots and realistic
lengths) from its place in the epoch order; the ≤ `open_rows` rows still open at a chunk's end close part-full. The
incomplete last batch is dropped (the reference drops the last batch, docs/prefixlm_packing.md §3); its examples are
reported as `dropped_tail` and listed in `EpochPlan.dropped`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CHUNK = 4096
MIN_CHUNK_ROWS = 256
PYTHON_MAX_CHUNKS = 12  # below this many chunks the per-step numpy overhead loses to a plain loop
DEFAULT_OPEN_ROWS = 8
OVERLONG_POLICIES = ("truncate", "drop", "reference")
FIELDS = ("inputs", "targets", "loss_mask", "segment_ids", "positions", "prefix_mask")


def apply_overlong(lengths: np.ndarray, seq_len: int, policy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Effective (Li, Lo) per example and a keep mask under an overlong policy.

    An example occupies Li + Lo − 1 slots (docs/prefixlm_packing.md §2); it is overlong if that exceeds `seq_len`.
    * "drop": overlong examples are dropped.
    * "truncate": the instruction is cut from the LEFT, keeping BOQ + condition tokens and EOQ, so the whole response
      is kept; dropped if even an instruction of just head + EOQ leaves no room.
    * "reference": data_io's rule (docs/data_format.md §5): resp_len capped at seq_len + 1 − inst_len, dropped if that
      is < 1; instructions are never cut and a capped response loses its EOA.
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
    """Packing of one epoch: `example[row_start[r]:row_start[r + 1]]` are the record ids of row r (in row order);
    batch b is rows [b·rows, (b + 1)·rows)."""

    example: np.ndarray  # int32/int64 [E] record ids in packed order
    row_start: np.ndarray  # int64 [num_batches * rows + 1]
    rows: int
    dropped: np.ndarray  # record ids of the dropped incomplete last batch
    stats: dict

    @property
    def num_batches(self) -> int:
        return (len(self.row_start) - 1) // self.rows

    def batch_rows(self, batch: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(record ids, row within [lo, hi)) of rows lo..hi-1 of `batch` — one host's share."""
        r0 = batch * self.rows
        starts = self.row_start[r0 + lo:r0 + hi + 1]
        ex = self.example[starts[0]:starts[-1]]
        row = np.repeat(np.arange(hi - lo), np.diff(starts))
        return ex, row


def chunk_size(slots: np.ndarray, seq_len: int) -> int:
    """Examples per chunk: ≥ CHUNK and ≥ MIN_CHUNK_ROWS rows of `seq_len` at the mean item size, so the part-full
    rows closed at chunk ends stay a small fraction; chunks are then evened out (a function of the lengths only)."""
    n = len(slots)
    want = max(CHUNK, -(-MIN_CHUNK_ROWS * seq_len * n // max(int(slots.sum()), 1)))
    c = -(-n // min(want, n))
    return -(-n // c)


def _pack_chunks_python(slots: np.ndarray, seq_len: int, k: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The same packer as a plain loop, one chunk after the other: faster than the lockstep version when there are
    only a few chunks (short epochs of short examples), identical output (tested)."""
    off = seq_len + 2
    rows: list[list[int]] = []
    xs = slots.tolist()
    for c0 in range(0, len(xs), length):
        rem, rid = [-1] * k, [0] * k
        for i in range(c0, min(c0 + length, len(xs))):
            x = xs[i]
            best, score = 0, off + seq_len + 1
            for s in range(k):
                sc = rem[s] - x
                if sc < 0:
                    sc = rem[s] + off
                if sc < score:
                    best, score = s, sc
            if score > seq_len:
                rem[best], rid[best] = seq_len - x, len(rows)
                rows.append([i])
            else:
                rem[best] = score
                rows[rid[best]].append(i)
    row_start = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=row_start[1:])
    return np.fromiter((i for r in rows for i in r), np.int64, len(xs)), row_start


def pack_rows(slots: np.ndarray, seq_len: int, open_rows: int = DEFAULT_OPEN_ROWS, chunk: int | None = None,
              method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Pack items of `slots[i]` ≤ seq_len slots (in order) into rows; returns (item order, row_start).

    `order[row_start[r]:row_start[r + 1]]` are the items of row r in increasing item index. Chunked best-fit with
    `open_rows` open rows per chunk (`chunk` items each, default `chunk_size`), all chunks advanced in lockstep
    (see the module docstring); `method` "auto" runs the equivalent plain loop when there are ≤ PYTHON_MAX_CHUNKS
    chunks ("numpy" / "python" force one).
    """
    slots = np.asarray(slots, np.int64)
    n = len(slots)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    if slots.max() > seq_len or slots.min() < 1:
        raise ValueError(f"item sizes must be in [1, {seq_len}], got [{slots.min()}, {slots.max()}]")
    length = min(chunk or chunk_size(slots, seq_len), n)
    c = -(-n // length)
    k = max(1, int(open_rows))
    if method == "python" or (method == "auto" and c <= PYTHON_MAX_CHUNKS):
        return _pack_chunks_python(slots, seq_len, k, length)
    x_all = np.zeros(c * length, np.int32)
    x_all[:n] = slots
    x_all = np.ascontiguousarray(x_all.reshape(c, length).T)  # [length, c]: step j reads one contiguous row
    off = seq_len + 2  # a row that cannot take x scores off + free: above every fitting score (≤ seq_len)
    rem = np.full((c, k), -1, np.int32)  # free slots of each open row; -1 = no row yet
    bid = np.zeros((c, k), np.int32)  # chunk-local id of the row in each open slot
    cnt = np.zeros((c, k), np.int32)  # items already in that row
    nrows = np.zeros(c, np.int32)
    item_row = np.empty((length, c), np.int32)
    item_rank = np.empty((length, c), np.int32)
    base = np.arange(c) * k  # flat index of each chunk's first slot: take/put on raveled state is the fast path
    rem_f, bid_f, cnt_f = rem.ravel(), bid.ravel(), cnt.ravel()
    d = np.empty((c, k), np.int32)
    d_f = d.ravel()
    nofit = np.empty((c, k), bool)
    for j in range(length):
        x = x_all[j]
        # score = free - x where the row fits (best fit = smallest); else off + free, so that when no row fits
        # the argmin is the fullest row (an unused slot, free = -1, first): it is closed and replaced by a new row
        np.subtract(rem, x[:, None], out=d)
        np.less(d, 0, out=nofit)
        np.add(d, (x + off)[:, None], out=d, where=nofit)
        slot = base + d.argmin(1)
        score = d_f.take(slot)
        new = score > seq_len
        row = np.where(new, nrows, bid_f.take(slot))
        rank = np.where(new, 0, cnt_f.take(slot))
        rem_f.put(slot, np.where(new, seq_len - x, score))
        bid_f.put(slot, row)
        cnt_f.put(slot, rank + 1)
        nrows += new
        item_row[j] = row
        item_rank[j] = rank
    # global row id = rows of earlier chunks + chunk-local id; position = row start + rank (a counting sort)
    offset = (np.cumsum(nrows, dtype=np.int64) - nrows)
    g = (item_row.T.astype(np.int64) + offset[:, None]).ravel()[:n]
    counts = np.bincount(g, minlength=int(nrows.sum()))
    row_start = np.concatenate([[0], np.cumsum(counts)])
    order = np.empty(n, np.int64)
    order[row_start[g] + item_rank.T.ravel()[:n]] = np.arange(n)
    return order, row_start


@dataclasses.dataclass(frozen=True)
class RecordSlots:
    """Per-record packing inputs under an overlong policy: slots (eff Li + eff Lo − 1), keep and fits masks."""

    slots: np.ndarray  # int32 [N]
    keep: np.ndarray  # bool [N]
    fits: np.ndarray  # bool [N]

    @classmethod
    def build(cls, lengths: np.ndarray, seq_len: int, overlong: str) -> "RecordSlots":
        eff_li, eff_lo, keep, _ = apply_overlong(lengths, seq_len, overlong)
        fits = (lengths[:, 0].astype(np.int64) + lengths[:, 1] - 1) <= seq_len
        return cls((eff_li + eff_lo - 1).astype(np.int32), keep, fits)


def plan_epoch(lengths: np.ndarray, order: np.ndarray, *, seq_len: int, rows: int, overlong: str, epoch: int = 0,
               open_rows: int = DEFAULT_OPEN_ROWS, record_slots: RecordSlots | None = None) -> EpochPlan:
    """Plan one epoch: `order` = the epoch's record ids in sequence (repeats allowed); apply the overlong policy,
    pack into rows, group `rows` rows per batch; returns the plan and its stats. `record_slots` (from
    `RecordSlots.build(lengths, seq_len, overlong)`) may be passed to reuse it across epochs."""
    rs = record_slots or RecordSlots.build(lengths, seq_len, overlong)
    order = np.asarray(order)
    keep, fits = rs.keep[order], rs.fits[order]
    counts = {"overlong": int((~fits).sum()), "overlong_truncated": int((~fits & keep).sum()),
              "overlong_dropped": int((~keep).sum())}
    kept = order[keep]
    slots = rs.slots[kept]
    item, row_start = pack_rows(slots, seq_len, open_rows)
    nb = (len(row_start) - 1) // rows
    cut = int(row_start[nb * rows])
    real = int(slots[item[:cut]].sum(dtype=np.int64))
    capacity = nb * rows * seq_len
    stats = dict(counts, epoch=epoch, num_batches=nb, rows=rows, examples=cut, dropped_tail=len(item) - cut,
                 real_tokens=real, slots=capacity, packing_efficiency=real / capacity if capacity else 0.0)
    return EpochPlan(example=kept[item[:cut]], row_start=row_start[:nb * rows + 1], rows=rows,
                     dropped=kept[item[cut:]], stats=stats)


def gather_examples(flat: np.ndarray, li: np.ndarray, lo: np.ndarray, eff_li: np.ndarray, eff_lo: np.ndarray,
                    head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply the overlong policy to decoded records: (flat i‖o of every kept example, length n_e) — vectorised.

    Each example is taken as two pieces of its record: piece 1 = the head (BOQ + conditions) when the instruction is
    cut from the left, else empty; piece 2 = the rest, starting after the removed instruction tokens and ending
    after eff_lo response tokens (a capped response, policy "reference", docs/data_format.md §5).
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
               seq_len: int, target_only: bool = True) -> dict[str, np.ndarray]:
    """Pack full sequences s = i‖o (concatenated in `flat`, lengths `n`, instruction lengths Li) into [num_rows,
    seq_len] int32 fields (docs/prefixlm_packing.md §2 layout).

    inputs = i‖o[:-1], targets[j] = s[j+1] where loss_mask (j ≥ Li − 1) else 0, positions restart at 0,
    prefix_mask = j < Li, segment_ids = 1..k per row, everything 0 on padding. `target_only=False` (the P(x)
    ablation, docs/prefixlm_packing.md §2) puts the loss on every position (instruction labels i[1:]). `rows[e]` = row
    of example e; examples of one row appear in order. Vectorised: one pass of numpy ops over all tokens.
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
    loss = (j >= li - 1) | (not target_only)
    out["inputs"][dst] = flat[src]
    out["targets"][dst] = np.where(loss, flat[src + 1], 0)
    out["loss_mask"][dst] = loss
    out["segment_ids"][dst] = seg[ex]
    out["positions"][dst] = j
    out["prefix_mask"][dst] = j < li
    return {k: v.reshape(num_rows, seq_len) for k, v in out.items()}
