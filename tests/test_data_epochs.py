"""Training consumes the prepared epochs exactly; cycling past them; resume into a late epoch; remote paths."""

import json
import logging
import os
from collections import Counter

import numpy as np
import pytest

from hrm.data import epochs as epochs_mod
from hrm.data import packing, paths, records
from hrm.data.pipeline import make_train_iterator
from hrm.data.prepare import prepare
from hrm.data.tokenizer import train_sentencepiece

T, ROWS = 64, 2
N_EPOCHS = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ep")
    files = {"alpha_tasks.jsonl": 25, "beta_small.jsonl": 3, "gamma.jsonl": 7}
    inputs = []
    for name, n in files.items():
        (d / name).write_text("".join(json.dumps({"instruction": f"{name[:5]} {i} plus {i}", "response": str(2 * i)})
                                      + "\n" for i in range(n)))
        inputs.append(str(d / name))
    texts = [f"{name[:5]} {i} plus {i} {2 * i}" for name in files for i in range(30)]
    tok = train_sentencepiece(texts, d / "t.model", vocab_size=300)
    (d / "mix.yaml").write_text("rules:\n  - {prefix: alpha_, max_per_file: 10}\n  - {prefix: beta_, repeat: 10}\n")
    prepare(out=d / "out", inputs=inputs, tokenizer=str(tok.path), mixture=str(d / "mix.yaml"), epochs=N_EPOCHS,
            progress=False)
    return d / "out"


def _it(data_dir, **kw):
    args = dict(seq_len=T, global_batch_rows=ROWS, seed=5, process_index=0, process_count=1)
    args.update(kw)
    return make_train_iterator(data_dir, **args)


def _content_to_record(data_dir):
    meta = records.read_metadata(data_dir)
    reader = records.ShardReader(records.shard_paths(data_dir, meta), [s["num_examples"] for s in meta["shards"]])
    flat, li, lo = records.decode_records(reader.read(np.arange(len(reader))))
    ends = np.cumsum(li + lo)
    return {tuple(flat[e - n:e].tolist()): k for k, (e, n) in enumerate(zip(ends, li + lo))}


def _records_in(batch, lookup):
    out = []
    for r in range(batch["inputs"].shape[0]):
        seg = batch["segment_ids"][r]
        for s in range(1, seg.max() + 1):
            m = seg == s
            out.append(lookup[tuple(batch["inputs"][r][m].tolist()) + (int(batch["targets"][r][m][-1]),)])
    return out


def test_training_sees_each_prepared_epoch_exactly(data_dir):
    """Batches read across epoch boundaries hold exactly each epoch's realised examples (minus the dropped
    incomplete last batch, listed by the plan), in the prepared order's neighbourhood."""
    lookup = _content_to_record(data_dir)
    lengths = records.load_lengths(data_dir)
    assert (lengths[:, 0] + lengths[:, 1] - 1).max() <= T  # nothing overlong: examples arrive unaltered
    it = _it(data_dir)
    src = it.source
    steps = sum(src.num_batches(e) for e in range(N_EPOCHS))
    seen = [Counter() for _ in range(N_EPOCHS)]
    for step in range(steps):
        e, _ = src.locate(step)
        seen[e].update(_records_in(next(it), lookup))
    for e in range(N_EPOCHS):
        want = Counter(records.load_epoch(data_dir, e).tolist())
        dropped = Counter(src.plan(e).dropped.tolist())
        assert seen[e] + dropped == want, e
        assert sum(dropped.values()) < 47 // 2  # only the tail
    assert it.total_tokens == records.read_metadata(data_dir)["epochs"]["tokens_mean"]
    it.close()


def test_training_past_the_prepared_epochs_cycles_with_one_warning(data_dir, caplog):
    it = _it(data_dir, lookahead=2)
    src = it.source
    with caplog.at_level(logging.WARNING, logger="hrm.data"):
        orders = [src.epoch_order(e) for e in range(N_EPOCHS + 2)]
        src.plan(N_EPOCHS + 1)
    warnings = [r for r in caplog.records if "prepared epochs" in r.getMessage()]
    assert len(warnings) == 1 and f"training epoch {N_EPOCHS}" in warnings[0].getMessage()
    for e in range(N_EPOCHS):
        np.testing.assert_array_equal(orders[e], records.load_epoch(data_dir, e))  # the seed plays no part
    for e in (N_EPOCHS, N_EPOCHS + 1):
        base = records.load_epoch(data_dir, e % N_EPOCHS)
        assert Counter(orders[e].tolist()) == Counter(base.tolist()) and not np.array_equal(orders[e], base)
    np.testing.assert_array_equal(orders[N_EPOCHS], epochs_mod.epoch_order(data_dir, src.meta, N_EPOCHS, seed=5))
    it.close()


