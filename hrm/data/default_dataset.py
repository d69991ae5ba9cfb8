"""Built-in default dataset: procedurally generated multi-step tasks a ~1M-parameter HRM can learn on CPU.

Tasks (conditions `direct` = answer only, `cot` = worked steps then "Answer: …", SPEC §6.3 tag semantics):
multi-digit addition, sorting short digit lists, counting a letter, small arithmetic expressions with precedence, and
parity of a bit string. Everything is deterministic from `seed`. `ensure_default_dataset(root)` writes
`raw/train.jsonl`, `heldout.jsonl` (lines {"task","id","instruction","response","condition"}, disjoint from train),
trains a SentencePiece BPE (vocab ≤ 512 incl. specials, padded 512) and prepares shards in `root` — idempotently
(skipped when the manifest matches) and under a file lock so concurrent callers do not race.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Callable, Iterator

GENERATOR_VERSION = 1
TASKS = ("add", "sort", "count", "expr", "parity")
CONDITIONS = ("direct", "cot")
MANIFEST = "default_manifest.json"
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "data" / "default"  # repo data/default, gitignored


def _answer(cond: str, steps: str, answer: str) -> str:
    return answer if cond == "direct" else f"{steps}. Answer: {answer}"


def gen_add(rng: random.Random, cond: str) -> tuple[str, str]:
    """Column addition right to left with carries."""
    a = rng.randint(0, 10 ** rng.randint(1, 4) - 1)
    b = rng.randint(0, 10 ** rng.randint(1, 4) - 1)
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for k in range(max(len(da), len(db))):
        x, y = int(da[k]) if k < len(da) else 0, int(db[k]) if k < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    return f"Add {a} and {b}.", _answer(cond, ", ".join(steps), str(a + b))


def gen_sort(rng: random.Random, cond: str) -> tuple[str, str]:
    """Insertion sort of 3–6 digits; cot shows the sorted prefix after each insertion."""
    xs = [rng.randint(0, 9) for _ in range(rng.randint(3, 6))]
    steps, done = [], []
    for x in xs:
        done.append(x)
        done.sort()
        steps.append(" ".join(map(str, done)))
    return f"Sort: {' '.join(map(str, xs))}", _answer(cond, " | ".join(steps), " ".join(map(str, sorted(xs))))


def gen_count(rng: random.Random, cond: str) -> tuple[str, str]:
    """Count one letter in a random word over a small alphabet; cot is the running count."""
    word = "".join(rng.choice("abcdef") for _ in range(rng.randint(4, 12)))
    ch = rng.choice("abcdef")
    run, c = [], 0
    for w in word:
        c += w == ch
        run.append(str(c))
    return f"Count the letter {ch} in {word}", _answer(cond, " ".join(run), str(c))


def gen_expr(rng: random.Random, cond: str) -> tuple[str, str]:
    """2–3 operators over single digits; products first, then left to right (cot lists each reduction)."""
    n_ops = rng.randint(2, 3)
    nums = [rng.randint(1, 9) for _ in range(n_ops + 1)]
    ops = [rng.choice("+-*") for _ in range(n_ops)]
    text = "".join(f"{n}{o}" for n, o in zip(nums, ops)) + str(nums[-1])
    steps, vals, rest = [], [nums[0]], []
    for o, n in zip(ops, nums[1:]):
        if o == "*":
            steps.append(f"{vals[-1]}*{n}={vals[-1] * n}")
            vals[-1] *= n
        else:
            rest.append(o)
            vals.append(n)
    acc = vals[0]
    for o, v in zip(rest, vals[1:]):
        new = acc + v if o == "+" else acc - v
        steps.append(f"{acc}{o}{v}={new}")
        acc = new
    return f"Compute {text}", _answer(cond, ", ".join(steps), str(acc))


def gen_parity(rng: random.Random, cond: str) -> tuple[str, str]:
    """Parity of 4–12 bits; cot is the running parity."""
    bits = [rng.randint(0, 1) for _ in range(rng.randint(4, 12))]
    run, p = [], 0
    for b in bits:
        p ^= b
        run.append(str(p))
    return f"Parity of {' '.join(map(str, bits))}", _answer(cond, " ".join(run), "odd" if p else "even")


GENERATORS: dict[str, Callable[[random.Random, str], tuple[str, str]]] = {
    "add": gen_add, "sort": gen_sort, "count": gen_count, "expr": gen_expr, "parity": gen_parity}


def generate(seed: int, n: int, *, exclude: frozenset = frozenset(), prefix: str = "") -> Iterator[dict]:
    """`n` examples cycling over tasks × conditions; (instruction, condition) pairs in `exclude` are skipped."""
    rng = random.Random(seed)
    combos = [(t, c) for t in TASKS for c in CONDITIONS]
    made = tries = 0
    while made < n:
        task, cond = combos[tries % len(combos)]
        tries += 1
        inst, resp = GENERATORS[task](rng, cond)
        if (inst, cond) in exclude:
            continue
        yield {"task": task, "id": f"{prefix}{task}-{made:06d}", "instruction": inst, "response": resp,
               "condition": cond}
        made += 1


def _write_jsonl(path: Path, rows: Iterator[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)


def _clean(root: Path) -> None:
    """Remove only what this module generates (so a stale or partial build never mixes with a new one)."""
    for p in [root / "raw", root / ".progress", root / "epochs", root.with_name(root.name + ".partial")]:
        shutil.rmtree(p, ignore_errors=True)
    for pat in ("*.array_record", "*.lengths.npy", "*.lines.npy", "*.tmp", "metadata.json", "tokenizer.model",
                "heldout.jsonl", MANIFEST):
        for p in root.glob(pat):
            p.unlink()


def ensure_default_dataset(root: str | Path = DEFAULT_ROOT, *, seed: int = 0, num_train: int = 80_000,
                           num_heldout_per_task: int = 100, vocab_size: int = 512, progress: bool = False) -> Path:
    """Generate, tokenize and prepare the default dataset under `root` unless already present; returns `root`.

    `root` then is a prepared data directory (metadata.json, shards, tokenizer.model) for `make_train_iterator`,
    plus `heldout.jsonl` for evaluation.
    """
    import fcntl

    from hrm.data.prepare import prepare

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    want = {"generator_version": GENERATOR_VERSION, "seed": seed, "num_train": num_train,
            "num_heldout_per_task": num_heldout_per_task, "vocab_size": vocab_size}
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        man = root / MANIFEST
        if man.is_file() and json.loads(man.read_text()) == want and (root / "metadata.json").is_file():
            return root
        _clean(root)
        n_held = num_heldout_per_task * len(TASKS)
        heldout = list(generate(seed + 1_000_003, n_held, prefix="heldout-"))
        _write_jsonl(root / "heldout.jsonl", iter(heldout))
        exclude = frozenset((h["instruction"], h["condition"]) for h in heldout)
        _write_jsonl(root / "raw" / "train.jsonl", generate(seed, num_train, exclude=exclude, prefix="train-"))
        prepare(out=root, inputs=[str(root / "raw" / "train.jsonl")], train_tokenizer=True, vocab_size=vocab_size,
                tokenizer_sample=20_000, shard_size=max(num_train // 4, 1), progress=progress)
        man.write_text(json.dumps(want, indent=1))
    return root
