"""What every command that runs an audit does around it: store, report, gates, JSON summary.

Wiring (``miaudit audit`` / ``miaudit demo``)::

    def register(subparsers):
        parser = subparsers.add_parser("audit", ...)
        ...
        add_common_run_flags(parser)          # --fail-if, --json, --home, --no-store, -q, --epsilon-delta

    def run(args):
        with tracked_run(args, command="audit", config=config_dict, run_dir=args.out) as run:
            with atomic_output_dir(args.out) as tmp, run_log(tmp, quiet=args.quiet):
                ...                           # the pipeline writes the run directory into tmp
            return run.finalize(args.out)     # 0 when every gate holds, 1 when one trips

The store row is ``running`` inside the ``with`` block and becomes ``completed`` in ``finalize``,
``failed`` if the block raises, ``interrupted`` on Ctrl-C or SIGTERM (SIGTERM is turned into
:class:`Terminated` while the block runs, and leaves the block as a ``KeyboardInterrupt``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from miaudit.errors import MiauditError
from miaudit.runs import RunStore, default_store_path
from miaudit.runs.gate import GRAMMAR, GateResult, check_gates, describe, evaluate_gate, is_baseline, parse_gate

DEFAULT_DELTA = 1e-5
#: fields of ``metrics.json`` ``"one_run_audit"`` kept in the ``--json`` summary
_ONE_RUN_KEYS = ("epsilon", "delta", "confidence", "correct", "guesses", "verdict")
#: per-attack fields of the ``--json`` summaries (an entry's missing ones are left out)
SUMMARY_KEYS = ("name", "attack", "auc", "auc_ci", "tpr_at_fpr", "tpr_at_fpr_ci", "advantage", "advantage_ci",
                "balanced_accuracy", "threshold_source", "warnings", "applicable", "reason", "error", "note")
_PACKAGES = ("miaudit", "numpy", "scipy", "scikit-learn", "torch", "transformers", "opacus", "ray")


class Terminated(BaseException):
    """SIGTERM received while a tracked run was in progress.

    Not a ``KeyboardInterrupt``: library code that swallows Ctrl-C to stop early (scikit-learn's
    ``MLPClassifier.fit``, used by the Shokri attack) must not swallow a termination request.
    :func:`tracked_run` re-raises it as a ``KeyboardInterrupt`` for the command line.
    """


def _gate_arg(text: str) -> str:
    try:
        parse_gate(text)
    except MiauditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_common_run_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--fail-if`` (repeatable), ``--json``, ``--home``, ``--no-store``, ``-q/--quiet``, ``--epsilon-delta``.

    Flags the parser already defines (e.g. its own ``-q/--quiet``) are kept as they are.
    """
    group = parser.add_argument_group("run store, report and CI gate")

    def add(*names: str, **kwargs: Any) -> None:
        if not any(name in parser._option_string_actions for name in names):
            group.add_argument(*names, **kwargs)

    add("--fail-if", action="append", default=[], type=_gate_arg, metavar="EXPR",
        help=f"exit with code 1 when EXPR holds, e.g. \"tpr@0.01 > 0.05\" (repeatable). {GRAMMAR}".replace(
            "%", "%%"))  # argparse %-formats help strings; "tpr@1%" must stay literal
    add("--json", action="store_true", help="print a JSON summary on stdout (logs go to stderr)")
    add("--home", metavar="DIR",
        help="folder of the run store (default: $MIAUDIT_HOME, else the user data folder)")
    add("--no-store", action="store_true", help="do not record this run in the run store")
    add("-q", "--quiet", action="store_true", help="no progress bars; warnings only on the console")
    add("--epsilon-delta", type=float, default=None, metavar="DELTA",
        help="delta of the empirical epsilon bound (default: the DP accountant's delta, else 1e-5)")