def test_resume_into_epoch_3_plans_no_earlier_epoch(data_dir, monkeypatch):
    it = _it(data_dir)
    start3 = sum(it.source.num_batches(e) for e in range(3))
    for _ in range(start3 + 1):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    want = [next(it) for _ in range(2)]
    it.close()
    planned = []
    real = packing.plan_epoch

    def spy(*a, **kw):
        planned.append(kw["epoch"])
        return real(*a, **kw)

    monkeypatch.setattr(packing, "plan_epoch", spy)
    it2 = _it(data_dir)
    it2.set_state(state)
    assert it2.epoch_stats(0)["num_batches"] == state["epochs"][0]["num_batches"]  # from the state, not replanned
    got = [next(it2) for _ in range(2)]
    it2.close()
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(want, got) for k in a)
    assert planned and min(planned) == 3, planned  # epoch 3 (and maybe 4 in the background), never 0-2


def test_restored_batch_counts_are_checked(data_dir):
    it = _it(data_dir)
    state = dict(it.get_state(), step=1, epochs=[dict(it.epoch_stats(0), num_batches=999)])
    it2 = _it(data_dir)
    it2.set_state(state)
    with pytest.raises(ValueError, match="epoch 0 has 999 batches"):
        it2.source.plan(0)
    it.close()
    it2.close()


# ---------------------------------------------------------------------------------------------- remote paths

def test_remote_uris_are_not_mangled():
    assert os.fspath(paths.as_path("gs://b/r")) == "gs://b/r"
    assert os.fspath(paths.join("gs://b/r", "epochs", "epoch_0.npy")) == "gs://b/r/epochs/epoch_0.npy"
    assert records.lengths_path("gs://b/r/u00000-00000.array_record") == "gs://b/r/u00000-00000.lengths.npy"
    assert paths.is_remote("s3://x/y") and not paths.is_remote("/tmp/x") and not paths.is_remote("file:///tmp/x")
    assert os.fspath(paths.as_path("file:///tmp/x")) == "/tmp/x"


def test_gs_data_dir_error_names_the_uri():
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs installed: would try the network")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match=r"gs://b/r/metadata\.json.*gcsfs"):
        make_train_iterator("gs://b/r", seq_len=T, global_batch_rows=ROWS, process_index=0, process_count=1)


def test_relative_and_file_uri_data_dirs(data_dir, monkeypatch):
    want = next(_it(data_dir))
    monkeypatch.chdir(data_dir.parent)
    for d in (data_dir.name, f"file://{data_dir}"):
        it = _it(d)
        assert it.source.data_dir == str(data_dir)
        got = next(it)
        it.close()
        assert all(np.array_equal(want[k], got[k]) for k in want)


def test_remote_shards_are_staged_once(data_dir, tmp_path, monkeypatch):
    """Shards under a (faked) gs:// URI are copied once into the local cache and read from there."""
    reads = []

    def fake_read_bytes(p):
        s = os.fspath(p)
        reads.append(s)
        return (data_dir / s.removeprefix("gs://bucket/data/")).read_bytes()

    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(paths, "read_bytes", fake_read_bytes)
    meta = records.read_metadata(data_dir)
    uris = records.shard_paths("gs://bucket/data", meta)
    assert uris[0] == f"gs://bucket/data/{meta['shards'][0]['path']}"
    remote = records.ShardReader(uris, [s["num_examples"] for s in meta["shards"]])
    local = records.ShardReader(records.shard_paths(data_dir, meta), [s["num_examples"] for s in meta["shards"]])
    idx = np.arange(len(local))[::-1]
    assert remote.read(idx) == local.read(idx)
    assert sorted(reads) == sorted(set(uris))  # each shard fetched exactly once
    assert remote.read(idx[:3]) == local.read(idx[:3]) and len(reads) == len(uris)
    staged = paths.local_file(uris[0])
    assert staged.startswith(str(tmp_path / "cache")) and len(reads) == len(uris)
