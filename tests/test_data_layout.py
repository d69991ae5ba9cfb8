"""Packed-row layout vs the reference golden batch, the PrefixLM mask rule and overlong policies
(docs/prefixlm_packing.md §2–4, docs/data_format.md §5)."""

import json

import numpy as np
import pytest

from hrm.data import packing, records


def _golden(fixture_golden_dir):
    z = np.load(fixture_golden_dir / "hrm_mini.npz")
    meta = json.loads(str(z["meta_json"]))
    return {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("batch/")}, meta


def _golden_examples(g, meta):
    """Recover each example's (instruction ids, response ids) from the golden inputs/labels."""
    out, c = [], 0
    for li, lo in meta["examples"]:
        inst = g["inputs"][c:c + li]
        resp = g["labels"][c + li - 1:c + li + lo - 1]
        assert (resp != -100).all()
        out.append((inst.astype(np.int64), resp.astype(np.int64)))
        c += li + lo - 1
    return out


def _pack_one_row(examples, T):
    flat = np.concatenate([np.concatenate([i, o]) for i, o in examples])
    n = np.array([len(i) + len(o) for i, o in examples])
    li = np.array([len(i) for i, _ in examples])
    return packing.build_rows(flat, n, li, np.zeros(len(examples), np.int64), 1, T)


def test_golden_batch_layout(fixture_golden_dir):
    g, meta = _golden(fixture_golden_dir)
    T = meta["T"]
    b = {k: v[0] for k, v in _pack_one_row(_golden_examples(g, meta), T).items()}
    labels = g["labels"]
    np.testing.assert_array_equal(b["inputs"], g["inputs"])
    np.testing.assert_array_equal(b["targets"], np.where(labels == -100, 0, labels))
    np.testing.assert_array_equal(b["loss_mask"], (labels != -100).astype(np.int32))
    np.testing.assert_array_equal(b["positions"], g["position_ids"])
    n_ex = len(meta["examples"])
    cu = g["cu_seqlens"][:n_ex + 1]
    seg = np.zeros(T, np.int32)
    prefix = np.zeros(T, np.int32)
    for s in range(n_ex):
        seg[cu[s]:cu[s + 1]] = s + 1
        prefix[cu[s]:cu[s] + g["prefix_lens"][s]] = 1
        # causal length = Lo - 1 = the number of response queries
        assert g["causal_lens"][s] == cu[s + 1] - cu[s] - g["prefix_lens"][s]
    np.testing.assert_array_equal(b["segment_ids"], seg)
    np.testing.assert_array_equal(b["prefix_mask"], prefix)
    for k, v in b.items():
        assert v.dtype == np.int32, k


def test_golden_through_records(fixture_golden_dir):
    """Serialise → decode → gather gives the same row as packing the raw token lists."""
    g, meta = _golden(fixture_golden_dir)
    exs = _golden_examples(g, meta)
    recs = [records.encode_record(i, o, records.token_dtype(512)) for i, o in exs]
    flat, li, lo = records.decode_records(recs)
    flat, n = packing.gather_examples(flat, li, lo, li, lo, np.ones(len(exs), np.int64))
    b = packing.build_rows(flat, n, li, np.zeros(len(exs), np.int64), 1, meta["T"])
    np.testing.assert_array_equal(b["inputs"][0], g["inputs"])


def _reference_mask(cu, prefix_lens, n_ex, T):
    """docs/prefixlm_packing.md §4 two-pass description: prefix block bidirectional; response query r sees keys
    0..Li+r."""
    m = np.zeros((T, T), bool)
    for s in range(n_ex):
        a, e, p = cu[s], cu[s + 1], prefix_lens[s]
        m[a:a + p, a:a + p] = True
        for q in range(a + p, e):
            m[q, a:q + 1] = True
    return m


def _mask_from_fields(seg, prefix):
    """Dense rule: same example AND (key in prefix OR key <= query); padding sees nothing."""
    same = (seg[:, None] == seg[None, :]) & (seg[:, None] > 0)
    causal = np.arange(len(seg))[None, :] <= np.arange(len(seg))[:, None]
    return same & ((prefix[None, :] == 1) | causal)


