"""What every command that runs an audit does around it: run store, gates, JSON summary, exit code.

The run directory itself is complete when the pipeline returns (metrics with empirical epsilon,
``report.md``, ``report.html``: :func:`miaudit.runs.pipeline.run_audit`); tracking records it::

    options = RunOptions(fail_if=("tpr@0.01 > 0.05",), json=False, home=None)
    with tracked_run(options, command="audit", config=config_dict, run_dir=out) as run:
        run_audit(config, out)                # writes the complete run directory
        return run.finalize(out)              # store row, gates; 0 when every gate holds, 1 when one trips

The store row is ``running`` inside the ``with`` block and becomes ``completed`` in ``finalize``,
``failed`` if the block raises, ``interrupted`` on Ctrl-C or SIGTERM (SIGTERM is turned into
:class:`Terminated` while the block runs, and leaves the block as a ``KeyboardInterrupt``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from miaudit.errors import MiauditError, Terminated
from miaudit.evaluation.run_result import RANKED_METRICS, AttackEntry, RunResult, accountant_claim, strongest
from miaudit.evaluation.verdict import verdict_of
from miaudit.runs.gate import GRAMMAR, GateResult, check_gates, describe, parse_gate
from miaudit.runs.store import RunStore, default_store_path
from miaudit.utils.atomic import output_owner
from miaudit.utils.processes import sigterm_raises

#: fields of ``metrics.json`` ``"one_run_audit"`` kept in the ``--json`` summary
_ONE_RUN_KEYS = ("epsilon", "delta", "confidence", "correct", "guesses", "verdict")
#: per-attack fields of the ``--json`` summaries (an entry's missing ones are left out)
SUMMARY_KEYS = ("name", "attack", "auc", "auc_ci", "tpr_at_fpr", "tpr_at_fpr_ci", "advantage", "advantage_ci",
                "balanced_accuracy", "threshold_source", "selection", "ties_at_fpr", "exact_bounds",
                "vs_blind_baseline", "warnings", "applicable", "reason", "error", "note")
#: fields of the blind baseline (``metrics.json`` ``"blind_baseline"``) kept in the ``--json`` summary
BASELINE_KEYS = ("auc", "auc_ci", "tpr_at_fpr", "tpr_at_fpr_ci", "cross_validation", "null", "verdict")
_PACKAGES = ("miaudit", "numpy", "scipy", "scikit-learn", "torch", "transformers", "opacus", "ray")


@dataclass(frozen=True)
class RunOptions:
    """What a tracked run does besides running: CI gates, output format, run store, epsilon's delta.

    ``fail_if``: gate expressions (:mod:`miaudit.runs.gate`); ``json``: print the JSON summary on
    stdout instead of lines; ``home``: folder of the run store (default ``$MIAUDIT_HOME``, else the
    user data folder); ``store``: record the run; ``epsilon_delta``: delta of the empirical epsilon
    bounds (default: the DP accountant's delta, else 1e-5).
    """

    fail_if: tuple[str, ...] = ()
    json: bool = False
    home: str | None = None
    store: bool = True
    epsilon_delta: float | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The options of a command whose parser has :func:`add_common_run_flags`."""
        return cls(fail_if=tuple(args.fail_if or ()), json=bool(args.json), home=args.home, store=not args.no_store,
                   epsilon_delta=args.epsilon_delta)


def _gate_arg(text: str) -> str:
    try:
        parse_gate(text)
    except MiauditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_common_run_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--fail-if`` (repeatable), ``--json``, ``--home``, ``--no-store``, ``-q/--quiet``, ``--epsilon-delta``.

    Flags the parser already defines (e.g. its own ``-q/--quiet``) are kept as they are;
    :meth:`RunOptions.from_args` reads them back.
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


def open_store(options: RunOptions) -> RunStore | None:
    """The run store the options select, or None when the run is not to be stored."""
    return RunStore(default_store_path(options.home)) if options.store else None


class RunTracker:
    """A run recorded in the store while it executes; :meth:`finalize` completes it.

    ``run_dir`` is a folder that already exists and is recorded as this run's (:func:`finalize_run`
    on a finished folder); a run that writes its folder records it when it completes.
    """

    def __init__(self, options: RunOptions, *, command: str, config: dict[str, Any] | None,
                 run_dir: str | Path | None = None):
        self.options, self.command, self.config = options, command, config or {}
        self.store = open_store(options)
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
        return finalize_run(run_dir, self.options, tracker=self)


@contextlib.contextmanager
def tracked_run(options: RunOptions, *, command: str, config: dict[str, Any] | None = None,
                run_dir: str | Path | None = None) -> Iterator[RunTracker]:
    """Record the run as ``running``; mark it ``failed`` / ``interrupted`` if the block raises.

    ``run_dir`` is the folder the block will write: it is recorded only when the run completes
    (:meth:`RunTracker.finalize`), and folders written inside the block carry the run id in their
    marker (:func:`miaudit.utils.atomic.output_owner`), which ``miaudit runs rm --delete-files`` checks.
    """
    tracker = RunTracker(options, command=command, config=config)
    try:
        with sigterm_raises(), output_owner(run_id=tracker.run_id, command=command):
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


def strongest_by_metric(entries: list[dict[str, Any]] | list[AttackEntry]) -> dict[str, dict[str, Any]]:
    """``{metric: {attack, value}}`` for auc, advantage, balanced accuracy, epsilon and each reported
    tpr@FPR, each chosen by the one rule of :func:`~miaudit.evaluation.run_result.strongest` (the rule
    of an unnamed ``--fail-if`` gate; baselines and oracle entries are not candidates)."""
    typed = RunResult({"attacks": [e.fields if isinstance(e, AttackEntry) else e for e in entries]})
    fprs = sorted({k for a in typed.attacks if a.candidate for k in a.tpr_at_fpr}, key=float)
    out = {}
    for metric in [*RANKED_METRICS, *(f"tpr@{k}" for k in fprs)]:
        best = strongest(typed.attacks, metric)
        if best is not None:
            out[metric] = {"attack": best.name, "value": best.value(metric)}
    return out


def baseline_summary(result: RunResult) -> dict[str, Any] | None:
    """The blind baseline of the ``--json`` summary: AUC and TPRs with intervals, how it was cross-validated,
    its permutation null and its verdict (None for runs without one)."""
    baseline = result.baseline
    if baseline is None:
        return None
    return {"name": baseline.name, **{k: baseline.fields[k] for k in BASELINE_KEYS if k in baseline.fields}}


def summary(result: RunResult, *, run_id: str | None, run_dir: Path, gates: GateResult) -> dict[str, Any]:
    """The JSON summary printed with ``--json``.

    ``verdict``: the risk level, its reasons and rule; ``strongest``: held-out entries only (no oracle
    entry, no baseline); ``blind_baseline`` (LLM runs) with its interval and verdict; ``warnings``:
    run-level and attack warnings. Runs with a one-run canary audit (``kind: dp_canary``) add
    ``one_run_audit`` (epsilon, delta, confidence, correct, guesses, verdict); runs with a ``"dp"``
    section add it as ``dp``.
    """
    metrics = result.metrics
    report = run_dir / "report.html"
    out = {"run_id": run_id, "run_dir": str(run_dir), "report": str(report) if report.is_file() else None,
           "status": "completed", "kind": result.kind, "seed": result.seed,
           "gates": gates.to_dict(), "exit_code": 1 if gates.tripped else 0,
           "verdict": verdict_of(metrics), "strongest": strongest_by_metric(result.attacks),
           "dp_accountant": accountant_claim(metrics), "attacks": attack_summaries(metrics.get("attacks", [])),
           "warnings": result.all_warnings}
    baseline = baseline_summary(result)
    if baseline is not None:
        out["blind_baseline"] = baseline
    if (metrics.get("evaluation") or {}).get("grouping"):
        out["grouping"] = metrics["evaluation"]["grouping"]
    if isinstance(metrics.get("one_run_audit"), dict):  # kind dp_canary: the one-run bound and its verdict
        out["one_run_audit"] = {k: metrics["one_run_audit"].get(k) for k in _ONE_RUN_KEYS}
    if isinstance(metrics.get("dp"), dict):  # the DP accountant's full report (defense, epsilon, delta, ...)
        out["dp"] = metrics["dp"]
    return out


def finalize_run(run_dir: str | Path, options: RunOptions, *, command: str = "audit",
                 config: dict[str, Any] | None = None, tracker: RunTracker | None = None) -> int:
    """Record a complete run directory in the store, check the gates, print the summary.

    Returns the exit code: 1 when a ``--fail-if`` gate trips, 0 otherwise. Without ``tracker`` the
    run is recorded in the store here (unless ``options.store`` is off). A gate that cannot be
    evaluated (e.g. it names an attack the run lacks) is a :class:`MiauditError` (exit 2) after the
    run is recorded as completed.
    """
    from miaudit.report.rundir import load_run

    run_dir = Path(run_dir)
    own_tracker = tracker is None
    tracker = tracker or RunTracker(options, command=command, config=config, run_dir=run_dir)
    try:
        result = RunResult(load_run(run_dir).metrics, path=run_dir)
        gates, gate_error = complete_with_gates(
            tracker, result.metrics, run_dir, lambda: check_gates(result.metrics, list(options.fail_if),
                                                                  run_dir=run_dir))
    except (KeyboardInterrupt, Terminated) as exc:
        tracker.finish("interrupted", error=f"{type(exc).__name__}: {exc}")
        raise
    except BaseException as exc:
        tracker.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if own_tracker and tracker.store is not None:
            tracker.store.close()
    report = run_dir / "report.html"
    return gate_exit_code(
        options, gates, gate_error,
        json_summary=lambda: summary(result, run_id=tracker.run_id, run_dir=run_dir, gates=gates),
        headline=f"report: {report}" + (f"  (run {tracker.run_id})" if tracker.run_id else ""))


def complete_with_gates(tracker: RunTracker, results: Mapping[str, Any], run_dir: Path,
                        check: Callable[[], GateResult]) -> tuple[GateResult, MiauditError | None]:
    """Evaluate the gates (``check()``) and record the run as completed with their outcome.

    A gate that cannot be evaluated is returned as the error (the run itself completed): raise it
    after the store row is written, through :func:`gate_exit_code`.
    """
    try:
        gates, error = check(), None
    except MiauditError as exc:
        gates, error = GateResult(tripped=False), exc
    tracker.finish("completed", metrics=dict(results), run_dir=run_dir,
                   gates={"error": str(error)} if error else gates.to_dict())
    return gates, error


def gate_exit_code(options: RunOptions, gates: GateResult, error: MiauditError | None, *,
                   json_summary: Callable[[], dict[str, Any]], headline: str | None) -> int:
    """Print the ``--json`` summary, or ``headline`` and one line per gate; 1 when a gate tripped, else 0.

    Raises ``error`` (exit code 2) when a gate could not be evaluated.
    """
    if error is not None:
        raise error
    if options.json:
        print(json.dumps(json_summary(), indent=2))
    else:
        if headline:
            print(headline)
        for detail in gates.details:
            print(describe(detail))
    sys.stdout.flush()
    return 1 if gates.tripped else 0


__all__ = ["SUMMARY_KEYS", "RunOptions", "RunTracker", "Terminated", "add_common_run_flags", "attack_summaries",
           "collect_versions", "complete_with_gates", "finalize_run", "gate_exit_code", "open_store",
           "strongest_by_metric", "summary", "tracked_run"]
