"""Offline preparation: formats, aliases, bad records, resume, workers, TFDS and reference-format import
(docs/data_format.md §6–7)."""

import gzip
import json
import os

import numpy as np
import pytest

from hrm.data import records
from hrm.data.prepare import main, prepare
from hrm.data.sources import BadRecord
from hrm.data.tokenizer import load_tokenizer, train_sentencepiece


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    texts = [f"Question {i}: what is {i}+{i}? Answer {2 * i}" for i in range(300)]
    return str(train_sentencepiece(texts, tmp_path_factory.mktemp("tok") / "t.model", vocab_size=300).path)


def _write_jsonl(path, rows, gz=False):
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


def _good(n, start=0):
    return [{"instruction": f"what is {i}+{i}?", "response": str(2 * i)} for i in range(start, start + n)]


def _all_examples(out):
    meta = records.read_metadata(out)
    reader = records.ShardReader(records.shard_paths(out, meta), [s["num_examples"] for s in meta["shards"]])
    return [records.decode_record(r) for r in reader.read(np.arange(len(reader)))]


def test_formats_aliases_and_layout(tmp_path, tok_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    a = _write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p1", "completion": "c1", "condition": "synth,cot"},
                                            {"input": "i2", "output": "o2"}, {"question": "q3", "answer": "a3"}])
    b = _write_jsonl(tmp_path / "b.jsonl.gz", [{"messages": [{"role": "system", "content": "s"},
                                                             {"role": "user", "content": "u4"},
                                                             {"role": "assistant", "content": "r4"}]}], gz=True)
    pq.write_table(pa.table({"instruction": ["p5", "p6"], "response": ["r5", "r6"]}), tmp_path / "c.parquet")
    meta = prepare(out=tmp_path / "out", inputs=[a, b, str(tmp_path / "*.parquet")], tokenizer=tok_path,
                   progress=False)
    assert meta["num_examples"] == 6 and meta["num_skipped"] == 0
    tok = load_tokenizer(tmp_path / "out" / meta["tokenizer"]["path"])
    assert meta["tokenizer"]["sha256"] == tok.file_hash and meta["special"]["pad"] == 0
    assert meta["padded_vocab_size"] == 512 and sum(meta["length_histogram"].values()) == 6
    exs = _all_examples(tmp_path / "out")
    toks, li = exs[0]
    assert toks[:li].tolist() == tok.encode_instruction("p1", "synth,cot")
    assert toks[li:].tolist() == tok.encode_response("c1")
    got = [tok.decode(t[:li]) + "|" + tok.decode(t[li:]) for t, li in exs]
    assert got == ["p1|c1", "i2|o2", "q3|a3", "u4|r4", "p5|r5", "p6|r6"]


BAD = [
    ("{not json", "malformed JSON"),
    ({"instruction": "x", "response": "  "}, "empty response"),
    ({"instruction": "x"}, "but not 'response'"),
    ({"foo": 1}, "missing fields"),
    ({"instruction": "x", "response": 3}, "expected a string"),
    ({"instruction": "x", "response": "y", "condition": "weird"}, "unknown condition"),
]


@pytest.mark.parametrize("row,reason", BAD)
def test_bad_record_names_file_and_line(tmp_path, tok_path, row, reason):
    f = _write_jsonl(tmp_path / "in.jsonl", _good(2) + [row] + _good(1))
    with pytest.raises(BadRecord, match=rf"in\.jsonl:3: .*{reason}"):
        prepare(out=tmp_path / "out", inputs=[f], tokenizer=tok_path, progress=False)


def test_undecodable_bytes_and_cli_exit_code(tmp_path, tok_path, capsys):
    f = tmp_path / "in.jsonl"
    f.write_bytes(b'{"instruction": "a", "response": "b"}\n{"instruction": "\xff\xfe", "response": "b"}\n')
    assert main(["--inputs", str(f), "--out", str(tmp_path / "o"), "--tokenizer", tok_path, "--no_progress"]) == 2
    assert "in.jsonl:2: undecodable text" in capsys.readouterr().err


def test_skip_bad_counts_every_record(tmp_path, tok_path):
    rows = _good(3) + [r for r, _ in BAD] + _good(2, 10)
    f = _write_jsonl(tmp_path / "in.jsonl", rows)
    meta = prepare(out=tmp_path / "out", inputs=[f], tokenizer=tok_path, skip_bad=True, progress=False)
    assert meta["num_examples"] == 5 and meta["num_skipped"] == len(BAD)
    assert [s["line"] for s in meta["skipped"]] == list(range(4, 4 + len(BAD)))
    assert all(s["file"].endswith("in.jsonl") and s["reason"] for s in meta["skipped"])


