"""Cache files that are verified when read: a damaged or edited entry is reported and recomputed, never used.

Every cached array file (reference-pool logits, LLM signal shards, classifier outputs) is written
with :func:`save_verified_npz` and read with :func:`load_verified_npz`::

    arrays = load_verified_npz(path, key=entry_key)     # None: missing, damaged, edited or foreign
    if arrays is None:
        arrays = compute()
        save_verified_npz(path, arrays, key=entry_key)

The file holds the arrays plus ``__sha256__``, a SHA-256 of every array's name, dtype, shape and
bytes, and optionally ``__key__`` (what the entry is for). A file that cannot be read (truncated,
zero bytes, not a zip), lacks the hash, fails it (edited by hand) or names another key is
reported with a warning that names the file (logger ``miaudit.utils.cache``) and the caller
recomputes and rewrites it. Writes are atomic and synced (:mod:`miaudit.utils.atomic`), and the
first write into a folder sweeps the temporary files of dead processes there.

Other files (e.g. model weights) are verified with :func:`file_sha256` against a digest stored
beside them.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from miaudit.utils.atomic import atomic_write, sweep_stale_temporaries

log = logging.getLogger(__name__)
HASH_KEY = "__sha256__"
KEY_KEY = "__key__"
#: what reading a damaged ``.npz`` raises (numpy, zipfile, zlib and the OS)
READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def content_digest(arrays: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the arrays' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def warn_damaged(path: str | Path, why: str, action: str = "recomputing it") -> None:
    """Log that the cache file ``path`` is not used (``why``) and what happens instead."""
    log.warning("cache file %s is %s; %s", path, why, action)


def save_verified_npz(path: str | Path, arrays: Mapping[str, Any], *, key: str | None = None) -> Path:
    """Write ``arrays`` (no pickles) with their content hash (and ``key``) to ``path``, atomically and synced."""
    path = Path(path)
    for name in arrays:
        if name in (HASH_KEY, KEY_KEY):
            raise ValueError(f"{name!r} is reserved by the verified cache format")
    data: dict[str, Any] = {name: np.asarray(value) for name, value in arrays.items()}
    if key is not None:
        data[KEY_KEY] = np.array(key)
    data[HASH_KEY] = np.array(content_digest(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(path.parent)
    return atomic_write(path, lambda handle: np.savez(handle, **data))


def load_verified_npz(path: str | Path, *, key: str | None = None) -> dict[str, np.ndarray] | None:
    """The arrays of a file :func:`save_verified_npz` wrote, or None (missing, or reported and not used).

    Not used, with a warning naming the file: unreadable (truncated, zero bytes), without a content
    hash (written by an older version or another tool), failing its hash (edited), or written for
    another ``key``.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {name: npz[name] for name in npz.files}
    except READ_ERRORS as exc:
        warn_damaged(path, f"unreadable ({type(exc).__name__}: {str(exc)[:120] or 'no detail'}, e.g. truncated by "
                           "a crash or a full disk)")
        return None
    stored = data.pop(HASH_KEY, None)
    if stored is None:
        warn_damaged(path, "not verifiable (no content hash: written by an older miaudit or another tool)")
        return None
    if str(stored) != content_digest(data):
        warn_damaged(path, "modified since it was written (its content hash does not match)")
        return None
    stored_key = data.pop(KEY_KEY, None)
    if key is not None and (stored_key is None or str(stored_key) != key):
        warn_damaged(path, f"an entry for another key ({None if stored_key is None else str(stored_key)!r}, "
                           f"expected {key!r})")
        return None
    return data


__all__ = ["HASH_KEY", "KEY_KEY", "READ_ERRORS", "content_digest", "file_sha256", "load_verified_npz",
           "save_verified_npz", "warn_damaged"]
