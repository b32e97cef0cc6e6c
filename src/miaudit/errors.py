"""Errors that name the problem and the fix in one line.

The CLI turns every :class:`MiauditError` into ``error: <message>`` on stderr and exit code 2.
"""

import difflib
import pickle
from collections.abc import Iterable
from pathlib import Path


class MiauditError(ValueError):
    """Bad input or an impossible request; the message says what is wrong and how to fix it."""


class ConfigError(MiauditError):
    """A configuration file or parameter is invalid (unknown key, wrong type, bad value)."""


class DataError(MiauditError):
    """A dataset or array is missing, malformed, empty, or has the wrong shape."""


class SignalError(MiauditError):
    """A model cannot produce a signal, or produced a non-finite / malformed one."""


class NotFittedError(MiauditError):
    """An attack that learns from reference data was asked to score before ``fit``."""


class Terminated(BaseException):
    """SIGTERM received (the command line exits with code 143).

    Not a ``KeyboardInterrupt``: library code that swallows Ctrl-C to stop early (scikit-learn's
    ``MLPClassifier.fit``, used by the Shokri attack) must not swallow a termination request.
    :func:`miaudit.runs.tracking.tracked_run` re-raises it as a ``KeyboardInterrupt`` caused by it.
    """


def one_line(exc: BaseException) -> str:
    """``"TypeError: first line of the message"`` for an exception raised by code miaudit ran (the user's)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """``" (did you mean 'loss'?)"`` when a choice is spelled like ``value`` (a typo), else ``""``."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def model_load_error(what: str, name_or_path: str, exc: BaseException) -> MiauditError:
    """One line for a model (or tokenizer) that does not load from a folder or hub id: weights holding
    pickled code (never run), a damaged or incomplete weights file, or anything else."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if isinstance(exc, pickle.UnpicklingError):
        return DataError(f"cannot load {what} {name_or_path!r}: its weights file holds pickled code or objects, "
                         "which miaudit never runs (torch.load weights_only); get the model as model.safetensors, "
                         "or re-save it from trusted code with save_pretrained(safe_serialization=True)")
    if type(exc).__name__ == "SafetensorError" or isinstance(exc, (EOFError, RuntimeError)):
        return DataError(f"cannot load {what} {name_or_path!r}: a weights file is damaged or incomplete "
                         f"({type(exc).__name__}: {first}); download or copy it again")
    if _looks_like_a_path(name_or_path) and not Path(name_or_path).expanduser().exists():
        return ConfigError(f"cannot load {what} {name_or_path!r}: no such folder (a relative path is read from the "
                           f"working directory, {Path.cwd()}), and it is not a hub id; give the folder's path")
    return ConfigError(f"cannot load {what} {name_or_path!r}: {first}; give a local folder with config.json and "
                       "weights (and tokenizer files), or a hub id (online)")


def _looks_like_a_path(name_or_path: str) -> bool:
    """True for a string that cannot be a hub id ("namespace/name"): absolute, relative with dots, or deeper."""
    return name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path
