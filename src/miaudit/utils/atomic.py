"""Files and folders that are either complete or absent, and output folders that never destroy anything.

Every file miaudit writes for later reading (run directories, caches, reports) goes through here:
the content is written to a temporary sibling, flushed to disk (``fsync``) and renamed over the
target in one step, so a reader, a crash or a ``kill -9`` never sees half a file.

Output folders (:func:`atomic_output_dir`, behind ``--out`` / ``--overwrite``):

- everything a command writes goes to a temporary sibling folder that becomes the requested folder
  only when the command succeeds, with a marker file (:data:`MARKER`) naming the tool, its version
  and the run id (:func:`output_owner`);
- the output path is claimed at the start (an exclusively created lock file beside it), so a second
  run with the same ``--out`` is refused while the first one runs;
- ``--overwrite`` replaces only a folder that holds the marker (a previous miaudit run), and no
  output path may be the working directory, one of its parents, the file-system root or the home
  folder.

Temporary files and folders are named ``.<name>.tmp-<host>-<pid>-<random>``:
:func:`sweep_stale_temporaries` deletes those that processes of this machine left behind when they
died (``kill -9``, power loss); output folders and caches call it before they write.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from miaudit.errors import MiauditError
from miaudit.utils.processes import pid_alive

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

#: the marker file of a folder miaudit wrote (JSON: tool, version, run_id, command, created)
MARKER = ".miaudit-run"
_LOCK_SUFFIX = ".miaudit-lock"
_TEMP = re.compile(r"\.tmp-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-")
_OWNER: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("miaudit_output_owner", default=None)
_swept: set[Path] = set()


# -- temporary names -------------------------------------------------------------------------------
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8")).hexdigest()[:6]


def temp_prefix(path: str | Path) -> str:
    """Name prefix of temporary siblings of ``path`` made by this process (``.<name>.tmp-<host>-<pid>-``)."""
    return f".{Path(path).name}.tmp-{_host_tag()}-{os.getpid()}-"


def final_name(path: str | Path) -> str:
    """The name ``path`` has once complete: a temporary sibling's (``.<name>.tmp-<host>-<pid>-...``) target
    name, else its own name (reports written inside an output folder before it is renamed show this)."""
    name = Path(path).name
    match = _TEMP.search(name)
    return name[1:match.start()] if match and name.startswith(".") else name


def sweep_stale_temporaries(folder: str | Path, *, once: bool = True) -> list[Path]:
    """Delete temporary files and folders in ``folder`` left by dead processes of this machine.

    Only names made by :func:`temp_prefix` whose process id is no longer running are touched;
    those of live processes and of other machines (a shared file system) are kept. With ``once``
    a folder is swept at most once per process. Returns what was deleted.
    """
    folder = Path(folder)
    key = folder.resolve()
    if once and key in _swept:
        return []
    _swept.add(key)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    host = _host_tag()
    for entry in entries:
        match = _TEMP.search(entry.name)
        if not match or match["host"] != host or not entry.name.startswith("."):
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    return removed


# -- files -----------------------------------------------------------------------------------------
def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` atomically: ``write(handle)`` fills a temporary sibling, which is synced and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
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


def save_npz_atomic(path: str | Path, arrays: Mapping[str, ArrayLike], *, compressed: bool = False) -> Path:
    """``numpy.savez`` (or ``savez_compressed``) of ``arrays``, stored under their names, into ``path`` in one
    rename."""
    import numpy as np

    if "allow_pickle" in arrays:
        raise ValueError("an array named 'allow_pickle' would be taken for numpy.savez's option; rename it")
    save = np.savez_compressed if compressed else np.savez
    # numpy's stub lets names from a ** mapping fill savez's ``allow_pickle: bool`` (refused above)
    return atomic_write(path, lambda handle: save(handle, **arrays))  # type: ignore[arg-type]


# -- output folders --------------------------------------------------------------------------------
@contextlib.contextmanager
def output_owner(*, run_id: str | None, command: str) -> Iterator[None]:
    """Inside the block, folders made by :func:`atomic_output_dir` name this run in their marker."""
    token = _OWNER.set({"run_id": run_id, "command": command})
    try:
        yield
    finally:
        _OWNER.reset(token)


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker of a folder miaudit wrote (tool, version, run_id, command, created), else None."""
    path = Path(folder) / MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("tool") == "miaudit" else None