def collect_versions() -> dict[str, str]:
    """Versions of Python, the platform and the installed packages that shape a run."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def open_store(args: argparse.Namespace) -> RunStore | None:
    """The run store selected by ``--home`` / ``$MIAUDIT_HOME``, or None with ``--no-store``."""
    if getattr(args, "no_store", False):
        return None
    return RunStore(default_store_path(getattr(args, "home", None)))


class RunTracker:
    """A run recorded in the store while it executes; :meth:`finalize` completes it."""

    def __init__(self, args: argparse.Namespace, *, command: str, config: dict[str, Any] | None,
                 run_dir: str | Path | None):
        self.args, self.command, self.config = args, command, config or {}
        self.store = open_store(args)
        self.run_id: str | None = None
        self.finished = False
        if self.store is not None:
            self.run_id = self.store.start_run(command, config=self.config, versions=collect_versions(),
                                               run_dir=run_dir)

    def finish(self, status: str, **kwargs: Any) -> None:
        if self.store is not None and self.run_id is not None and not self.finished:
            self.store.finish_run(self.run_id, status, **kwargs)
        self.finished = True

    def finalize(self, run_dir: str | Path) -> int:
        return finalize_run(run_dir, self.args, tracker=self)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
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


@contextlib.contextmanager
def tracked_run(args: argparse.Namespace, *, command: str, config: dict[str, Any] | None = None,
                run_dir: str | Path | None = None) -> Iterator[RunTracker]:
    """Record the run as ``running``; mark it ``failed`` / ``interrupted`` if the block raises."""
    tracker = RunTracker(args, command=command, config=config, run_dir=run_dir)
    try:
        with _sigterm_as_interrupt():
            yield tracker
    except (KeyboardInterrupt, Terminated) as exc:
        tracker.finish("interrupted", error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        if isinstance(exc, Terminated):
            raise KeyboardInterrupt(str(exc)) from exc
        raise
    except BaseException as exc:
        tracker.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    else:
        if not tracker.finished:
            tracker.finish("failed", error="the command ended without finalizing its run directory")
    finally:
        if tracker.store is not None:
            tracker.store.close()


def _dp_claim(metrics: dict[str, Any]) -> dict[str, Any]:
    claim = metrics.get("dp") if isinstance(metrics.get("dp"), dict) else {}
    target = metrics.get("target") or {}
    return {k: claim.get(k, target.get(k)) for k in ("epsilon", "delta")}


def add_entry_epsilon(entry: dict[str, Any], scores_dir: Path, *, delta: float) -> bool:
    """Add ``"empirical_epsilon"`` to one attack entry from ``scores_dir/<name>.scores.npz``.

    Returns True when added; entries that already have one, baselines and entries without saved
    scores are left as they are. The confidence is the entry's own confidence level (default 0.95).
    """
    from miaudit.evaluation import AttackResult
    from miaudit.evaluation.epsilon import empirical_epsilon

    saved = scores_dir / f"{entry['name']}.scores.npz"
    if is_baseline(entry) or entry.get("empirical_epsilon") or not saved.is_file():
        return False
    result = AttackResult.load(scores_dir, entry["name"])
    bound = empirical_epsilon(result.labels, result.scores, delta=float(delta),
                              confidence=float(entry.get("confidence_level", 0.95)))
    entry["empirical_epsilon"] = bound.to_dict()
    return True


def write_json_atomic(path: Path, data: dict[str, Any], *, allow_nan: bool = False) -> None:
    """Replace ``path`` by ``data`` as indented JSON in one rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=allow_nan) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def add_empirical_epsilon(run_dir: str | Path, *, delta: float | None = None) -> dict[str, Any]:
    """Add ``"empirical_epsilon"`` to each model attack of ``metrics.json`` that lacks one; return the metrics.

    Uses the saved per-example scores; delta defaults to the DP accountant's delta in the run, else
    1e-5; the confidence is the run's own confidence level. ``metrics.json`` is replaced atomically.
    """
    from miaudit.report.rundir import load_run

    run = load_run(run_dir)
    delta = delta if delta is not None else (_dp_claim(run.metrics).get("delta") or DEFAULT_DELTA)
    changed = False
    for entry in run.metrics["attacks"]:
        changed |= add_entry_epsilon(entry, run.path / "scores", delta=float(delta))
    if changed:
        write_json_atomic(run.path / "metrics.json", run.metrics)
    return run.metrics


def attack_summaries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``--json`` summary's view of attack entries: the :data:`SUMMARY_KEYS` they have, and the
    empirical epsilon bound as a number."""
    rows = []
    for entry in entries:
        row = {k: entry[k] for k in SUMMARY_KEYS if k in entry}
        if entry.get("empirical_epsilon"):
            row["empirical_epsilon"] = entry["empirical_epsilon"].get("epsilon")
        rows.append(row)
    return rows


def strongest_by_metric(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{metric: {attack, value}}`` for auc, advantage, each tpr@FPR every attack has, and epsilon (when
    every attack has a bound), chosen exactly as an unnamed ``--fail-if`` gate chooses the strongest
    attack (baselines and attacks without results are not candidates)."""
    scored = [a for a in entries if "auc" in a and not is_baseline(a)]
    if not scored:
        return {}
    fprs = sorted({k for a in scored for k in a.get("tpr_at_fpr", {})}, key=float)
    metrics = ["auc", "advantage"] + [f"tpr@{k}" for k in fprs if all(k in a.get("tpr_at_fpr", {}) for a in scored)]
    if all(a.get("empirical_epsilon") for a in scored):
        metrics.append("epsilon")
    out = {}
    for metric in metrics:
        name, value = evaluate_gate(parse_gate(f"{metric} > 0"), scored)
        out[metric] = {"attack": name, "value": value}
    return out


