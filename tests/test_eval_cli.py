"""`eval.py` no-model modes via subprocess: --dump_prompts, --rescore, --dry_run (docs/eval_protocol.md)."""

import json
import subprocess
import sys

import pytest

from hrm.eval.tasks import load_tasks


def _run(repo_root, *args):
    return subprocess.run([sys.executable, str(repo_root / "eval.py"), *map(str, args)], cwd=repo_root,
                          capture_output=True, text=True, timeout=120)


def test_dump_prompts(repo_root, benchdata_dir, tmp_path):
    out = tmp_path / "prompts.jsonl"
    proc = _run(repo_root, "--tasks", "gsm8k,winogrande,math", "--data_dir", benchdata_dir, "--limit", 2,
                "--dump_prompts", out)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    items = load_tasks("gsm8k,winogrande,math", benchdata_dir, limit=2)
    assert [(x["task"], x["id"]) for x in lines] == [(it.task, it.id) for it in items]
    assert [x["prompt"] for x in lines] == [it.wrapped for it in items]
    assert lines[0]["condition"] == "synth,cot" and lines[0]["gold"] == 18
    assert lines[2]["prompt"].startswith("<|im_start|><|object_ref_start|>John moved the couch")
    assert lines[2]["prompt"].endswith("\nA. Sarah\nB. Maria\nAnswer:<|im_end|>") and lines[2]["gold"] == "B"


def test_missing_file_is_a_clear_error(repo_root, benchdata_dir, tmp_path):
    proc = _run(repo_root, "--tasks", "boolq", "--data_dir", benchdata_dir, "--dump_prompts", tmp_path / "p.jsonl")
    assert proc.returncode == 2 and "boolq/train.jsonl" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run(repo_root, "--tasks", "gsm8k", "--data_dir", benchdata_dir)
    assert proc.returncode == 2 and "exactly one of" in proc.stderr


def test_dry_run(repo_root, benchdata_dir):
    proc = _run(repo_root, "--tasks", "gsm8k,mmlu,drop", "--data_dir", benchdata_dir, "--dry_run")
    assert proc.returncode == 2                                  # DROP is missing, reported per task
    assert "gsm8k: 1319 items, condition synth,cot, max_context 3072" in proc.stdout
    assert "mmlu: 14042 items" in proc.stdout and "drop: ERROR" in proc.stdout
    assert "--- example mmlu [abstract_algebra/0]" in proc.stdout


def test_dry_run_with_tokenizer(repo_root, benchdata_dir, tmp_path, capsys, monkeypatch):
    """Prompt lengths vs max_context with a tiny SentencePiece tokenizer from the project tokenizer module."""
    tokenizer_mod = pytest.importorskip("hrm.data.tokenizer")
    texts = [f"Question {i}: what is {i} plus {i * 3}? The answer is {i * 4}." for i in range(200)]
    tokenizer_mod.train_sentencepiece(texts, tmp_path / "tok.model", vocab_size=320)
    monkeypatch.syspath_prepend(str(repo_root))
    import eval as eval_cli

    rc = eval_cli.main(["--tasks", "gsm8k", "--data_dir", str(benchdata_dir), "--limit", "3", "--dry_run",
                        "--tokenizer", str(tmp_path / "tok.model"), "--max_context", "40"])
    out = capsys.readouterr().out
    assert rc == 0 and "gsm8k: 3 items" in out and "prompt tokens max" in out
    assert "3 >= max_context (would be skipped and scored invalid)" in out


