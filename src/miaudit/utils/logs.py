"""Run logs and progress bars: ``log.txt`` in the run directory, bars silenced by ``-q``, plain lines in logs.

Use :func:`progress` (a tqdm bar with rate and ETA) for long loops and pass ``progress=
progress_enabled()`` to functions that take a ``progress`` flag. :func:`run_log` attaches a file
handler for the ``miaudit`` loggers while a command runs.

When stderr is not a terminal (CI logs, ``2> file``), a bar is printed as one plain line every
:data:`NON_TERMINAL_INTERVAL` seconds (and when it ends), without carriage returns or escape codes.
Hugging Face's own bars (model loading, downloads) follow: off with ``-q`` and in non-terminal
output (:func:`sync_library_progress`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
LOG_NAME = "log.txt"
#: seconds between two progress lines when stderr is not a terminal
NON_TERMINAL_INTERVAL = 5.0
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_quiet = False


def _in_notebook() -> bool:
    """Whether tqdm draws notebook widgets here (Jupyter), where bars are neither escape codes nor log lines."""
    import tqdm.autonotebook
    import tqdm.std

    return tqdm.autonotebook.tqdm is not tqdm.std.tqdm


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False


def sync_library_progress() -> None:
    """Hugging Face progress bars (transformers' weight loading, hub downloads) on only when ours are
    and stderr is a terminal. Call after importing transformers (``set_quiet`` calls it too)."""
    off = _quiet or not _stderr_is_terminal()
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        logging_utils = transformers.utils.logging
        (logging_utils.disable_progress_bar if off else logging_utils.enable_progress_bar)()
    hub = sys.modules.get("huggingface_hub")
    if hub is not None and hasattr(hub, "utils"):
        (hub.utils.disable_progress_bars if off else hub.utils.enable_progress_bars)()


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) progress bars of this process and of worker processes it starts.

    tqdm reads ``TQDM_DISABLE`` when it is imported, so the variable reaches subprocesses (Ray
    workers, data loaders); bars of this process go through :func:`progress`, Hugging Face's
    through :func:`sync_library_progress`.
    """
    global _quiet
    _quiet = bool(quiet)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    else:
        os.environ.pop("TQDM_DISABLE", None)
    sync_library_progress()


def progress_enabled() -> bool:
    """False after ``set_quiet(True)`` (``-q``)."""
    return not _quiet


class _LineWriter(io.TextIOBase):
    """A stream for tqdm that turns each redraw into one plain line (no ``\\r``, no escape codes)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        for part in re.split(r"[\r\n]", _ESCAPES.sub("", text)):
            line = part.strip()
            if line and line != self.last:
                self.stream.write(line + "\n")
                self.last = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class _PlainBar(tqdm):
    """tqdm for non-terminal output: a new postfix or description waits for the next line instead of
    printing one of its own (training loops update theirs every epoch)."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)


def progress(iterable: Iterable[T] | None = None, *, desc: str | None = None, total: int | None = None,
             unit: str = "it", enabled: bool | None = None, **kwargs: Any) -> tqdm[T]:
    """A tqdm bar (rate and ETA) on stderr; disabled when quiet or ``enabled=False``.

    On a terminal it redraws in place; otherwise it prints a plain line when it starts, at most
    every :data:`NON_TERMINAL_INTERVAL` seconds while it runs, and when it ends.
    """
    disable = not (progress_enabled() if enabled is None else enabled and progress_enabled())
    if not disable and not _stderr_is_terminal() and not _in_notebook() and "file" not in kwargs:
        kwargs.update(file=_LineWriter(sys.stderr), mininterval=NON_TERMINAL_INTERVAL,
                      maxinterval=NON_TERMINAL_INTERVAL, ascii=True, ncols=100, position=0, leave=True)
        return _PlainBar(iterable, desc=desc, total=total, unit=unit, disable=False, **kwargs)
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, dynamic_ncols=True, **kwargs)


@contextlib.contextmanager
def run_log(run_dir: str | Path, *, quiet: bool = False, level: int = logging.INFO) -> Iterator[Path]:
    """Write the ``miaudit`` loggers' records (``level`` and above) to ``run_dir/log.txt``.

    With ``quiet`` the console shows warnings and errors only and progress bars are off; the file
    still receives everything at ``level``. Handlers and levels are restored on exit.
    """
    path = Path(run_dir) / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger = logging.getLogger("miaudit")
    previous_level, previous_quiet, previous_env = logger.level, _quiet, os.environ.get("TQDM_DISABLE")
    console_levels = [(h, h.level) for h in logging.getLogger().handlers]
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    if quiet:
        for h, old in console_levels:
            h.setLevel(max(old, logging.WARNING))
        set_quiet(True)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(previous_level)
        for h, old in console_levels:
            h.setLevel(old)
        set_quiet(previous_quiet)
        if previous_env is not None:
            os.environ["TQDM_DISABLE"] = previous_env


__all__ = ["LOG_NAME", "NON_TERMINAL_INTERVAL", "progress", "progress_enabled", "run_log", "set_quiet",
           "sync_library_progress"]
