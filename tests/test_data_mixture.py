"""Per-epoch stratified sampling: mixture file, realised epochs, inspector, bad input (docs/data_format.md §2, §5)."""

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hrm.data import epochs as epochs_mod
from hrm.data import mixture, records
from hrm.data.prepare import main as prepare_main
from hrm.data.prepare import prepare
from hrm.data.tokenizer import train_sentencepiece

REPO = Path(__file__).resolve().parents[1]
FILES = {"alpha_tasks.jsonl": 25, "beta_small.jsonl": 3, "gamma.jsonl": 7}
RULES = "rules:\n  - {prefix: alpha_, max_per_file: 10}\n  - {prefix: beta_, repeat: 10}\n"


def _write_sources(d: Path) -> list[str]:
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in FILES.items():
        rows = [json.dumps({"instruction": f"{name} row {i}: what is {i}+{i}?", "response": str(2 * i)})
                for i in range(n)]
        if name == "gamma.jsonl":
            rows.insert(3, "")  # a blank line still counts: provenance is the 0-based line in the file
        (d / name).write_text("\n".join(rows) + "\n")
        out.append(str(d / name))
    return out


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    texts = [f"{n} row {i}: what is {i}+{i}? {2 * i}" for n in FILES for i in range(30)]
    return str(train_sentencepiece(texts, tmp_path_factory.mktemp("tok") / "t.model", vocab_size=300).path)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, tok_path):
    d = tmp_path_factory.mktemp("mix")
    (d / "mix.yaml").write_text(RULES)
    meta = prepare(out=d / "out", inputs=_write_sources(d / "raw"), tokenizer=tok_path, mixture=str(d / "mix.yaml"),
                   epochs=4, seed=0, shard_size=8, progress=False)
    return d, meta


def _line_of_gamma(i):
    return i if i < 3 else i + 1  # the blank line 3


def test_done_when_example(mixed):
    d, meta = mixed
    ep = meta["epochs"]
    assert ep["count"] == 4 and ep["examples"] == [47] * 4 and ep["source"] == "mixture"
    assert ep["mixture"]["rules"][0] == {"prefix": "alpha_", "max_per_file": 10, "repeat": 1}
    assert ep["files"]["alpha_tasks.jsonl"] == {"rows": 25, "rule": "alpha_", "per_epoch": 10}
    assert ep["files"]["gamma.jsonl"] == {"rows": 7, "rule": None, "per_epoch": 7}
    seqs, alpha_seen = [], set()
    for e in range(4):
        names, files, lines = epochs_mod.epoch_rows(d / "out", e)
        rows = [(names[f], line) for f, line in zip(files.tolist(), lines.tolist())]
        seqs.append(rows)
        c = Counter(rows)
        alpha = [line for n, line in rows if n == "alpha_tasks.jsonl"]
        assert len(alpha) == len(set(alpha)) == 10  # 10 distinct alpha rows
        assert {line: k for (n, line), k in c.items() if n == "beta_small.jsonl"} == {0: 10, 1: 10, 2: 10}
        assert sorted(line for n, line in rows if n == "gamma.jsonl") == [_line_of_gamma(i) for i in range(7)]
        if e < 3:
            alpha_seen |= set(alpha)
    assert alpha_seen == set(range(25))  # epochs 0-2 cover every alpha row (persistent cursor)
    assert len({tuple(s) for s in seqs}) == 4  # each epoch has its own order


def test_epochs_record_the_right_examples(mixed):
    """The (file, line) provenance points at the record holding exactly that source row."""
    from hrm.data.tokenizer import load_tokenizer

    d, meta = mixed
    tok = load_tokenizer(d / "out" / meta["tokenizer"]["path"])
    reader = records.ShardReader(records.shard_paths(d / "out"), [s["num_examples"] for s in meta["shards"]])
    names, files, lines = epochs_mod.epoch_rows(d / "out", 1)
    ids = records.load_epoch(d / "out", 1)
    for rec, f, line in list(zip(reader.read(ids), files, lines))[:12]:
        toks, li = records.decode_record(rec)
        i = line if names[f] != "gamma.jsonl" else (line if line < 3 else line - 1)
        assert tok.decode(toks[:li]) == f"{names[f]} row {i}: what is {i}+{i}?"