def summary(metrics: dict[str, Any], *, run_id: str | None, run_dir: Path, report: Path | None,
            gates: GateResult) -> dict[str, Any]:
    """The JSON summary printed with ``--json``.

    Runs with a one-run canary audit (``kind: dp_canary``) add ``one_run_audit`` (epsilon, delta,
    confidence, correct, guesses, verdict); runs with a ``"dp"`` section add it as ``dp``.
    """
    entries = metrics.get("attacks", [])
    out = {"run_id": run_id, "run_dir": str(run_dir), "report": str(report) if report else None,
           "status": "completed", "kind": metrics.get("kind"), "seed": metrics.get("seed"),
           "gates": gates.to_dict(), "exit_code": 1 if gates.tripped else 0,
           "strongest": strongest_by_metric(entries), "dp_accountant": _dp_claim(metrics),
           "attacks": attack_summaries(entries)}
    if isinstance(metrics.get("one_run_audit"), dict):  # kind dp_canary: the one-run bound and its verdict
        out["one_run_audit"] = {k: metrics["one_run_audit"].get(k) for k in _ONE_RUN_KEYS}
    if isinstance(metrics.get("dp"), dict):  # the DP accountant's full report (defense, epsilon, delta, ...)
        out["dp"] = metrics["dp"]
    return out


def finalize_run(run_dir: str | Path, args: argparse.Namespace, *, command: str = "audit",
                 config: dict[str, Any] | None = None, tracker: RunTracker | None = None) -> int:
    """Finish a written run directory: empirical epsilon, ``report.html``, store row, gates, summary.

    Returns the exit code: 1 when a ``--fail-if`` gate trips, 0 otherwise. Without ``tracker`` the
    run is recorded in the store here (unless ``--no-store``). A gate that cannot be evaluated
    (e.g. it names an attack the run lacks) is a :class:`MiauditError` (exit 2) after the run is
    recorded as completed.
    """
    from miaudit.report.html import build_html_report

    run_dir = Path(run_dir)
    own_tracker = tracker is None
    tracker = tracker or RunTracker(args, command=command, config=config, run_dir=run_dir)
    try:
        metrics = add_empirical_epsilon(run_dir, delta=getattr(args, "epsilon_delta", None))
        report = build_html_report(run_dir)
        gates, gate_error = complete_with_gates(
            tracker, metrics, run_dir,
            lambda: check_gates(metrics, list(getattr(args, "fail_if", []) or []), run_dir=run_dir))
    except (KeyboardInterrupt, Terminated) as exc:
        tracker.finish("interrupted", error=f"{type(exc).__name__}: {exc}")
        raise
    except BaseException as exc:
        tracker.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if own_tracker and tracker.store is not None:
            tracker.store.close()
    return gate_exit_code(
        args, gates, gate_error,
        json_summary=lambda: summary(metrics, run_id=tracker.run_id, run_dir=run_dir, report=report, gates=gates),
        headline=f"report: {report}" + (f"  (run {tracker.run_id})" if tracker.run_id else ""))


def complete_with_gates(tracker: RunTracker, results: dict[str, Any], run_dir: Path,
                        check: Callable[[], GateResult]) -> tuple[GateResult, MiauditError | None]:
    """Evaluate the gates (``check()``) and record the run as completed with their outcome.

    A gate that cannot be evaluated is returned as the error (the run itself completed): raise it
    after the store row is written, through :func:`gate_exit_code`.
    """
    try:
        gates, error = check(), None
    except MiauditError as exc:
        gates, error = GateResult(tripped=False), exc
    tracker.finish("completed", metrics=results, run_dir=run_dir,
                   gates={"error": str(error)} if error else gates.to_dict())
    return gates, error


def gate_exit_code(args: argparse.Namespace, gates: GateResult, error: MiauditError | None, *,
                   json_summary: Callable[[], dict[str, Any]], headline: str | None) -> int:
    """Print the ``--json`` summary, or ``headline`` and one line per gate; 1 when a gate tripped, else 0.

    Raises ``error`` (exit code 2) when a gate could not be evaluated.
    """
    if error is not None:
        raise error
    if getattr(args, "json", False):
        print(json.dumps(json_summary(), indent=2))
    else:
        if headline:
            print(headline)
        for detail in gates.details:
            print(describe(detail))
    sys.stdout.flush()
    return 1 if gates.tripped else 0


__all__ = ["DEFAULT_DELTA", "SUMMARY_KEYS", "RunTracker", "Terminated", "add_common_run_flags",
           "add_empirical_epsilon", "add_entry_epsilon", "attack_summaries", "collect_versions", "complete_with_gates",
           "finalize_run", "gate_exit_code",
           "open_store", "strongest_by_metric", "summary", "tracked_run", "write_json_atomic"]
