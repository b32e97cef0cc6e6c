"""``miaudit`` command line: parse, load config, call the library.

Each sub-command lives in ``miaudit.commands.<name>`` and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` (``args -> exit code``). Modules are discovered, so a new command
is a new file. Bad input (:class:`MiauditError`) prints one line and exits with code 2; Ctrl-C
(SIGINT) exits with 130 and SIGTERM with 143, after the command has cleaned up (temporary
folders removed, the run recorded as interrupted).
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import pkgutil
import sys

from miaudit import __version__
from miaudit.errors import MiauditError, Terminated
from miaudit.utils.processes import sigterm_raises


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="miaudit", description="Membership inference audits of ML models.")
    parser.add_argument("--version", action="version", version=f"miaudit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import miaudit.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"miaudit.commands.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(message)s")
    try:
        with sigterm_raises():
            return int(args.func(args) or 0)
    except MiauditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        terminated = isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # the reader of our stdout went away (e.g. `miaudit list attacks | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


def run() -> None:
    """The ``miaudit`` command: :func:`main`, then exit with its code.

    After Ctrl-C or SIGTERM the command has already cleaned up, and the process ends at once with 130 /
    143 (exit handlers run and output flushed first). Ending it the usual way is not enough: when the
    KeyboardInterrupt passed through a C extension that runs Python code (``PyRun_*``) on its way up,
    CPython remembers it as unhandled and, once finalised, ends the process by SIGINT instead of the exit
    code (about one interrupted audit in ten ended so).
    """
    code = main()
    if code in (130, 143):
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