def _write_marker(folder: Path) -> None:
    from miaudit import __version__

    owner = _OWNER.get() or {}
    write_json_atomic(folder / MARKER, {
        "tool": "miaudit", "version": __version__, "run_id": owner.get("run_id"), "command": owner.get("command"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})


def check_output_path(out: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse an output folder that a run must not write or replace; return it.

    Refused: the working directory, one of its parents, the file-system root, the home folder, an
    existing file or symbolic link, and a non-empty folder, unless ``overwrite`` and the folder
    holds a miaudit :data:`MARKER` (a previous run).
    """
    out = Path(out)
    if out.is_symlink():
        raise MiauditError(f"--out {out} is a symbolic link; give the path of a real folder (miaudit never writes "
                           "through or replaces a link)")
    if out.exists() and not out.is_dir():
        raise MiauditError(f"--out {out} is a file, not a folder; choose a folder path that does not exist yet")
    resolved, cwd = out.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise MiauditError(f"--out {out} is the working directory or one of its parents; a run needs a folder of "
                           "its own, e.g. --out runs/NAME")
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise MiauditError(f"--out {out} is the file-system root or your home folder; a run needs a folder of its "
                           "own, e.g. --out runs/NAME")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise MiauditError(f"output folder {out} is not empty; choose a new --out, or pass --overwrite to "
                               "replace a previous miaudit run there")
        if read_marker(out) is None:
            raise MiauditError(f"output folder {out} is not a miaudit run folder (no {MARKER} marker file), so "
                               "--overwrite does not replace it; move it away or choose another --out")
    return out


@contextlib.contextmanager
def _claim(out: Path) -> Iterator[None]:
    """Hold ``.<name>.miaudit-lock`` beside ``out`` (created exclusively) while the block runs."""
    lock = out.parent / f".{out.name}{_LOCK_SUFFIX}"
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                owner = json.loads(lock.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                owner = {}
            stale = (owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int)
                     and not pid_alive(owner["pid"]))
            if not stale or attempt:
                who = f"process {owner.get('pid', '?')} on {owner.get('host', '?')}"
                raise MiauditError(f"another miaudit run ({who}) is writing {out} right now; wait for it to finish "
                                   f"or choose another --out (if no such run exists, delete {lock})") from None
            lock.unlink(missing_ok=True)  # its process died without releasing it
    with os.fdopen(fd, "w") as handle:
        handle.write(mine)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text(encoding="utf-8") == mine:
                lock.unlink()


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; a previous run folder at ``out`` is moved aside first, then deleted."""
    if not out.exists():
        tmp.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        tmp.rename(out)
        return
    old = out.parent / (temp_prefix(out) + "replaced")
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` on success and is deleted on failure.

    ``out`` is checked by :func:`check_output_path` (before and again just before the rename) and
    claimed for the duration; the finished folder holds the :data:`MARKER` of this run.
    """
    out = check_output_path(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(out.parent)
    with _claim(out):
        check_output_path(out, overwrite=overwrite)  # a run that held the claim may have just finished
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), dir=out.parent))
        try:
            yield tmp
            _write_marker(tmp)
            check_output_path(out, overwrite=overwrite)  # something may have appeared there meanwhile
            _move_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


__all__ = ["MARKER", "atomic_output_dir", "atomic_write", "check_output_path", "output_owner", "read_marker",
           "save_npz_atomic", "sweep_stale_temporaries", "temp_prefix", "write_json_atomic", "write_text_atomic"]
