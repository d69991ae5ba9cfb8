"""Built-in default dataset: procedurally generated multi-step tasks a ~1M-parameter HRM can learn on CPU.

Tasks (conditions `direct` = answer only, `cot` = worked steps then "Answer: …", docs/data_format.md §3 tag semantics):
multi-digit addition, sorting short digit lists, counting a letter, small arithmetic expressions with precedence, and
parity of a bit string. Everything is deterministic from `seed`. `ensure_default_dataset(root)` writes
`raw/train.jsonl`, `heldout.jsonl` (lines {"task","id","instruction","response","condition"}, disjoint from train),
trains a SentencePiece BPE (vocab ≤ 512 incl. specials, padded 512) and prepares shards in `root` — idempotently
(skipped when the manifest matches) and under a file lock so concurrent callers do not race.

Suites: `default` (above; what `python train.py` trains on) and `study` (`ensure_study_dataset`, used by
`python -m hrm.study`): harder, answer-only (`direct`) versions of the multi-step tasks, where the model must do
the steps internally — addition of 2–5 digit numbers, multiplication up to 3 × 2 digits, sorting 5–10 digits,
parity of 6–14 bits and 4×4 Sudoku with 4–10 blanks (unique solution). Answer-only is where recurrent depth can
matter: with worked steps a shallow model could write the computation out instead.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Callable, Iterator, Sequence

GENERATOR_VERSION = 1
TASKS = ("add", "sort", "count", "expr", "parity")
CONDITIONS = ("direct", "cot")
MANIFEST = "default_manifest.json"
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "data" / "default"  # repo data/default, gitignored
STUDY_ROOT = DEFAULT_ROOT.with_name("study")  # repo data/study (the `study` suite), gitignored
STUDY_VERSION = 1


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


# ----------------------------------------------------------------------------- the `study` suite


def _digits(rng: random.Random, lo: int, hi: int) -> int:
    """A number with a uniformly drawn digit count in [lo, hi] (no leading zero unless one digit)."""
    k = rng.randint(lo, hi)
    return rng.randint(0 if k == 1 else 10 ** (k - 1), 10 ** k - 1)


def gen_study_add(rng: random.Random, cond: str) -> tuple[str, str]:
    """Addition of two 2–5 digit numbers (carries across up to 5 columns)."""
    a, b = _digits(rng, 2, 5), _digits(rng, 2, 5)
    return f"Add {a} and {b}.", str(a + b)


def gen_study_mul(rng: random.Random, cond: str) -> tuple[str, str]:
    """Multiplication of a 1–3 digit by a 1–2 digit number."""
    a, b = _digits(rng, 1, 3), _digits(rng, 1, 2)
    return f"Multiply {a} by {b}.", str(a * b)


def gen_study_sort(rng: random.Random, cond: str) -> tuple[str, str]:
    """Sorting 5–10 digits."""
    xs = [rng.randint(0, 9) for _ in range(rng.randint(5, 10))]
    return f"Sort: {' '.join(map(str, xs))}", " ".join(map(str, sorted(xs)))


def gen_study_parity(rng: random.Random, cond: str) -> tuple[str, str]:
    """Parity of 6–14 bits."""
    bits = [rng.randint(0, 1) for _ in range(rng.randint(6, 14))]
    return f"Parity of {' '.join(map(str, bits))}", "odd" if sum(bits) % 2 else "even"


SUDOKU_BASE = ((1, 2, 3, 4), (3, 4, 1, 2), (2, 1, 4, 3), (4, 3, 2, 1))


def sudoku_solutions(grid: list[int], limit: int = 2) -> int:
    """Number of completions (up to `limit`) of a 4×4 Sudoku given row-major with 0 = blank."""
    try:
        i = grid.index(0)
    except ValueError:
        return 1
    r, c = divmod(i, 4)
    box = [4 * (2 * (r // 2) + dr) + 2 * (c // 2) + dc for dr in (0, 1) for dc in (0, 1)]
    used = {grid[4 * r + k] for k in range(4)} | {grid[4 * k + c] for k in range(4)} | {grid[j] for j in box}
    count = 0
    for v in range(1, 5):
        if v not in used:
            grid[i] = v
            count += sudoku_solutions(grid, limit - count)
            grid[i] = 0
            if count >= limit:
                break
    return count


def _sudoku_rows(grid: Sequence[int], blank: str = ".") -> str:
    return " ".join("".join(str(v) if v else blank for v in grid[4 * r:4 * r + 4]) for r in range(4))


def gen_study_sudoku(rng: random.Random, cond: str) -> tuple[str, str]:
    """A 4×4 Sudoku with 4–10 blanks and a unique solution: a relabelled/permuted valid grid, cells blanked in
    random order while the solution stays unique. Rows are written as 4 digits, '.' = blank."""
    perm = rng.sample(range(1, 5), 4)
    rows = [r for band in rng.sample([(0, 1), (2, 3)], 2) for r in rng.sample(band, 2)]
    cols = [c for stack in rng.sample([(0, 1), (2, 3)], 2) for c in rng.sample(stack, 2)]
    sol = [perm[SUDOKU_BASE[r][c] - 1] for r in rows for c in cols]
    if rng.random() < 0.5:
        sol = [sol[4 * c + r] for r in range(4) for c in range(4)]  # transpose
    want, puzzle = rng.randint(4, 10), list(sol)
    for i in rng.sample(range(16), 16):  # may stop short of `want` if no further blank keeps it unique
        if puzzle.count(0) == want:
            break
        puzzle[i] = 0
        if sudoku_solutions(list(puzzle)) != 1:
            puzzle[i] = sol[i]
    return f"Sudoku {_sudoku_rows(puzzle)}", _sudoku_rows(sol)


STUDY_GENERATORS: dict[str, Callable[[random.Random, str], tuple[str, str]]] = {
    "add": gen_study_add, "mul": gen_study_mul, "sort": gen_study_sort, "parity": gen_study_parity,
    "sudoku": gen_study_sudoku}
# suite -> (tasks, conditions, generators)
SUITES: dict[str, tuple[tuple[str, ...], tuple[str, ...], dict]] = {
    "default": (TASKS, CONDITIONS, GENERATORS),
    "study": (tuple(STUDY_GENERATORS), ("direct",), STUDY_GENERATORS),
}


def generate(seed: int, n: int, *, exclude: frozenset = frozenset(), prefix: str = "",
             suite: str = "default") -> Iterator[dict]:
    """`n` examples of `suite` cycling over tasks × conditions; (instruction, condition) pairs in `exclude` are
    skipped."""
    tasks, conditions, generators = _suite(suite)
    rng = random.Random(seed)
    combos = [(t, c) for t in tasks for c in conditions]
    made = tries = 0
    while made < n:
        task, cond = combos[tries % len(combos)]
        tries += 1
        inst, resp = generators[task](rng, cond)
        if (inst, cond) in exclude:
            continue
        yield {"task": task, "id": f"{prefix}{task}-{made:06d}", "instruction": inst, "response": resp,
               "condition": cond}
        made += 1


def _suite(name: str) -> tuple[tuple[str, ...], tuple[str, ...], dict]:
    if name not in SUITES:
        raise ValueError(f"unknown dataset suite {name!r}; choose one of {', '.join(SUITES)}")
    return SUITES[name]


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
                           num_heldout_per_task: int = 100, vocab_size: int = 512, progress: bool = False,
                           suite: str = "default") -> Path:
    """Generate, tokenize and prepare the `suite` dataset under `root` unless already present; returns `root`.

    `root` then is a prepared data directory (metadata.json, shards, tokenizer.model) for `make_train_iterator`,
    plus `heldout.jsonl` for evaluation (`num_heldout_per_task` per task, excluded from training).
    """
    tasks = _suite(suite)[0]
    import fcntl

    from hrm.data.prepare import prepare

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    want = {"generator_version": GENERATOR_VERSION, "seed": seed, "num_train": num_train,
            "num_heldout_per_task": num_heldout_per_task, "vocab_size": vocab_size}
    if suite != "default":  # the default manifest stays as it was (existing data/default is not rebuilt)
        want.update(suite=suite, suite_version=STUDY_VERSION)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        man = root / MANIFEST
        if man.is_file() and json.loads(man.read_text()) == want and (root / "metadata.json").is_file():
            return root
        _clean(root)
        n_held = num_heldout_per_task * len(tasks)
        heldout = list(generate(seed + 1_000_003, n_held, prefix="heldout-", suite=suite))
        _write_jsonl(root / "heldout.jsonl", iter(heldout))
        exclude = frozenset((h["instruction"], h["condition"]) for h in heldout)
        _write_jsonl(root / "raw" / "train.jsonl",
                     generate(seed, num_train, exclude=exclude, prefix="train-", suite=suite))
        prepare(out=root, inputs=[str(root / "raw" / "train.jsonl")], train_tokenizer=True, vocab_size=vocab_size,
                tokenizer_sample=20_000, shard_size=max(num_train // 4, 1), progress=progress)
        man.write_text(json.dumps(want, indent=1))
    return root


def ensure_study_dataset(root: str | Path = STUDY_ROOT, *, num_train: int = 60_000, num_heldout_per_task: int = 100,
                         progress: bool = False) -> Path:
    """The `study` suite (harder answer-only tasks, see the module docstring) prepared under `root` (default
    data/study, gitignored): what `python -m hrm.study` trains and evaluates on."""
    return ensure_default_dataset(root, num_train=num_train, num_heldout_per_task=num_heldout_per_task,
                                  progress=progress, suite="study")