def test_mask_fields_match_prefix_lm_rule(fixture_golden_dir):
    g, meta = _golden(fixture_golden_dir)
    T, n_ex = meta["T"], len(meta["examples"])
    b = _pack_one_row(_golden_examples(g, meta), T)
    got = _mask_from_fields(b["segment_ids"][0], b["prefix_mask"][0])
    np.testing.assert_array_equal(got, _reference_mask(g["cu_seqlens"], g["prefix_lens"], n_ex, T))


def test_multi_row_layout_and_empty_causal():
    """Examples land in their rows, positions restart, Lo = 1 (no response query) is handled."""
    rng = np.random.default_rng(0)
    exs = [(rng.integers(10, 99, li), rng.integers(10, 99, lo)) for li, lo in [(4, 3), (5, 1), (3, 6), (6, 2)]]
    rows = np.array([0, 0, 1, 1])
    flat = np.concatenate([np.concatenate(e) for e in exs])
    b = packing.build_rows(flat, np.array([7, 6, 9, 8]), np.array([4, 5, 3, 6]), rows, 3, 16)
    assert (b["segment_ids"][2] == 0).all() and (b["inputs"][2] == 0).all()
    np.testing.assert_array_equal(b["segment_ids"][0][:12], [1] * 6 + [2] * 5 + [0])
    np.testing.assert_array_equal(b["positions"][0][6:11], np.arange(5))
    # Lo = 1: the EOQ position predicts the only response token, nothing else is labelled
    np.testing.assert_array_equal(b["loss_mask"][0][6:11], [0, 0, 0, 0, 1])
    assert b["targets"][0][10] == exs[1][1][0]
    assert b["loss_mask"].sum() == sum(len(o) for _, o in exs)
    assert ((b["targets"] != 0) <= (b["loss_mask"] == 1)).all()


def _lengths(*triples):
    return np.array(triples, np.int32)


def test_overlong_policies():
    T = 10
    L = _lengths((4, 3, 2), (8, 5, 2), (3, 12, 2), (12, 1, 3))  # fits / inst-long / resp-long / inst-only
    li, lo, keep, c = packing.apply_overlong(L, T, "drop")
    assert keep.tolist() == [True, False, False, False] and c["overlong_dropped"] == 3
    li, lo, keep, c = packing.apply_overlong(L, T, "truncate")
    assert keep.tolist() == [True, True, False, True]
    assert li.tolist()[:2] == [4, 6] and li[3] == 10 and (lo == L[:, 1]).all()
    assert c == {"overlong": 3, "overlong_truncated": 2, "overlong_dropped": 1}
    li, lo, keep, c = packing.apply_overlong(L, T, "reference")  # docs/data_format.md §5: cap response at T+1-Li
    assert keep.tolist() == [True, True, True, False]
    assert lo.tolist()[:3] == [3, 3, 8] and (li == L[:, 0]).all()
    with pytest.raises(ValueError, match="overlong policy"):
        packing.apply_overlong(L, T, "split")


def test_truncate_keeps_head_and_response():
    inst = np.array([2, 5, 6, 40, 41, 42, 43, 44, 3])  # BOQ, two conditions, text, EOQ
    resp = np.array([50, 51, 52, 4])
    rec = records.encode_record(inst, resp, np.dtype("<u2"))
    head = records.head_length(inst.tolist(), 2, frozenset({5, 6}))
    assert head == 3
    flat, li, lo = records.decode_records([rec])
    out, n = packing.gather_examples(flat, li, lo, np.array([6]), lo, np.array([head]))
    assert out.tolist() == [2, 5, 6, 43, 44, 3, 50, 51, 52, 4] and n.tolist() == [10]
    out, n = packing.gather_examples(flat, li, lo, li, np.array([2]), np.array([head]))  # "reference": cap resp
    assert out.tolist() == inst.tolist() + [50, 51]


