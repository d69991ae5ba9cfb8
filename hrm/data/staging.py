"""Build a prepared directory beside its destination and publish it only when complete (no half-made `--out`).

Local `--out D`: work happens in the sibling `D.partial/` and is moved into `D` at the end, `metadata.json` last (the
marker every reader checks). Remote `--out gs://…`: work happens in a local cache directory keyed by the URI and the
files are copied up, `metadata.json` last. A failed run removes its staging directory unless it holds finished
shards; those are kept so rerunning the same command resumes (the staging directory is named in the error).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from hrm.data import paths
from hrm.data.records import METADATA

PARTIAL_SUFFIX = ".partial"


def staging_dir(out: str) -> Path:
    """Local directory where the preparation of `out` is built."""
    if paths.is_remote(out):
        key = hashlib.sha256(out.encode()).hexdigest()[:16]
        return Path(paths.cache_dir()) / f"prepare-{key}"
    p = Path(os.fspath(paths.as_path(out)))
    return p.with_name(p.name + PARTIAL_SUFFIX)


def has_finished_shards(stage: Path) -> bool:
    return any(stage.glob("*.array_record"))


def discard(stage: Path) -> bool:
    """After a failure: remove `stage` unless it holds finished shards; returns True if it was kept."""
    if stage.is_dir() and has_finished_shards(stage):
        return True
    shutil.rmtree(stage, ignore_errors=True)
    return False


def publish(stage: Path, out: str) -> None:
    """Move (local) or copy (remote) everything in `stage` to `out`, `metadata.json` last; then drop `stage`."""
    entries = sorted(stage.iterdir(), key=lambda p: p.name == METADATA)  # metadata last
    if paths.is_remote(out):
        dst = paths.as_path(out)
        try:
            for entry in entries:
                for f in ([entry] if entry.is_file() else sorted(x for x in entry.rglob("*") if x.is_file())):
                    target = dst / f.relative_to(stage).as_posix()
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(f.read_bytes())
        except ImportError as e:
            raise paths.remote_error(out, e) from None
        shutil.rmtree(stage)
        return
    dst = Path(os.fspath(paths.as_path(out)))
    if not dst.exists():
        os.replace(stage, dst)
        return
    for entry in entries:  # `out` already exists (e.g. the default dataset keeps its raw inputs there)
        target = dst / entry.name
        if target.is_dir() and entry.is_dir():
            shutil.rmtree(target)  # our own subdirectories (.progress, epochs) from an earlier preparation
        os.replace(entry, target)
    stage.rmdir()
