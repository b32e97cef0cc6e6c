"""Run logs and progress bars: ``log.txt`` in the run directory, tqdm bars silenced by ``-q``.

Use :func:`progress` (a tqdm bar with rate and ETA) for long loops and pass ``progress=
progress_enabled()`` to functions that take a ``progress`` flag. :func:`run_log` attaches a file
handler for the ``miaudit`` loggers while a command runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
LOG_NAME = "log.txt"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) progress bars of this process and of worker processes it starts.

    tqdm reads ``TQDM_DISABLE`` when it is imported, so the variable reaches subprocesses (Ray
    workers, data loaders); bars of this process go through :func:`progress`.
    """
    global _quiet
    _quiet = bool(quiet)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    else:
        os.environ.pop("TQDM_DISABLE", None)


def progress_enabled() -> bool:
    """False after ``set_quiet(True)`` (``-q``)."""
    return not _quiet


def progress(iterable: Iterable[T] | None = None, *, desc: str | None = None, total: int | None = None,
             unit: str = "it", enabled: bool | None = None, **kwargs: Any) -> tqdm[T]:
    """A tqdm bar (rate and ETA) on stderr; disabled when quiet or ``enabled=False``."""
    disable = not (progress_enabled() if enabled is None else enabled and progress_enabled())
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


__all__ = ["LOG_NAME", "progress", "progress_enabled", "run_log", "set_quiet"]