def test_resume_after_failure_skips_finished_shards(tmp_path, tok_path):
    a = _write_jsonl(tmp_path / "a.jsonl", _good(25))
    b = _write_jsonl(tmp_path / "b.jsonl", _good(24, 100) + ["{broken"] + _good(5, 200))
    out = tmp_path / "out"
    with pytest.raises(BadRecord, match="b.jsonl:25"):
        prepare(out=out, inputs=[a, b], tokenizer=tok_path, shard_size=10, progress=False)
    assert not out.exists()  # no half-made output directory; finished shards wait in out.partial for a rerun
    partial = tmp_path / "out.partial"
    done = sorted(p.name for p in partial.glob("*.array_record"))
    assert done == ["u00000-00000.array_record", "u00000-00001.array_record", "u00000-00002.array_record",
                    "u00001-00000.array_record", "u00001-00001.array_record"]
    stamps = {p: os.stat(partial / p).st_mtime_ns for p in done}
    meta = prepare(out=out, inputs=[a, b], tokenizer=tok_path, shard_size=10, skip_bad=True, progress=False)
    assert all(os.stat(out / p).st_mtime_ns == t for p, t in stamps.items())  # not rewritten
    assert not partial.exists()
    clean = prepare(out=tmp_path / "clean", inputs=[a, b], tokenizer=tok_path, shard_size=10, skip_bad=True,
                    progress=False)
    assert meta["num_examples"] == clean["num_examples"] == 54 and meta["num_skipped"] == 1
    assert [t.tolist() for t, _ in _all_examples(out)] == [t.tolist() for t, _ in _all_examples(tmp_path / "clean")]
    again = prepare(out=out, inputs=[a, b], tokenizer=tok_path, shard_size=10, skip_bad=True, progress=False)
    assert again == meta  # idempotent
    with pytest.raises(ValueError, match="different settings"):
        prepare(out=out, inputs=[a, b], tokenizer=tok_path, shard_size=7, progress=False)


def test_workers_and_train_tokenizer(tmp_path):
    files = [_write_jsonl(tmp_path / f"f{i}.jsonl", _good(40, 100 * i)) for i in range(3)]
    m1 = prepare(out=tmp_path / "w1", inputs=files, train_tokenizer=True, vocab_size=300, progress=False)
    m2 = prepare(out=tmp_path / "w2", inputs=[str(tmp_path / "f*.jsonl")], train_tokenizer=True, vocab_size=300,
                 workers=2, progress=False)
    assert m1["num_examples"] == m2["num_examples"] == 120
    assert m1["tokenizer"]["sha256"] == m2["tokenizer"]["sha256"]  # deterministic training
    assert [t.tolist() for t, _ in _all_examples(tmp_path / "w1")] == \
        [t.tolist() for t, _ in _all_examples(tmp_path / "w2")]


def _make_reference_dir(d, tok):
    """A docs/data_format.md §6 directory: flat tokens + one epoch of (start, len) index arrays + tokenizer_info."""
    s = tok.special
    exs = [(tok.encode_instruction(f"q{i}", "cot" if i % 2 else "direct"), tok.encode_response(f"a{i}"))
           for i in range(7)]
    flat, idx = [], {k: [] for k in ("inst_start", "inst_len", "resp_start", "resp_len")}
    for inst, resp in exs:
        idx["inst_start"].append(len(flat))
        idx["inst_len"].append(len(inst))
        flat += inst
        idx["resp_start"].append(len(flat))
        idx["resp_len"].append(len(resp))
        flat += resp
    idx["resp_len"][3] = 0  # an empty response the importer must report
    # two realised epochs: shuffled, with a repeat (10x repeats exist in the reference), row 6 only in epoch 0
    orders = [[4, 0, 3, 6, 1, 5, 2, 0], [2, 1, 5, 3, 0, 4, 1]]
    d.mkdir(parents=True)
    np.save(d / "tokens.npy", np.asarray(flat, np.int32))
    for e, order in enumerate(orders):
        (d / f"epoch_{e}").mkdir(parents=True)
        for k, v in idx.items():
            np.save(d / f"epoch_{e}" / f"{k}.npy", np.asarray(v, np.int64)[order])
    info = {"tokenizer_path": str(tok.path), "boq": s.boq, "eoq": s.eoq, "eoa": s.eoa,
            "condition_mapping": {k: v for k, v in s.conditions.items()}, "vocab_size": tok.vocab_size}
    (d / "metadata.json").write_text(json.dumps({"tokenizer_info": info, "vocab_size": None, "max_seq_len": 4097,
                                                 "total_length": len(flat)}))
    return exs, orders


