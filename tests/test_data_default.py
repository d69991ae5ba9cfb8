"""Built-in default dataset: determinism, correct answers, held-out split, idempotent preparation."""

import json
import re

import pytest

from hrm.data import load_dataset_tokenizer, records
from hrm.data.default_dataset import GENERATORS, TASKS, ensure_default_dataset, generate


def test_generation_is_deterministic():
    a = list(generate(3, 200))
    assert a == list(generate(3, 200))
    assert a != list(generate(4, 200))
    assert {r["task"] for r in a} == set(TASKS) and {r["condition"] for r in a} == {"direct", "cot"}


def _final(resp):
    return resp.rsplit("Answer: ", 1)[-1]


def test_answers_are_correct():
    import random

    rng = random.Random(0)
    for _ in range(300):
        for cond in ("direct", "cot"):
            inst, resp = GENERATORS["add"](rng, cond)
            a, b = map(int, re.findall(r"\d+", inst))
            assert _final(resp) == str(a + b)
            inst, resp = GENERATORS["expr"](rng, cond)
            assert _final(resp) == str(eval(inst.split()[-1]))
            inst, resp = GENERATORS["sort"](rng, cond)
            assert _final(resp).split() == sorted(inst.split()[1:])
            inst, resp = GENERATORS["count"](rng, cond)
            _, _, _, ch, _, word = inst.split()
            assert _final(resp) == str(word.count(ch))
            inst, resp = GENERATORS["parity"](rng, cond)
            assert _final(resp) == ("odd" if inst.split()[2:].count("1") % 2 else "even")
            if cond == "cot":
                assert "Answer: " in resp


@pytest.fixture(scope="module")
def small_default(tmp_path_factory):
    root = tmp_path_factory.mktemp("dflt") / "default"
    return ensure_default_dataset(root, num_train=2000, num_heldout_per_task=10)


def test_prepared_default_dataset(small_default):
    root = small_default
    meta = records.read_metadata(root)
    assert meta["num_examples"] == 2000 and meta["vocab_size"] <= 512 and meta["padded_vocab_size"] == 512
    tok = load_dataset_tokenizer(root)
    lengths = records.load_lengths(root)
    assert (lengths[:, 0] + lengths[:, 1]).max() < 120
    held = [json.loads(x) for x in (root / "heldout.jsonl").read_text().splitlines()]
    assert len(held) == 50 and all(set(h) == {"task", "id", "instruction", "response", "condition"} for h in held)
    train = {(json.loads(x)["instruction"], json.loads(x)["condition"])
             for x in (root / "raw" / "train.jsonl").read_text().splitlines()}
    assert not train & {(h["instruction"], h["condition"]) for h in held}
    assert tok.decode(tok.encode(held[0]["instruction"])) == held[0]["instruction"]


def test_ensure_is_idempotent_and_deterministic(small_default, tmp_path):
    before = (small_default / "metadata.json").stat().st_mtime_ns
    assert ensure_default_dataset(small_default, num_train=2000, num_heldout_per_task=10) == small_default
    assert (small_default / "metadata.json").stat().st_mtime_ns == before
    other = ensure_default_dataset(tmp_path / "d2", num_train=2000, num_heldout_per_task=10)
    for name in ("heldout.jsonl", "raw/train.jsonl", "tokenizer.model"):
        assert (other / name).read_bytes() == (small_default / name).read_bytes(), name
    # a different size is inconsistent with the manifest: rebuilt, not mixed
    ensure_default_dataset(other, num_train=500, num_heldout_per_task=10)
    assert records.read_metadata(other)["num_examples"] == 500
