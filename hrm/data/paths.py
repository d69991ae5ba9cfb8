"""Paths for data directories that may live on a bucket: `gs://…` (and other `etils.epath` schemes) or local.

`pathlib.Path("gs://b/r")` collapses the scheme's double slash and `.absolute()` turns it into `<cwd>/gs:/b/r`
(`epath.Path(...).absolute()` does the same), so everything under hrm/data goes through these helpers instead:

* `as_path(p)`   an `epath.Path`; remote URIs are kept verbatim, local paths are made absolute.
* `is_remote(p)` True for `scheme://…` (not `file://`).
* `local_file(p)` a local filename for libraries that only open POSIX paths (ArrayRecord's C++ reader,
  SentencePiece, HF tokenizers): remote files are copied once into a cache directory (`$HRM_DATA_CACHE`, default
  `<tmp>/hrm_data_cache`), keyed by the URI, and reused; local paths are returned unchanged.
* `load_npy(p, mmap=...)` reads a `.npy` (memory-mapped when local).

Reading `gs://` needs `gcsfs` (or TensorFlow's gfile) installed; without it the error names the path and the
package. For large datasets on TPU VMs a gcsfuse mount (a local path) avoids the per-host shard copy.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from typing import Any

import numpy as np
from etils import epath

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
CACHE_ENV = "HRM_DATA_CACHE"

PathLike = str | os.PathLike


def is_remote(p: PathLike) -> bool:
    """Whether `p` names a remote object (`gs://`, `s3://`, …); `file://` and plain paths are local."""
    s = os.fspath(p)
    return bool(_SCHEME.match(s)) and not s.startswith("file://")


def as_path(p: PathLike) -> epath.Path:
    """`epath.Path` that keeps `gs://b/r` intact and makes local paths absolute (so they survive a chdir)."""
    s = os.fspath(p)
    if is_remote(s):
        return epath.Path(s)
    if s.startswith("file://"):
        s = s[len("file://"):]
    return epath.Path(os.path.abspath(s))


def join(base: PathLike, *parts: str) -> epath.Path:
    """`base / parts…` without touching the scheme."""
    out = as_path(base)
    for part in parts:
        out = out / part
    return out


def remote_error(p: PathLike, err: BaseException) -> RuntimeError:
    """A clear message for a remote path whose filesystem backend is missing (e.g. gcsfs for gs://)."""
    return RuntimeError(f"cannot access {os.fspath(p)}: {err} (install the filesystem backend, e.g. "
                        f"`pip install gcsfs` for gs://, or mount the bucket with gcsfuse and pass the local path)")


def exists(p: PathLike) -> bool:
    """`p.exists()` with a clear error when a remote backend is missing."""
    try:
        return as_path(p).exists()
    except ImportError as e:
        raise remote_error(p, e) from None


def read_text(p: PathLike) -> str:
    try:
        return as_path(p).read_text()
    except ImportError as e:
        raise remote_error(p, e) from None


def read_bytes(p: PathLike) -> bytes:
    try:
        return as_path(p).read_bytes()
    except ImportError as e:
        raise remote_error(p, e) from None


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "hrm_data_cache")


def local_file(p: PathLike) -> str:
    """A local filename holding the bytes of `p` (remote objects are copied once into the cache, atomically)."""
    s = os.fspath(p)
    if not is_remote(s):
        return os.fspath(as_path(s))
    key = hashlib.sha256(s.encode()).hexdigest()[:16]
    dst = os.path.join(cache_dir(), key, s.rsplit("/", 1)[-1])
    if not os.path.isfile(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = f"{dst}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(read_bytes(s))
        os.replace(tmp, dst)
    return dst


def load_npy(p: PathLike, mmap: bool = False) -> np.ndarray:
    """np.load of a local or remote `.npy` (memory-mapped only when local and `mmap`)."""
    if is_remote(p):
        import io

        return np.load(io.BytesIO(read_bytes(p)))
    return np.load(os.fspath(as_path(p)), mmap_mode="r" if mmap else None)


def open_binary(p: PathLike) -> Any:
    """A binary file object for reading `p` (local or remote)."""
    try:
        return as_path(p).open("rb")
    except ImportError as e:
        raise remote_error(p, e) from None
