"""Processes: is a process alive, and worker processes that never outlive the process that started them.

A worker pool whose parent is killed (``kill -9``, out-of-memory killer) leaves its workers running
with nobody to collect their results. Pass :func:`exit_when_parent_dies` as (part of) the pool's
initializer, with the parent's pid, and each worker ends itself within about a second of its
parent::

    ProcessPoolExecutor(initializer=exit_when_parent_dies, initargs=(os.getpid(),), ...)

:func:`sigterm_raises` turns SIGTERM into an exception, so a terminated command cleans up like one
interrupted with Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from miaudit.errors import Terminated

#: seconds between two checks of the parent in :func:`exit_when_parent_dies`
PARENT_CHECK_INTERVAL = 1.0


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one we may not signal counts as alive).

    On Windows, where signal 0 is not a probe (``os.kill`` would send Ctrl-C), every process counts
    as alive: nothing of another process is ever swept or taken over there.
    """
    if sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def exit_when_parent_dies(parent_pid: int, *, interval: float = PARENT_CHECK_INTERVAL) -> threading.Thread:
    """In a worker process: end this process (``os._exit(1)``) as soon as ``parent_pid`` is gone.

    A daemon thread checks every ``interval`` seconds whether this process still has ``parent_pid``
    as its parent (an orphan is re-parented to init or a subreaper when its parent dies). Returns
    the thread.
    """

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid or not pid_alive(parent_pid):
                os._exit(1)
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="miaudit-parent-watch", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`~miaudit.errors.Terminated` (so ``finally`` blocks clean up).

    Only in the main thread (elsewhere signals cannot be handled); the previous handler is restored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"received signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["PARENT_CHECK_INTERVAL", "exit_when_parent_dies", "pid_alive", "sigterm_raises"]
