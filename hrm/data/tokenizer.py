"""Tokenizers with the HRM-Text structural tokens (docs/prefixlm_packing.md §1, docs/data_format.md §4).

Two backends behind one small interface:

* SentencePiece (`.model`): our default for new runs. The structural tokens are *control* pieces, so a literal
  "<|im_end|>" inside user text is encoded as ordinary pieces, never as the control id (SentencePiece
  `user_defined_symbols` would match in text, which docs/prefixlm_packing.md §1 forbids). `<|PAD|>` is id 0.
* HF `tokenizers` (`tokenizer.json`): the released model's byte-level BPE (docs/data_format.md §4). Text is encoded with
  `encode_special_tokens = True` (special-token matching off, as data_io does) and the special ids are looked up by
  string in the file, never hard-coded.

`load_tokenizer(path)` accepts a `.model`, a `tokenizer.json`, or a directory holding one (a `tokenizer.json` wins).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
from pathlib import Path
from typing import Iterable, Sequence

PAD, BOQ, EOQ, EOA = "<|PAD|>", "<|im_start|>", "<|im_end|>", "<|box_end|>"
CONDITION_TOKENS: dict[str, str] = {
    "direct": "<|object_ref_start|>",
    "cot": "<|object_ref_end|>",
    "noisy": "<|quad_start|>",
    "synth": "<|quad_end|>",
}
STRUCTURAL_TOKENS: tuple[str, ...] = (BOQ, EOQ, EOA, *CONDITION_TOKENS.values())


def split_condition(condition: str) -> list[str]:
    """Comma-separated condition names in the given order ("synth,cot" -> ["synth", "cot"]; "" -> []).

    docs/prefixlm_packing.md §1: composite conditions are emitted in the order written; an empty condition adds no token
    (docs/open_points.md §1 item 4). Unknown names are an error.
    """
    names = [c.strip() for c in condition.split(",") if c.strip()]
    for name in names:
        if name not in CONDITION_TOKENS:
            raise ValueError(f"unknown condition {name!r} in {condition!r}; known: {sorted(CONDITION_TOKENS)}")
    return names


def padded_size(vocab_size: int, multiple: int = 256) -> int:
    """Vocabulary rounded up to a multiple of 256, as the reference loader does (docs/data_format.md §6)."""
    return -(-vocab_size // multiple) * multiple


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of the structural tokens (docs/prefixlm_packing.md §1)."""

    pad: int
    boq: int
    eoq: int
    eoa: int
    conditions: dict[str, int]

    def to_json(self) -> dict:
        return {"pad": self.pad, "boq": self.boq, "eoq": self.eoq, "eoa": self.eoa,
                "conditions": dict(self.conditions)}

    def condition_ids(self, condition: str) -> list[int]:
        """Ids for a comma-separated condition string, in the given order ("synth,cot", docs/prefixlm_packing.md §1)."""
        return [self.conditions[name] for name in split_condition(condition)]

    def wrap_instruction(self, text_ids: Sequence[int], condition: str) -> list[int]:
        """[BOQ] + condition ids + text ids + [EOQ]: the instruction segment (docs/prefixlm_packing.md §1,
        docs/eval_protocol.md §1)."""
        return [self.boq, *self.condition_ids(condition), *text_ids, self.eoq]

    @property
    def structural(self) -> frozenset[int]:
        return frozenset([self.pad, self.boq, self.eoq, self.eoa, *self.conditions.values()])


class Tokenizer:
    """Common interface; subclasses implement `encode`, `_decode` and `vocab_size`."""

    path: Path
    special: SpecialIds
    backend: str

    def encode(self, text: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, ids: list[int]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts (backends override with a native batched call)."""
        return [self.encode(t) for t in texts]

    @property
    def vocab_size(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def padded_vocab_size(self) -> int:
        return padded_size(self.vocab_size)

    @property
    def file_hash(self) -> str:
        if not hasattr(self, "_hash"):
            self._hash = file_sha256(self.path)
        return self._hash

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` with structural ids (pad, BOQ, EOQ, EOA, conditions) skipped."""
        skip = self.special.structural
        return self._decode([int(i) for i in ids if int(i) not in skip])

    def encode_instruction(self, text: str, condition: str = "direct") -> list[int]:
        """[BOQ] + condition ids + encode(text) + [EOQ] (docs/prefixlm_packing.md §1)."""
        return self.special.wrap_instruction(self.encode(text), condition)

    def encode_response(self, text: str) -> list[int]:
        """encode(text) + [EOA] (docs/prefixlm_packing.md §1)."""
        return [*self.encode(text), self.special.eoa]

    def describe(self) -> dict:
        """JSON-able description written into dataset metadata."""
        return {"path": str(self.path), "sha256": self.file_hash, "backend": self.backend,
                "vocab_size": self.vocab_size, "padded_vocab_size": self.padded_vocab_size}


class SentencePieceTokenizer(Tokenizer):
    """SentencePiece model whose structural tokens are control pieces (never matched in text)."""

    backend = "sentencepiece"

    def __init__(self, path: str | Path):
        import sentencepiece as spm

        self.path = Path(path)
        self._sp = spm.SentencePieceProcessor(model_file=str(self.path))

        def lookup(piece: str) -> int:
            i = self._sp.piece_to_id(piece)
            if i == self._sp.unk_id() or not self._sp.is_control(i):
                raise ValueError(f"{self.path}: {piece!r} is not a control piece; train with train_sentencepiece()")
            return i

        self.special = SpecialIds(pad=lookup(PAD), boq=lookup(BOQ), eoq=lookup(EOQ), eoa=lookup(EOA),
                                  conditions={k: lookup(v) for k, v in CONDITION_TOKENS.items()})

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts)) if texts else []

    def _decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()


