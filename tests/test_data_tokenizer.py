"""Tokenizer backends: structural ids, literal special strings in text, instruction/response wrapping
(docs/prefixlm_packing.md §1)."""

import json

import pytest

from hrm.data.tokenizer import (BOQ, CONDITION_TOKENS, EOA, EOQ, PAD, HFTokenizer, SentencePieceTokenizer,
                                load_tokenizer, train_sentencepiece)

TEXTS = ["Add 12 and 30. <|im_end|> hello world", "the quick brown fox jumps", "Sort: 3 1 2", "Answer: 42"] * 50
SPECIAL_ORDER = ["<|PAD|>", "<|direct|>", "<|cot|>", "<|noisy|>", "<|synth|>", "<|endoftext|>", BOQ, EOQ,
                 "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", EOA, "<|quad_start|>", "<|quad_end|>"]


@pytest.fixture(scope="module")
def sp_tok(tmp_path_factory):
    return train_sentencepiece(TEXTS, tmp_path_factory.mktemp("sp") / "tok.model", vocab_size=320)


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    """A tiny byte-level BPE tokenizer.json with the reference's special-token order (docs/prefixlm_packing.md §1
    table)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_ORDER, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS, trainer=trainer)
    d = tmp_path_factory.mktemp("hf")
    tok.save(str(d / "tokenizer.json"))
    return load_tokenizer(d)  # directory form


@pytest.fixture(params=["sp", "hf"])
def tok(request, sp_tok, hf_tok):
    return sp_tok if request.param == "sp" else hf_tok


def test_backend_selection(sp_tok, hf_tok):
    assert isinstance(sp_tok, SentencePieceTokenizer) and isinstance(hf_tok, HFTokenizer)
    assert isinstance(load_tokenizer(sp_tok.path), SentencePieceTokenizer)
    assert isinstance(load_tokenizer(hf_tok.path), HFTokenizer)


def test_hf_special_ids_come_from_file(hf_tok):
    s = hf_tok.special
    assert (s.pad, s.boq, s.eoq, s.eoa) == (0, 6, 7, 11)  # the docs/prefixlm_packing.md §1 table, looked up by string
    assert s.conditions == {"direct": 8, "cot": 9, "noisy": 12, "synth": 13}


def test_sentencepiece_specials_are_single_control_ids(sp_tok):
    s = sp_tok.special
    assert s.pad == 0
    ids = {s.pad, s.boq, s.eoq, s.eoa, *s.conditions.values()}
    assert len(ids) == 3 + 1 + len(CONDITION_TOKENS)
    for i in ids:
        assert sp_tok._sp.is_control(i)


@pytest.mark.parametrize("literal", [BOQ, EOQ, EOA, PAD, *CONDITION_TOKENS.values()])
def test_literal_special_strings_stay_text(tok, literal):
    text = f"before {literal} after"
    ids = tok.encode(text)
    assert not set(ids) & tok.special.structural, (literal, ids)
    assert len(ids) > 3
    assert tok.decode(ids) == text


def test_instruction_and_response_wrapping(tok):
    s = tok.special
    body = tok.encode("Sort: 3 1 2")
    inst = tok.encode_instruction("Sort: 3 1 2", "synth,cot")
    assert inst == [s.boq, s.conditions["synth"], s.conditions["cot"], *body, s.eoq]
    assert tok.encode_instruction("x", "direct")[1] == s.conditions["direct"]
    resp = tok.encode_response("Answer: 42")
    assert resp == [*tok.encode("Answer: 42"), s.eoa]
    assert tok.decode(inst + resp) == "Sort: 3 1 2Answer: 42"  # structural ids skipped
    with pytest.raises(ValueError, match="unknown condition"):
        tok.encode_instruction("x", "fancy")


def test_vocab_hash_and_batch(tok):
    assert tok.padded_vocab_size % 256 == 0 and tok.padded_vocab_size >= tok.vocab_size
    assert len(tok.file_hash) == 64
    assert tok.encode_batch(["a b", "Sort: 1"]) == [tok.encode("a b"), tok.encode("Sort: 1")]
    d = tok.describe()
    json.dumps(d)
    assert d["sha256"] == tok.file_hash


def test_sentencepiece_roundtrip_and_byte_fallback(sp_tok):
    text = "  Ünïcödé ✓ tabs\tand\nnewlines  "
    assert sp_tok.decode(sp_tok.encode(text)) == text
    assert sp_tok.padded_vocab_size == 512


def test_missing_tokenizer(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "nope.model")
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path)