def test_rescore_inline_and_lookup(repo_root, benchdata_dir, tmp_path):
    drop_answer = {"number": "", "date": {"day": "", "month": "", "year": ""}, "spans": ["Tom Brady"]}
    lines = [
        {"task": "gsm8k", "id": "x", "prediction": "\\boxed{1,234.9}", "answer": "work\n#### 1,234"},
        {"task": "gsm8k", "id": "test.jsonl:0", "prediction": "\\boxed{18}"},             # gold looked up
        {"task": "math", "prediction": "so $\\boxed{\\frac{3}{4}}$", "solution": "is $\\boxed{\\dfrac{3}{4}}$."},
        {"task": "drop", "prediction": " tom brady ", "answer": drop_answer,
         "validated_answers": [{"number": "7", "date": {"day": "", "month": "", "year": ""}, "spans": []}]},
        {"task": "mmlu", "id": "virology/0", "prediction": "z"},                           # gold looked up
        {"task": "arc_challenge", "prediction": "b", "gold": "B", "num_choices": 4},
        {"task": "winogrande", "prediction": "", "gold": "A", "num_choices": 2},
    ]
    src, out = tmp_path / "preds.jsonl", tmp_path / "scored.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    proc = _run(repo_root, "--rescore", src, "--out", out, "--data_dir", benchdata_dir, "--size", "1B")
    assert proc.returncode == 0, proc.stderr
    scored = [json.loads(x) for x in out.read_text().splitlines()]
    assert [s["prediction"] for s in scored] == [x["prediction"] for x in lines]      # lines repeated
    assert scored[0]["extracted"] == 1234 and scored[0]["correct"]
    assert scored[1]["correct"] and scored[1]["extracted"] == 18
    assert scored[2]["extracted"] == "\\frac{3}{4}" and not scored[2]["correct"]        # faithful quirk
    assert scored[2]["variants"]["corrected"]["correct"]
    assert (scored[3]["em"], scored[3]["f1"]) == (1.0, 1.0)
    assert scored[4]["invalid"] and scored[4]["score"] == 0.25 and scored[4]["subject"] == "virology"
    assert scored[5]["correct"] and scored[6]["invalid"] and scored[6]["score"] == 0.5
    assert "| MMLU | ARC-C |" in proc.stdout and "paper Tab. 1/4 HRM 1B" in proc.stdout


def test_rescore_needs_data_dir_for_ids(repo_root, tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"task": "gsm8k", "id": "test.jsonl:0", "prediction": "1"}) + "\n")
    proc = _run(repo_root, "--rescore", src)
    assert proc.returncode == 2 and "--data_dir" in proc.stderr


def test_rescore_runner_output(repo_root, tmp_path):
    """The predictions JSONL the runner writes is valid --rescore input (no data_dir needed)."""
    from test_eval_runner import CharTokenizer, FakeGenerator, _items, _respond

    from hrm.eval.runner import run_tasks

    result = run_tasks(FakeGenerator(_respond), CharTokenizer(), _items(), out_dir=tmp_path, progress=False)
    out = tmp_path / "rescored.jsonl"
    proc = _run(repo_root, "--rescore", tmp_path / "predictions.jsonl", "--out", out)
    assert proc.returncode == 0, proc.stderr
    again = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["score"] for r in again] == [r["score"] for r in result["records"]]


@pytest.mark.parametrize("mode", ["--dump_prompts", "--rescore"])
def test_no_model_modes_do_not_import_jax(repo_root, benchdata_dir, tmp_path, mode):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"task": "boolq", "prediction": "A", "gold": "A", "num_choices": 2}) + "\n")
    arg = tmp_path / "d.jsonl" if mode == "--dump_prompts" else preds
    code = ("import sys, eval; rc = eval.main(sys.argv[1:]); "
            "assert 'jax' not in sys.modules, 'jax imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "--tasks", "gsm8k", "--limit", "1", "--data_dir",
                           str(benchdata_dir), mode, str(arg)], cwd=repo_root, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def _fake_info(checkpoint, data_path=""):
    """`checkpoint_info` of a fake checkpoint at step 7 whose config trained on `data_path`."""
    import dataclasses
    import types

    from hrm.config import Config

    cfg = Config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=data_path))
    return types.SimpleNamespace(step_dir=checkpoint, step=7, config=cfg)