class HFTokenizer(Tokenizer):
    """HF `tokenizers` tokenizer.json (byte-level BPE of the released model, docs/data_format.md §4)."""

    backend = "tokenizers"

    def __init__(self, path: str | Path):
        try:
            from tokenizers import Tokenizer as _HFTok
        except ImportError as e:  # optional dependency
            raise ImportError("reading tokenizer.json needs the `tokenizers` package") from e
        self.path = Path(path)
        self._tok = _HFTok.from_file(str(self.path))
        self._tok.encode_special_tokens = True  # literal "<|im_end|>" in text stays text (docs/prefixlm_packing.md §1)
        self._tok.no_truncation()
        self._tok.no_padding()

        def lookup(token: str) -> int:
            i = self._tok.token_to_id(token)
            if i is None:
                raise ValueError(f"{self.path}: special token {token!r} not in the vocabulary")
            return i

        self.special = SpecialIds(pad=lookup(PAD), boq=lookup(BOQ), eoq=lookup(EOQ), eoa=lookup(EOA),
                                  conditions={k: lookup(v) for k, v in CONDITION_TOKENS.items()})

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)


def resolve_tokenizer_path(path: str | Path) -> Path:
    """The tokenizer file for `path`: itself, or `tokenizer.json` / a single `*.model` inside a directory.

    A remote `gs://…` path is copied into the local data cache first (hrm/data/paths.py)."""
    from hrm.data import paths

    if paths.is_remote(path):
        return _resolve_remote(str(path))
    p = Path(path)
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            return p / "tokenizer.json"
        models = sorted(p.glob("*.model"))
        if len(models) == 1:
            return models[0]
        raise FileNotFoundError(f"{p}: no tokenizer.json and {len(models)} *.model files (need exactly one)")
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer not found: {p}")
    return p


def _resolve_remote(uri: str) -> Path:
    from hrm.data import paths

    if uri.endswith((".json", ".model")):
        if not paths.exists(uri):
            raise FileNotFoundError(f"tokenizer not found: {uri}")
        return Path(paths.local_file(uri))
    if paths.exists(paths.join(uri, "tokenizer.json")):
        return Path(paths.local_file(paths.join(uri, "tokenizer.json")))
    models = sorted(str(m) for m in paths.as_path(uri).glob("*.model"))
    if len(models) != 1:
        raise FileNotFoundError(f"{uri}: no tokenizer.json and {len(models)} *.model files (need exactly one)")
    return Path(paths.local_file(models[0]))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a `.model` (SentencePiece), a `tokenizer.json` (HF tokenizers) or a directory holding one."""
    p = resolve_tokenizer_path(path)
    if p.suffix == ".json":
        return HFTokenizer(p)
    return SentencePieceTokenizer(p)


def train_sentencepiece(texts: Iterable[str], out_path: str | Path, *, vocab_size: int = 512,
                        split_digits: bool = True) -> SentencePieceTokenizer:
    """Train a BPE SentencePiece model with byte fallback and our structural control pieces.

    Identity normalisation and no dummy prefix so decode(encode(x)) == x; `<|PAD|>` gets id 0 (the pad id of
    docs/prefixlm_packing.md), `<unk>` id 1, no BOS/EOS (structural ids are inserted explicitly,
    docs/prefixlm_packing.md §1). Takes seconds on small text.
    """
    import sentencepiece as spm

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=(t for t in texts if t), model_writer=buf, model_type="bpe", vocab_size=vocab_size,
            byte_fallback=True, pad_id=0, pad_piece=PAD, unk_id=1, bos_id=-1, eos_id=-1,
            control_symbols=list(STRUCTURAL_TOKENS), normalization_rule_name="identity", add_dummy_prefix=False,
            remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_digits=split_digits,
            hard_vocab_limit=False, character_coverage=1.0, num_threads=1, max_sentence_length=1 << 16,
            minloglevel=2)
    except RuntimeError as e:  # SentencePiece's "Vocabulary size is smaller than required_chars. A vs B." + flags
        m = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(e))
        if not m:
            raise
        raise ValueError(f"vocab_size {vocab_size} is too small for this corpus: its characters and the special "
                         f"tokens need at least {m.group(2)} pieces (use --vocab_size {m.group(2)} or more)") from None
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out_path)
    return SentencePieceTokenizer(out_path)
