"""Files and folders that are either complete or absent.

Every file miaudit writes for later reading (run directories, caches, reports) goes through here:
the content is written to a temporary sibling, flushed to disk (``fsync``) and renamed over the
target in one step, so a reader, a crash or a ``kill -9`` never sees half a file. Output folders
work the same way: everything a command writes goes to a temporary sibling folder that becomes the
requested folder only when the command succeeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from miaudit.errors import MiauditError


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically: ``write(handle)`` fills a temporary sibling, which is synced and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Replace ``path`` by ``text`` (UTF-8) in one rename."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomic(path: str | Path, data: Any, *, allow_nan: bool = False) -> Path:
    """Replace ``path`` by ``data`` as indented JSON in one rename (readers never see half a file)."""
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=allow_nan) + "\n")


def save_npz_atomic(path: str | Path, arrays: dict[str, Any], *, compressed: bool = False) -> Path:
    """``numpy.savez`` (or ``savez_compressed``) of ``arrays`` into ``path`` in one rename."""
    import numpy as np

    save = np.savez_compressed if compressed else np.savez
    return atomic_write(path, lambda handle: save(handle, **arrays))


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` on success and is deleted on failure."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MiauditError(f"output folder {out} is not empty; choose a new --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


__all__ = ["atomic_output_dir", "atomic_write", "save_npz_atomic", "write_json_atomic", "write_text_atomic"]