def test_inspector_cli(mixed, capsys):
    d, _ = mixed
    assert epochs_mod.main([str(d / "out"), "--epoch", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    names, files, lines = epochs_mod.epoch_rows(d / "out", 2)
    assert out == [f"{names[f]}\t{line}" for f, line in zip(files, lines)] and len(out) == 47
    assert epochs_mod.main([str(d / "out"), "--summary"]) == 0
    text = capsys.readouterr().out.splitlines()
    rows = [r.split("\t") for r in text[2:]]
    assert text[1].split("\t") == epochs_mod.SUMMARY_HEADER
    cov = {(int(r[0]), r[1]): r for r in rows}
    assert cov[(0, "alpha_tasks.jsonl")][3:4] == ["10"] and cov[(2, "alpha_tasks.jsonl")][7] == "1.0"
    assert cov[(0, "beta_small.jsonl")][3] == "30" and cov[(0, "beta_small.jsonl")][5] == "3"
    assert cov[(0, "(all)")][3] == "47" and int(cov[(0, "(all)")][4]) == sum(
        int(cov[(0, n)][4]) for n in FILES)


def test_sampling_is_deterministic_from_the_seed(mixed, tok_path, tmp_path):
    d, _ = mixed
    again = prepare(out=tmp_path / "again", inputs=sorted(str(p) for p in (d / "raw").glob("*.jsonl")),
                    tokenizer=tok_path, mixture=str(d / "mix.yaml"), epochs=2, seed=0, progress=False)
    other = prepare(out=tmp_path / "other", inputs=sorted(str(p) for p in (d / "raw").glob("*.jsonl")),
                    tokenizer=tok_path, mixture=str(d / "mix.yaml"), epochs=2, seed=1, progress=False)
    assert again["epochs"]["examples"] == other["epochs"]["examples"] == [47, 47]
    for e in range(2):
        np.testing.assert_array_equal(records.load_epoch(tmp_path / "again", e), records.load_epoch(d / "out", e))
    assert not np.array_equal(records.load_epoch(tmp_path / "other", 0), records.load_epoch(d / "out", 0))


def test_epochs_without_mixture_take_every_row_once(tmp_path, tok_path):
    meta = prepare(out=tmp_path / "o", inputs=_write_sources(tmp_path / "raw"), tokenizer=tok_path, epochs=2,
                   progress=False)
    assert meta["epochs"]["examples"] == [35, 35] and meta["epochs"]["source"] == "all"
    a, b = (records.load_epoch(tmp_path / "o", e) for e in range(2))
    assert sorted(a.tolist()) == sorted(b.tolist()) == list(range(35)) and not np.array_equal(a, b)
    assert meta["epochs"]["tokens"][0] == meta["num_tokens"] == meta["epochs"]["tokens_mean"]


def test_draw_file_cursor_and_repeats():
    rng = np.random.default_rng(0)
    ep = mixture.draw_file(25, 10, 5, rng)
    assert all(len(set(e.tolist())) == 10 for e in ep)
    assert not set(ep[0].tolist()) & set(ep[1].tolist())  # the cursor moves on: epoch 1 sees new rows
    assert sorted(np.concatenate(ep[:2]).tolist() + ep[2][:5].tolist()) == list(range(25))
    rep = mixture.draw_file(3, 30, 2, np.random.default_rng(1))
    assert all(sorted(Counter(e.tolist()).values()) == [10, 10, 10] for e in rep)
    assert mixture.Rule("x", 5, 3).take(4) == 12 and mixture.Rule("x").take(9) == 9


def test_paper_mixture_matches_spec_table():
    m = mixture.load_mixture(str(REPO / "configs" / "mixtures" / "paper.yaml"))
    rule = lambda name: m.rules[m.match(name)]  # noqa: E731
    assert rule("SYNTH__creative_0001.jsonl").max_per_file == 20_000
    assert rule("flan__cot_gsm8k.jsonl") == mixture.Rule("flan__cot_")  # uncapped, listed before flan__
    assert rule("flan__anli_r1.jsonl").max_per_file == 5_000
    assert rule("dmmath__algebra__linear_1d.jsonl").max_per_file == 100_000
    assert rule("openthoughts2__part0.jsonl").max_per_file == 500_000
    assert rule("sudoku_extreme__train.jsonl").max_per_file == 1_000_000
    assert rule("gsm8k_train.jsonl").repeat == rule("no_robots.jsonl").repeat == rule("Platypus__x.jsonl").repeat == 10
    assert m.match("natural_reasoning.jsonl") is None and len(m.rules) == 16


@pytest.mark.parametrize("text,match", [
    ("rules:\n  - {prefix: a_, max_per_file: 10, repat: 2}\n",
     r"mix\.yaml: rule 1 \(prefix 'a_'\): unknown key.*repat"),
    ("rules:\n  - {prefix: a_}\n  - {prefix: b_, max_per_file: 0}\n",
     r"mix\.yaml: rule 2 \(prefix 'b_'\): max_per_file"),
    ("rules:\n  - {prefix: a_, repeat: -3}\n", r"mix\.yaml: rule 1 \(prefix 'a_'\): repeat must be a positive"),
    ("rules:\n  - {prefix: a_, max_per_file: 1.5}\n", r"rule 1 .*max_per_file must be a positive integer"),
    ("rules:\n  - {max_per_file: 3}\n", r"rule 1 \(prefix None\): 'prefix' must be"),
    ("rule:\n  - {prefix: a_}\n", r"mix\.yaml: unknown top-level key.*'rule'"),
    ("rules: [ {prefix: a_\n", r"mix\.yaml: malformed YAML at line \d+"),
    ("rules: []\n", r"mix\.yaml: 'rules' must be a non-empty list"),
])
def test_bad_mixture_files(tmp_path, tok_path, capsys, text, match):
    (tmp_path / "mix.yaml").write_text(text)
    with pytest.raises(mixture.MixtureError, match=match):
        mixture.load_mixture(str(tmp_path / "mix.yaml"))
    inputs = _write_sources(tmp_path / "raw")
    code = prepare_main(["--inputs", *inputs, "--out", str(tmp_path / "o"), "--tokenizer", tok_path,
                         "--mixture", str(tmp_path / "mix.yaml"), "--epochs", "2", "--no_progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "mix.yaml" in err[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_unmatched_rule_warns_and_mixture_needs_epochs(tmp_path, tok_path, caplog):
    (tmp_path / "mix.yaml").write_text(RULES + "  - {prefix: delta_, max_per_file: 3}\n")
    inputs = _write_sources(tmp_path / "raw")
    with caplog.at_level(logging.WARNING, logger="hrm.data"):
        prepare(out=tmp_path / "o", inputs=inputs, tokenizer=tok_path, mixture=str(tmp_path / "mix.yaml"),
                epochs=1, progress=False)
    assert any("rule 3 (prefix 'delta_') matches no input file" in r.getMessage() and "mix.yaml" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(ValueError, match="--mixture needs --epochs"):
        prepare(out=tmp_path / "o2", inputs=inputs, tokenizer=tok_path, mixture=str(tmp_path / "mix.yaml"))


def test_too_small_vocab_is_one_line_and_leaves_nothing(tmp_path, capsys):
    rows = [json.dumps({"instruction": f"Ünïcödé {chr(0x4e00 + i)} {i}", "response": f"{chr(0x3040 + i)}"})
            for i in range(60)]
    (tmp_path / "in.jsonl").write_text("\n".join(rows) + "\n")
    args = ["--inputs", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o"), "--train_tokenizer",
            "--no_progress"]
    assert prepare_main([*args, "--vocab_size", "256"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vocab_size 256 is too small" in err[0], err
    need = int(err[0].split("use --vocab_size ")[1].split()[0])
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()
    assert prepare_main([*args, "--vocab_size", str(need)]) == 0  # the stated minimum works
    assert records.read_metadata(tmp_path / "o")["vocab_size"] >= need