def test_reference_format_import(tmp_path, tok_path):
    tok = load_tokenizer(tok_path)
    exs, orders = _make_reference_dir(tmp_path / "ref", tok)
    with pytest.raises(ValueError, match="row 2: empty response"):
        prepare(out=tmp_path / "o1", reference=str(tmp_path / "ref"), progress=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o1.partial").exists()  # nothing half-made
    meta = prepare(out=tmp_path / "o2", reference=str(tmp_path / "ref"), skip_bad=True, shard_size=3,
                   progress=False)
    # records = the distinct examples in tokens.npy order; each reference epoch keeps its rows, repeats and order
    assert meta["num_examples"] == 6 and meta["num_skipped"] == 2  # row 2 of both epochs
    assert meta["special"] == tok.special.to_json() and meta["tokenizer"]["sha256"] == tok.file_hash
    got = [(t[:li].tolist(), t[li:].tolist()) for t, li in _all_examples(tmp_path / "o2")]
    pool = [i for i in range(7) if i != 3]
    assert got == [exs[i] for i in pool]
    assert meta["epochs"]["count"] == 2 and meta["epochs"]["examples"] == [7, 6]
    for e, rows in enumerate(orders):
        ids = records.load_epoch(tmp_path / "o2", e)
        assert [pool[i] for i in ids] == [i for i in rows if i != 3]
    assert records.load_lines(tmp_path / "o2").tolist() == list(range(6))
    lengths = records.load_lengths(tmp_path / "o2")
    assert lengths[:, 2].tolist() == [2] * 6  # head = BOQ + one condition
    one = prepare(out=tmp_path / "o3", reference=str(tmp_path / "ref"), reference_epoch=1, skip_bad=True,
                  progress=False)
    pool1 = [0, 1, 2, 4, 5]  # row 6 is not in epoch 1
    assert one["epochs"]["count"] == 1 and one["num_examples"] == len(pool1)
    assert [pool1[i] for i in records.load_epoch(tmp_path / "o3", 0)] == [i for i in orders[1] if i != 3]


class _FakeTfdsSource:
    """What tfds.data_source returns: random access, Text features as bytes (docs/conventions.md §13 pitfall 8)."""

    def __init__(self, n):
        self.rows = [{"q": f"question {i}".encode(), "a": f"answer {i}".encode()} for i in range(n)]
        self.rows[4] = {"q": b"question 4", "a": b""}

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def test_tfds_mode_with_fake_source(tmp_path, tok_path, monkeypatch):
    from hrm.data import sources

    monkeypatch.setattr(sources, "open_tfds_source", lambda name, split, data_dir=None: _FakeTfdsSource(11))
    meta = prepare(out=tmp_path / "o", tfds="fake", field_map={"instruction": "q", "response": "a"},
                   tokenizer=tok_path, shard_size=4, skip_bad=True, progress=False)
    assert meta["num_examples"] == 10 and meta["skipped"][0]["line"] == 5 and len(meta["shards"]) == 3


def test_tfds_mode_with_real_builder(tmp_path, tok_path):
    """A tiny custom builder written as ArrayRecord and read back through tfds.data_source (no TensorFlow)."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class HrmTestTinyQa(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"q": tfds.features.Text(), "a": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(9)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"q": f"question {i}", "a": f"answer {i}"}

    HrmTestTinyQa(data_dir=str(tmp_path / "tfds"), file_format="array_record").download_and_prepare()
    meta = prepare(out=tmp_path / "o", tfds="hrm_test_tiny_qa", tfds_data_dir=str(tmp_path / "tfds"),
                   field_map={"instruction": "q", "response": "a"}, tokenizer=tok_path, progress=False)
    tok = load_tokenizer(tok_path)
    got = sorted(tok.decode(t[li:]) for t, li in _all_examples(tmp_path / "o"))
    assert meta["num_examples"] == 9 and got == sorted(f"answer {i}" for i in range(9))