def test_model_path_with_fake_loader(repo_root, benchdata_dir, tmp_path, monkeypatch, capsys):
    """--checkpoint calls hrm.eval.model_loading.load_generator(checkpoint, args) and writes the results."""
    import types

    from test_eval_runner import CharTokenizer, FakeGenerator

    seen = {}

    def load_generator(checkpoint, args):
        seen.update(checkpoint=checkpoint, batch=args.batch_size)
        gen = FakeGenerator(lambda prompt, seed: "B")
        gen.max_context = 4096
        return gen, CharTokenizer(), "XL"

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    monkeypatch.setitem(sys.modules, "hrm.eval.model_loading",
                        types.SimpleNamespace(load_generator=load_generator, checkpoint_info=_fake_info))
    monkeypatch.syspath_prepend(str(repo_root))
    import eval as eval_cli

    out = tmp_path / "res"
    rc = eval_cli.main(["--checkpoint", str(ckpt), "--tasks", "winogrande,gsm8k", "--data_dir", str(benchdata_dir),
                        "--limit", "4", "--out", str(out), "--batch_size", "3", "--no_progress"])
    assert rc == 0 and seen == {"checkpoint": str(ckpt), "batch": 3}
    saved = json.loads((out / "results.json").read_text())
    assert saved["size"] == "XL" and saved["counts"] == {"winogrande": 4, "gsm8k": 4}
    assert saved["metrics"]["winogrande"]["faithful"]["acc"] == 0.5        # golds B, A, B, A for the first four
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 8
    assert "paper Tab. 1/4 HRM 1B" in capsys.readouterr().out


def test_items_longer_than_the_model_context_are_capped(repo_root, benchdata_dir, monkeypatch, capsys):
    """A model whose max_seq_len is below a task's max_context: items are capped (prompts at or over the cap
    are then skipped and scored invalid by the runner, docs/eval_protocol.md §1) and the tasks are named in a
    warning."""
    monkeypatch.syspath_prepend(str(repo_root))
    import eval as eval_cli
    from hrm.eval.tasks import load_tasks

    items = load_tasks("winogrande,gsm8k", str(benchdata_dir), "faithful", 2, 0)
    capped = eval_cli.cap_context(items, 256)
    assert [it.max_context for it in capped] == [256] * 4
    assert "winogrande" in capsys.readouterr().err
    assert eval_cli.cap_context(items, 8192) == items


# ---------------------------------------------------------------- fresh-clone friendly (no ../shared needed)
def _cli(repo_root, monkeypatch):
    monkeypatch.syspath_prepend(str(repo_root))
    import eval as eval_cli

    return eval_cli


def _fake_model(monkeypatch, respond, data_path=""):
    """Replace the JAX model path with a fake generator (character tokenizer) and a fake checkpoint at step 7."""
    import types

    from test_eval_runner import CharTokenizer, FakeGenerator

    def load_generator(checkpoint, args):
        gen = FakeGenerator(respond)
        gen.max_context = 4096
        return gen, CharTokenizer(), None

    monkeypatch.setitem(sys.modules, "hrm.eval.model_loading", types.SimpleNamespace(
        load_generator=load_generator, checkpoint_info=lambda c: _fake_info(c, data_path)))


@pytest.mark.parametrize("checkpoint,named", [("nope/run", "nope/run does not exist"),
                                              ("random:nope.yaml", "config file nope.yaml does not exist")])
