"""Run directories on remote storage: run dir, metrics, summaries and the tokenizer copy go through
`etils.epath`, so `gs://…` paths stay URLs (pathlib would make `<cwd>/gs:/b/r`). Without a bucket,
`epath.testing.mock_epath` redirects the gs:// file operations into a local folder."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
from etils import epath
from etils.epath import testing as epath_testing

from hrm.config import LoggingConfig
from hrm.train.checkpoint import resolve_step_dir
from hrm.train.metrics import MetricsWriter
from hrm.train.rundir import RunDir, as_path, is_remote


def test_as_path_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = as_path("gs://bucket/runs/r1")
    assert isinstance(p, epath.Path) and str(p) == "gs://bucket/runs/r1" and is_remote(p)
    assert str(p / "checkpoints" / "8") == "gs://bucket/runs/r1/checkpoints/8"
    assert str(as_path("runs/r1")) == os.path.join(str(tmp_path), "runs", "r1") and not is_remote("runs/r1")
    assert str(as_path(tmp_path / "x")) == str(tmp_path / "x")


@contextlib.contextmanager
def _fake_gcs(root):
    """gs://<rest> -> <root>/<rest> for every epath file operation."""
    def local(p):
        s = os.fspath(p)
        return str(root / s[len("gs://"):]) if s.startswith("gs://") else s

    def one(fn, path, *a, **k):
        return fn(local(path), *a, **k)

    def two(fn, src, dst, *a, **k):
        return fn(local(src), local(dst), *a, **k)

    def glob(fn, pattern):
        return ["gs://" + os.path.relpath(x, root) for x in fn(local(pattern))] if str(pattern).startswith("gs://") \
            else fn(pattern)

    with epath_testing.mock_epath(open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one,
                                  remove=one, rmtree=one, stat=one, walk=one, glob=glob, copy=two, rename=two,
                                  replace=two):
        yield


def test_metrics_run_dir_and_tokenizer_copy_on_gs(tmp_path):
    bucket = tmp_path / "bucket"
    tok = tmp_path / "tokenizer.model"
    tok.write_bytes(b"tok")
    with _fake_gcs(tmp_path):
        run = RunDir("gs://bucket/runs/r1")
        run.create()
        assert (bucket / "runs" / "r1").is_dir()
        run.write_text("config.yaml", "name: x\n")
        run.write_json("summary.json", {"final_step": 3})
        assert run.copy_in(epath.Path(tok)) is not None
        w = MetricsWriter(run.path, LoggingConfig(tensorboard=False), 0)
        for step in (1, 2, 3):
            w.write(step, {"loss": float(step)})
        w.close()  # remote: the whole file is written on close (no append on object stores)
        w = MetricsWriter("gs://bucket/runs/r1", LoggingConfig(tensorboard=False), 0, keep_through=2)
        w.write(3, {"loss": 30.0})
        w.close()
        with pytest.raises(FileNotFoundError, match="gs://bucket/runs/nope"):
            resolve_step_dir("gs://bucket/runs/nope")
    d = bucket / "runs" / "r1"
    assert (d / "config.yaml").read_text() == "name: x\n"
    assert json.loads((d / "summary.json").read_text()) == {"final_step": 3}
    assert (d / "tokenizer.model").read_bytes() == b"tok"
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert not (tmp_path / "gs:").exists() and not os.path.exists("gs:")


def test_run_dir_created_by_a_failed_run_is_removed(tmp_path):
    run = RunDir(tmp_path / "new")
    run.create()
    assert run.remove_if_created() and not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    run = RunDir(tmp_path / "old")
    run.create()
    assert not run.remove_if_created() and (tmp_path / "old").is_dir()  # not ours: kept
    other = RunDir(tmp_path / "host1", process_index=1)
    other.create()
    assert not other.remove_if_created()  # only process 0 removes
