"""Errors that name the problem and the fix in one line.

The CLI turns every :class:`MiauditError` into ``error: <message>`` on stderr and exit code 2.
"""


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
