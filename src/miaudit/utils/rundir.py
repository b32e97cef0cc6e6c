"""Output folders that are either complete or absent.

Everything a command writes goes to a temporary sibling folder; only when the command succeeds is
it moved to the requested path, so a crash or bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from miaudit.errors import MiauditError


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