def test_missing_checkpoint_is_reported_first(repo_root, monkeypatch, capsys, checkpoint, named):
    """Before any data is read or the built-in dataset generated, naming the flag (issue 13)."""
    eval_cli = _cli(repo_root, monkeypatch)

    def must_not_run(*a, **k):
        raise AssertionError("data work before the checkpoint check")

    monkeypatch.setattr(eval_cli, "ensure_default_dataset", must_not_run)
    monkeypatch.setattr(eval_cli, "load_items", must_not_run)
    assert eval_cli.main(["--checkpoint", checkpoint]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint {checkpoint}" in err and named in err


def test_own_heldout_file(repo_root, tmp_path, monkeypatch, capsys):
    """--heldout FILE scores your own pairs (task `default`, exact match, groups with their n); the step and
    the output directory are printed."""
    heldout = tmp_path / "mine.jsonl"
    rows = [{"instruction": "1+1=", "response": "2", "task": "add"}, {"instruction": "2+2=", "response": "4",
                                                                     "task": "add"},
            {"prompt": "reverse abc", "completion": "cba", "condition": "cot", "task": "reverse"}]
    heldout.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _fake_model(monkeypatch, lambda p, s: {"1+1=": " 2 ", "2+2=": "5", "reverse abc": "cba"}[p],
                data_path="/data/mine")
    eval_cli = _cli(repo_root, monkeypatch)
    (tmp_path / "ckpt").mkdir()
    out = tmp_path / "res"
    rc = eval_cli.main(["--checkpoint", str(tmp_path / "ckpt"), "--heldout", str(heldout), "--out", str(out),
                        "--no_progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "step 7" in captured.err and str(out) in captured.err and "data.path" not in captured.err
    md = (out / "results.md").read_text()
    assert "## default (exact match)" in md and "step 7" in md
    assert "| overall | 66.67 | 3 |" in md and "| add | 50.00 | 2 |" in md and "| reverse | 100.00 | 1 |" in md
    saved = json.loads((out / "results.json").read_text())
    assert saved["heldout"] == str(heldout) and saved["step"] == 7 and saved["counts"] == {"default": 3}


def test_training_data_warning(repo_root, tmp_path, monkeypatch):
    """A checkpoint trained on other data than the built-in set, evaluated on the built-in held-out tasks,
    gets a warning naming --heldout; not when a held-out file is given or the data is the built-in one."""
    eval_cli = _cli(repo_root, monkeypatch)
    (tmp_path / "ckpt").mkdir()

    def warning(argv, data_path):
        args = eval_cli.resolve(eval_cli.build_parser().parse_args(["--checkpoint", str(tmp_path / "ckpt"), *argv]))
        return eval_cli.training_data_warning(args, _fake_info(None, data_path).config)

    message = warning([], "/data/mine")
    assert "data.path=/data/mine" in message and "--heldout FILE" in message
    assert warning([], "") is None and warning(["--heldout", "x.jsonl"], "/data/mine") is None
    assert warning(["--tasks", "gsm8k"], "/data/mine") is None


def test_heldout_needs_the_default_task(repo_root, monkeypatch, tmp_path, capsys):
    eval_cli = _cli(repo_root, monkeypatch)
    assert eval_cli.main(["--tasks", "gsm8k", "--heldout", "x.jsonl", "--dry_run"]) == 2
    assert "--heldout is scored by task `default`" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::hrm.eval.errors.DataIntegrityWarning")  # generated files
def test_dry_run_shows_the_generation_cap(repo_root, tmp_path, monkeypatch, capsys):
    from hrm.data.tokenizer import train_sentencepiece

    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k/test.jsonl").write_text(json.dumps({"question": "What is 2+2?", "answer": "#### 4"}) + "\n")
    for name, n in (("dev", 2), ("train", 5)):
        (tmp_path / f"boolq/{name}.jsonl").parent.mkdir(exist_ok=True)
        (tmp_path / f"boolq/{name}.jsonl").write_text("".join(json.dumps(
            {"question": "is it", "title": "t", "answer": True, "passage": "It is."}) + "\n" for _ in range(n)))
    train_sentencepiece([f"what is {i} plus {i}? it is {2 * i}." for i in range(200)], tmp_path / "tok.model",
                        vocab_size=300)
    eval_cli = _cli(repo_root, monkeypatch)
    argv = ["--tasks", "gsm8k,boolq", "--data_dir", str(tmp_path), "--dry_run"]
    assert eval_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "gsm8k: 1 items, condition synth,cot, max_context 3072, max_tokens unset (generates until EOA or " \
           "max_context − prompt tokens)" in out
    assert "boolq: 2 items, condition direct, max_context 4096, max_tokens 1" in out and "None" not in out
    assert eval_cli.main(argv + ["--tokenizer", str(tmp_path / "tok.model"), "--max_context", "400"]) == 0
    lines = {x.split(":")[0]: x for x in capsys.readouterr().out.splitlines() if ": " in x}
    n_prompt = int(lines["gsm8k"].split("prompt tokens max ")[1].split()[0])
    assert f"generation cap max {400 - n_prompt} tokens" in lines["gsm8k"]
    assert "generation cap max 1 tokens" in lines["boolq"]