def test_plan_never_splits_and_is_deterministic():
    rng = np.random.default_rng(1)
    L = np.stack([rng.integers(2, 40, 500), rng.integers(1, 60, 500), np.ones(500, int)], 1).astype(np.int32)
    order0 = np.random.default_rng([3, 0]).permutation(500)
    p1 = packing.plan_epoch(L, order0, seq_len=128, rows=4, overlong="truncate", open_rows=4)
    p2 = packing.plan_epoch(L, order0, seq_len=128, rows=4, overlong="truncate", open_rows=4)
    np.testing.assert_array_equal(p1.example, p2.example)
    np.testing.assert_array_equal(p1.row_start, p2.row_start)
    assert len(set(p1.example.tolist())) == len(p1.example)  # each example at most once per epoch
    slots = (L[:, 0] + L[:, 1] - 1).astype(np.int64)
    for b in range(p1.num_batches):
        ex, row = p1.batch_rows(b, 0, 4)
        load = np.bincount(row, weights=slots[ex], minlength=4)
        assert (load <= 128).all() and (load > 0).all() and (np.diff(row) >= 0).all()
    st = p1.stats
    assert st["examples"] + st["dropped_tail"] + st["overlong_dropped"] == 500
    assert sorted(p1.example.tolist() + p1.dropped.tolist()) == sorted(order0.tolist())
    assert st["packing_efficiency"] > 0.9
    p3 = packing.plan_epoch(L, np.random.default_rng([3, 1]).permutation(500), seq_len=128, rows=4,
                            overlong="truncate", open_rows=4)
    assert not np.array_equal(p1.example[:50], p3.example[:50])  # the order drives the plan


def _first_fit_reference(slots, seq_len, open_rows, chunk):
    """Plain-Python transcription of the packer: per chunk, best fit over `open_rows` open rows, closing the
    fullest (unused slots first) when nothing fits."""
    rows = []
    for c0 in range(0, len(slots), chunk):
        open_ = [None] * open_rows  # (free, row id)
        for i in range(c0, min(c0 + chunk, len(slots))):
            x = slots[i]
            fits = [(o[0] - x, k) for k, o in enumerate(open_) if o is not None and o[0] >= x]
            if fits:
                left, k = min(fits)
                open_[k] = (left, open_[k][1])
                rows[open_[k][1]].append(i)
            else:
                k = min(range(open_rows), key=lambda k: (-1 if open_[k] is None else open_[k][0], k))
                open_[k] = (seq_len - x, len(rows))
                rows.append([i])
    return rows


@pytest.mark.parametrize("n,chunk,open_rows", [(1, 8, 2), (300, 64, 3), (1000, 4096, 8), (777, 100, 1),
                                                (5000, 97, 8)])
@pytest.mark.parametrize("method", ["numpy", "python"])
def test_pack_rows_matches_python_transcription(n, chunk, open_rows, method):
    """Both packer implementations (lockstep numpy, plain loop) equal the obvious sequential algorithm (incl.
    argmin tie-breaks and ragged last chunks)."""
    rng = np.random.default_rng(n)
    slots = np.clip(np.round(np.exp(rng.normal(3.5, 0.9, n))), 1, 128).astype(np.int64)
    order, row_start = packing.pack_rows(slots, 128, open_rows=open_rows, chunk=chunk, method=method)
    got = [order[row_start[r]:row_start[r + 1]].tolist() for r in range(len(row_start) - 1)]
    assert got == _first_fit_reference(slots.tolist(), 128, open_rows, chunk)
    with pytest.raises(ValueError, match="item sizes"):
        packing.pack_rows(np.array([5, 129]), 128)


def test_pack_rows_efficiency_on_realistic_lengths():
    """Lengths as bench/packing_plan.py (mean ≈ 800 of 4096): ≥ 98% of the slots hold real tokens."""
    rng = np.random.default_rng(0)
    slots = np.clip(np.round(np.exp(rng.normal(6.3, 0.9, 50_000))), 8, 4096).astype(np.int64)
    order, row_start = packing.pack_rows(slots, 4096)
    assert sorted(order.tolist()) == list(range(len(slots)))
    loads = np.add.reduceat(slots[order], row_start[:-1])
    assert loads.max() <= 4096 and slots.sum() / (4096 * (len(row_start) - 1)) >= 0.98
